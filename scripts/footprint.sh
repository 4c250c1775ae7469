#!/usr/bin/env bash
# Measures the agent's footprint, the numbers a 512 MB Pi Zero 2 W cares about:
#   - the stripped aarch64 `wtd` binary's size (built by scripts/build-aarch64.sh),
#   - the idle agent's resident memory with 3 missions loaded (demo, files, built-in sys):
#     in all, and its own pages (heap, stacks, its binary's), which is what the static Pi
#     build carries (it maps no shared libraries; here glibc and NSS add ~2.4 MB),
#   - the idle agent's CPU use from heartbeats, over a fixed window.
# Baseline in the same run: `sleep`, a process that does nothing, measured the same way.
#
#   bash scripts/footprint.sh [window-seconds]     (default 60)
#
# The agent runs natively here (x86_64); under qemu-user the memory figure would be
# qemu's, not the agent's. Everything listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
window=${1:-60}
cargo build --release --quiet -p wtd
wtd=$PWD/target/release/wtd
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

"$wtd" proxy --listen 127.0.0.1:0 --state-dir "$work/proxy" >"$work/proxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/proxy/ticket.txt" ] && break; sleep 0.1; done
ticket=$(cat "$work/proxy/ticket.txt")
WTD_HOME=$work/owner "$wtd" init >/dev/null
owner=$(WTD_HOME=$work/owner "$wtd" id --quiet)
mkdir -p "$work/missions"
cp examples/missions/demo.toml examples/missions/files.toml "$work/missions/"
cat >"$work/agent.toml" <<TOML
name = "footprint"
state_dir = "$work/state"
missions_dir = "$work/missions"
proxy = "$ticket"
owners = ["$owner"]
TOML
RUST_LOG=warn "$wtd" agent --config "$work/agent.toml" >"$work/agent.log" 2>&1 &
agent=$!
pids+=($agent)
sleep $((window + 30)) &
baseline=$!
pids+=($baseline)
sleep 5 # let it connect and settle

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)
a0=$(ticks $agent); b0=$(ticks $baseline)
sleep "$window"
a1=$(ticks $agent); b1=$(ticks $baseline)
cpu() { awk -v d=$(( $2 - $1 )) -v hz=$hz -v w=$window 'BEGIN { printf "%.3f", 100 * d / hz / w }'; }

size="(not built: run scripts/build-aarch64.sh)"
bin=target/aarch64-unknown-linux-musl/release/wtd
[ -f "$bin" ] && size="$(stat -c %s "$bin") bytes ($(awk -v b=$(stat -c %s "$bin") 'BEGIN{printf "%.2f", b/1e6}') MB)"

printf '\n%-34s %-22s %-22s %s\n' "measure" "wtd agent" "baseline (sleep)" "budget"
printf '%-34s %-22s %-22s %s\n' "aarch64 wtd binary, stripped" "$size" "-" "<= 6 MB"
printf '%-34s %-22s %-22s %s\n' "idle RSS now (kB)" "$(rss $agent)" "$(rss $baseline)" "-"
printf '%-34s %-22s %-22s %s\n' "peak RSS (kB)" "$(hwm $agent)" "$(hwm $baseline)" "-"
part() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
# The Pi build is one static binary: it maps no shared libraries. Here glibc, libm, ld.so,
# libgcc_s and the NSS modules (user lookups for the mission box) are mapped too, so the
# figure the Pi carries is the agent's own pages: heap, stacks and its binary's.
shared() { awk '/^[0-9a-f]+-[0-9a-f]+ /{lib = ($6 ~ /\.so/)} /^Rss:/{if (lib) s += $2} END{print s + 0}' "/proc/$1/smaps"; }
printf '%-34s %-22s %-22s %s\n' "  of which heap and stacks (kB)" "$(part $agent RssAnon)" "$(part $baseline RssAnon)" "-"
printf '%-34s %-22s %-22s %s\n' "  of which shared libraries (kB)" "$(shared $agent)" "$(shared $baseline)" "-"
printf '%-34s %-22s %-22s %s\n' "own pages, as on a Pi (kB)" "$(( $(rss $agent) - $(shared $agent) ))" "$(( $(rss $baseline) - $(shared $baseline) ))" "<= 8192"
printf '%-34s %-22s %-22s %s\n' "CPU over ${window}s (% of a core)" "$(cpu $a0 $a1)" "$(cpu $b0 $b1)" "<= 0.2"
