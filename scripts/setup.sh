#!/usr/bin/env bash
# Installs what the project needs beyond Rust: a Python venv (.venv) with the local AWS (moto), and
# Chromium for the report tests.
# Idempotent: does nothing when requirements-dev.txt has not changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
# Headless Chromium renders the job report in the tests (tests/e2e/observe.rs): Debian's package.
if [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing chromium (apt-get)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
venv=.venv
stamp=$venv/.installed
if [ -f "$stamp" ] && cmp -s requirements-dev.txt "$stamp"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements-dev.txt
cp requirements-dev.txt "$stamp"
echo "setup: $venv ready ($("$venv/bin/python" -c 'import moto; print("moto", moto.__version__)'))"
