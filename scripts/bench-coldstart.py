#!/usr/bin/env python3
"""Cold start of the Lambda binaries: size on disk, and time from process start to ready.

For each Lambda binary (the packages under functions/ in Cargo.toml's members, as built by
`cargo build --release -p <package>`) it reports the release binary's size, the size of a copy
run through binutils' `strip`, and the time from spawning the process to its first
`GET /2018-06-01/runtime/invocation/next`: SDK config loaded, clients and handler deps built from
the environment, the Lambda runtime polling for its first event. The Runtime API is a small
server in this script (scripts/lambda_runtime_api.py); no Docker, no Lambda emulator. Each binary
is spawned --runs times (the binaries alternated, after one unmeasured warm-up run each, so the
page cache holds them as it would on a warm host); median and p90 of the times, and the peak RSS
at ready (VmHWM; the process is killed as soon as it polls).

The environment of each binary is the template's (plausible values) plus the Lambda runtime's
variables and dummy credentials, and nothing else. AWS_ENDPOINT_URL points at a listener of this
script that only counts connections: any network I/O a binary does before it polls (fetching a
secret, a config, credentials) shows up as `connections_before_ready`, and would also show in the
time.

Measures the host's build (x86_64 here): Lambda's arm64 production build is not built on this
machine. Last line: one JSON object.

    cargo build --release --locked -p splitter -p worker && scripts/bench-coldstart.py [--runs 20]
"""

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lambda_runtime_api import RuntimeApi  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What each function reads from its environment (functions/*/src/lib.rs), with the template's
# values: plausible, never reached (AWS_ENDPOINT_URL is the counting listener).
FUNCTION_ENV = {
    "splitter": {
        "QUEUE_URL": "http://sqs.us-east-1.amazonaws.com/000000000000/bench-manifests",
        "TABLE_NAME": "bench-ledger",
        "CHUNK_BYTES": "4194304",
        "API_BASE_URL": "https://api.example.com",
        "RATE_LIMIT_PER_SECOND": "1000",
        "RATE_LIMIT_BURST": "100",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
    },
    "worker": {
        "TABLE_NAME": "bench-ledger",
        "QUEUE_URL": "http://sqs.us-east-1.amazonaws.com/000000000000/bench-manifests",
        "FLEET_SIZE": "50",
        "SECRET_CACHE_SECONDS": "300",
        "KMS_KEY_ID": "00000000-0000-0000-0000-000000000000",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
    },
}


def functions():
    """(package, binary) of each workspace member under functions/."""
    with open(os.path.join(ROOT, "Cargo.toml"), "rb") as f:
        members = tomllib.load(f)["workspace"]["members"]
    out = []
    for member in members:
        if not member.startswith("functions/"):
            continue
        with open(os.path.join(ROOT, member, "Cargo.toml"), "rb") as f:
            manifest = tomllib.load(f)
        package = manifest["package"]["name"]
        bins = [b["name"] for b in manifest.get("bin", [])] or [package]
        out.extend((package, b) for b in bins)
    return out


class ConnectionCounter:
    """A TCP listener that accepts and closes connections, counting them."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.count = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.count += 1
            conn.close()


def percentile(values, p):
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def spawn_until_ready(path, env, api, log_path, timeout):
    """Spawns `path`, waits for its first poll; returns (seconds to it, peak RSS KiB)."""
    while not api.next_arrivals.empty():
        api.next_arrivals.get_nowait()
    with open(log_path, "wb") as log:
        started = time.monotonic()
        process = subprocess.Popen([path], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, close_fds=True)
    deadline = started + timeout
    arrived = None
    while arrived is None:
        try:
            arrived = api.next_arrivals.get(timeout=0.05)
        except Exception:
            if process.poll() is not None:
                with open(log_path, errors="replace") as f:
                    sys.exit(f"bench-coldstart: {path} exited ({process.returncode}) before "
                             f"polling for work:\n{f.read()[-3000:]}")
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                sys.exit(f"bench-coldstart: {path} did not poll for work in {timeout} s "
                         f"(log: {log_path})")
    hwm = rss_hwm_kib(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return arrived - started, hwm


def rss_hwm_kib(pid):
    """The process's peak RSS so far (VmHWM). Not wait4's ru_maxrss: for a child forked from
    this script, that counts the fork's copy of the Python process before the exec."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=int(os.environ.get("RUNS", 20)))
    parser.add_argument("--bin-dir", default=os.environ.get("BENCH_BIN_DIR")
                        or os.path.join(os.environ.get("CARGO_TARGET_DIR")
                                        or os.path.join(ROOT, "target"), "release"),
                        help="where the release binaries are (default: target/release)")
    parser.add_argument("--label", default=os.environ.get("LABEL", ""))
    args = parser.parse_args()
    strip = shutil.which("strip")
    if strip is None:
        sys.exit("bench-coldstart: `strip` (binutils) is missing: apt-get install binutils")
    targets = functions()
    for package, binary in targets:
        if binary not in FUNCTION_ENV:
            sys.exit(f"bench-coldstart: no environment known for function {binary!r}: "
                     "add it to FUNCTION_ENV")
        if not os.path.exists(os.path.join(args.bin_dir, binary)):
            sys.exit(f"bench-coldstart: {args.bin_dir}/{binary} is missing: "
                     f"cargo build --release --locked -p {package}")

    work = tempfile.mkdtemp(prefix="bench-coldstart-")
    api = RuntimeApi(hold=30.0)
    endpoint = ConnectionCounter()
    rows = {}
    try:
        for package, binary in targets:
            path = os.path.join(args.bin_dir, binary)
            copy = os.path.join(work, binary + ".stripped")
            shutil.copyfile(path, copy)
            subprocess.run([strip, copy], check=True)
            rows[binary] = {
                "package": package,
                "size_bytes": os.path.getsize(path),
                "stripped_bytes": os.path.getsize(copy),
                "ready_ms": [],
                "rss_kib": [],
                "connections_before_ready": 0,
            }
        base_env = {
            "PATH": "/usr/bin:/bin",
            "AWS_LAMBDA_RUNTIME_API": api.address,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/bench",
            "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{endpoint.port}",
        }
        for run in range(-1, args.runs):  # run -1: the warm-up, not counted
            for _, binary in targets:
                env = dict(base_env, AWS_LAMBDA_FUNCTION_NAME=f"bench-{binary}",
                           **FUNCTION_ENV[binary])
                before = endpoint.count
                seconds, rss = spawn_until_ready(os.path.join(args.bin_dir, binary), env, api,
                                                 os.path.join(work, f"{binary}.log"), 30.0)
                if run < 0:
                    continue
                row = rows[binary]
                row["ready_ms"].append(seconds * 1000)
                row["rss_kib"].append(rss)
                row["connections_before_ready"] += endpoint.count - before
    finally:
        api.close()
        shutil.rmtree(work, ignore_errors=True)

    result = {"label": args.label, "arch": platform.machine(), "runs": args.runs, "functions": {}}
    for binary, row in rows.items():
        times = row["ready_ms"]
        summary = {
            "size_bytes": row["size_bytes"],
            "stripped_bytes": row["stripped_bytes"],
            "ready_ms_median": round(statistics.median(times), 2),
            "ready_ms_p90": round(percentile(times, 90), 2),
            "ready_ms_min": round(min(times), 2),
            "ready_ms_max": round(max(times), 2),
            "rss_at_ready_mib": round(statistics.median(row["rss_kib"]) / 1024, 1),
            "connections_before_ready": row["connections_before_ready"],
        }
        result["functions"][binary] = summary
        print(f"{binary}: {json.dumps(summary)}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
