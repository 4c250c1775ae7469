#!/usr/bin/env bash
# Soak: a real cluster (one `wtd proxy`, several `wtd agent`s, all real processes on
# 127.0.0.1) under a mix of calls while agents are restarted, for a fixed time.
#
#   bash scripts/soak.sh                  # 30 minutes
#   bash scripts/soak.sh --seconds 60     # what `bash scripts/test.sh` runs (tests/soak.rs)
#   bash scripts/soak.sh --agents 4 --bin target/release/wtd --keep
#
# The mix, one call after another, as people at terminals would make them:
#   - `wtd call demo/echo` with a unique payload: the output must be exactly the payload;
#   - `wtd call --all demo/echo`: every agent that answers must answer the payload;
#   - `wtd call --receipt --json demo/echo`: the output must be the payload, and
#     `wtd receipts check` must accept the receipt kept;
#   - a grant and its revocation: Alice grants a new person `demo`; once it works, she
#     revokes it; once every agent refuses, no agent may ever accept it again;
#   - restarts: every agent but the first is restarted in turn, alternately with kill -9 and
#     with a clean SIGTERM, while the calls go on.
#
# It fails (exit 1) if any answer is wrong, a revocation is lost, an agent does not come
# back, fewer than half the echo calls succeed, or the proxy's or the first agent's memory
# (RSS) grows more than 10 % between the warmed-up start (the largest RSS seen in the first
# tenth of the run, at least 15 s) and the end. Calls that fail honestly while an agent
# restarts (exit 4 unreachable, 5 timeout, 6 may have run, 7 some agents did not answer)
# are counted, not failures. Everything it starts is stopped by PID when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }

secs=1800
agents=3
bin="${WTD_BIN:-target/debug/wtd}"
keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) secs="$2"; shift 2 ;;
    --agents) agents="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "soak.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$secs" in '' | *[!0-9]*) echo "soak.sh: --seconds takes a whole number of seconds" >&2; exit 2 ;; esac
[ "$agents" -ge 2 ] 2>/dev/null || { echo "soak.sh: --agents must be at least 2 (one restarts while the others serve)" >&2; exit 2; }
[ -x "$bin" ] || { echo "soak.sh: no wtd binary at $bin; build it (cargo build) or pass --bin" >&2; exit 2; }
command -v jq >/dev/null || { echo "soak.sh: needs jq (apt-get install jq)" >&2; exit 2; }
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

work="$(mktemp -d -t wtd-soak.XXXXXX)"
chmod 755 "$work"
proxy_pid=""
restarter_pid=""
failed=0

