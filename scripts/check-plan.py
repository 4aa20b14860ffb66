#!/usr/bin/env python3
"""Checks `fanout plan`'s model against measured local jobs: predicted vs measured duration and
request counts (API calls, manifests, worker invocations, rate-limit lease writes), each within
10% (issue 18).

Each scenario runs a job through `fanout local run` (the handlers of Lambda, WORKERS simulated
containers in one process) against the mock API at a known latency, then asks `fanout plan` for
the same job (the same input file, pipeline, latency and containers) and compares. What the local
run is told about is what a plan is told about a deployed stack; two inputs are the local
machine's own:
* `--memory-mb`: the simulated containers share this machine's cores, so each is planned with
  the memory that buys its share of them (1,769 MB per vCPU);
* `--start-secs 1`: there is no S3 event to wait for locally, only the split and the first poll.
And `--cpu-us-per-record` is docs/PERFORMANCE.md's measured figure.

The scenarios, each 20-40 s:
* `rate-bound`: 60,000 records at 2,000/s, 8 containers, 64 in flight each, latency 20-80 ms;
* `in-flight-bound`: no rate limit to speak of, 4 containers of 16 in flight at 50 ms (320 calls/s
  each), 11 manifests, so the last round has a container idle (the tail);
* `batch`: 100,000 records in calls of 25, the limit (5,000/s) counting records.

Run it on the local stack: scripts/with-stack.sh scripts/check-plan.py [--only NAME]; exits 1 if
any figure is off by more than 10%. Last line: one JSON object.
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

TOLERANCE = 0.10
# docs/PERFORMANCE.md: about 50 µs of CPU per record in the release build.
CPU_US_PER_RECORD = 50.0
LOCAL_START_SECS = 1.0

DEMO_INPUT = benchlib.DEMO_INPUT
DEMO_CALL = benchlib.DEMO_INPUT + benchlib.DEMO_REQUEST

SCENARIOS = [
    {
        "name": "rate-bound",
        "records": 60_000,
        "workers": 8,
        "latency": "20-80",
        "latency_mean": 50.0,
        "pipeline": DEMO_CALL + """\
client:
  concurrency: 64
  rate_limit_name: check-plan-rate
  rate_limit_per_sec: 2000
split:
  chunk_bytes: 262144
""",
    },
    {
        "name": "in-flight-bound",
        "records": 32_000,
        "workers": 4,
        "latency": "50",
        "latency_mean": 50.0,
        "pipeline": DEMO_CALL + """\
client:
  concurrency: 16
  concurrency_min: 16
  rate_limit_name: check-plan-inflight
  rate_limit_per_sec: 2000
split:
  chunk_bytes: 131072
""",
    },
    {
        "name": "batch",
        "records": 100_000,
        "workers": 8,
        "latency": "20-80",
        "latency_mean": 50.0,
        "pipeline": DEMO_INPUT + """\
request:
  method: POST
  url: "{{API_BASE_URL}}/batch/users"
  body: { id: "{id}", name: "{name}" }
batch: { size: 25, wrap: items, results: /results }
client:
  concurrency: 16
  rate_limit_name: check-plan-batch
  rate_limit_per_sec: 5000
  rate_limit_counts: records
split:
  chunk_bytes: 524288
""",
    },
]


def within(predicted, measured):
    if measured == 0:
        return predicted == 0
    return abs(predicted - measured) / measured <= TOLERANCE


def run_scenario(s):
    data = benchlib.demo_records(s["records"])
    pipeline = os.path.join(benchlib.LOCAL, f"check-plan-{s['name']}.yaml")
    with open(pipeline, "w") as f:
        f.write(s["pipeline"])
    with benchlib.Mock("--latency-ms", s["latency"], log_name="check-plan-mock.log") as mock:
        summary, _, _ = benchlib.local_run(
            data, pipeline, f"check-plan-{s['name']}", mock.url, s["workers"])
        stats = mock.stats()
    if summary.get("succeeded") != s["records"]:
        sys.exit(f"check-plan {s['name']}: {summary.get('succeeded')} of {s['records']} "
                 f"records succeeded: {summary}")
    cores = os.cpu_count() or 1
    memory_mb = int(1769 * cores / s["workers"])
    planned = subprocess.run(
        [f"{benchlib.BIN}/fanout", "plan", "--input", data, "--pipeline", pipeline,
         "--latency-ms", str(s["latency_mean"]), "--reserved-concurrency", str(s["workers"]),
         "--memory-mb", str(memory_mb), "--cpu-us-per-record", str(CPU_US_PER_RECORD),
         "--start-secs", str(LOCAL_START_SECS), "--json"],
        check=True, capture_output=True, text=True,
    )
    plan = json.loads(planned.stdout)["plan"]
    rows = {
        "duration_s": (plan["duration_secs"], summary["wall_seconds"]),
        "api_calls": (plan["requests"]["api_calls"], stats["total_requests"]),
        "manifests": (plan["manifests"], summary["manifests"]),
        "worker_invocations": (plan["requests"]["lambda_invocations"] - 1,
                               summary["worker_invocations"]),
        "lease_writes": (plan["requests"]["lease_writes"], summary["ddb_lease_writes"]),
    }
    result = {"scenario": s["name"], "records": s["records"], "workers": s["workers"],
              "bound": plan["job_bound"], "latency_ms_seen": summary.get("latency_ms"),
              "ok": True}
    for name, (predicted, measured) in rows.items():
        ok = within(predicted, measured)
        result["ok"] &= ok
        result[name] = {"predicted": round(predicted, 1), "measured": measured,
                        "within_10pct": ok}
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="one scenario by name")
    args = parser.parse_args()
    benchlib.need_stack("check-plan")
    scenarios = [s for s in SCENARIOS if args.only in (None, s["name"])]
    if not scenarios:
        sys.exit(f"check-plan: no scenario {args.only!r}")
    results = []
    for s in scenarios:
        r = run_scenario(s)
        results.append(r)
        cells = "  ".join(
            f"{k} {v['predicted']:g}/{v['measured']:g}{'' if v['within_10pct'] else ' OFF'}"
            for k, v in r.items() if isinstance(v, dict) and "predicted" in v)
        print(f"{r['scenario']:>16} ({r['bound']}): predicted/measured  {cells}", file=sys.stderr)
    ok = all(r["ok"] for r in results)
    print(json.dumps({"scenarios": results, "all_within_10pct": ok}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
