#!/usr/bin/env python3
"""Memory benchmark: peak RSS of one worker container working a large range, and large records.

Two runs of `fanout local run` with ONE worker container (`--workers 1`), each job one manifest
(`split.chunk_bytes` above the file's size), against the mock API answering at once:

* range: a generated CSV of RANGE_MIB (256) MiB, records of about 1 KiB (an id and padding),
  a small POST per record (the padding is not sent); each result keeps the mock's whole echo
  (about 290 bytes), so the range's results part is about 76 MB.
* records: RECORDS (200) JSON Lines records of about 1 MiB each (input.max_record_bytes, the
  default), each sent whole as its request's body; the mock echoes it, and the result keeps the
  first 16 KiB of the answer (client.max_response_bytes, the default).

The peak RSS is the `fanout` process's (ru_maxrss from wait4): the worker container's handler,
and also the local runner in the same process (its SQS polling, the splitter that ran first, the
summary); the local AWS and the mock API run in other processes and are not counted. Last line:
one JSON object.

`--lambda`: the same two jobs through the real Lambda binaries instead, each in a process of its
own behind a small Runtime API (scripts/lambda_runtime_api.py): the splitter plans the object,
uploaded to the local S3, into one manifest, and the worker binary works that manifest from an SQS
event, as one Lambda container would. The peak RSS is then the worker process's alone (VmHWM),
and the job's _SUMMARY.json must account for every record.

Run it on the local stack: scripts/with-stack.sh scripts/bench-memory.py [--only range|records]
[--lambda]
(`make bench-memory` builds the release binaries first). BENCH_BIN_DIR=dir: another build's
binaries (a before/after).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from lambda_runtime_api import RuntimeApi  # noqa: E402

WHO = "bench-memory"

MIB = 1 << 20

RANGE_PIPELINE = """\
# scripts/bench-memory.py, the range run: one manifest of the whole file.
input:
  format: csv
  fields:
    - { name: id, type: integer, required: true }
    - { name: pad }
request:
  method: POST
  url: "{{API_BASE_URL}}/v1/items/{id}"
  body:
    id: "{id}"
client:
  concurrency: 64
  timeout_ms: 5000
  max_attempts: 3
  rate_limit_name: bench-memory
  rate_limit_per_sec: 1000000
  rate_limit_burst: 100000
split:
  chunk_bytes: %d
"""

RECORDS_PIPELINE = """\
# scripts/bench-memory.py, the records run: records of about 1 MiB, each sent whole.
input:
  format: jsonl
request:
  method: POST
  url: "{{API_BASE_URL}}/v1/blobs/{id}"
  body:
    id: "{id}"
    blob: "{blob}"
client:
  concurrency: 64
  timeout_ms: 30000
  max_attempts: 3
  rate_limit_name: bench-memory
  rate_limit_per_sec: 1000000
  rate_limit_burst: 100000
split:
  chunk_bytes: %d
