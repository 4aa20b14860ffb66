#!/usr/bin/env bash
# Runs a small job on the stack that infra/deploy-local.sh deployed from template.yaml into the
# local AWS (its KMS-encrypted bucket, its queue with the DLQ redrive, its ledger table), with the
# same splitter and worker handlers the Lambda binaries run, and checks that every record is
# accounted for. This is what ties the local runs to the template: the resources here are the
# template's, not the ones `fanout local up` creates.
#   infra/job-on-deployed.sh RESOURCES_JSON   (written by infra/test_deployed.py --resources-out)
# Run it under scripts/with-stack.sh, after the deploy, as infra/deploy-local.sh does.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$repo"
use_local_aws
resources=${1:?usage: infra/job-on-deployed.sh RESOURCES_JSON}
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$resources" "$1"; }

# The local runner's pollers play the worker's SQS event source mapping. moto would run the
# deployed mapping too: on every SendMessage it receives the message and tries to invoke the
# function (no Docker here, so the invocation fails and the message is received again and again
# until it is redriven to the DLQ). So the deployed mapping is switched off for this run.
python3 - "$(field worker_function)" <<'PY'
import sys, boto3
lam = boto3.client("lambda")
mappings = lam.list_event_source_mappings(FunctionName=sys.argv[1])["EventSourceMappings"]
assert mappings, f"{sys.argv[1]} has no event source mapping"
for m in mappings:
    lam.update_event_source_mapping(UUID=m["UUID"], Enabled=False)
print(f"disabled {len(mappings)} event source mapping(s) of {sys.argv[1]}: the local pollers take their place")
PY

# The binaries of the workspace's build: a no-op after `make test`'s compile phase. (A
# `cargo build -p fanout -p mock-api` would select other features and compile much of it again.)
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
out=$($bin/fanout local run --quiet --input "$input" --pipeline "$pipeline" --name deployed \
  --bucket "$(field bucket)" --queue-url "$(field queue_url)" --dlq-url "$(field dlq_url)" \
  --table "$(field table)" --workers 4)
echo "$out"
python3 - "$records" "$out" <<'PY'
import json, sys
records, line = int(sys.argv[1]), json.loads(sys.argv[2].splitlines()[-1])
problems = []
if line.get("status") != "COMPLETED":
    problems.append(f"status {line.get('status')}")
if line.get("input_records") != records:
    problems.append(f"input_records {line.get('input_records')} != {records}")
if line.get("succeeded") != records:
    problems.append(f"succeeded {line.get('succeeded')} != {records}")
if not line.get("reconciled"):
    problems.append("not reconciled")
if line.get("manifests", 0) < 2:
    problems.append(f"only {line.get('manifests')} manifest(s)")
if problems:
    sys.exit("job on the deployed stack: " + "; ".join(problems))
print(f"job on the deployed stack: {records} records, {line['manifests']} manifests, all succeeded, reconciled")
PY
