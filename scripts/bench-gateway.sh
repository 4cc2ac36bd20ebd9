#!/usr/bin/env bash
# The gateway benchmark of docs/benchmarks.md: wrk through torpor serve vs straight to the engine vs nginx
# proxy_pass (streaming and not), and the time a switch adds beyond the engines' own sleep and wake calls.
# Installs wrk and nginx through apt when missing. Results: a table on stdout and bench-results/gateway.json.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get install -y -q "${missing[@]}" >/dev/null
fi
swift build -c release
mkdir -p bench-results
python3 scripts/bench_gateway.py .build/release/torpor bench-results/gateway.json "$@"
