#!/usr/bin/env bash
# Runs a job on the stack that infra/deploy-local.sh deployed from template.yaml into the local AWS
# (ministack), the way a job runs in AWS: this script uploads a config and an input, and the rest
# is the stack's own doing. ministack runs the deployed functions, the bootstrap binaries that
# `sam build` made, as processes of this machine behind its own Lambda runtime API (no Docker):
# the bucket's notification invokes the splitter (asynchronously, with the EventInvokeConfig's
# retries and on-failure queue), and the worker's SQS event source mapping polls the manifest
# queue and invokes the worker (batch size, ReportBatchItemFailures, maximum concurrency as
# deployed). The script waits for the job to be final in the ledger and checks that every record is
# accounted for, in the summary and in the output. Nothing else consumes the queue or invokes the
# functions, so there is no race to lose.
#   infra/job-on-deployed.sh RESOURCES_JSON   (written by infra/test_deployed.py --resources-out)
# Run it under scripts/with-stack.sh, after the deploy, as infra/deploy-local.sh does.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$repo"
use_local_aws
resources=${1:?usage: infra/job-on-deployed.sh RESOURCES_JSON}

# One thing a deployed stack in AWS does not need, and ministack 1.5.33 does: the event source
# mapping's maximum concurrency as a number. CloudFormation resolves the parameter it comes from to
# a string, which ministack keeps (cloudformation/provisioners.py _lambda_esm_create), and its SQS
# poller compares it with an int: a TypeError on every pass ("ESM SQS poller error" in its log),
# so the mapping never polls. The same value written back through UpdateEventSourceMapping is
# stored as the number it is. (The functions reach this emulator, not AWS, because
# scripts/with-stack.sh starts ministack with AWS_ENDPOINT_URL, which it hands to what it runs.)
python - "$resources" <<'PY'
import json, sys
import boto3

r = json.load(open(sys.argv[1]))
lam = boto3.client("lambda")
(mapping,) = lam.list_event_source_mappings(FunctionName=r["worker_function"])["EventSourceMappings"]
scaling = {"MaximumConcurrency": int(mapping["ScalingConfig"]["MaximumConcurrency"])}
lam.update_event_source_mapping(UUID=mapping["UUID"], ScalingConfig=scaling)
print(f"event source mapping {scaling}", file=sys.stderr)
PY

# The workspace's build: the input generator and the mock API (a no-op after `make test`'s compile
# phase; a `cargo build -p fanout -p mock-api` would select other features and compile much of it
# again). The functions themselves are the deployed `sam build` binaries.
cargo build --workspace --all-targets --locked -q
bin=target/debug
records=20000
input=.local/deployed-job-$records.csv
[ -f "$input" ] || $bin/fanout generate --records "$records" --format csv --out "$input"

api_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# 2% of calls answer 503 once in a while: the retries must absorb them.
$bin/mock-api --bind "127.0.0.1:$api_port" --latency-ms 1-5 --error-rate 0.02 >.local/deployed-mock-api.log 2>&1 &
api_pid=$!
trap 'kill $api_pid 2>/dev/null; wait $api_pid 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 50); do grep -q listening .local/deployed-mock-api.log && break; sleep 0.1; done

# The demo pipeline with 64 KiB manifests, so the job has several.
pipeline=.local/deployed-job.yaml
sed -e "s|{{API_BASE_URL}}|http://127.0.0.1:$api_port|" -e 's|chunk_bytes: .*|chunk_bytes: 65536|' \
  -e 's|max_attempts: .*|max_attempts: 6|' pipelines/demo.yaml >"$pipeline"
# A config the splitter would refuse fails here, with the reason, rather than as a failed job.
$bin/fanout validate "$pipeline" >/dev/null

python - "$resources" "$pipeline" "$input" "$records" <<'PY'
import json, sys, time
import boto3

r = json.load(open(sys.argv[1]))
pipeline, input_path, records = sys.argv[2], sys.argv[3], int(sys.argv[4])
s3, ddb, sqs = boto3.client("s3"), boto3.client("dynamodb"), boto3.client("sqs")
lam, logs = boto3.client("lambda"), boto3.client("logs")
bucket, name = r["bucket"], "deployed"
# A manifest whose invocation was lost is delivered again after the queue's visibility timeout
# (6 x the 60 s worker timeout); a job not final well after that is stuck. (It takes seconds.)
limit_s = 600


