#!/usr/bin/env python3
"""CPU-bound benchmark: records per CPU-second of the `fanout` process with no rate limit.

Runs RECORDS records (the demo's CSV shape) through `fanout local run` (the splitter and every
simulated worker container in one process, the same handlers as Lambda) against the mock API
answering at once, with the fleet limit at its maximum (1,000,000/s). The CPU time is the
process's own (user + system, from wait4), so the local AWS and the mock API, which run in other
processes, are not counted. Last line: one JSON object.

Run it on the local stack: scripts/with-stack.sh scripts/bench-cpu.py [--records N] [--workers N]
(`make bench-cpu` builds the release binaries first).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

# The demo's pipeline with the rate limit at its maximum.
PIPELINE = benchlib.DEMO_INPUT + """\
request:
  method: POST
  url: "{{API_BASE_URL}}/v1/users/{id}/score?email={email}"
  headers:
    X-Source: s3-api-fanout
  body:
    id: "{id}"
    name: "{name}"
    amount: "{amount}"
client:
  concurrency: 64
  timeout_ms: 5000
  max_attempts: 3
  rate_limit_name: bench-cpu
  rate_limit_per_sec: 1000000
  rate_limit_burst: 100000
split:
  chunk_bytes: 524288
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=int(os.environ.get("RECORDS", 200_000)))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", 8)))
    parser.add_argument("--label", default=os.environ.get("LABEL", ""))
    parser.add_argument("--api-base-url", help="an API already running (default: start the mock)")
    args = parser.parse_args()
    benchlib.need_stack("bench-cpu")
    data = benchlib.demo_records(args.records)
    pipeline = os.path.join(benchlib.LOCAL, "bench-cpu.yaml")
    with open(pipeline, "w") as f:
        f.write(PIPELINE)

    def run(api):
        # PROFILE="perf record -g -o .local/perf.data --" runs it under a profiler (the CPU time
        # then includes the profiler's).
        return benchlib.local_run(data, pipeline, "bench-cpu", api, args.workers,
                                  prefix=os.environ.get("PROFILE", "").split())

    if args.api_base_url:
        summary, wall, usage = run(args.api_base_url)
    else:
        with benchlib.Mock("--latency-ms", "0", log_name="bench-cpu-mock.log") as mock:
            summary, wall, usage = run(mock.url)
    cpu = usage.ru_utime + usage.ru_stime
    succeeded = summary.get("succeeded", 0)
    if succeeded != args.records:
        sys.exit(f"bench-cpu: {succeeded} of {args.records} records succeeded: {summary}")
    result = {
        "label": args.label,
        "records": args.records,
        "workers": args.workers,
        "wall_s": round(wall, 2),
        "cpu_user_s": round(usage.ru_utime, 2),
        "cpu_sys_s": round(usage.ru_stime, 2),
        "records_per_s": round(args.records / wall),
        "records_per_cpu_s": round(args.records / cpu),
        "cpu_us_per_record": round(cpu / args.records * 1e6, 1),
        "max_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
