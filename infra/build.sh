#!/usr/bin/env bash
# sam build: both functions for Lambda arm64 (aarch64-unknown-linux-gnu) with cargo-lambda, which
# links with zig (the ziglang package from PyPI in .venv). Output: .aws-sam/build/.
# Extra arguments go to sam build (e.g. --config-env local).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$repo"
"$repo/infra/setup.sh" --build
step "sam build" sam build "$@"
for f in SplitterFunction WorkerFunction; do
  file ".aws-sam/build/$f/bootstrap" | grep -q "ARM aarch64" \
    || { echo "infra/build.sh: .aws-sam/build/$f/bootstrap is not an aarch64 binary" >&2; exit 1; }
done
ls -l .aws-sam/build/*/bootstrap >&2