cleanup() {
  set +e
  # The restarter first, so it starts nothing more; then what it and we started.
  [ -n "$restarter_pid" ] && kill -9 "$restarter_pid" 2>/dev/null && wait "$restarter_pid" 2>/dev/null
  for f in "$work"/agent-*/pid; do
    [ -s "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
  done
  [ -n "$proxy_pid" ] && kill -9 "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null
  if [ -n "$keep" ] || [ "$failed" -ne 0 ]; then
    echo "soak.sh: logs kept in $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

say() { printf '%s [%4ds] %s\n' "$(date +%H:%M:%S)" "$(($(date +%s) - t0))" "$*"; }
# Also called from the restarter (a subshell): the file is what counts.
wrong() { failed=1; say "WRONG: $*"; echo "$*" >>"$work/wrong.txt"; }
# Runs wtd as `who`; its chatter on stderr goes to cli.log (callers keep their own).
as() { local who="$1"; shift; WTD_HOME="$work/$who" RUST_LOG="" "$bin" "$@" 2>>"$work/cli.log"; }
call_as() { local who="$1"; shift; WTD_HOME="$work/$who" RUST_LOG="" "$bin" "$@"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
t0=$(date +%s)

# --- the cluster --------------------------------------------------------------------------
"$bin" proxy --listen 127.0.0.1:0 --state-dir "$work/proxy" >"$work/proxy.log" 2>&1 &
proxy_pid=$!
for _ in $(seq 200); do [ -s "$work/proxy/ticket.txt" ] && break; sleep 0.1; done
[ -s "$work/proxy/ticket.txt" ] || { failed=1; echo "soak.sh: the proxy did not start (see $work/proxy.log)" >&2; exit 1; }
ticket="$(cat "$work/proxy/ticket.txt")"

as alice init >/dev/null
as alice join "$ticket" >/dev/null
alice_id="$(as alice id --quiet)"
as bob init >/dev/null
as bob join "$ticket" >/dev/null
as alice keys add bob "$(as bob id --quiet)" >/dev/null
bob_grant="$(as alice grant bob --mission demo --rate 100000/min --burst 10000 --concurrency 16 --expires 24h --json)"
as bob grants import "$(jq -r .ticket <<<"$bob_grant")" >/dev/null

start_agent() {
  local i="$1" dir="$work/agent-$1"
  WTD_HOME="$dir" RUST_LOG=info "$bin" agent --config "$dir/agent.toml" >>"$dir/agent.log" 2>&1 &
  echo $! >"$dir/pid"
  # Not a job of this shell: no "Killed" notices when the restarter kills it.
  disown $!
}
gone() { ! kill -0 "$1" 2>/dev/null; }
agent_pid() { cat "$work/agent-$1/pid"; }
for i in $(seq 0 $((agents - 1))); do
  dir="$work/agent-$i"
  mkdir -p "$dir/missions"
  cp examples/missions/demo.toml "$dir/missions/"
  cat >"$dir/agent.toml" <<EOF
name = "soak-$i"
state_dir = "$dir/state"
missions_dir = "$dir/missions"
proxy = "$ticket"
owners = ["$alice_id"]
EOF
  start_agent "$i"
done
for i in $(seq 0 $((agents - 1))); do
  key="$work/agent-$i/state/identity.key"
  for _ in $(seq 200); do [ -s "$key" ] && break; sleep 0.1; done
  # The agent's identity is a key file like a person's: `wtd id` reads it.
  as alice adopt "$(WTD_HOME="$work/agent-$i/state" "$bin" id --quiet)" >/dev/null
done

online() { as alice ls --json 2>/dev/null | jq 'length' 2>/dev/null || echo 0; }
wait_online() {
  local want="$1" limit="$2"
  for _ in $(seq $((limit * 5))); do [ "$(online)" -ge "$want" ] && return 0; sleep 0.2; done
  return 1
}
wait_online "$agents" 60 || { wrong "not every agent joined within 60 s"; exit 1; }
say "cluster up: a proxy and $agents agents; soaking for $secs s"

# --- the mix ------------------------------------------------------------------------------
declare -A count
for k in echo_ok echo_fail all_ok all_fail receipt_ok receipt_fail grants revocations restarts; do count[$k]=0; done
bites=()
end=$((t0 + secs))
warm_until=$((t0 + (secs / 10 > 15 ? secs / 10 : 15)))
restart_every=$((secs / 5 < 10 ? 10 : (secs / 5 > 30 ? 30 : secs / 5)))
next_grant=$((t0 + 5))
restart_turn=0
base_proxy=0
base_agent=0
n=0
printf 'seconds\tproxy_rss_kb\tagent0_rss_kb\n' >"$work/memory.tsv"

payload() { jq -cn --argjson n "$n" --arg r "$RANDOM$RANDOM" '{n: $n, r: $r}'; }
same() { [ "$(jq -cS . <<<"$1" 2>/dev/null)" = "$(jq -cS . <<<"$2")" ]; }
honest_failure() { case "$1" in 4 | 5 | 6 | 7) return 0 ;; *) return 1 ;; esac; }

echo_call() {
  local p out rc=0
  p="$(payload)"
  out="$(call_as bob call demo/echo "$p" 2>>"$work/calls.err")" || rc=$?
  if [ "$rc" -eq 0 ]; then
    same "$out" "$p" && count[echo_ok]=$((count[echo_ok] + 1)) || wrong "demo/echo of $p answered $out"
  elif honest_failure "$rc"; then
    count[echo_fail]=$((count[echo_fail] + 1))
  else
    wrong "demo/echo of $p exited $rc: $(tail -n 1 "$work/calls.err")"
  fi
}

all_call() {
  local p out rc=0 bad
  p="$(payload)"
  out="$(call_as bob call --all demo/echo "$p" 2>>"$work/calls.err")" || rc=$?
  if [ "$rc" -ne 0 ] && ! honest_failure "$rc"; then
    wrong "--all demo/echo of $p exited $rc: $(tail -n 1 "$work/calls.err")"
    return
  fi
  # Whatever came back must be right, even when some agents did not answer.
  bad="$(jq -c --argjson p "$p" '[.[] | select(.status != "ok" or .output != $p)]' <<<"${out:-[]}" 2>/dev/null || echo parse)"
  if [ "$bad" != "[]" ]; then
    wrong "--all demo/echo of $p answered $out"
  elif [ "$rc" -eq 0 ]; then
    count[all_ok]=$((count[all_ok] + 1))
  else
    count[all_fail]=$((count[all_fail] + 1))
  fi
}

receipt_call() {
  local p out rc=0 id
  p="$(payload)"
  out="$(call_as bob call --receipt --json demo/echo "$p" 2>>"$work/calls.err")" || rc=$?
  if [ "$rc" -ne 0 ]; then
    honest_failure "$rc" && count[receipt_fail]=$((count[receipt_fail] + 1)) ||
      wrong "--receipt demo/echo of $p exited $rc: $(tail -n 1 "$work/calls.err")"
    return
  fi
  id="$(jq -r '.receipt // empty' <<<"$out")"
  if ! same "$(jq -c .output <<<"$out")" "$p"; then
    wrong "--receipt demo/echo of $p answered $out"
  elif [ -z "$id" ]; then
    wrong "--receipt demo/echo of $p came back without a receipt: $out"
  elif ! call_as bob receipts check "$id" >/dev/null 2>>"$work/calls.err"; then
    wrong "the receipt $id of $p does not check: $(tail -n 1 "$work/calls.err")"
  else
    count[receipt_ok]=$((count[receipt_ok] + 1))
  fi
}

# Counts the agents that ran `who`'s call (0 when every agent refused or none answered).
accepted_by() {
  local out
  out="$(call_as "$1" call --all demo/echo '{"probe":true}' 2>/dev/null)" || true
  jq '[.[] | select(.status == "ok")] | length' <<<"${out:-[]}" 2>/dev/null || echo 0
}

grant_cycle() {
  local who="carol-$n" g gid t_rev deadline ok=""
  as "$who" init >/dev/null
  as "$who" join "$ticket" >/dev/null
  as alice keys add "$who" "$(as "$who" id --quiet)" >/dev/null
  g="$(as alice grant "$who" --mission demo --rate 1000/min --expires 1h --json)"
  gid="$(jq -r .grant_id <<<"$g")"
  as "$who" grants import "$(jq -r .ticket <<<"$g")" >/dev/null
  count[grants]=$((count[grants] + 1))
  deadline=$(($(date +%s) + 30))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if [ "$(accepted_by "$who")" -gt 0 ]; then ok=1; break; fi
    sleep 0.2
  done
  [ -n "$ok" ] || { wrong "a grant to $who never worked within 30 s"; return; }
  as alice revoke "$gid" >/dev/null
  count[revocations]=$((count[revocations] + 1))
  t_rev=$(date +%s%N)
  deadline=$(($(date +%s) + 30))
  ok=""
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if [ "$(accepted_by "$who")" -eq 0 ] && [ "$(online)" -ge 1 ]; then ok=1; break; fi
    sleep 0.2
  done
  [ -n "$ok" ] || { wrong "the revocation of $gid did not bite within 30 s"; return; }
  bites+=($((($(date +%s%N) - t_rev) / 1000000)))
  # Remembered for the rest of the run: no agent may accept it again, restarted or not.
  echo "$who" >>"$work/revoked.txt"
}

recheck_revoked() {
  [ -s "$work/revoked.txt" ] || return 0
  local who
  who="$(shuf -n 1 "$work/revoked.txt")"
  [ "$(accepted_by "$who")" -eq 0 ] || wrong "an agent accepted $who's call after the revocation bit (a revocation was lost)"
}

restart_one() {
  local i=$((1 + restart_turn % (agents - 1))) how
  local pid
  pid="$(agent_pid "$i")"
  if [ $((restart_turn % 2)) -eq 0 ]; then
    how="kill -9"
    kill -9 "$pid"
    for _ in $(seq 100); do gone "$pid" && break; sleep 0.1; done
  else
    how="SIGTERM"
    kill -TERM "$pid"
    for _ in $(seq 100); do gone "$pid" && break; sleep 0.1; done
    if ! gone "$pid"; then
      wrong "soak-$i did not stop within 10 s of SIGTERM"
      kill -9 "$pid"
    fi
  fi
  start_agent "$i"
  restart_turn=$((restart_turn + 1))
  echo "soak-$i $how" >>"$work/restarts.txt"
  say "restarted soak-$i ($how)"
}

# Restarts run on their own clock, so they land in the middle of calls.
restarter() {
  while sleep "$restart_every" && [ "$(date +%s)" -lt "$((end - 5))" ]; do
    restart_one
  done
}

restarter &
restarter_pid=$!
while [ "$(date +%s)" -lt "$end" ]; do
  n=$((n + 1))
  now=$(date +%s)
  case $((n % 10)) in
    7) all_call ;;
    8) receipt_call ;;
    9) recheck_revoked; echo_call ;;
    *) echo_call ;;
  esac
  if [ "$now" -ge "$next_grant" ]; then
    grant_cycle
    next_grant=$(($(date +%s) + restart_every))
  fi
  p_rss=$(rss_kb "$proxy_pid")
  a_rss=$(rss_kb "$(agent_pid 0)")
  printf '%s\t%s\t%s\n' "$((now - t0))" "$p_rss" "$a_rss" >>"$work/memory.tsv"
  if [ "$now" -lt "$warm_until" ]; then
    [ "$p_rss" -gt "$base_proxy" ] && base_proxy=$p_rss
    [ "$a_rss" -gt "$base_agent" ] && base_agent=$a_rss
  fi
  if (( n % 100 == 0 )); then
    say "$n calls: echo ${count[echo_ok]} ok / ${count[echo_fail]} failed, proxy ${p_rss} kB, soak-0 ${a_rss} kB"
  fi
