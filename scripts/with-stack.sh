#!/usr/bin/env bash
# Runs a command with the local AWS up on a free loopback port, and stops it after: one ministack
# process (S3, SQS, DynamoDB, CloudWatch over CBOR, KMS, CloudFormation with the SAM transform),
# pinned in requirements-stack.txt with the extras it needs (cbor2, aws-sam-translator).
# The command sees AWS_ENDPOINT_URL and dummy credentials, which the real aws-sdk clients use.
set -euo pipefail
cd "$(dirname "$0")/.."
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p .local
log=.local/ministack-$port.log
# In memory (nothing persisted between runs), bound to loopback, quiet: every request logged at
# INFO costs the emulator's one interpreter more than the request itself under load.
# AWS_ENDPOINT_URL: ministack passes it on to the Lambda functions it runs (a stack deployed by
# infra/deploy-local.sh), which then call this emulator rather than AWS.
GATEWAY_PORT=$port BIND_HOST=127.0.0.1 LOG_LEVEL=WARNING S3_PERSIST=0 \
  AWS_ENDPOINT_URL="http://127.0.0.1:$port" TMPDIR="$PWD/.local" \
  .venv/stack/bin/ministack >"$log" 2>&1 &
stack_pid=$!
# The functions' code that ministack unpacked for a deployed stack (about 40 MB) goes with it.
trap 'kill $stack_pid 2>/dev/null; wait $stack_pid 2>/dev/null || true; rm -rf .local/ministack-provided-code-$port' EXIT INT TERM
export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
# No instance metadata lookups on a developer machine.
export AWS_EC2_METADATA_DISABLED=true
for _ in $(seq 1 100); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen('$AWS_ENDPOINT_URL/_ministack/health', timeout=1)" 2>/dev/null; then
    break
  fi
  kill -0 $stack_pid 2>/dev/null || { echo "the local AWS (ministack) failed to start:"; cat "$log"; exit 1; }
  sleep 0.2
done
echo "local AWS (ministack) at $AWS_ENDPOINT_URL" >&2
"$@"
