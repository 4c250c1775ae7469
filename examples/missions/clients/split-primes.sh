#!/bin/sh
# Counts the primes below N by splitting [0, N) into one range per agent, calling
# `primes/count` on every agent at the same time, and adding up their counts.
#
#   sh split-primes.sh 1000000              # every online agent that offers `primes`
#   sh split-primes.sh 1000000 pi-1 pi-3    # only these agents
#
# Needs `wtd` on your PATH (or WTD=/path/to/wtd) and python3 (to read JSON).
set -eu

wtd=${WTD:-wtd}
if [ $# -lt 1 ]; then
    echo "usage: sh split-primes.sh N [AGENT...]   (counts the primes below N)" >&2
    exit 2
fi
n=$1
shift
case $n in
    '' | *[!0-9]*) echo "N must be a whole number, like 1000000" >&2; exit 2 ;;
esac

if [ $# -eq 0 ]; then
    # Every online agent whose advert lists the `primes` mission, by name.
    set -- $("$wtd" ls --json | python3 -c '
import json, sys
for agent in json.load(sys.stdin):
    if any(m["name"] == "primes" for m in agent["missions"]):
        print(agent["name"])')
fi
if [ $# -eq 0 ]; then
    echo "no online agent offers the primes mission (see wtd ls)" >&2
    exit 1
fi

# One range per agent: [0, n/k), [n/k, 2n/k), ... the last one ends at n.
k=$#
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
i=0
for agent in "$@"; do
    from=$((n * i / k))
    to=$((n * (i + 1) / k))
    echo "$agent counts [$from, $to)"
    # `&`: all the calls run at once, each on its own agent.
    "$wtd" call --agent "$agent" primes/count "{\"from\": $from, \"to\": $to}" \
        >"$work/$i.out" 2>"$work/$i.err" &
    i=$((i + 1))
done
failed=0
wait || failed=1

# Add up, in the order the ranges were handed out.
i=0
total=0
for agent in "$@"; do
    if ! count=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["count"])' <"$work/$i.out" 2>/dev/null); then
        echo "$agent failed:" >&2
        grep -v '^\[' "$work/$i.err" >&2 || true
        failed=1
    else
        echo "$agent found $count"
        total=$((total + count))
    fi
    i=$((i + 1))
done
if [ $failed -ne 0 ]; then
    echo "some ranges were not counted, so there is no total" >&2
    exit 1
fi
echo "primes below $n: $total"
