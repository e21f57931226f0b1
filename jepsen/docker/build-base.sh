#!/usr/bin/env bash
# Builds the base image redisraft-jepsen-base:latest from a Debian bookworm
# rootfs made with debootstrap (no registry needed: docker import).
# FORCE=1 rebuilds even if the image exists.
# MIRROR / SECURITY_MIRROR override the mirrors read from apt's sources.
set -euo pipefail

IMAGE=${BASE_IMAGE:-redisraft-jepsen-base:latest}
SCRATCH=${SCRATCH:-/var/tmp/redisraft-jepsen}
ROOTFS=$SCRATCH/rootfs
DEBCACHE=$SCRATCH/debcache
SUITE=bookworm
PACKAGES=redis-server,redis-tools,iptables,iproute2,openssh-server,openssh-client,procps,ca-certificates,iputils-ping,netcat-openbsd,less

if [[ ${FORCE:-0} != 1 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "build-base: $IMAGE exists (FORCE=1 to rebuild)"
    exit 0
fi
[[ $(id -u) == 0 ]] || { echo "build-base: must run as root (debootstrap)" >&2; exit 1; }

# First URI in apt's sources whose path ends in $1 (e.g. /debian).
apt_uri() {
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        grep -vE '^[[:space:]]*#' | grep -oE '(https?://[^ ]+)' | sed 's:/*$::' | grep -E "$1\$" | head -n1 || true
}
MIRROR=${MIRROR:-$(apt_uri /debian)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-$(apt_uri /debian-security)}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
echo "build-base: mirror $MIRROR, security $SECURITY_MIRROR"

if ! command -v debootstrap >/dev/null; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap
fi

start=$(date +%s)
rm -rf "$ROOTFS"
mkdir -p "$ROOTFS" "$DEBCACHE"
debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$DEBCACHE" \
    "$SUITE" "$ROOTFS" "$MIRROR"

# apt sources inside the image, then pull in updates/security fixes.
cat > "$ROOTFS/etc/apt/sources.list" <<SRC
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
SRC
# No service starts inside the chroot.
printf '#!/bin/sh\nexit 101\n' > "$ROOTFS/usr/sbin/policy-rc.d"
chmod +x "$ROOTFS/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
chroot "$ROOTFS" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
    sh -c 'apt-get update && apt-get -y dist-upgrade && apt-get clean'

# Trim: caches, docs, host keys (each node makes its own at start).
rm -f "$ROOTFS/usr/sbin/policy-rc.d" "$ROOTFS/etc/resolv.conf" "$ROOTFS"/etc/ssh/ssh_host_*
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
    "$ROOTFS"/tmp/* "$ROOTFS"/var/log/*.log
: > "$ROOTFS/etc/machine-id"

tar --numeric-owner -C "$ROOTFS" -c . |
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        - "$IMAGE"
echo "build-base: $IMAGE built in $(( $(date +%s) - start ))s"
docker image ls "$IMAGE"
