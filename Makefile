# s3-api-fanout: the two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
RECORDS ?= 1000000
WORKERS ?= 8

.PHONY: demo test test-faults fuzz test-infra setup lint bench bench-cpu bench-memory bench-limit check-plan clean

## demo: run a job of RECORDS records (default 1,000,000) on the local stack; last line is JSON.
demo: setup
	cargo build --release --locked -p fanout -p mock-api
	RECORDS=$(RECORDS) WORKERS=$(WORKERS) scripts/with-stack.sh scripts/demo.sh

## test: every check and test, each phase timed (scripts/phase.sh; the table at the end, and in
## .local/phases.tsv): formatting and clippy; the Lambda binaries' dependency graph (no local
## tooling) and each function type-checked with its own features (infra/check-deps.sh); the
## workspace's build (bins and tests, one feature set: the infra scripts run these binaries rather
## than build their own); unit and property tests of every crate, the mock API's and the
## template's static checks (infra/template-tests); the end-to-end suite on the local stack
## (tests/e2e, one binary, run in four processes: see tests/e2e/main.rs); sam validate --lint,
## cfn-lint and checkov; the template built (sam build --config-env local: x86_64, see
## samconfig.toml; its cargo lambda builds the workspace's build, see
## infra/cargo-lambda-local.toml), deployed into the local AWS, read back and given a job; and the
## events/ run through the Lambda binaries (behind cargo lambda's runtime API).
## Every cargo build selects the whole workspace (--workspace with target filters), so the
## features cargo unifies are the same each time and nothing is compiled twice; only check-deps
## checks each function alone (check mode, the units that a function's own features change).
## Every cargo command here builds for the host's target triple, named (CARGO_BUILD_TARGET, as
## infra/lib.sh names it for the infra scripts): the local sam build's cargo lambda names its
## triple, and a named triple is a build of its own (target/TRIPLE/), so only thus does the
## infra-build phase find the compile phase's units.
## Each phase that needs AWS gets a fresh local AWS (scripts/with-stack.sh: one ministack process).
HOST_TARGET := $(shell rustc -vV | sed -n 's/^host: //p')
test: export CARGO_BUILD_TARGET := $(HOST_TARGET)
E2E := cargo test --workspace --locked --test e2e
test: setup
	@rm -f .local/phases.tsv
	scripts/phase.sh lint $(MAKE) --no-print-directory lint
	scripts/phase.sh deps infra/check-deps.sh
	scripts/phase.sh compile cargo build --workspace --all-targets --locked
	scripts/phase.sh unit cargo test --workspace --locked --lib --bins --test template --test mock
	scripts/phase.sh doc cargo test --workspace --locked --doc
	scripts/phase.sh integration scripts/with-stack.sh $(E2E) --test status_json --test limit_command -- \
		--skip secrets:: --skip resilience:: --skip limit::
	scripts/phase.sh secrets scripts/with-stack.sh $(E2E) secrets::
	scripts/phase.sh load-resilience scripts/with-stack.sh $(E2E) resilience::
	scripts/phase.sh load-limit scripts/with-stack.sh $(E2E) limit::
	FANOUT_TEMPLATE_TEST_DONE=1 scripts/phase.sh infra-check infra/check.sh
	scripts/phase.sh infra-build infra/build.sh --config-env local
	scripts/phase.sh deploy scripts/with-stack.sh infra/deploy-local.sh --deploy
	scripts/phase.sh events scripts/with-stack.sh infra/invoke-local.sh
	@scripts/phase.sh --report

## test-faults: the fault-injection suite (tests/e2e/faults.rs, also part of `make test`) alone; each
## scenario checks every record exactly once. Last line is JSON: scenarios, records in, lost, duplicated.
test-faults: setup
	@mkdir -p .local && rm -f .local/faults.jsonl
	FANOUT_FAULTS_OUT=$(CURDIR)/.local/faults.jsonl scripts/with-stack.sh \
		cargo test --workspace --locked --test e2e faults::; rc=$$?; \
	python3 -c 'import json,sys; rows=[json.loads(l) for l in open(sys.argv[1])]; print(json.dumps({"scenarios": len(rows), "records_in": sum(r["records_in"] for r in rows), "records_lost": sum(r["records_lost"] for r in rows), "records_duplicated": sum(r["records_duplicated"] for r in rows)}))' .local/faults.jsonl; \
	exit $$rc

