#!/usr/bin/env python3
"""Word count as map and reduce, across every agent that offers `wordcount`.

    python3 mapreduce.py ../texts/cluster.txt            # every online agent
    python3 mapreduce.py ../texts/cluster.txt pi-1 pi-2  # only these agents

1. split: the text is cut into one piece per agent (at line ends, so no word is cut);
2. map: every agent counts the words of its piece, all at the same time;
3. reduce: one agent merges the counts, and we print the most frequent words.

Needs `wtd` on your PATH (or WTD=/path/to/wtd).
"""
import json
import os
import subprocess
import sys

WTD = os.environ.get("WTD", "wtd")


def wtd(*args):
    """Starts `wtd args...`; returns the running process (read it with .communicate())."""
    return subprocess.Popen([WTD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def agents_offering(mission):
    out, _ = wtd("ls", "--json").communicate()
    return [a["name"] for a in json.loads(out or "[]") if any(m["name"] == mission for m in a["missions"])]


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: python3 mapreduce.py FILE [AGENT...]")
    with open(sys.argv[1], encoding="utf-8") as f:
        lines = f.readlines()
    agents = sys.argv[2:] or agents_offering("wordcount")
    if not agents:
        sys.exit("no online agent offers the wordcount mission (see wtd ls)")

    # Split: piece i gets lines i*n/k to (i+1)*n/k.
    k = len(agents)
    pieces = ["".join(lines[len(lines) * i // k : len(lines) * (i + 1) // k]) for i in range(k)]

    # Map: start every call before waiting for any, so they run at once.
    calls = [wtd("call", "--agent", agent, "wordcount/map", json.dumps({"text": piece})) for agent, piece in zip(agents, pieces)]
    parts = []
    for agent, call in zip(agents, calls):
        out, err = call.communicate()
        if call.returncode != 0:
            sys.exit(f"map on {agent} failed: {err.strip()}")
        part = json.loads(out)
        print(f"map    on {agent}: {part['words']} words, {len(part['counts'])} different")
        parts.append(part)

    # Reduce: one call (on the least-loaded agent) merges every part.
    call = wtd("call", "--json", "wordcount/reduce", json.dumps({"parts": parts, "top": 5}))
    out, err = call.communicate()
    if call.returncode != 0:
        sys.exit(f"reduce failed: {err.strip()}")
    envelope = json.loads(out)
    # `--json` hands on JSON output as JSON (other output as a string).
    result = envelope["output"]
    if isinstance(result, str):
        result = json.loads(result)
    print(f"reduce on {envelope['agent']}: {result['words']} words, {result['distinct']} different")
    for word, n in result["top"]:
        print(f"  {n:4}  {word}")


if __name__ == "__main__":
    main()
