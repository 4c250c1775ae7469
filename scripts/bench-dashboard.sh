#!/usr/bin/env bash
# What the classroom dashboard costs the proxy, in one run and one table (benches/dashboard.rs
# explains each row): 50 simulated agents and 5 reported calls a second on a proxy with no
# dashboard (the baseline), with the dashboard and nobody watching, and with the page open
# in a real headless Chromium; then the page's load time, size and event-stream rate.
#
#   bash scripts/bench-dashboard.sh
#   WTD_DASH_AGENTS=50 WTD_DASH_SECS=20 bash scripts/bench-dashboard.sh
#
# Needs chromium and chromium-driver (bash scripts/test.sh installs them). Builds with the
# release settings (the `bench` profile). Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
for bin in /usr/bin/chromium /usr/bin/chromedriver; do
  [ -x "$bin" ] || { echo "$bin is missing: apt-get install chromium chromium-driver (or run bash scripts/test.sh)" >&2; exit 1; }
done
cargo bench --bench dashboard
