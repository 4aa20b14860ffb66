#!/usr/bin/env bash
# Static checks of template.yaml, no AWS and no emulator needed:
#   sam validate --lint, cfn-lint (no error, no warning), checkov (no failed check), and the Rust
#   test infra/template-tests/template.rs (metric names against shared/core/src/metrics.rs, env vars,
#   keys, IAM, ...).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$repo"
"$repo/infra/setup.sh"
step "sam validate --lint" sam validate --lint --template-file template.yaml
# cfn-lint exits non-zero on any error (2) or warning (4).
step "cfn-lint" cfn-lint --format parseable template.yaml
step "checkov" "$checkov_venv/bin/checkov" --file template.yaml --framework cloudformation \
  --skip-download --compact --quiet
# `make test` has just run it in `cargo test --workspace`; a second run with `-p` would rebuild
# dependencies with other features (minutes), so it says so.
if [ -z "${FANOUT_TEMPLATE_TEST_DONE:-}" ]; then
  step "infra/template-tests" cargo test --locked -p template-tests
fi
