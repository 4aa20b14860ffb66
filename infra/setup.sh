#!/usr/bin/env bash
# Installs what the infrastructure checks need beyond scripts/setup.sh (which makes .venv from
# requirements-dev.txt: aws-sam-cli, cfn-lint, cargo-lambda, ziglang):
#  - checkov, in its own venv .venv/checkov (its boto3 pin conflicts with aws-sam-cli's);
#  - with --build: Rust's standard library for aarch64-unknown-linux-gnu (Lambda arm64), by rustup.
# Idempotent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$repo"
[ -x "$venv/bin/sam" ] || { echo "infra/setup.sh: $venv has no sam; run scripts/setup.sh first" >&2; exit 1; }
stamp=$checkov_venv/.installed
if ! { [ -f "$stamp" ] && cmp -s infra/requirements-checkov.txt "$stamp"; }; then
  python3 -m venv "$checkov_venv"
  "$checkov_venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  "$checkov_venv/bin/pip" install --quiet --disable-pip-version-check -r infra/requirements-checkov.txt
  cp infra/requirements-checkov.txt "$stamp"
  echo "infra/setup.sh: $checkov_venv ready ($("$checkov_venv/bin/checkov" --version))" >&2
fi
if [ "${1:-}" = "--build" ]; then
  if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    rustup target add aarch64-unknown-linux-gnu
  fi
fi
