#!/usr/bin/env bash
# Installs what the project needs beyond Rust: a Python venv (.venv) with the SAM CLI, cfn-lint,
# cargo-lambda and zig (requirements-dev.txt); the local AWS, ministack, in a venv of its own
# (.venv/stack, requirements-stack.txt: its botocore pin conflicts with aws-sam-cli's boto3 pin);
# and Chromium for the report tests.
# Idempotent: a venv is rebuilt only when its requirements file changed since its last install.
set -euo pipefail
cd "$(dirname "$0")/.."
# Headless Chromium renders the job report in the tests (tests/e2e/observe.rs): Debian's package.
if [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing chromium (apt-get)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# venv DIR REQUIREMENTS: DIR holds exactly REQUIREMENTS' pins.
venv() {
  local dir=$1 requirements=$2 stamp=$1/.installed
  if [ -f "$stamp" ] && cmp -s "$requirements" "$stamp"; then
    return 0
  fi
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
  echo "setup: $dir ready ($requirements)" >&2
}
venv .venv requirements-dev.txt
venv .venv/stack requirements-stack.txt
