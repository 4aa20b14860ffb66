#!/usr/bin/env bash
# The local demo: generates RECORDS records, starts the mock API, runs the job on the local stack
# with the same handlers as Lambda, and prints the summary (last line: one JSON object).
# Run it through `make demo` (which builds and sets up first).
set -euo pipefail
cd "$(dirname "$0")/.."
records=${RECORDS:-1000000}
workers=${WORKERS:-8}
bin=target/release
mkdir -p .local
input=.local/demo-$records.csv
[ -f "$input" ] || $bin/fanout generate --records "$records" --format csv --out "$input"

api_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The demo API answers in LATENCY_MS (20-80 ms, uniform, as issue 18's rate-bound benchmark
# says) and enforces no rate limit of its own: the fleet's limit is the pipeline's.
$bin/mock-api --bind "127.0.0.1:$api_port" --latency-ms "${LATENCY_MS:-20-80}" >.local/mock-api.log 2>&1 &
api_pid=$!
trap 'kill $api_pid 2>/dev/null; wait $api_pid 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 50); do grep -q listening .local/mock-api.log && break; sleep 0.1; done

# The config's {{API_BASE_URL}} is the local stack's, as a deployed stack's is its ApiBaseUrl.
api="http://127.0.0.1:$api_port"
$bin/fanout validate pipelines/demo.yaml --sample "$input" --api-base-url "$api" >&2
# The last line gets where the time went beyond the floor N / R (scripts/rate-breakdown.py).
rate=$(sed -n 's/^ *rate_limit_per_sec: *//p' pipelines/demo.yaml)
# BATCH_SIZE: manifests per worker invocation (the template's WorkerBatchSize, default 1).
$bin/fanout local run --input "$input" --pipeline pipelines/demo.yaml --name demo \
    --api-base-url "$api" --workers "$workers" --batch-size "${BATCH_SIZE:-1}" ${QUIET:+--quiet} |
    scripts/rate-breakdown.py --rate "$rate" --stats-url "$api/_mock/stats"
