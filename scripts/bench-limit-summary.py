#!/usr/bin/env python3
"""Folds the scenario lines of `make bench-limit` into one JSON line, appended to the file and
printed: the steady scenario's figures at the top level, every other scenario nested under its
name (without its per-second series, which stay in the scenario's own line)."""
import json
import sys

path = sys.argv[1]
with open(path) as f:
    lines = [json.loads(line) for line in f if line.strip()]
scenarios = {line["scenario"]: line for line in lines if "scenario" in line}
if "steady" not in scenarios:
    sys.exit(f"{path}: no steady scenario; did the limit test run?")
summary = dict(scenarios["steady"])
for name, figures in scenarios.items():
    if name != "steady":
        summary[name] = {k: v for k, v in figures.items() if not isinstance(v, list)}
line = json.dumps(summary)
with open(path, "a") as f:
    f.write(line + "\n")
print(line)
