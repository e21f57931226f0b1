#!/usr/bin/env bash
# Prints a table of redisraft-jepsen runs from their out dirs (result.tsv,
# exit-code, wall-seconds); exits 1 if any run did not exit 0. The digests
# column: equal@<index> (every node's DEBUG DIGEST equal at that applied
# index), DIFFER@<index>, unchecked, or - (not compared).
#   scripts/jepsen-table.sh DIR...
set -uo pipefail
failed=0
for d in "$@"; do
    [[ $(cat "$d/exit-code" 2>/dev/null) == 0 ]] || failed=1
done
{
    printf 'run\tworkload\tnemesis\tenv\tsecs\tok\tfail\tinfo\tanomalies\tverdict\tdigests\texit\n'
    for d in "$@"; do
        code=$(cat "$d/exit-code" 2>/dev/null || echo '?')
        if [[ -f $d/result.tsv ]]; then
            # workload nemesis env nodes seconds ok fail info checked anomalies verdict exit digests
            tail -n 1 "$d/result.tsv" | awk -F'\t' -v run="$(basename "$d")" -v code="$code" \
                -v wall="$(cat "$d/wall-seconds" 2>/dev/null || echo '?')" \
                'BEGIN { OFS = "\t" } { print run, $1, $2, $3, wall, $6, $7, $8, $10, $11, (NF >= 13 ? $13 : "-"), code }'
        else
            printf '%s\t-\t-\t-\t%s\t-\t-\t-\t-\t%s\t-\t%s\n' "$(basename "$d")" \
                "$(cat "$d/wall-seconds" 2>/dev/null || echo '?')" \
                "$([[ $code == 130 ]] && echo interrupted || echo setup-failed)" "$code"
        fi
    done
} | awk -F'\t' '
    { for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) }
      if (NF > nf) nf = NF; rows = NR }
    END { for (r = 1; r <= rows; r++) { line = ""
            for (i = 1; i <= nf; i++) line = line sprintf(i < nf ? "%-" w[i] "s  " : "%s", cell[r, i])
            print line } }'
if [[ $failed != 0 ]]; then
    echo "jepsen: some runs FAILED (exit 1: anomaly or no ok op; 2: setup failure); see summary.txt in their dirs"
    exit 1
fi
echo "jepsen: all runs valid"
