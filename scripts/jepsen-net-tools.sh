#!/usr/bin/env bash
# Best effort: installs what the suite's `local` environment (network
# namespaces and partitions) needs, ip (iproute2) and iptables, when they are
# missing and we are root. Without them the runs fall back to local-loopback
# (no partitions); this never fails.
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
if [[ ${#need[@]} -gt 0 && $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "jepsen: installing ${need[*]} (network namespaces and partitions)"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } >/dev/null 2>&1 ||
        echo "jepsen: could not install ${need[*]}: runs fall back to local-loopback" >&2
fi
exit 0
