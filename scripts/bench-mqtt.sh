#!/usr/bin/env bash
# What the MQTT bridge costs a call, in one run and one table (benches/mqtt.rs explains each
# row): the same calls through a proxy whose bridge has a healthy mosquitto, a proxy whose
# broker was stopped, and a proxy with no bridge. The budget, printed not asserted: the
# bridge rows within noise of `no bridge`.
#
#   bash scripts/bench-mqtt.sh
#   WTD_BENCH_CALLS=5000 WTD_BENCH_SESSIONS=1000 WTD_BENCH_SECS=5 WTD_BENCH_TURNS=5 bash scripts/bench-mqtt.sh
#
# Needs mosquitto (bash scripts/test.sh installs it). Builds with the release settings (the
# `bench` profile). Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || {
  echo "mosquitto is not installed: apt-get install mosquitto (or run bash scripts/test.sh)" >&2
  exit 1
}
cargo bench --bench mqtt
