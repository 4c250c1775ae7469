#!/usr/bin/env bash
# Install what a Docker-free aarch64 build of wtd needs, on Debian/Ubuntu:
#   - gcc-aarch64-linux-gnu: compiles ring's bits of C/assembly for aarch64 (Rust code needs no gcc;
#     linking is done by rust-lld, which ships with Rust)
#   - qemu-user-static:      runs aarch64 binaries on this x86_64 machine (smoke tests, `cargo test`)
#   - file:                  lets build-aarch64.sh check what it built
#   - the Rust std library for aarch64-unknown-linux-musl (static binaries, no libc on the Pi needed)
#
# Idempotent: when everything is present it prints one line and changes nothing.
# `apt-get update` runs only if a package is not known to apt yet.
#
# Usage: scripts/install-cross-deps.sh
# (32-bit armv7 Pis are built with `cross` and Docker instead; see Cross.toml.)
set -euo pipefail

targets=(aarch64-unknown-linux-musl)
# command-that-must-exist:debian-package-that-provides-it
needs=(aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu qemu-aarch64-static:qemu-user-static file:file)
for arg in "$@"; do
    case "$arg" in
        -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "install-cross-deps: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

# --- system packages -------------------------------------------------------------------------
missing=()
for need in "${needs[@]}"; do
    cmd=${need%%:*} pkg=${need#*:}
    if ! command -v "$cmd" >/dev/null 2>&1 && [[ " ${missing[*]-} " != *" $pkg "* ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-cross-deps: please install these with your package manager: ${missing[*]}" >&2
        exit 1
    fi
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { echo "install-cross-deps: run as root (or install sudo)" >&2; exit 1; }
        sudo=(sudo)
    fi
    # Wait (up to 10 min) instead of failing when another apt is running, e.g. unattended-upgrades.
    apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q)
    needs_update=0
    for pkg in "${missing[@]}"; do
        # `apt-cache show` fails for a package apt has never heard of, e.g. on a fresh container
        # whose package lists are empty: only then is `apt-get update` worth its time.
        apt-cache show "$pkg" >/dev/null 2>&1 || needs_update=1
    done
    if ((needs_update)); then
        echo "install-cross-deps: apt-get update"
        "${apt[@]}" update
    fi
    echo "install-cross-deps: apt-get install ${missing[*]}"
    "${apt[@]}" install --no-install-recommends "${missing[@]}"
fi

# --- binfmt_misc: run aarch64 programs directly -----------------------------------------------
# The agent starts its own binary again for every exec call (the mission box), so an aarch64
# agent under qemu-user needs the kernel to hand aarch64 programs to qemu by itself. Debian's
# qemu-user-static registers that at install, except in containers without systemd-binfmt:
# register it here when we can (best effort; without it, the aarch64 test says what is missing).
binfmt=/proc/sys/fs/binfmt_misc
conf=/usr/lib/binfmt.d/qemu-aarch64.conf
if [ "$(uname -m)" != aarch64 ] && [ -f "$conf" ] && [ ! -e "$binfmt/qemu-aarch64" ]; then
    [ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || true
    if [ -w "$binfmt/register" ]; then
        cat "$conf" > "$binfmt/register" 2>/dev/null || true
    fi
    if [ -e "$binfmt/qemu-aarch64" ]; then
        echo "install-cross-deps: registered qemu-aarch64 with binfmt_misc"
    else
        echo "install-cross-deps: could not register qemu-aarch64 with binfmt_misc (not root, or a container that forbids it)" >&2
    fi
fi

# --- Rust targets ----------------------------------------------------------------------------
if ! command -v rustup >/dev/null 2>&1; then
    echo "install-cross-deps: rustup not found; install Rust from https://rustup.rs" >&2
    exit 1
fi
installed=$(rustup target list --installed)
for target in "${targets[@]}"; do
    if ! grep -qx "$target" <<<"$installed"; then
        echo "install-cross-deps: rustup target add $target"
        rustup target add "$target"
    fi
done

echo "install-cross-deps: ok (${targets[*]})"
