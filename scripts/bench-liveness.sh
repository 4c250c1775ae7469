#!/usr/bin/env bash
# Measures the liveness budgets of the issue "Agents and the discovery proxy", with the
# default configuration, on this machine:
#   - an agent killed with SIGKILL disappears from the roster within 3 s,
#   - an agent stopped with SIGTERM disappears within 0.5 s,
#   - after a proxy restart, every agent is back within 5 s.
# Times come from `wtd ls --watch --json` (one event per line), stamped as they arrive.
# Baseline in the same run: the time from starting a fresh agent to its first appearance.
#
#   bash scripts/bench-liveness.sh [rounds]     (default 3)
#
# Everything runs on 127.0.0.1 and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
cargo build --release --quiet -p wtd
wtd=$PWD/target/release/wtd
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
now() { date +%s.%N; }
export WTD_HOME=$work/owner
"$wtd" init >/dev/null
owner=$("$wtd" id --quiet)

start_proxy() { # port
  rm -f "$work/proxy/ticket.txt"
  "$wtd" proxy --listen "127.0.0.1:$1" --state-dir "$work/proxy" >>"$work/proxy.log" 2>&1 &
  proxy=$!; pids+=($proxy)
  for _ in $(seq 200); do [ -s "$work/proxy/ticket.txt" ] && break; sleep 0.05; done
}
start_watch() {
  ( "$wtd" ls --watch --json 2>/dev/null | while IFS= read -r line; do echo "$(now) $line"; done ) >>"$work/events" &
  pids+=($!)
  sleep 0.5
}
start_agent() { # name
  mkdir -p "$work/$1"
  cat >"$work/$1/agent.toml" <<TOML
name = "$1"
state_dir = "$work/$1/state"
missions_dir = "$work/$1/missions"
proxy = "$(cat "$work/proxy/ticket.txt")"
owners = ["$owner"]
TOML
  RUST_LOG=warn "$wtd" agent --config "$work/$1/agent.toml" >>"$work/$1.log" 2>&1 &
  agent_pid=$!; pids+=($agent_pid)
}
# Seconds from $2 (a timestamp) to the first event line after it matching $1.
after() {
  awk -v t0="$2" -v pat="$1" '$1 >= t0 && index($0, pat) { printf "%.3f", $1 - t0; found=1; exit } END { if (!found) print "none" }' "$work/events"
}
wait_event() { # pattern t0
  for _ in $(seq 200); do [ "$(after "$1" "$2")" != none ] && return; sleep 0.05; done
}

start_proxy 0
port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$work/proxy.log" | head -1)
"$wtd" join "$(cat "$work/proxy/ticket.txt")" >/dev/null
start_watch

join=(); sigkill=(); sigterm=(); restart=()
for r in $(seq "$rounds"); do
  t0=$(now); start_agent "a$r"; wait_event "\"name\":\"a$r\"" "$t0"; join+=("$(after "\"name\":\"a$r\"" "$t0")")
  id=$(WTD_HOME=$work/a$r/state true; "$wtd" ls --json | grep -B2 "\"name\": \"a$r\"" | sed -n 's/.*"id": "\(wtd1[a-z0-9]*\)".*/\1/p' | head -1)
  t0=$(now); kill -KILL "$agent_pid"; wait_event "\"left\":{\"id\":\"$id\"" "$t0"; sigkill+=("$(after "\"left\":{\"id\":\"$id\"" "$t0")")

  t0=$(now); start_agent "b$r"; wait_event "\"name\":\"b$r\"" "$t0"
  id=$("$wtd" ls --json | grep -B2 "\"name\": \"b$r\"" | sed -n 's/.*"id": "\(wtd1[a-z0-9]*\)".*/\1/p' | head -1)
  t0=$(now); kill -TERM "$agent_pid"; wait_event "\"left\":{\"id\":\"$id\"" "$t0"; sigterm+=("$(after "\"left\":{\"id\":\"$id\"" "$t0")")
done

# Proxy restarts with three agents connected.
for n in 1 2 3; do start_agent "c$n"; done
sleep 2
for r in $(seq "$rounds"); do
  kill -KILL "$proxy"; t0=$(now); start_proxy "$port"
  for _ in $(seq 200); do [ "$("$wtd" ls --json 2>/dev/null | grep -c '"name": "c')" = 3 ] && break; sleep 0.05; done
  restart+=("$(awk -v t0="$t0" -v n="$(date +%s.%N)" 'BEGIN { printf "%.3f", n - t0 }')")
  # A new proxy means a new watch stream.
  start_watch
done

row() { printf '%-44s %-28s %s\n' "$1" "$2" "$3"; }
echo
row "measure (seconds, $rounds rounds)" "each round" "budget"
row "baseline: fresh agent start -> in roster" "${join[*]}" "-"
row "SIGKILL -> gone from roster" "${sigkill[*]}" "<= 3"
row "SIGTERM -> gone from roster" "${sigterm[*]}" "<= 0.5"
row "proxy restart -> all 3 agents back" "${restart[*]}" "<= 5"
