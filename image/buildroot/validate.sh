#!/usr/bin/env bash
# Checks the BR2_EXTERNAL tree offline against a Buildroot checkout, without downloading or
# building anything:
#
#   bash image/buildroot/validate.sh /path/to/buildroot
#
# For each configs/*_defconfig: `make BR2_EXTERNAL=... O=<tmp> <defconfig>` must work, and
# every line of the defconfig must appear in the resulting .config (Kconfig silently drops a
# symbol whose dependencies are not met, or that does not exist). Needs make and a host C
# compiler (Kconfig's `conf` is built from source). Run by hand (CI has no Buildroot tree).
set -euo pipefail
br=${1:?usage: validate.sh BUILDROOT_DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -f $br/Makefile && -d $br/package ]] || { echo "validate: $br is not a Buildroot tree" >&2; exit 1; }
fail=0
for defconfig in "$here"/configs/*_defconfig; do
    name=$(basename "$defconfig")
    out=$(mktemp -d)
    if ! make -s -C "$br" O="$out" BR2_EXTERNAL="$here" "$name" >"$out/make.log" 2>&1; then
        echo "FAIL $name: make $name failed:"; sed 's/^/    /' "$out/make.log"; fail=1; continue
    fi
    missing=0
    while IFS= read -r line; do
        [[ -z $line || ( $line == \#* && $line != "# BR2_"*" is not set" ) ]] && continue
        if ! grep -qxF -- "$line" "$out/.config"; then
            echo "FAIL $name: not in .config: $line"
            missing=1
        fi
    done <"$defconfig"
    if ((missing)); then fail=1; else echo "ok   $name: $(grep -c '^BR2_' "$defconfig") lines, all in .config"; fi
    rm -rf "$out"
done
exit $fail
