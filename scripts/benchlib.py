"""What the benchmark scripts share: the binaries they run, a free port, the mock API started and
waited for, `fanout local run` timed with the CPU and memory of its process (from wait4), a
process's peak RSS, and requests to the local AWS.

Python 3 standard library only; imported by the scripts next to it.
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL = os.path.join(ROOT, ".local")
# BENCH_PROFILE=profiling: the release build with symbols (Cargo.toml), for a profiler.
# BENCH_BIN_DIR: binaries built elsewhere (another commit's, for a before/after).
BIN = os.environ.get("BENCH_BIN_DIR") or os.path.join(
    ROOT, "target", os.environ.get("BENCH_PROFILE", "release"))


# The input section of pipelines/demo.yaml: the records `fanout generate` makes.
DEMO_INPUT = """\
input:
  format: csv
  fields:
    - { name: id, type: integer, required: true }
    - { name: email, required: true }
    - { name: name }
    - { name: amount, type: number }
"""

# The demo's request (pipelines/demo.yaml's, without its header): a POST of a JSON body with a
# query, one per record.
DEMO_REQUEST = """\
request:
  method: POST
  url: "{{API_BASE_URL}}/v1/users/{id}/score?email={email}"
  body: { id: "{id}", name: "{name}", amount: "{amount}" }
"""


def need_stack(script):
    """Exits unless the local AWS is there (scripts/with-stack.sh sets AWS_ENDPOINT_URL)."""
    if "AWS_ENDPOINT_URL" not in os.environ:
        sys.exit(f"{script}: run it through scripts/with-stack.sh (the local AWS)")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, host="127.0.0.1", timeout=5.0, what="server"):
    """Waits until something accepts connections on the port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"{what} did not listen on {host}:{port} within {timeout} s")
            time.sleep(0.05)


class Mock:
    """The mock API (mock-api), started on a free port with the given flags, stopped on exit."""

    def __init__(self, *flags, log_name="bench-mock.log"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        os.makedirs(LOCAL, exist_ok=True)
        self.log = open(os.path.join(LOCAL, log_name), "w")
        self.proc = subprocess.Popen(
            [f"{BIN}/mock-api", "--bind", f"127.0.0.1:{self.port}", *flags],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        wait_port(self.port, what="the mock API")

    def stats(self):
        import urllib.request
        with urllib.request.urlopen(f"{self.url}/_mock/stats", timeout=5) as r:
            return json.load(r)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()
        self.log.close()


def demo_records(records):
    """The demo's CSV records (`fanout generate`), made once per count under .local/."""
    os.makedirs(LOCAL, exist_ok=True)
    data = os.path.join(LOCAL, f"demo-{records}.csv")
    if not os.path.exists(data):
        subprocess.run(
            [f"{BIN}/fanout", "generate", "--records", str(records), "--format", "csv",
             "--out", data],
            check=True,
        )
    return data


def local_run(data, pipeline, name, api, workers, extra=(), prefix=()):
    """Runs `fanout local run` and returns (its last JSON line, wall seconds, rusage). `prefix`
    goes before the command (a profiler)."""
    started = time.monotonic()
    run = subprocess.Popen(
        [*prefix, f"{BIN}/fanout", "local", "run", "--input", data, "--pipeline", pipeline,
         "--name", name, "--api-base-url", api, "--workers", str(workers), "--quiet", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    out = run.stdout.read()
    _, status, usage = os.wait4(run.pid, 0)
    wall = time.monotonic() - started
    if status != 0:
        sys.exit(f"fanout local run failed ({status}):\n{out}")
    return json.loads(out.strip().splitlines()[-1]), wall, usage


def read_rss_hwm(pid):
    """The process's peak RSS (VmHWM, KiB): read before it is killed. Not wait4's ru_maxrss,
    which for a child forked from a Python script may count the fork's copy of the script."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def _local_aws(endpoint, method, path, body, headers, service, who, ok=(200,)):
    """One request to the local AWS, unsigned but for a dummy SigV4 credential scope (the
    emulator reads the region from it). Gives (status, headers, body)."""
    url = urllib.parse.urlsplit(endpoint)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    try:
        conn.request(method, path, body=body, headers={
            **headers,
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20261203/us-east-1/"
                             f"{service}/aws4_request, SignedHeaders=host, Signature=0",
        })
        answer = conn.getresponse()
        data = answer.read()
    finally:
        conn.close()
    if answer.status not in ok:
        sys.exit(f"{who}: {method} {path} ({service}) failed ({answer.status}): {data[:500]!r}")
    return answer.status, dict(answer.getheaders()), data


def aws_json(endpoint, target, body, service, who):
    """One JSON-protocol request (SQS, DynamoDB) to the local AWS."""
    _, _, data = _local_aws(endpoint, "POST", "/", json.dumps(body), {
        "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": target}, service, who)
    return json.loads(data or b"{}")


def sqs(endpoint, op, body, who):
    return aws_json(endpoint, f"AmazonSQS.{op}", body, "sqs", who)


def dynamodb(endpoint, op, body, who):
    return aws_json(endpoint, f"DynamoDB_20120810.{op}", body, "dynamodb", who)


def s3(endpoint, method, bucket, key="", body=None, who="bench", ok=(200,)):
    """One path-style S3 request to the local AWS: (status, headers, body). `body` may be an
    open file (sent as it is read)."""
    headers = {}
    if body is not None and hasattr(body, "fileno"):
        headers["Content-Length"] = str(os.fstat(body.fileno()).st_size)
    path = f"/{bucket}" + (f"/{urllib.parse.quote(key)}" if key else "")
    return _local_aws(endpoint, method, path, body, headers, "s3", who, ok)
