#!/usr/bin/env bash
# Installs what building and testing redisraft needs on a Debian machine,
# and only what is missing. Safe to run again and again.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v clang >/dev/null 2>&1 || need+=(clang)
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
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
