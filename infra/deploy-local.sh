#!/usr/bin/env bash
# Deploys template.yaml into the local AWS emulator and checks what was created:
#   sam build -> sam package --config-env local -> SAM transform (infra/translate.py, because moto
#   does not apply transforms) -> sam deploy --config-env local -> infra/test_deployed.py (reads
#   the resources back) -> infra/job-on-deployed.sh (a job on those resources).
# It builds first, then starts moto for the rest with scripts/with-stack.sh (or uses the one in
# AWS_ENDPOINT_URL when run under it).
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
mkdir -p .aws-sam/local

stack=$(python3 -c 'import tomllib; print(tomllib.load(open("samconfig.toml","rb"))["local"]["global"]["parameters"]["stack_name"])')
artifacts=$(python3 -c 'import tomllib; print(tomllib.load(open("samconfig.toml","rb"))["local"]["package"]["parameters"]["s3_bucket"])')

step "artifact bucket" python -c "import boto3; boto3.client('s3').create_bucket(Bucket='$artifacts')"
step "sam package" sam package --config-env local
step "SAM transform" python infra/translate.py .aws-sam/local/packaged.yaml .aws-sam/local/template.json
step "sam deploy" sam deploy --config-env local
step "deployed resources" python infra/test_deployed.py --stack "$stack" --template .aws-sam/local/template.json \
  --resources-out .aws-sam/local/resources.json
step "job on the deployed stack" infra/job-on-deployed.sh .aws-sam/local/resources.json
