#!/usr/bin/env bash
# The gateway benchmark of docs/benchmarks.md: wrk through torpor serve vs straight to the engine vs nginx
# proxy_pass (streaming and not), and the time a switch adds beyond the engines' own sleep and wake calls.
# Installs wrk and nginx through apt when missing. Results: a table on stdout and bench-results/gateway.json.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/lib.sh
command -v wrk >/dev/null || apt_install bench-gateway wrk
command -v nginx >/dev/null || apt_install bench-gateway nginx-light
swift build -c release
mkdir -p bench-results
python3 scripts/bench_gateway.py .build/release/torpor bench-results/gateway.json "$@"
