# Sourced by the infra scripts: paths, the venvs on PATH, and offline-friendly tool settings.
# VENV overrides the project venv (default .venv, made by scripts/setup.sh from requirements-dev.txt).
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$repo/.venv}
checkov_venv=${CHECKOV_VENV:-$venv/checkov}
export PATH="$venv/bin:$PATH"
# No telemetry, no update checks, no calls home.
export SAM_CLI_TELEMETRY=0
export SAM_CLI_POLL_DELAY=1
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1} AWS_REGION=${AWS_REGION:-us-east-1}
# The workspace's build as the infra scripts run it: for the host's target triple, named
# (CARGO_BUILD_TARGET, as `make test` names it), which puts it where the local sam build's `cargo
# lambda build --target x86_64-unknown-linux-gnu` builds, so that the two share it
# (infra/cargo-lambda-local.toml). bin_dir: where its dev-profile binaries are.
cargo_target=${CARGO_BUILD_TARGET:-$(rustc -vV | sed -n 's/^host: //p')}
bin_dir=${CARGO_TARGET_DIR:-$repo/target}/$cargo_target/debug
workspace_build() {
  CARGO_BUILD_TARGET=$cargo_target cargo build --workspace --all-targets --locked -q
}

# step NAME CMD...: runs CMD, prints its wall time, and stops the script if it fails.
step() {
  local name=$1 start end rc
  shift
  echo "==> $name: $*" >&2
  start=$(date +%s)
  set +e
  "$@"
  rc=$?
  set -e
  end=$(date +%s)
  if [ "$rc" -ne 0 ]; then
    echo "==> $name FAILED (exit $rc) after $((end - start)) s" >&2
    exit "$rc"
  fi
  echo "==> $name ok in $((end - start)) s" >&2
}

# use_local_aws: for scripts run under scripts/with-stack.sh; boto3 and SAM CLI talk to the local
# AWS (ministack) at AWS_ENDPOINT_URL with dummy credentials and S3 path-style addressing: it is one
# host, 127.0.0.1, with no name per bucket. That is also all `sam deploy` needs for the template
# it uploads and passes by URL (TemplateURL): ministack reads bucket and key from the URL's path,
# whatever its host (cloudformation/helpers.py _resolve_document).
use_local_aws() {
  : "${AWS_ENDPOINT_URL:?run this under scripts/with-stack.sh (the local AWS)}"
  export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-testing} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-testing}
  mkdir -p "$repo/.local"
  printf '[default]\nregion = %s\ns3 =\n    addressing_style = path\n' "$AWS_DEFAULT_REGION" >"$repo/.local/aws-config"
  export AWS_CONFIG_FILE=$repo/.local/aws-config
}
