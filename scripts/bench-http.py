#!/usr/bin/env python3
"""The CPU-bound benchmark side by side: `fanout`, wrk and a Python aiohttp loop, same servers.

For each server with a zero-latency answer (the mock API, and nginx from Debian's packages
returning a fixed body), in one run:
  - wrk (Debian's package): requests/s with 64 connections, the HTTP ceiling of this machine;
  - a Python aiohttp client (what users run today): the same records, POSTed one per record with
    64 in flight, its records/s and records per CPU-second of its process;
  - the HTTP floor under fanout (the example `http_floor` of fanout-client, the same request
    shape, 64 in flight): the container's reqwest client alone, then through the whole client
    stack as the worker calls it; calls per CPU-second of its process;
  - `fanout local run` (scripts/bench-cpu.py): records/s and records per CPU-second of its process.
Last line: one JSON object. Needs wrk, nginx and aiohttp: scripts/bench-setup.sh installs them.
Run it through scripts/with-stack.sh (`make bench` does).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

ROOT = benchlib.ROOT
BIN = benchlib.BIN
VENV_PY = os.path.join(ROOT, ".venv", "bench", "bin", "python")

AIOHTTP_LOOP = r'''
import asyncio, csv, json, resource, sys, time
import aiohttp

async def main(url, path, concurrency):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    queue = asyncio.Queue()
    for row in rows:
        queue.put_nowait(row)
    ok = 0
    async def worker(session):
        nonlocal ok
        while True:
            try:
                row = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = {"id": int(row["id"]), "name": row["name"], "amount": float(row["amount"])}
            async with session.post(
                f"{url}/v1/users/{row['id']}/score", params={"email": row["email"]},
                json=body, headers={"X-Source": "aiohttp"},
            ) as r:
                await r.read()
                ok += r.status == 200
    connector = aiohttp.TCPConnector(limit=concurrency)
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    wall = time.monotonic() - started
    u = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"records": len(rows), "ok": ok, "wall_s": wall,
                      "cpu_s": u.ru_utime + u.ru_stime}))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
'''

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      default_type application/json;
      return 200 '{{"ok":true}}';
    }}
  }}
}}
"""


def start_mock(port):
    return subprocess.Popen(
        [f"{BIN}/mock-api", "--bind", f"127.0.0.1:{port}", "--latency-ms", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def start_nginx(port, workdir):
    with open(os.path.join(workdir, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF.format(dir=workdir, port=port))
    return subprocess.Popen(
        ["nginx", "-c", os.path.join(workdir, "nginx.conf"), "-p", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def wrk(url):
    out = subprocess.run(
        ["wrk", "-t1", "-c64", "-d5s", f"{url}/v1/users/1/score?email=u%40example.com"],
        capture_output=True, text=True, check=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return round(float(line.split()[1]))
    sys.exit(f"bench-http: no Requests/sec in wrk's output:\n{out}")


def aiohttp_loop(url, data):
    out = subprocess.run(
        [VENV_PY, "-c", AIOHTTP_LOOP, url, data, "64"],
        capture_output=True, text=True, check=True,
    ).stdout
    r = json.loads(out.strip().splitlines()[-1])
    if r["ok"] != r["records"]:
        sys.exit(f"bench-http: aiohttp got {r['ok']} of {r['records']} answers 200")
    return {
        "records_per_s": round(r["records"] / r["wall_s"]),
        "records_per_cpu_s": round(r["records"] / r["cpu_s"]),
    }


def http_floor(url, calls):
    """Calls per CPU-second of the example `http_floor`: reqwest alone, and the client stack."""
    floor = {}
    for mode in ("reqwest", "stack"):
        run = subprocess.Popen([os.path.join(BIN, "examples", "http_floor"), mode, url, str(calls)],
                               stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(run.pid, 0)
        if status != 0:
            sys.exit(f"bench-http: http_floor {mode} failed ({status})")
        cpu = usage.ru_utime + usage.ru_stime
        floor[mode] = {"calls_per_cpu_s": round(calls / cpu),
                       "cpu_us_per_call": round(cpu * 1e6 / calls, 1)}
    return floor


def fanout(url, records):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "bench-cpu.py"), "--records", str(records),
         "--api-base-url", url],
        capture_output=True, text=True, check=True,
    ).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return {k: r[k] for k in ("records_per_s", "records_per_cpu_s", "cpu_us_per_record")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=int(os.environ.get("RECORDS", 200_000)))
    parser.add_argument("--python-records", type=int, default=50_000)
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"bench-http: {tool} is missing: run scripts/bench-setup.sh")
    if not os.path.exists(VENV_PY):
        sys.exit("bench-http: aiohttp is missing: run scripts/bench-setup.sh")
    local = benchlib.LOCAL
    data = benchlib.demo_records(args.python_records)
    rows = {}
    workdir = tempfile.mkdtemp(prefix="bench-nginx-", dir=local)
    for name in ("mock", "nginx"):
        port = benchlib.free_port()
        server = start_mock(port) if name == "mock" else start_nginx(port, workdir)
        try:
            benchlib.wait_port(port, what=name)
            url = f"http://127.0.0.1:{port}"
            rows[name] = {
                "wrk_requests_per_s": wrk(url),
                "aiohttp": aiohttp_loop(url, data),
                "floor": http_floor(url, args.records),
                "fanout": fanout(url, args.records),
            }
        finally:
            server.terminate()
            server.wait()
        print(f"{name}: {json.dumps(rows[name])}", file=sys.stderr)
    shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
