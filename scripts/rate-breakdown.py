#!/usr/bin/env python3
"""Where a rate-bound job's time goes beyond its floor N / R (issue 18's rate-bound benchmark).

Reads the last JSON line of `fanout local run` on stdin (its wall time runs from the split's
start, `started_unix_ms`, to the summary), and takes the rate R and the mock API's stats
(`GET /_mock/stats`: requests per 100 ms window since its first request, and that request's
time). Splits the wall time into:
* `start_s`: the split's start to the first API call (the split, the first poll, claim, ranged
  GET and lease);
* `calls_s`: the first API call to the last, and within it the time lost below the rate
  (`ramp_lost_s` before the first window at the rate, `dips_lost_s` between, `tail_lost_s` after
  the last one, when fewer containers than the rate needs are left with work). A segment's loss is
  its duration less its calls / R;
* `finish_s`: the last call to the end (the last manifests' output and ledger writes, the
  summary, the process's exit).
wall / floor = 1 + (start + losses + finish) / floor, up to rounding to 100 ms windows.

Prints the run's JSON line with `floor_s`, `floor_ratio` and `breakdown` added.
Usage: ... | rate-breakdown.py --rate R --stats-url URL
"""

import argparse
import json
import sys
import urllib.request

WINDOW_S = 0.1
# A window counts as "at the rate" from this share of R (the limiter's windows and the mock's
# 100 ms windows do not line up, so a window at the rate can read a little under it).
AT_RATE = 0.9


def breakdown(windows, first_ms, started_ms, wall_s, rate):
    per_window = rate * WINDOW_S
    full = [i for i, n in enumerate(windows) if n >= AT_RATE * per_window]
    calls_s = len(windows) * WINDOW_S
    start_s = (first_ms - started_ms) / 1000.0

    def lost(lo, hi):
        return (hi - lo) * WINDOW_S - sum(windows[lo:hi]) / rate

    if full:
        ramp, tail = lost(0, full[0]), lost(full[-1] + 1, len(windows))
        dips = lost(full[0], full[-1] + 1)
    else:
        ramp, tail, dips = 0.0, 0.0, lost(0, len(windows))
    return {
        "start_s": round(start_s, 2),
        "calls_s": round(calls_s, 2),
        "ramp_lost_s": round(ramp, 2),
        "dips_lost_s": round(dips, 2),
        "tail_lost_s": round(tail, 2),
        "tail_windows_below_rate": len(windows) - 1 - full[-1] if full else len(windows),
        "finish_s": round(wall_s - start_s - calls_s, 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--stats-url", required=True)
    args = parser.parse_args()
    lines = sys.stdin.read().strip().splitlines()
    if not lines:
        sys.exit("rate-breakdown: no output from fanout local run")
    run = json.loads(lines[-1])
    with urllib.request.urlopen(args.stats_url, timeout=10) as r:
        stats = json.load(r)
    records = run.get("input_records") or 0
    if records and stats.get("first_request_unix_ms"):
        floor = stats["total_requests"] / args.rate
        run["floor_s"] = round(floor, 2)
        run["floor_ratio"] = round(run["wall_seconds"] / floor, 4)
        run["breakdown"] = breakdown(stats["windows_100ms"], stats["first_request_unix_ms"],
                                     run["started_unix_ms"], run["wall_seconds"], args.rate)
        b = run["breakdown"]
        print(f"  floor     {floor:>10.2f} s   wall / floor {run['floor_ratio']:.3f}: start "
              f"{b['start_s']} s, below the rate {b['ramp_lost_s']} (ramp) + {b['dips_lost_s']} "
              f"(dips) + {b['tail_lost_s']} (tail) s, finish {b['finish_s']} s", file=sys.stderr)
    print(json.dumps(run))


if __name__ == "__main__":
    main()
