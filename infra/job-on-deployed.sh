#!/usr/bin/env bash
# Operates the stack that infra/deploy-local.sh deployed from template.yaml into the local AWS
# (ministack) the way a user operates one in AWS: with the `fanout` CLI, naming the stack
# (FANOUT_STACK), never its resources. A pipeline config is stored (`pipeline put`, checked with
# the stack's defaults, read back with `list` and `get`), a file is submitted and followed to its
# end (`submit --follow`), and the rest is the stack's own doing: ministack runs the deployed
# functions, the bootstrap binaries that `sam build` made, as processes of this machine behind its
# own Lambda runtime API (no Docker); the bucket's notification invokes the splitter, and the
# worker's SQS event source mapping polls the manifest queue and invokes the worker (batch size,
# ReportBatchItemFailures, maximum concurrency as deployed). The API (the mock, at the stack's
# ApiBaseUrl) fails 5% of calls and the pipeline allows one attempt, so the job ends with failed
# records: `replay` sends them again once the API is healthy, and `status`, `report` and
# `dashboard` show the result. The pipeline sets neither a rate nor a chunk size, so the stack's
# RateLimitPerSecond and ChunkBytes apply: the mock's per-100 ms counts show the rate.
#   FANOUT_DEPLOYED_API=URL infra/job-on-deployed.sh RESOURCES_JSON
# (RESOURCES_JSON from infra/test_deployed.py --resources-out; URL the mock API's, which is the
# stack's ApiBaseUrl). Run it under scripts/with-stack.sh, after the deploy, as
# infra/deploy-local.sh does.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$repo"
use_local_aws
resources=${1:?usage: FANOUT_DEPLOYED_API=URL infra/job-on-deployed.sh RESOURCES_JSON}
api=${FANOUT_DEPLOYED_API:?the mock API's URL, the stack's ApiBaseUrl}
FANOUT_STACK=$(python3 -c 'import tomllib; print(tomllib.load(open("samconfig.toml","rb"))["local"]["global"]["parameters"]["stack_name"])')
export FANOUT_STACK

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

fanout=$bin_dir/fanout
records=3000
input=.local/deployed-job-$records.csv
[ -f "$input" ] || $fanout generate --records "$records" --format csv --out "$input"

# The demo pipeline without its rate, burst and chunk size (the stack's apply), with one attempt
# per call (the mock's 503s become failed records) and a limit name of its own.
pipeline=.local/deployed.yaml
python3 - pipelines/demo.yaml "$pipeline" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
text = re.sub(r"(?m)^\s*(rate_limit_per_sec|rate_limit_burst|chunk_bytes):.*\n", "", text)
text = re.sub(r"(?m)^(\s*)max_attempts:.*$", r"\1max_attempts: 1", text)
text = re.sub(r"(?m)^(\s*)rate_limit_name:.*$", r"\1rate_limit_name: deployed", text)
assert "{{API_BASE_URL}}" in text and "rate_limit_per_sec" not in text and "chunk_bytes" not in text
open(sys.argv[2], "w").write(text)
PY

step "pipeline put" $fanout pipeline put deployed "$pipeline"
$fanout pipeline list | tee .local/deployed-pipelines.txt
grep -q "^deployed: .*at 150/s" .local/deployed-pipelines.txt \
  || { echo "pipeline list: no deployed pipeline at the stack's 150/s" >&2; exit 1; }
$fanout pipeline get deployed | cmp - "$pipeline" || { echo "pipeline get differs from what was put" >&2; exit 1; }

# Submitted and followed: exit status 2 when the job completed with failed records.
set +e
$fanout submit "$input" --pipeline deployed --follow --timeout-secs 600 >.local/deployed-submit.out
rc=$?
set -e
job=$(head -n 1 .local/deployed-submit.out)
echo "submit --follow: exit status $rc, job $job" >&2
[ "$rc" = 2 ] || { cat .local/deployed-submit.out >&2; echo "submit --follow: exit status $rc, expected 2 (completed with failed records)" >&2; exit 1; }

# The API is healthy again: the failures succeed on replay.
curl -fsS -X PATCH -d '{"error_rate": 0.0}' "$api/_mock/config" >/dev/null
step "replay" $fanout replay "$job" | tee .local/deployed-replay.json
$fanout status "$job" --json >.local/deployed-status.json
step "report" $fanout report "$job" --out .local/deployed-report.html
step "dashboard" $fanout dashboard --minutes 30 --out .local/deployed-dashboard.html

python - "$resources" "$job" "$records" "$api" "$FANOUT_STACK" <<'PY'
import json, sys, urllib.request
import boto3

r = json.load(open(sys.argv[1]))
job_id, records, api, stack = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
rate, burst = 150, 15  # samconfig.toml [local.deploy] RateLimitPerSecond, RateLimitBurst
s3, lam, logs = boto3.client("s3"), boto3.client("lambda"), boto3.client("logs")
bucket = r["bucket"]
problems = []


