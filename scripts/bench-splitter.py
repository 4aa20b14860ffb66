#!/usr/bin/env python3
"""The splitter on large objects: wall time, requests per AWS operation and peak memory of one
split, for objects of 1, 10 and 100 GiB (--sizes).

A 100 GiB object cannot be stored here, so S3 is a virtual one: a small S3 stand-in in this
script (path-style HTTP on 127.0.0.1) answers HeadObject with the object's size and an ETag, a
ranged GetObject with generated CSV bytes (the demo's records, fixed width, so any range can be
made), and GetObject of the pipeline's config (pipelines/demo.yaml without its `split:` section,
so the stack's default chunk_bytes, 4 MiB, applies). Only S3 points at it
(AWS_ENDPOINT_URL_S3); SQS and DynamoDB are the local AWS (scripts/with-stack.sh), reached
through a counting proxy in this script (AWS_ENDPOINT_URL), which counts each request by its
X-Amz-Target and the entries of each SendMessageBatch.

The splitter is the real release binary (target/release/splitter) run as Lambda runs it, behind a
small Runtime API (scripts/lambda_runtime_api.py) that hands it one S3 ObjectCreated event: a
fresh process per size, so its peak RSS (from wait4) is that split's. Wall time: from handing
out the event to the splitter's answer (the process was already polling: no cold start). After
the split, the queue's ApproximateNumberOfMessages is read back and must equal the manifests.
The proxy adds a hop to every SQS and DynamoDB request: --direct leaves it out (the splitter
then calls the local AWS itself, and only the S3 requests and the queue's messages are counted).
Last line: one JSON object.

    cargo build --release --locked -p splitter
    scripts/with-stack.sh scripts/bench-splitter.py [--sizes 1,10,100] [--chunk-bytes N]
"""

import argparse
import collections
import http.client
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from lambda_runtime_api import QuietServer, RuntimeApi  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1 << 30
BUCKET = "bench-splitter"
PIPELINE = "bench"

HEADER = b"id,email,name,amount\n"
RECORD_LEN = len(b"000000000000,user000@example.com,\"Doe, Jane 000\",00.50\n")


def record(i):
    r = f"{i:012d},user{i % 1000:03d}@example.com,\"Doe, Jane {i % 1000:03d}\",{i % 100:02d}.50\n"
    return r.encode()


def object_bytes(start, end):
    """Bytes [start, end) of the virtual object: HEADER, then fixed-width records."""
    out = bytearray()
    if start < len(HEADER):
        out += HEADER[start:min(end, len(HEADER))]
    lo = max(start, len(HEADER)) - len(HEADER)
    hi = end - len(HEADER)
    if hi > lo:
        first, last = lo // RECORD_LEN, (hi - 1) // RECORD_LEN
        block = b"".join(record(i) for i in range(first, last + 1))
        out += block[lo - first * RECORD_LEN: hi - first * RECORD_LEN]
    return bytes(out)


def pipeline_config():
    """pipelines/demo.yaml without its split section (so chunk_bytes is the stack's default)."""
    with open(os.path.join(ROOT, "pipelines", "demo.yaml")) as f:
        text = f.read()
    return re.sub(r"(?ms)^split:\n(?:  .*\n)*", "", text).encode()


class S3StandIn:
    """Path-style S3 for one bucket: `objects` maps a key to its size (virtual objects), and
    pipelines/PIPELINE.yaml is the config. Counts requests by operation."""

    def __init__(self, config):
        self.objects = {}
        self.config = config
        self.counts = collections.Counter()
        self.lock = threading.Lock()
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def count(self, op):
                with stand_in.lock:
                    stand_in.counts[op] += 1

            def reply(self, status, body=b"", headers=(), head=False, length=None):
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def not_found(self, head, key):
                body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code>"
                        f"<Message>no such key</Message><Key>{key}</Key></Error>").encode()
                self.reply(404, b"" if head else body, [("Content-Type", "application/xml")],
                           head=head)

            def target(self):
                path = urllib.parse.urlsplit(self.path).path
                bucket, _, key = path.lstrip("/").partition("/")
                return bucket, urllib.parse.unquote(key)

            def do_HEAD(self):
                bucket, key = self.target()
                self.count("HeadObject")
                size = stand_in.objects.get(key) if bucket == BUCKET else None
                if size is None:
                    return self.not_found(True, key)
                self.reply(200, headers=[("ETag", etag(size)), ("Accept-Ranges", "bytes"),
                                         ("Content-Type", "text/csv"),
                                         ("Last-Modified", "Thu, 03 Dec 2026 12:00:00 GMT")],
                           head=True, length=size)

            def do_GET(self):
                bucket, key = self.target()
                if bucket == BUCKET and key == f"pipelines/{PIPELINE}.yaml":
                    self.count("GetObject (config)")
                    return self.reply(200, stand_in.config, [("ETag", '"config"'),
                                                             ("Content-Type", "text/yaml")])
                size = stand_in.objects.get(key) if bucket == BUCKET else None
                if size is None:
                    self.count("GetObject (other)")
                    return self.not_found(False, key)
                match = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
                if not match:
                    # The splitter never reads a whole input object: say so loudly.
                    self.count("GetObject (whole object)")
                    return self.reply(400, b"bench: a GetObject without a range")
                self.count("GetObject (range)")
                if_match = self.headers.get("If-Match")
                if if_match is not None and if_match != etag(size):
                    return self.reply(412, b"")
                start, end = int(match[1]), min(int(match[2]) + 1, size)
                with stand_in.lock:
                    stand_in.counts["GetObject bytes"] += end - start
                self.reply(206, object_bytes(start, end), [
                    ("ETag", etag(size)), ("Content-Type", "text/csv"),
                    ("Content-Range", f"bytes {start}-{end - 1}/{size}")])

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def etag(size):
    return f'"bench-{size:x}"'


