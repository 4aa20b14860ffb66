#!/usr/bin/env bash
# What `make bench` needs beyond `make setup`: wrk and nginx from Debian's packages (the HTTP
# ceiling and a fixed-body server) and aiohttp from PyPI (what users run today), in .venv/bench.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in wrk nginx; do command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=(); for t in "${missing[@]}"; do [ "$t" = nginx ] && pkgs+=(nginx-light) || pkgs+=("$t"); done
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -q "${pkgs[@]}" >&2
  # The package may start its own server on port 80: the benchmark starts its own.
  $sudo pkill -x nginx 2>/dev/null || true
fi
if [ ! -x .venv/bench/bin/python ]; then
  python3 -m venv .venv/bench
  .venv/bench/bin/pip install -q -r requirements-bench.txt
fi
