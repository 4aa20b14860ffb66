#!/usr/bin/env bash
# Deploys template.yaml into the local AWS emulator and checks what was created:
#   sam build -> sam package --config-env local -> SAM transform (infra/translate.py, because moto
#   does not apply transforms) -> sam deploy --config-env local -> infra/test_deployed.py.
# Run it under scripts/with-stack.sh, which starts moto and exports AWS_ENDPOINT_URL:
#   scripts/with-stack.sh infra/deploy-local.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$repo"
: "${AWS_ENDPOINT_URL:?run this under scripts/with-stack.sh (the local AWS)}"
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-testing} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-testing}
# The emulator is one host: S3 path-style addressing, as the Rust clients use against it.
mkdir -p .local .aws-sam/local
cat >.local/aws-config <<CFG
[default]
region = $AWS_DEFAULT_REGION
s3 =
    addressing_style = path
CFG
export AWS_CONFIG_FILE=$repo/.local/aws-config

stack=$(python3 -c 'import tomllib; print(tomllib.load(open("samconfig.toml","rb"))["local"]["global"]["parameters"]["stack_name"])')
artifacts=$(python3 -c 'import tomllib; print(tomllib.load(open("samconfig.toml","rb"))["local"]["package"]["parameters"]["s3_bucket"])')

# Always sam build: .aws-sam/build/template.yaml is the copy of template.yaml that sam build made,
# and cargo makes the build itself incremental.
"$repo/infra/build.sh" --config-env local
step "artifact bucket" python -c "import boto3; boto3.client('s3').create_bucket(Bucket='$artifacts')"
step "sam package" sam package --config-env local
step "SAM transform" python infra/translate.py .aws-sam/local/packaged.yaml .aws-sam/local/template.json
step "sam deploy" sam deploy --config-env local
step "deployed resources" python infra/test_deployed.py --stack "$stack" --template .aws-sam/local/template.json