## fuzz: the cargo-fuzz target for the record reader and range aligner (needs nightly and
## cargo-fuzz; `make test` runs the same invariants on stable as a bounded property test).
fuzz:
	cd fuzz && cargo +nightly fuzz run records -- -max_total_time=$${FUZZ_SECONDS:-60}

## test-infra: the same infrastructure checks, plus the production build: sam build for arm64
## (cargo-lambda + zig). Needs Rust's aarch64 standard library, which infra/setup.sh --build fetches
## with rustup from the Rust distribution server (not reachable from CI, hence not in `make test`).
test-infra: setup
	infra/check.sh
	infra/build.sh
	infra/deploy-local.sh
	scripts/with-stack.sh infra/invoke-local.sh

## setup: the Python venvs: the SAM CLI and build tools (.venv), the local AWS (.venv/stack).
setup:
	@scripts/setup.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

## bench: criterion benchmarks (reader throughput, request rendering, result serialisation, the
## fleet limiter's bookkeeping), then the CPU-bound benchmark side by side (scripts/bench-http.py:
## fanout, its HTTP floor (reqwest alone, the client stack), wrk and a Python aiohttp loop
## against the mock API and nginx; scripts/bench-setup.sh
## installs wrk, nginx and aiohttp), the Lambda binaries' cold start (scripts/bench-coldstart.py)
## and the splitter on 1, 10 and 100 GiB objects (scripts/bench-splitter.py). Each script's last
## line is JSON, kept in .local/bench/; docs/PERFORMANCE.md holds the figures and how to read
## them. Last line: one JSON object, {"http": ..., "coldstart": ..., "splitter": ...}.
BENCH_OUT := .local/bench
bench: setup
	cargo bench -p fanout-core -p fanout-client --bench throughput --bench results --bench limiter
	cargo build --release --locked -p fanout -p mock-api -p splitter -p worker
	cargo build --release --locked -p fanout-client --example http_floor
	scripts/bench-setup.sh
	@mkdir -p $(BENCH_OUT) && rm -f $(BENCH_OUT)/*.out
	set -o pipefail; scripts/with-stack.sh scripts/bench-http.py | tee $(BENCH_OUT)/http.out
	set -o pipefail; scripts/bench-coldstart.py | tee $(BENCH_OUT)/coldstart.out
	set -o pipefail; scripts/with-stack.sh scripts/bench-splitter.py | tee $(BENCH_OUT)/splitter.out
	@python3 -c 'import json,sys; print(json.dumps({n: json.loads(open(f"$(BENCH_OUT)/{n}.out").read().strip().splitlines()[-1]) for n in ("http", "coldstart", "splitter")}))'

## bench-cpu: records per CPU-second of `fanout local run` alone (RECORDS, default 200,000).
bench-cpu: setup
	cargo build --release --locked -p fanout -p mock-api
	scripts/with-stack.sh scripts/bench-cpu.py

## check-plan: `fanout plan`'s model against measured local jobs (scripts/check-plan.py): three
## scenarios (rate-bound, in-flight-bound with a tail, batch calls), predicted vs measured
## duration, API calls, manifests, invocations and lease writes, each within 10%; last line JSON.
check-plan: setup
	cargo build --release --locked -p fanout -p mock-api
	scripts/with-stack.sh scripts/check-plan.py

## bench-memory: peak RSS of one worker container working a 256 MiB range in one manifest, then
## 200 records of 1 MiB (scripts/bench-memory.py): in `fanout local run`, then in the real worker
## binary (--lambda, behind a Runtime API stand-in).
bench-memory: setup
	cargo build --release --locked -p fanout -p mock-api -p splitter -p worker
	scripts/with-stack.sh scripts/bench-memory.py
	scripts/with-stack.sh scripts/bench-memory.py --lambda

## bench-limit: the fleet-wide rate limit under load (8 containers, R = 2000/s): steady, a 429
## storm and a 30 s outage; a line per scenario, then one JSON line (steady at the top level).
bench-limit: setup
	@mkdir -p .local && rm -f .local/bench-limit.jsonl
	FANOUT_BENCH_OUT=$(CURDIR)/.local/bench-limit.jsonl scripts/with-stack.sh \
		cargo test --release --workspace --locked --test e2e -- --nocapture limit:: resilience::
	@scripts/bench-limit-summary.py .local/bench-limit.jsonl

clean:
	rm -rf target .venv .local .aws-sam