class CountingProxy:
    """Forwards every request to the local AWS, counting them by X-Amz-Target (SQS and DynamoDB
    speak JSON with the operation in that header; anything else is counted by its path)."""

    def __init__(self, upstream):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.counts = collections.Counter()
        self.lock = threading.Lock()
        local = threading.local()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                op = self.headers.get("X-Amz-Target") or f"{self.command} {self.path}"
                with proxy.lock:
                    proxy.counts[op] += 1
                    if op.endswith(".SendMessageBatch"):
                        proxy.counts["SendMessageBatch entries"] += len(
                            json.loads(body)["Entries"])
                        proxy.counts["SendMessageBatch request bytes"] += len(body)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "keep-alive")}
                for attempt in range(2):
                    conn = getattr(local, "conn", None)
                    if conn is None:
                        conn = local.conn = http.client.HTTPConnection(
                            proxy.upstream.hostname, proxy.upstream.port, timeout=120)
                    try:
                        conn.request(self.command, self.path, body=body, headers=headers)
                        answer = conn.getresponse()
                        data = answer.read()
                        break
                    except (http.client.HTTPException, OSError):
                        conn.close()
                        local.conn = None
                        if attempt:
                            raise
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in ("connection", "keep-alive", "transfer-encoding",
                                         "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = forward

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def snapshot(self):
        with self.lock:
            return collections.Counter(self.counts)


def sqs(endpoint, op, body):
    return benchlib.sqs(endpoint, op, body, who="bench-splitter")


def dynamodb(endpoint, op, body):
    return benchlib.dynamodb(endpoint, op, body, who="bench-splitter")


def s3_event(key, size):
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-12-03T12:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "bench"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "bench",
               "bucket": {"name": BUCKET, "ownerIdentity": {"principalId": "bench"},
                          "arn": f"arn:aws:s3:::{BUCKET}"},
               "object": {"key": key, "size": size, "eTag": etag(size).strip('"'),
                          "sequencer": "0"}},
    }]}


def split_once(args, binary, stand_in, proxy, endpoint, size, chunk_bytes, work):
    """One split of a virtual object of `size` bytes in a fresh splitter process, behind a
    Runtime API of its own (a killed process's pending poll must not take the next event)."""
    api = RuntimeApi(hold=600.0)
    try:
        return split_in(args, binary, api, stand_in, proxy, endpoint, size, chunk_bytes, work)
    finally:
        api.close()