def log_events(function):
    group = lam.get_function_configuration(FunctionName=function)["LoggingConfig"]["LogGroup"]
    pages = logs.get_paginator("filter_log_events").paginate(logGroupName=group)
    return [e["message"] for page in pages for e in page["events"]]


def fail(why):
    for function in (r["splitter_function"], r["worker_function"]):
        lines = log_events(function)
        print(f"--- {function}: last of {len(lines)} log lines", file=sys.stderr)
        print("\n".join(line[:400] for line in lines[-15:]), file=sys.stderr)
    sys.exit(f"job on the deployed stack: {why}")


def waiting(url):
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


s3.put_object(Bucket=bucket, Key=f"pipelines/{name}.yaml", Body=open(pipeline, "rb").read())
key = f"input/{name}/{input_path.rsplit('/', 1)[-1]}"
started = time.time()
with open(input_path, "rb") as f:
    version = s3.put_object(Bucket=bucket, Key=key, Body=f)["VersionId"]
print(f"uploaded s3://{bucket}/{key} (version {version}): the stack takes it from here", file=sys.stderr)

job = None
while True:
    items = ddb.scan(TableName=r["table"], FilterExpression="sk = :job AND object_key = :key AND version_id = :v",
                     ExpressionAttributeValues={":job": {"S": "JOB"}, ":key": {"S": key}, ":v": {"S": version}},
                     ConsistentRead=True)["Items"]
    job = items[0] if items else None
    if job and job["status"]["S"] in ("COMPLETED", "FAILED"):
        break
    # The splitter's failures go to its on-failure queue after Lambda's retries; a manifest that
    # failed five times goes to the DLQ: either way the job cannot complete.
    if waiting(r["splitter_failure_queue_url"]):
        fail("the splitter failed (its event is in the splitter failure queue)")
    if waiting(r["dlq_url"]):
        fail("a manifest went to the dead-letter queue")
    if time.time() - started > limit_s:
        fail(f"not final after {limit_s} s: {json.dumps(job) if job else 'no job in the ledger'}")
    time.sleep(0.5)
wall = time.time() - started

job_id = job["job_id"]["S"]
summary = json.loads(s3.get_object(Bucket=bucket, Key=f"results/{job_id}/_SUMMARY.json")["Body"].read())
problems = []
if summary.get("status") != "COMPLETED":
    problems.append(f"status {summary.get('status')} ({summary.get('error')})")
if summary.get("input_records") != records:
    problems.append(f"input_records {summary.get('input_records')} != {records}")
if summary.get("succeeded") != records:
    problems.append(f"succeeded {summary.get('succeeded')} != {records}")
if not summary.get("reconciled"):
    problems.append("not reconciled")
if summary.get("manifests", 0) < 2:
    problems.append(f"only {summary.get('manifests')} manifest(s)")
# The output agrees with the ledger's counts: one result line per record (offsets unique), and
# nothing under failed/ or rejected/.
offsets = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"results/{job_id}/part-"):
    for obj in page.get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
        offsets += [json.loads(line)["offset"] for line in body.splitlines() if line]
if len(offsets) != records or len(set(offsets)) != records:
    problems.append(f"{len(offsets)} result lines, {len(set(offsets))} distinct offsets, for {records} records")
for prefix in ("failed", "rejected"):
    if s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{job_id}/").get("KeyCount"):
        problems.append(f"objects under {prefix}/{job_id}/")
# The deployed functions did the work: their invocations are in their log groups.
invocations = {f: sum(line.startswith("REPORT RequestId") for line in log_events(f))
               for f in (r["splitter_function"], r["worker_function"])}
if invocations[r["splitter_function"]] < 1 or invocations[r["worker_function"]] < summary.get("manifests", 0):
    problems.append(f"invocations {invocations} for {summary.get('manifests')} manifests")
print(json.dumps({k: summary.get(k) for k in ("job_id", "status", "input_records", "succeeded", "failed", "rejected",
                                              "manifests", "reconciled")} | {"invocations": invocations,
                                                                             "wall_seconds": round(wall, 2)}))
if problems:
    fail("; ".join(problems))
print(f"job on the deployed stack: {records} records, {summary['manifests']} manifests, all succeeded, reconciled,"
      f" by the deployed functions in {wall:.1f} s")
PY
