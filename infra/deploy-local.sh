#!/usr/bin/env bash
# Deploys template.yaml into the local AWS (ministack) as `sam deploy` deploys it into AWS, checks
# what was created, and runs a job on it:
#   sam build -> sam package --config-env local -> the packaged template less what ministack's
#   CloudFormation refuses (below) -> sam deploy --config-env local (ministack applies the
#   AWS::Serverless transform, CAPABILITY_AUTO_EXPAND; ApiBaseUrl is the mock API started here)
#   -> infra/test_deployed.py (reads the resources back) -> infra/job-on-deployed.sh (the stack
#   operated with the `fanout` CLI: a pipeline stored, a job submitted and followed, replayed,
#   reported, the dashboard drawn; the jobs run by the deployed functions).
# It builds first, then starts the local AWS for the rest with scripts/with-stack.sh (or uses the
# one in AWS_ENDPOINT_URL when run under it).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$repo"
if [ "${1:-}" != "--deploy" ]; then
  # Always sam build: .aws-sam/build/template.yaml is the copy of template.yaml that sam build
  # made, and cargo makes the build itself incremental.
  "$repo/infra/build.sh" --config-env local
  if [ -n "${AWS_ENDPOINT_URL:-}" ]; then
    exec "$0" --deploy
  fi
  exec "$repo/scripts/with-stack.sh" "$0" --deploy
fi
use_local_aws
mkdir -p .aws-sam/local .local

stack=$(python3 -c 'import tomllib; print(tomllib.load(open("samconfig.toml","rb"))["local"]["global"]["parameters"]["stack_name"])')
artifacts=$(python3 -c 'import tomllib; print(tomllib.load(open("samconfig.toml","rb"))["local"]["package"]["parameters"]["s3_bucket"])')
deployed=$(python3 -c 'import tomllib; print(tomllib.load(open("samconfig.toml","rb"))["local"]["deploy"]["parameters"]["template_file"])')

# The external API of the jobs on the deployed stack: the mock API, started first so that its
# address is the stack's ApiBaseUrl (the deployed splitter puts it into the configs that use
# {{API_BASE_URL}}). The workspace's build has it (a no-op after `make test`'s compile phase; a
# `cargo build -p mock-api` would select other features and compile much of it again). It answers
# 5% of calls 503 until infra/job-on-deployed.sh turns that off before its replay.
workspace_build
"$bin_dir/mock-api" --bind 127.0.0.1:0 --latency-ms 1-5 --error-rate 0.05 >.local/deployed-mock-api.log 2>&1 &
api_pid=$!
trap 'kill $api_pid 2>/dev/null; wait $api_pid 2>/dev/null || true' EXIT INT TERM
api_url=
for _ in $(seq 1 100); do
  api_url=$(sed -n 's/^mock-api listening on //p' .local/deployed-mock-api.log)
  [ -n "$api_url" ] && break
  sleep 0.1
done
[ -n "$api_url" ] || { cat .local/deployed-mock-api.log >&2; echo "deploy-local: the mock API did not start" >&2; exit 1; }
# samconfig.toml's overrides for the local deploy, with the mock's address as ApiBaseUrl.
overrides=$(python3 - "$api_url" <<'PY'
import re, sys, tomllib
o = tomllib.load(open("samconfig.toml", "rb"))["local"]["deploy"]["parameters"]["parameter_overrides"]
print(re.sub(r"\bApiBaseUrl=\S+", "ApiBaseUrl=" + sys.argv[1], o))
PY
)

step "artifact bucket" python -c "import boto3; boto3.client('s3').create_bucket(Bucket='$artifacts')"
step "sam package" sam package --config-env local
# ministack's CloudFormation refuses an AWS::CloudWatch::Alarm with Metrics (metric math: "is not
# supported; use MetricName and Namespace", cloudformation/provisioners.py
# _cw_metric_alarm_record), and one refused resource fails the whole stack. So those alarms, and
# nothing else, are left out of what is deployed here; infra/test_deployed.py compares the stack's
# alarms with the packaged template and names each one left out.
step "template for ministack" python - .aws-sam/local/packaged.yaml "$deployed" <<'PY'
import json, sys
from samtranslator.yaml_helper import yaml_parse

src, dst = sys.argv[1:]
with open(src, encoding="utf-8") as f:
    template = yaml_parse(f.read())
resources = template["Resources"]
left_out = sorted(k for k, r in resources.items()
                  if r["Type"] == "AWS::CloudWatch::Alarm" and "Metrics" in r.get("Properties", {}))
for k in left_out:
    del resources[k]
with open(dst, "w", encoding="utf-8") as f:
    json.dump(template, f, separators=(",", ":"))
print(f"left out (metric-math alarms): {', '.join(left_out) or 'none'} -> {dst}", file=sys.stderr)
PY
step "sam deploy" sam deploy --config-env local --parameter-overrides "$overrides"
step "deployed resources" python infra/test_deployed.py --stack "$stack" --template .aws-sam/local/packaged.yaml \
  --resources-out .aws-sam/local/resources.json
step "jobs on the deployed stack, by the CLI" env FANOUT_DEPLOYED_API="$api_url" \
  infra/job-on-deployed.sh .aws-sam/local/resources.json