def split_in(args, binary, api, stand_in, proxy, endpoint, size, chunk_bytes, work):
    suffix = f"{size // GIB}gib-{int(time.time() * 1000)}"
    key = f"input/{PIPELINE}/object-{suffix}.csv"
    stand_in.objects[key] = size
    queue_name = f"bench-splitter-{suffix}"
    queue_url = sqs(endpoint, "CreateQueue", {"QueueName": queue_name})["QueueUrl"]
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_FUNCTION_NAME": "bench-splitter",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": proxy.url if proxy else endpoint,
        "AWS_ENDPOINT_URL_S3": stand_in.url,
        "QUEUE_URL": queue_url,
        "TABLE_NAME": args.table,
        "API_BASE_URL": "https://api.example.com",
        "CHUNK_BYTES": str(chunk_bytes),
        "RUST_LOG": "warn",
    }
    log_path = os.path.join(work, f"splitter-{suffix}.log")
    while not api.next_arrivals.empty():
        api.next_arrivals.get_nowait()
    with open(log_path, "wb") as log:
        process = subprocess.Popen([binary], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        try:
            api.next_arrivals.get(timeout=30)
        except Exception:
            sys.exit(f"bench-splitter: the splitter did not poll for work (log: {log_path})")
        s3_before = collections.Counter(stand_in.counts)
        aws_before = proxy.snapshot() if proxy else collections.Counter()
        started = time.monotonic()
        kind, body = api.invoke(s3_event(key, size), timeout=args.timeout)
        wall = time.monotonic() - started
        s3_counts = collections.Counter(stand_in.counts) - s3_before
        aws_counts = (proxy.snapshot() if proxy else collections.Counter()) - aws_before
        hwm = benchlib.read_rss_hwm(process.pid)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    if kind != "response":
        with open(log_path, errors="replace") as f:
            log = f.read()[-2000:]
        sys.exit(f"bench-splitter: the split of {size} bytes failed: {body}\n{log}")
    outcome = json.loads(body)[0]
    if outcome.get("outcome") != "started":
        sys.exit(f"bench-splitter: the split of {size} bytes did not start a job: {outcome}")
    attrs = sqs(endpoint, "GetQueueAttributes", {
        "QueueUrl": queue_url, "AttributeNames": ["ApproximateNumberOfMessages"]})
    queued = int(attrs["Attributes"]["ApproximateNumberOfMessages"])
    sqs(endpoint, "DeleteQueue", {"QueueUrl": queue_url})
    del stand_in.objects[key]

    def short(op):
        """`DynamoDB_20120810.GetItem` → `GetItem`; a request without a target as it was."""
        service, _, name = op.partition(".")
        return name if name and service.startswith(("Amazon", "DynamoDB")) else op

    manifests = outcome["manifests"]
    batches = aws_counts.pop("AmazonSQS.SendMessageBatch", 0)
    entries = aws_counts.pop("SendMessageBatch entries", 0)
    batch_bytes = aws_counts.pop("SendMessageBatch request bytes", 0)
    s3_bytes = s3_counts.pop("GetObject bytes", 0)
    row = {
        "size_gib": size / GIB,
        "size_bytes": size,
        "chunk_bytes": chunk_bytes,
        "manifests": manifests,
        "wall_s": round(wall, 3),
        "s3_requests": dict(sorted(s3_counts.items())),
        "s3_bytes_read": s3_bytes,
        # Counted by the proxy; None (not counted) with --direct.
        "sqs_send_message_batch": batches if proxy else None,
        "sqs_entries": entries if proxy else None,
        "sqs_batch_bytes": batch_bytes if proxy else None,
        "other_requests": ({short(k): v for k, v in sorted(aws_counts.items())} if proxy
                           else None),
        "queue_messages_after": queued,
        "peak_rss_mib": round(hwm / 1024, 1),
    }
    if (proxy and entries != manifests) or queued != manifests:
        sys.exit(f"bench-splitter: {manifests} manifests, {entries} sent, {queued} in the queue: "
                 f"{row}")
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=os.environ.get("SIZES", "1,10,100"),
                        help="object sizes in GiB, comma-separated (default 1,10,100)")
    parser.add_argument("--chunk-bytes", type=int, default=4 << 20,
                        help="the stack's default chunk size (CHUNK_BYTES; default 4 MiB)")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds a split may take (default 900)")
    parser.add_argument("--bin-dir", default=os.environ.get("BENCH_BIN_DIR")
                        or os.path.join(os.environ.get("CARGO_TARGET_DIR")
                                        or os.path.join(ROOT, "target"), "release"))
    parser.add_argument("--direct", action="store_true",
                        help="no counting proxy: SQS and DynamoDB requests are not counted")
    parser.add_argument("--label", default=os.environ.get("LABEL", ""))
    args = parser.parse_args()
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        sys.exit("bench-splitter: run it through scripts/with-stack.sh (the local AWS)")
    binary = os.path.join(args.bin_dir, "splitter")
    if not os.path.exists(binary):
        sys.exit(f"bench-splitter: {binary} is missing: cargo build --release --locked -p splitter")
    sizes = [int(float(s) * GIB) for s in args.sizes.split(",") if s.strip()]

    args.table = f"bench-splitter-{int(time.time())}"
    dynamodb(endpoint, "CreateTable", {
        "TableName": args.table, "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                 {"AttributeName": "sk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                      {"AttributeName": "sk", "KeyType": "RANGE"}],
    })
    stand_in = S3StandIn(pipeline_config())
    proxy = None if args.direct else CountingProxy(endpoint)
    work = tempfile.mkdtemp(prefix="bench-splitter-", dir=os.path.join(ROOT, ".local")
                            if os.path.isdir(os.path.join(ROOT, ".local")) else None)
    rows = []
    for size in sizes:
        row = split_once(args, binary, stand_in, proxy, endpoint, size, args.chunk_bytes, work)
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    s3_totals = {json.dumps(r["s3_requests"], sort_keys=True) for r in rows}
    print(json.dumps({
        "label": args.label,
        "s3_requests_same_for_every_size": len(s3_totals) == 1,
        "sizes": rows,
    }))


if __name__ == "__main__":
    main()
