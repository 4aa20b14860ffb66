#!/usr/bin/env bash
# sam build: both functions with cargo-lambda, which links with zig (the ziglang package from PyPI
# in .venv), for the template's Architecture: arm64 (aarch64-unknown-linux-gnu) by default, x86_64
# for `--config-env local` (samconfig.toml says why). Output: .aws-sam/build/.
# Extra arguments go to sam build (e.g. --config-env local).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$repo"
config_env=default
args=("$@")
for i in "${!args[@]}"; do
  [ "${args[$i]}" = "--config-env" ] && config_env=${args[$((i + 1))]}
done
# The architecture this build is for: the samconfig environment's override, else the template's.
arch=$(python3 - "$config_env" <<'PY'
import re, sys, tomllib
env = tomllib.load(open("samconfig.toml", "rb")).get(sys.argv[1], {})
overrides = env.get("build", {}).get("parameters", {}).get("parameter_overrides", "")
m = re.search(r"\bArchitecture=(\S+)", overrides)
print(m.group(1) if m else "arm64")
PY
)
if [ "$arch" = arm64 ]; then
  "$repo/infra/setup.sh" --build
else
  "$repo/infra/setup.sh"
fi
# The local deploy (make test) runs its functions on jobs of a few thousand records: cargo's dev
# profile (dependencies at opt-level 1, Cargo.toml) builds them in a fraction of the release
# build's time, which was the largest phase of `make test`. SAM's debug mode drops cargo lambda's
# --release and nothing else. The [default] environment (what `sam deploy` ships) and
# `make test-infra` build release binaries.
# The local build is also the workspace's build (infra/cargo-lambda-local.toml says how and why):
# after `make test`'s compile phase it compiles nothing.
if [ "$config_env" = local ]; then
  export SAM_BUILD_MODE=debug CARGO_LAMBDA_GLOBAL=$repo/infra/cargo-lambda-local.toml
fi
step "sam build ($arch${SAM_BUILD_MODE:+, $SAM_BUILD_MODE})" sam build "$@"
# The ELF header's e_machine (bytes 18-19, little-endian) says what the binary runs on.
python3 - "$arch" .aws-sam/build/SplitterFunction/bootstrap .aws-sam/build/WorkerFunction/bootstrap <<'PY'
import struct, sys
want = {"arm64": 0xB7, "x86_64": 0x3E}[sys.argv[1]]
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF" or struct.unpack_from("<H", head, 18)[0] != want:
        sys.exit(f"infra/build.sh: {path} is not a {sys.argv[1]} ELF binary")
PY
# The local bootstraps are the workspace's build (infra/cargo-lambda-local.toml): the very files
# of its binaries, when the host is x86_64 too. Were that configuration not read (a cargo lambda
# upgrade), each function would be compiled alone again, which takes minutes and would go
# unnoticed: this says so. cargo lambda moves the binary it built out of target/TRIPLE/debug; the
# workspace's build puts it back, compiling nothing.
if [ "$config_env" = local ] && [ "$cargo_target" = x86_64-unknown-linux-gnu ]; then
  workspace_build
  for f in Splitter:splitter Worker:worker; do
    if ! cmp -s ".aws-sam/build/${f%%:*}Function/bootstrap" "$bin_dir/${f#*:}"; then
      echo "infra/build.sh: .aws-sam/build/${f%%:*}Function/bootstrap is not the workspace's ${f#*:} ($bin_dir/${f#*:}): did cargo lambda read infra/cargo-lambda-local.toml?" >&2
      exit 1
    fi
  done
fi
ls -l .aws-sam/build/*/bootstrap >&2
