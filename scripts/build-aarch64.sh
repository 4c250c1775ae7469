#!/usr/bin/env bash
# Build the static aarch64 `wtd` binary for Raspberry Pis, without Docker, and prove it runs.
#
#   1. installs the cross tools if missing   (scripts/install-cross-deps.sh)
#   2. cargo build --release --target aarch64-unknown-linux-musl -p wtd
#      (linker, qemu runner and the C compiler for ring come from .cargo/config.toml)
#   3. checks the result with `file`: it must be an ARM aarch64, statically linked executable
#   4. prints its size
#   5. runs `wtd --version` (falling back to `--help`) under qemu-user as a smoke test
#
# Usage: scripts/build-aarch64.sh [extra cargo build args, e.g. --locked or --features ...]
# Honours CARGO_TARGET_DIR. Prints the binary's path as its last line, for other scripts
# (e.g. image/ builds): `bin=$(scripts/build-aarch64.sh | tail -n1)`.
set -euo pipefail

target=aarch64-unknown-linux-musl
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

say() { echo "build-aarch64: $*" >&2; }
die() { say "error: $*"; exit 1; }

"$root/scripts/install-cross-deps.sh" >&2

say "cargo build --release --target $target -p wtd $*"
cargo build --release --target "$target" -p wtd "$@" >&2

# Ask cargo where the target dir is rather than guessing (CARGO_TARGET_DIR, config, default).
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[[ -n "$target_dir" ]] || die "could not find cargo's target directory"
bin="$target_dir/$target/release/wtd"
[[ -x "$bin" ]] || die "expected a binary at $bin"

# --- what did we build? ----------------------------------------------------------------------
description=$(file -b "$bin")
say "file: $description"
[[ "$description" == *"ARM aarch64"* ]] || die "$bin is not an ARM aarch64 binary"
# Rust's musl targets produce either a classic static executable or a static PIE; both run on
# any aarch64 Linux with no libc installed. "dynamically linked" would need a loader on the Pi.
[[ "$description" == *"statically linked"* || "$description" == *"static-pie linked"* ]] ||
    die "$bin is not statically linked"

bytes=$(stat -c %s "$bin")
say "size: $bytes bytes ($(awk -v b="$bytes" 'BEGIN { printf "%.2f MB, %.2f MiB", b / 1e6, b / 1048576 }'))"

# --- smoke test under emulation --------------------------------------------------------------
run=()
if [[ $(uname -m) != aarch64 ]]; then
    for qemu in qemu-aarch64-static qemu-aarch64; do
        if command -v "$qemu" >/dev/null 2>&1; then run=("$qemu"); break; fi
    done
    ((${#run[@]})) || die "no qemu-aarch64 found to run the smoke test"
fi

smoke_ok=0
for args in --version --help; do
    say "running: ${run[*]:+${run[*]} }$bin $args"
    # A timeout keeps a future daemon-by-default main from hanging the build.
    if output=$(timeout 60 "${run[@]}" "$bin" $args 2>&1); then
        if [[ -n "$output" ]]; then
            sed 's/^/    /' <<<"$output" >&2
        else
            say "(exit 0, no output)"
        fi
        smoke_ok=1
        break
    else
        status=$?
        say "exit status $status; output:"
        sed 's/^/    /' <<<"$output" >&2
    fi
done
((smoke_ok)) || die "the aarch64 binary did not run under emulation"

say "ok"
echo "$bin"