"""


def range_file(path, mib):
    """A CSV of `mib` MiB: a header, then records of about 1 KiB. Gives the record count."""
    records = 0
    with open(path, "w") as f:
        f.write("id,pad\n")
        size = 7
        pad = "x" * 1000
        while size < mib * MIB:
            line = f"{records},{pad}\n"
            f.write(line)
            size += len(line)
            records += 1
    return records


def records_file(path, n):
    """`n` JSON Lines records of just under 1 MiB (the default input.max_record_bytes)."""
    blob = "y" * (MIB - 64)
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "blob": blob}) + "\n")
    return n


def run(name, data, pipeline_text, records, api):
    pipeline = os.path.join(benchlib.LOCAL, f"bench-memory-{name}.yaml")
    with open(pipeline, "w") as f:
        f.write(pipeline_text)
    summary, wall, usage = benchlib.local_run(data, pipeline, f"bench-memory-{name}", api, 1)
    succeeded = summary.get("succeeded", 0)
    if succeeded != records:
        sys.exit(f"bench-memory: {name}: {succeeded} of {records} records succeeded: {summary}")
    result = {
        "records": records,
        "input_mib": round(os.path.getsize(data) / MIB, 1),
        "wall_s": round(wall, 2),
        "max_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }
    print(f"{name}: {json.dumps(result)}", file=sys.stderr)
    return result


def lambda_env(api, endpoint, name, api_base_url, **more):
    """A Lambda binary's environment: its Runtime API, the local AWS, the stack's variables."""
    return {
        "PATH": "/usr/bin:/bin",
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": endpoint,
        "API_BASE_URL": api_base_url,
        "RUST_LOG": "warn",
        # mimalloc's own settings, passed on for an experiment.
        **{k: v for k, v in os.environ.items() if k.startswith("MIMALLOC_")},
        **more,
    }


def invoke_binary(binary, env, event, log_path, timeout=1800):
    """Starts `binary` behind its own Runtime API, hands it `event`, and gives (its answer, its
    peak RSS in KiB, its CPU seconds), read before the process is killed."""
    api = RuntimeApi(hold=timeout)
    try:
        with open(log_path, "wb") as log:
            process = subprocess.Popen([binary], env=env(api), stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT)
        try:
            kind, body = api.invoke(event, timeout=timeout)
            hwm = benchlib.read_rss_hwm(process.pid)
            with open(f"/proc/{process.pid}/stat") as f:
                # utime and stime, in clock ticks: fields 14 and 15, after the command's ")".
                fields = f.read().rpartition(")")[2].split()
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
    finally:
        api.close()
    if kind != "response":
        with open(log_path, errors="replace") as f:
            sys.exit(f"{WHO}: {os.path.basename(binary)} failed: {body}\n{f.read()[-2000:]}")
    return json.loads(body), hwm, cpu


def sqs_event(messages, queue_arn):
    """An SQS event as Lambda delivers it, for the messages received."""
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0",
                       "SenderId": "bench", "ApproximateFirstReceiveTimestamp": "0"},
        "messageAttributes": {}, "md5OfBody": m.get("MD5OfBody", ""),
        "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": "us-east-1",
    } for m in messages]}


def lambda_run(name, data, pipeline_text, records, api_base_url):
    """One job through the real splitter and worker binaries (see the module's doc)."""
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    stamp = f"{name}-{int(time.time() * 1000)}"
    bucket, pipeline = f"bench-memory-{stamp}", "bench-memory"
    benchlib.s3(endpoint, "PUT", bucket, who=WHO)
    benchlib.s3(endpoint, "PUT", bucket, f"pipelines/{pipeline}.yaml", pipeline_text.encode(),
                who=WHO)
    key = f"input/{pipeline}/{os.path.basename(data)}"
    with open(data, "rb") as f:
        _, headers, _ = benchlib.s3(endpoint, "PUT", bucket, key, f, who=WHO)
    etag = {k.lower(): v for k, v in headers.items()}.get("etag", "").strip('"')
    table = f"bench-memory-{stamp}"
    benchlib.dynamodb(endpoint, "CreateTable", {
        "TableName": table, "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                 {"AttributeName": "sk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                      {"AttributeName": "sk", "KeyType": "RANGE"}],
    }, who=WHO)
    queue_url = benchlib.sqs(endpoint, "CreateQueue", {"QueueName": stamp}, who=WHO)["QueueUrl"]
    stack = {"TABLE_NAME": table, "QUEUE_URL": queue_url}
    size = os.path.getsize(data)
    s3_event = {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-12-03T12:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "bench"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"}, "responseElements": {},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "bench",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "bench"},
                          "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": key, "size": size, "eTag": etag, "sequencer": "0"}},
    }]}
    logs = os.path.join(benchlib.LOCAL, f"bench-memory-{stamp}")
    split, _, _ = invoke_binary(
        os.path.join(benchlib.BIN, "splitter"),
        lambda api: lambda_env(api, endpoint, "bench-splitter", api_base_url, **stack),
        s3_event, logs + "-splitter.log")
    outcome = split[0] if isinstance(split, list) else split
    if outcome.get("outcome") != "started" or outcome.get("manifests") != 1:
        sys.exit(f"{WHO}: {name}: the split did not start a job of one manifest: {outcome}")
    job = outcome["job_id"]
    received = benchlib.sqs(endpoint, "ReceiveMessage", {
        "QueueUrl": queue_url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 5}, who=WHO)
    messages = received.get("Messages", [])
    if len(messages) != 1:
        sys.exit(f"{WHO}: {name}: {len(messages)} manifests in the queue, not 1")
    arn = f"arn:aws:sqs:us-east-1:000000000000:{stamp}"
    started = time.monotonic()
    answer, hwm, cpu = invoke_binary(
        os.path.join(benchlib.BIN, "worker"),
        lambda api: lambda_env(api, endpoint, "bench-worker", api_base_url, FLEET_SIZE="1",
                               **stack),
        sqs_event(messages, arn), logs + "-worker.log")
    wall = time.monotonic() - started
    if answer.get("batchItemFailures"):
        sys.exit(f"{WHO}: {name}: the worker returned the manifest: {answer}")
    _, _, body = benchlib.s3(endpoint, "GET", bucket, f"results/{job}/_SUMMARY.json", who=WHO)
    summary = json.loads(body)
    succeeded = summary.get("succeeded")
    if succeeded != records or not summary.get("reconciled"):
        sys.exit(f"{WHO}: {name}: {succeeded} of {records} records succeeded: {summary}")
    result = {
        "records": records,
        "input_mib": round(size / MIB, 1),
        "wall_s": round(wall, 2),
        "worker_peak_rss_mib": round(hwm / 1024, 1),
        "worker_cpu_s": round(cpu, 2),
    }
    print(f"{name} (Lambda binaries): {json.dumps(result)}", file=sys.stderr)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--range-mib", type=int, default=int(os.environ.get("RANGE_MIB", 256)))
    parser.add_argument("--records", type=int, default=int(os.environ.get("RECORDS", 200)))
    parser.add_argument("--only", choices=["range", "records"])
    parser.add_argument("--lambda", dest="binaries", action="store_true",
                        help="the real splitter and worker binaries, one process each")
    parser.add_argument("--label", default=os.environ.get("LABEL", ""))
    args = parser.parse_args()
    job = lambda_run if args.binaries else run
    benchlib.need_stack("bench-memory")
    local = benchlib.LOCAL
    os.makedirs(local, exist_ok=True)
    result = {"label": args.label, "workers": 1,
              "measured": "worker binary" if args.binaries else "fanout local run"}
    with benchlib.Mock("--latency-ms", "0", log_name="bench-memory-mock.log") as mock:
        api = mock.url
        if args.only in (None, "range"):
            data = os.path.join(local, f"bench-memory-range-{args.range_mib}.csv")
            count_file = data + ".records"
            if not os.path.exists(count_file):
                n = range_file(data, args.range_mib)
                with open(count_file, "w") as f:
                    f.write(str(n))
            with open(count_file) as f:
                n = int(f.read())
            chunk = os.path.getsize(data) + MIB
            result["range"] = job("range", data, RANGE_PIPELINE % chunk, n, api)
        if args.only in (None, "records"):
            data = os.path.join(local, f"bench-memory-records-{args.records}.jsonl")
            if not os.path.exists(data):
                records_file(data, args.records)
            chunk = os.path.getsize(data) + MIB
            result["records"] = job("records", data, RECORDS_PIPELINE % chunk, args.records,
                                    api)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
