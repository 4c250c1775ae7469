#!/usr/bin/env bash
# Measures what a signed call costs, next to what the network under it costs, and prints
# one table (benches/calls.rs explains each row):
#   1. floor: a small message through a plain QUIC relay, warm stream;
#   2. a warm signed call (sys/ping) through the real proxy to the real agent, one session;
#   3. calls per second with 16 in flight;
#   4. a cold `wtd call sys/ping` process, next to `wtd --version`.
# Budgets are printed next to the numbers, not asserted:
#   warm p50 <= floor + 100 us; >= 20 000 calls/s with 16 in flight; cold call < 15 ms.
#
#   bash scripts/bench-calls.sh
#   WTD_BENCH_CALLS=5000 WTD_BENCH_SECS=5 WTD_BENCH_COLD=20 bash scripts/bench-calls.sh
#
# Builds with the release settings (the `bench` profile), which takes a few minutes the
# first time; set CARGO_TARGET_DIR to keep these builds apart from everyday ones. Everything
# runs on 127.0.0.1 and stops by itself; every loop is bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench calls
