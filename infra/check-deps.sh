#!/usr/bin/env bash
# The Lambda binaries' dependency graph holds none of the local tooling: not the fanout CLI crate
# (local runner, report, dashboard, charts, progress), the test harness or the mock API, nor what
# only they use (clap, indicatif, axum, png). Prints each function's normal dependencies, one per
# line, to .local/deps-<function>.txt, and fails naming any forbidden crate found.
# Then checks that each function compiles with its own features, as the production build compiles
# it (`cargo lambda build --bin NAME` in its package, which selects only what NAME depends on): the
# local sam build compiles the workspace's build, whose features cargo unifies over every member
# (infra/cargo-lambda-local.toml), so a function that used a feature only the CLI or the tests turn
# on would still build there.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .local
forbidden='^(fanout|integration-tests|template-tests|mock-api|clap|indicatif|axum|png|tempfile|criterion|proptest) v'
status=0
for f in splitter worker; do
  cargo tree --locked -p "$f" -e normal --prefix none | sed 's/ (\*)$//; s/ (proc-macro)$//' | sort -u >".local/deps-$f.txt"
  if grep -E "$forbidden" ".local/deps-$f.txt" >&2; then
    echo "check-deps: the $f Lambda depends on local tooling (above)" >&2
    status=1
  fi
  echo "check-deps: $f links $(wc -l <".local/deps-$f.txt") crates, none of the local tooling" >&2
done
for f in splitter worker; do
  cargo check --locked -p "$f" --bin "$f" || status=1
done
exit $status
