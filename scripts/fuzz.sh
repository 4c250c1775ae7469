#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a fixed time each, installing what it needs
# (a nightly toolchain through rustup, cargo-fuzz through cargo install --locked).
#
#   bash scripts/fuzz.sh            # 60 s per target
#   bash scripts/fuzz.sh 5          # 5 s per target (what scripts/test.sh runs)
#   bash scripts/fuzz.sh 600 decode_frames   # one target, 10 minutes
#
# New inputs that grow coverage go to fuzz/corpus/<target>/ (not in git). A crash is
# saved to fuzz/artifacts/<target>/ and the script fails at the end, naming it. Fix the
# bug, then keep the input in fuzz/regressions/<target>/: `cargo test -p wtd-fuzz-checks`
# replays every input there on stable Rust, so the fix stays tested without nightly.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true

# cargo-fuzz needs nightly compiler flags (sanitizers, coverage). The machine image has a
# nightly toolchain; if it does not and none can be installed, the stable compiler with
# RUSTC_BOOTSTRAP=1 accepts the same flags.
toolchain=+nightly
if ! rustup toolchain list | grep -q '^nightly' \
    && ! timeout 300 rustup toolchain install nightly --profile minimal; then
  echo "no nightly toolchain and none could be installed: fuzzing with stable and RUSTC_BOOTSTRAP=1"
  toolchain=""
  export RUSTC_BOOTSTRAP=1
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# Valid inputs to start from (signed logs, adverts): random bytes never get past a signature.
cargo run -q --locked -p wtd-fuzz-checks --bin wtd-fuzz-seeds -- fuzz/corpus

cd fuzz
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo $toolchain fuzz list)
fi

# One build for every target (the first takes a few minutes: every dependency is built
# with the address sanitizer).
cargo $toolchain fuzz build

failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "regressions/$t"
  printf '\n== fuzzing %s for %ss\n' "$t" "$seconds"
  # The first directory collects what this run finds; the kept regressions are seeds.
  # -rss_limit_mb bounds memory per input, so "decoding this costs gigabytes" is a crash.
  if ! cargo $toolchain fuzz run "$t" "corpus/$t" "regressions/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
      2>"artifacts-$t.log"; then
    tail -n 40 "artifacts-$t.log"
    failed+=("$t")
  else
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)' "artifacts-$t.log" || true
    rm -f "artifacts-$t.log"
  fi
done
# The scratch dirs of the file targets (wtd_fuzz_checks::files::scratch).
rm -rf /dev/shm/wtd-fuzz-* "${TMPDIR:-/tmp}"/wtd-fuzz-*

if [ ${#failed[@]} -gt 0 ]; then
  printf '\nfuzzing found crashes in: %s\n' "${failed[*]}"
  printf 'the inputs are in fuzz/artifacts/<target>/; replay one with\n'
  printf '  cd fuzz && cargo +nightly fuzz run <target> artifacts/<target>/<file>\n'
  printf 'fix the bug, then copy the input to fuzz/regressions/<target>/\n'
  exit 1
fi
printf '\nevery target ran %ss without a crash: %s\n' "$seconds" "${targets[*]}"
