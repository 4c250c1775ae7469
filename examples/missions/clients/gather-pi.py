#!/usr/bin/env python3
"""Adds up the darts of every agent that answered `wtd call --all pi/darts`.

    wtd call --all pi/darts '{"darts": 200000}' | python3 gather-pi.py

`--all` prints a JSON list with one entry per agent; each entry's "output" is what that
agent's function printed (a JSON object with "darts" and "inside"). One agent's estimate
is rough; the darts of all of them together make a better one.
"""
import json
import math
import sys

try:
    answers = json.load(sys.stdin)
except ValueError:
    sys.exit("expected the JSON list that `wtd call --all pi/darts` prints")

darts = inside = 0
for answer in answers:
    if answer.get("status") != "ok":
        print(f"{answer.get('agent')}: {answer.get('status')} {answer.get('detail', '')}".rstrip())
        continue
    # `wtd call` hands on JSON output as JSON (other output as a string).
    result = answer["output"]
    if isinstance(result, str):
        result = json.loads(result)
    print(f"{answer['agent']}: {result['inside']} of {result['darts']} darts inside, pi ~ {result['estimate']:.5f}")
    darts += result["darts"]
    inside += result["inside"]

if darts == 0:
    sys.exit("no agent answered, so there are no darts to count")
estimate = 4 * inside / darts
print(f"all together: {inside} of {darts} darts inside, pi ~ {estimate:.5f} (off by {abs(estimate - math.pi):.5f})")
