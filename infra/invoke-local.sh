#!/usr/bin/env bash
# Runs the sample events in events/ through the real Lambda binaries, as Lambda would, without
# Docker: `cargo lambda watch --only-lambda-apis` serves the Lambda runtime API, each function's
# binary (built for this host) polls it as it would in Lambda, `cargo lambda invoke` sends each
# event, and the answers are checked.
# Run it under scripts/with-stack.sh (the functions talk to the local AWS, ministack):
#   scripts/with-stack.sh infra/invoke-local.sh
# The resources here are `fanout local up`'s (no function, no notification, no event source
# mapping), so ministack invokes nothing itself: every invocation is one of `cargo lambda invoke`'s.
# (infra/job-on-deployed.sh is where ministack runs the deployed functions.)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$repo"
use_local_aws

# The events name the bucket fanout-data: the local stack with prefix "fanout".
# The binaries of the workspace's build (a no-op after `make test`'s compile phase). Letting
# cargo lambda build the functions would select other features and compile much of it again, and
# an invocation waiting for that build could find its deadline already past.
workspace_build
stack_json=$("$bin_dir/fanout" local up --prefix fanout)
queue_url=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["queue_url"])' "$stack_json")
table=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["table"])' "$stack_json")
kms_key_id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["kms_key_id"])' "$stack_json")

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p .local
log=.local/cargo-lambda-watch.log
cargo lambda watch --only-lambda-apis --invoke-address 127.0.0.1 --invoke-port "$port" >"$log" 2>&1 &
pids=($!)
trap 'kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), timeout=1)" 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.2
done
# cargo lambda's runtime API sends a deadline in 1970: the proxy sends now + the timeout instead,
# as Lambda does (infra/runtime_deadline_proxy.py says why it matters to the worker).
proxy_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 infra/runtime_deadline_proxy.py "$proxy_port" "$port" 60 >.local/runtime-proxy.log 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $proxy_port), timeout=1)" 2>/dev/null && break
  sleep 0.1
done
# Each function as Lambda starts it: the runtime API (its own path, through the proxy), the
# function's variables, the environment the template sets.
for function in splitter worker; do
  env QUEUE_URL="$queue_url" TABLE_NAME="$table" KMS_KEY_ID="$kms_key_id" \
    AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$proxy_port/.rt/$function" \
    AWS_LAMBDA_FUNCTION_NAME="$function" AWS_LAMBDA_FUNCTION_VERSION=1 \
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1024 \
    AWS_ENDPOINT_URL="$AWS_ENDPOINT_URL" AWS_REGION="$AWS_REGION" \
    AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}" \
    AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}" \
    AWS_EC2_METADATA_DISABLED=true RUST_LOG=info \
    "$bin_dir/$function" >".local/lambda-$function.log" 2>&1 &
  pids+=($!)
done

passed=0
failed=0
# check NAME FUNCTION EVENT EXPECT: invokes FUNCTION with EVENT; EXPECT is a Python expression over
# the answer `r` (parsed JSON, or the error text when the invocation failed, with ok=False).
check() {
  local name=$1 function=$2 event=$3 expect=$4 out rc
  set +e
  out=$(cargo lambda invoke "$function" --data-file "$event" --invoke-address 127.0.0.1 --invoke-port "$port" --output-format json 2>&1)
  rc=$?
  set -e
  if python3 - "$rc" "$out" "$expect" <<'PY'
import json, sys
rc, out, expect = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ok = rc == 0
try:
    r = json.loads(out) if ok else out
except json.JSONDecodeError:
    r = out
sys.exit(0 if eval(expect, {"r": r, "ok": ok}) else 1)
PY
  then
    passed=$((passed + 1)); echo "ok   $name"
  else
    failed=$((failed + 1)); echo "FAIL $name (exit $rc): $out"
  fi
}

check "splitter ignores a key outside input/" splitter events/s3-put-outside-input.json \
  'ok and r[0]["outcome"] == "ignored" and r[0]["key"].startswith("results/")'
check "splitter: an upload whose object version is gone fails the invocation (Lambda retries it)" splitter events/s3-put-input.json \
  'not ok and "HeadObject" in r'
# The same event for an object that exists: upload a config and an input, and put the real
# version id into a copy of events/s3-put-input.json.
started_event=.local/s3-put-input-uploaded.json
python - events/s3-put-input.json "$started_event" <<'PY'
import json, sys, boto3
s3 = boto3.client("s3")
event = json.load(open(sys.argv[1]))
obj = event["Records"][0]["s3"]
bucket, key = obj["bucket"]["name"], obj["object"]["key"]
config = open("pipelines/demo.yaml").read().replace("{{API_BASE_URL}}", "http://127.0.0.1:9")
s3.put_object(Bucket=bucket, Key="pipelines/demo.yaml", Body=config.encode())
rows = "id,email,name,amount\n" + "".join(f"{i},u{i}@example.com,user {i},{i}.5\n" for i in range(1000))
put = s3.put_object(Bucket=bucket, Key=key, Body=rows.encode())
obj["object"].update(versionId=put["VersionId"], size=len(rows), eTag=put["ETag"].strip('"'))
json.dump(event, open(sys.argv[2], "w"))
PY
check "splitter starts a job for an upload under input/" splitter "$started_event" \
  'ok and r[0]["outcome"] == "started" and r[0]["manifests"] >= 1'
check "splitter: the same event again is a duplicate (idempotent)" splitter "$started_event" \
  'ok and r[0]["outcome"] in ("duplicate", "started")'
check "worker: a manifest for a missing object is reported as a batch item failure" worker events/sqs-manifest-missing-object.json \
  'ok and [f["itemIdentifier"] for f in r["batchItemFailures"]] == ["00000000-0000-0000-0000-000000000001"]'
# ... for the reason the event is about: the object is missing (not, say, no time left to start).
if grep -q 'NoSuchKey' .local/lambda-worker.log; then
  passed=$((passed + 1)); echo "ok   worker: the failure is the missing object (NoSuchKey in its log)"
else
  failed=$((failed + 1)); echo "FAIL worker: no NoSuchKey in .local/lambda-worker.log"; tail -5 .local/lambda-worker.log
fi
if [ -f events/sqs-manifest.json ]; then
  check "worker processes a manifest" worker events/sqs-manifest.json 'ok and r["batchItemFailures"] == []'
fi
echo "events: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
