#!/bin/sh
# Node container entrypoint: pick an iptables backend that works on this
# kernel (nft first, legacy as fallback), make ssh host keys, exec sshd.
set -eu

for backend in nft legacy; do
    if "iptables-$backend" -w -L INPUT -n >/dev/null 2>&1; then
        update-alternatives --set iptables "/usr/sbin/iptables-$backend" >/dev/null
        update-alternatives --set ip6tables "/usr/sbin/ip6tables-$backend" >/dev/null 2>&1 || true
        echo "node-entrypoint: iptables backend $backend"
        break
    fi
done

ssh-keygen -A >/dev/null
mkdir -p /run/sshd /var/lib/redisraft
exec /usr/sbin/sshd -D -e
