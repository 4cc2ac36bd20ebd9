#!/usr/bin/env bash
# The main job: build torpor and run the gateway on three simulated engines on one simulated GPU that holds two
# of them awake (no GPU or vLLM needed). It prints ready-to-paste curl and Python examples and runs until Ctrl-C.
# Arguments go to `torpor demo` (e.g. --port 8080 --admin-port 8081).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release
exec .build/release/torpor demo "$@"
