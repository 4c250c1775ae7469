#!/usr/bin/env bash
# Builds the wtd image's base root filesystem (Debian arm64, under qemu-user) as a tarball:
#   image/base.sh OUT.tar SUITE
# Called by image/build.sh, which caches the result by a hash of this file, image/packages
# and image/base/ (copied into the tree before any package is installed).
set -euo pipefail
out=$1 suite=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
include=$(grep -v '^\s*#' "$here/packages" | grep -v '^\s*$' | paste -sd, -)

mmdebstrap --arch=arm64 --variant=apt --components=main,non-free-firmware \
    --include="$include" \
    --setup-hook="sync-in '$here/base' /" \
    --setup-hook='mkdir -p "$1/boot/firmware"' \
    --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*.log' \
    --customize-hook='rm -rf "$1"/usr/share/doc/*/changelog* "$1"/usr/share/man "$1"/usr/share/info' \
    --customize-hook='find "$1"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +' \
    "$suite" "$out" http://deb.debian.org/debian
