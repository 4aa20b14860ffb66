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
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# BENCH_PROFILE=profiling: the release build with symbols (Cargo.toml), for a profiler.
# BENCH_BIN_DIR: binaries built elsewhere (another commit's, for a before/after).
BIN = os.environ.get("BENCH_BIN_DIR") or os.path.join(
    ROOT, "target", os.environ.get("BENCH_PROFILE", "release"))

PIPELINE = """\
# The demo's pipeline with the rate limit at its maximum (scripts/bench-cpu.py).
input:
  format: csv
  fields:
    - { name: id, type: integer, required: true }
    - { name: email, required: true }
    - { name: name }
    - { name: amount, type: number }
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


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=int(os.environ.get("RECORDS", 200_000)))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", 8)))
    parser.add_argument("--label", default=os.environ.get("LABEL", ""))
    parser.add_argument("--api-base-url", help="an API already running (default: start the mock)")
    args = parser.parse_args()
    if "AWS_ENDPOINT_URL" not in os.environ:
        sys.exit("bench-cpu: run it through scripts/with-stack.sh (the local AWS)")
    local = os.path.join(ROOT, ".local")
    os.makedirs(local, exist_ok=True)
    data = os.path.join(local, f"demo-{args.records}.csv")
    if not os.path.exists(data):
        subprocess.run(
            [f"{BIN}/fanout", "generate", "--records", str(args.records), "--format", "csv",
             "--out", data],
            check=True,
        )
    pipeline = os.path.join(local, "bench-cpu.yaml")
    with open(pipeline, "w") as f:
        f.write(PIPELINE)

    mock = None
    if args.api_base_url:
        api = args.api_base_url
    else:
        port = free_port()
        log = open(os.path.join(local, "bench-cpu-mock.log"), "w")
        mock = subprocess.Popen(
            [f"{BIN}/mock-api", "--bind", f"127.0.0.1:{port}", "--latency-ms", "0"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        api = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                host, port = api.rsplit("/", 1)[-1].split(":")
                socket.create_connection((host, int(port)), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        started = time.monotonic()
        # PROFILE="perf record -g -o .local/perf.data --" runs it under a profiler (the CPU time
        # then includes the profiler's).
        run = subprocess.Popen(
            os.environ.get("PROFILE", "").split() + [f"{BIN}/fanout", "local", "run", "--input", data, "--pipeline", pipeline,
             "--name", "bench-cpu", "--api-base-url", api, "--workers", str(args.workers),
             "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        out = run.stdout.read()
        _, status, usage = os.wait4(run.pid, 0)
        wall = time.monotonic() - started
    finally:
        if mock:
            mock.terminate()
            mock.wait()
    if status != 0:
        sys.exit(f"bench-cpu: fanout local run failed ({status}):\n{out}")
    summary = json.loads(out.strip().splitlines()[-1])
    cpu = usage.ru_utime + usage.ru_stime
    succeeded = summary.get("succeeded", 0)
    if succeeded != args.records:
        sys.exit(f"bench-cpu: {succeeded} of {args.records} records succeeded:\n{out}")
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
