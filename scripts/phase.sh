#!/usr/bin/env bash
# phase.sh NAME CMD...: runs CMD as one phase of `make test`, and appends "NAME<TAB>seconds<TAB>exit"
# to .local/phases.tsv, so a run ends with its time per phase (scripts/phase.sh --report prints
# the table). A failing phase still records its time, then fails the run.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .local
if [ "${1:-}" = "--report" ]; then
  python3 - .local/phases.tsv <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
total = sum(float(r[1]) for r in rows)
print("phase                          seconds")
for name, secs, rc in rows:
    print(f"{name:<30} {float(secs):7.0f}" + ("" if rc == "0" else f"   (exit {rc})"))
print(f"{'total':<30} {total:7.0f}  ({total / 60:.1f} min)")
PY
  exit 0
fi
name=$1
shift
start=$EPOCHREALTIME
"$@"
rc=$?
secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
printf '%s\t%s\t%s\n' "$name" "$secs" "$rc" >>.local/phases.tsv
echo "phase: $name took $secs s (exit $rc)" >&2
exit $rc
