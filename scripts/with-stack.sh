#!/usr/bin/env bash
# Runs a command with the local AWS (moto server) up on a free loopback port, and stops it after.
# The command sees AWS_ENDPOINT_URL and dummy credentials, which the real aws-sdk clients use.
set -euo pipefail
cd "$(dirname "$0")/.."
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p .local
log=.local/moto-$port.log
# Through scripts/moto_server.py: moto with DynamoDB's per-item atomicity (see there).
.venv/bin/python scripts/moto_server.py -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null; wait $moto_pid 2>/dev/null || true' EXIT INT TERM
export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
# No instance metadata lookups on a developer machine.
export AWS_EC2_METADATA_DISABLED=true
for _ in $(seq 1 100); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen('$AWS_ENDPOINT_URL/moto-api/data.json', timeout=1)" 2>/dev/null; then
    break
  fi
  kill -0 $moto_pid 2>/dev/null || { echo "moto server failed to start:"; cat "$log"; exit 1; }
  sleep 0.2
done
echo "local AWS (moto) at $AWS_ENDPOINT_URL" >&2
# FANOUT_CLOUDWATCH_APART=1: CloudWatch in a moto of its own, as in AWS, where metrics share nothing
# with DynamoDB. One moto parses PutMetricData under the interpreter lock every service shares,
# which stalls DynamoDB calls (the rate limiter's leases) for a load test. Not the default: stacks
# deployed from the template keep their alarms in the main moto.
if [ "${FANOUT_CLOUDWATCH_APART:-}" = 1 ]; then
  cw_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  .venv/bin/python scripts/moto_server.py -H 127.0.0.1 -p "$cw_port" >".local/moto-$cw_port.log" 2>&1 &
  cw_pid=$!
  trap 'kill $moto_pid $cw_pid 2>/dev/null; wait $moto_pid $cw_pid 2>/dev/null || true' EXIT INT TERM
  export AWS_ENDPOINT_URL_CLOUDWATCH="http://127.0.0.1:$cw_port"
  for _ in $(seq 1 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('$AWS_ENDPOINT_URL_CLOUDWATCH/moto-api/data.json', timeout=1)" 2>/dev/null && break
    kill -0 $cw_pid 2>/dev/null || { echo "moto server (CloudWatch) failed to start"; exit 1; }
    sleep 0.2
  done
  echo "local CloudWatch (moto) at $AWS_ENDPOINT_URL_CLOUDWATCH" >&2
fi
"$@"
