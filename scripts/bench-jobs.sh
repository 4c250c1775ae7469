#!/usr/bin/env bash
# Measures what a queued call (wtd push / wtd call --async) costs next to a live call, in one
# run, and prints one table (benches/jobs.rs explains each row): a warm session call, a job
# from push to verified result on a warm connection, and both as fresh processes.
#
#   bash scripts/bench-jobs.sh
#   WTD_BENCH_JOBS=500 WTD_BENCH_COLD=50 bash scripts/bench-jobs.sh
#
# Builds with the release settings (the `bench` profile); pass `--profile dev` after the
# script name to measure a debug build instead (faster to build, slower to run). Everything
# runs on 127.0.0.1 and stops by itself; every loop is bounded in count.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench jobs "$@"