def log_events(function):
    group = lam.get_function_configuration(FunctionName=function)["LoggingConfig"]["LogGroup"]
    pages = logs.get_paginator("filter_log_events").paginate(logGroupName=group)
    return [e["message"] for page in pages for e in page["events"]]


submitted = [json.loads(line) for line in open(".local/deployed-submit.out").read().splitlines()[1:] if line]
first = submitted[-1] if submitted else {}
if not (first.get("status") == "COMPLETED" and first.get("input_records") == records and first.get("failed", 0) > 0
        and first.get("reconciled")):
    problems.append(f"submit's summary: {first}")
replayed = json.load(open(".local/deployed-replay.json"))
if replayed.get("replayed") != first.get("failed") or replayed.get("now_succeeded") != first.get("failed"):
    problems.append(f"replay {replayed} for {first.get('failed')} failed records")
status = json.loads(open(".local/deployed-status.json").read().splitlines()[0])
if (status.get("status"), status.get("records"), status.get("succeeded"), status.get("failed")) != ("COMPLETED", records, records, 0):
    problems.append(f"status after the replay: {status}")
if status.get("rate_limit_per_sec") != rate:
    problems.append(f"status shows the limit {status.get('rate_limit_per_sec')}, the job ran at the stack's {rate}")
summary = json.loads(s3.get_object(Bucket=bucket, Key=f"results/{job_id}/_SUMMARY.json")["Body"].read())
if (summary.get("succeeded"), summary.get("failed"), summary.get("reconciled")) != (records, 0, True):
    problems.append(f"summary after the replay: {summary}")
if summary.get("manifests", 0) < 2:
    problems.append(f"only {summary.get('manifests')} manifest(s) of ChunkBytes")
# One result line per record (offsets unique), and nothing left under failed/ or rejected/.
offsets = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"results/{job_id}/part-"):
    for obj in page.get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
        offsets += [json.loads(line)["offset"] for line in body.splitlines() if line]
if len(offsets) != records or len(set(offsets)) != records:
    problems.append(f"{len(offsets)} result lines, {len(set(offsets))} distinct offsets, for {records} records")
for prefix in ("failed", "rejected"):
    if s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{job_id}/").get("KeyCount"):
        problems.append(f"objects under {prefix}/{job_id}/ after the replay")
if not s3.list_objects_v2(Bucket=bucket, Prefix=f"results/{job_id}/_REPORT.html").get("KeyCount"):
    problems.append("no _REPORT.html in the job's results")
if job_id not in open(".local/deployed-report.html").read():
    problems.append("the local report does not name the job")
dashboard = open(".local/deployed-dashboard.html").read()
if f"{stack} dashboard" not in dashboard:
    problems.append("the dashboard does not name the stack")
# Drawn with the stack's own parameters and resource names: its limit line is the deployed
# RateLimitPerSecond (not the template's default), and no name was left unresolved.
if f"Rate limit {rate}/s" not in dashboard or "unknown" in dashboard:
    problems.append("the dashboard is not drawn with the stack's parameters and names")
# The stack's RateLimitPerSecond at the API: no second above 1.1 x the rate plus the burst, and
# the calls spread over at least the time the rate allows (the code's default, 5,000/s, would
# have sent them in about a second).
stats = json.load(urllib.request.urlopen(f"{api}/_mock/stats"))
windows = stats["windows_100ms"]
peak = max(sum(windows[i:i + 10]) for i in range(max(1, len(windows) - 9)))
calls = stats["total_requests"]
job_calls = records + replayed.get("replayed", 0)
span = len(windows) / 10
floor = (records - burst) / rate
if calls != job_calls:
    problems.append(f"the mock saw {calls} calls, the job and its replay made {job_calls}")
if peak > 1.1 * rate + burst:
    problems.append(f"{peak} calls in one second at the stack's {rate}/s")
if span < floor:
    problems.append(f"{calls} calls in {span} s: faster than {rate}/s")
# The deployed functions did the work: their invocations are in their log groups.
invocations = {f: sum(line.startswith("REPORT RequestId") for line in log_events(f))
               for f in (r["splitter_function"], r["worker_function"])}
if invocations[r["splitter_function"]] < 1 or invocations[r["worker_function"]] < summary.get("manifests", 0):
    problems.append(f"invocations {invocations} for {summary.get('manifests')} manifests")
print(json.dumps({"job_id": job_id, "records": records, "failed_then_replayed": replayed.get("replayed"),
                  "manifests": summary.get("manifests"), "api_calls": calls, "peak_calls_per_second": peak,
                  "seconds_of_calls": span, "stack_rate": rate, "invocations": invocations}))
if problems:
    for function in (r["splitter_function"], r["worker_function"]):
        lines = log_events(function)
        print(f"--- {function}: last of {len(lines)} log lines", file=sys.stderr)
        print("\n".join(line[:400] for line in lines[-15:]), file=sys.stderr)
    sys.exit("jobs on the deployed stack: " + "; ".join(problems))
print(f"the deployed stack, operated by the CLI: {records} records at the stack's {rate}/s, "
      f"{replayed.get('replayed')} failures replayed, all succeeded, reconciled")
PY