done

# --- the end ------------------------------------------------------------------------------
wait "$restarter_pid" 2>/dev/null || true
restarter_pid=""
count[restarts]=$(wc -l <"$work/restarts.txt" 2>/dev/null || echo 0)
[ -s "$work/wrong.txt" ] && failed=1
wait_online "$agents" 60 || wrong "not every agent came back within 60 s of the end ($(online) of $agents online)"
recheck_revoked
end_proxy=$(rss_kb "$proxy_pid")
end_agent=$(rss_kb "$(agent_pid 0)")
growth() { awk -v a="$1" -v b="$2" 'BEGIN { if (a <= 0) print "n/a"; else printf "%+.1f", (b - a) * 100 / a }'; }
over() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > 0 && b > a * 1.10) }'; }
total_echo=$((count[echo_ok] + count[echo_fail]))
bite_max=0
for b in "${bites[@]}"; do [ "$b" -gt "$bite_max" ] && bite_max=$b; done

echo
echo "Soak of $secs s: a proxy and $agents agents ($bin)"
echo
echo "| what | done | failed honestly (exit 4-7) |"
echo "|---|---|---|"
echo "| demo/echo, output checked | ${count[echo_ok]} | ${count[echo_fail]} |"
echo "| --all demo/echo, every answer checked | ${count[all_ok]} | ${count[all_fail]} |"
echo "| --receipt demo/echo, receipt checked | ${count[receipt_ok]} | ${count[receipt_fail]} |"
echo "| grants that worked, then revoked and refused by every agent | ${count[revocations]} (slowest bite ${bite_max} ms) | - |"
echo "| agent restarts (kill -9 and SIGTERM in turn) | ${count[restarts]} | - |"
echo
echo "| process | RSS warmed up (max, first $((warm_until - t0)) s) | RSS at the end | growth |"
echo "|---|---|---|---|"
echo "| proxy | $base_proxy kB | $end_proxy kB | $(growth "$base_proxy" "$end_proxy") % |"
echo "| soak-0 (never restarted) | $base_agent kB | $end_agent kB | $(growth "$base_agent" "$end_agent") % |"
echo
if over "$base_proxy" "$end_proxy"; then wrong "the proxy's memory grew more than 10 % ($base_proxy -> $end_proxy kB)"; fi
if over "$base_agent" "$end_agent"; then wrong "soak-0's memory grew more than 10 % ($base_agent -> $end_agent kB)"; fi
if [ "$total_echo" -eq 0 ] || [ $((count[echo_ok] * 2)) -lt "$total_echo" ]; then
  wrong "fewer than half the echo calls succeeded (${count[echo_ok]} of $total_echo)"
fi
if [ "${count[revocations]}" -eq 0 ]; then wrong "no grant and revocation cycle completed"; fi
if [ "${count[restarts]}" -eq 0 ]; then wrong "no agent was restarted (run longer than $restart_every s)"; fi
if [ "$failed" -ne 0 ]; then
  echo "soak.sh: FAILED:"
  sed 's/^/  - /' "$work/wrong.txt"
  exit 1
fi
echo "soak.sh: every answer was right, nothing was lost, memory stayed within 10 %"
