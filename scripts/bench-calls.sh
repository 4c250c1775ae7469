#!/usr/bin/env bash
# Measures what a call costs, next to what the network under it costs, in one run, and
# prints one table (benches/calls.rs explains each row):
#   1. floor: a small message through a plain QUIC relay, one at a time and 16 in flight;
#   2. a live call (sys/ping) through the real proxy to the real agent: warm on one
#      session, 16 in flight on one session, 16 in flight on 16 sessions;
#   3. the same three with --receipt (signed call, signed result);
#   4. a cold `wtd call sys/ping` process, next to `wtd --version`;
#   and the CPU time per call of caller, proxy and agent for every row.
# Budgets are printed next to the numbers, not asserted:
#   warm p50 <= floor + 50 us (at worst + 100 us); 16 in flight >= max(0.5 x the floor's
#   16-in-flight rate, 25 000 calls/s); cold call < 5 ms.
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
