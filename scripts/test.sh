#!/usr/bin/env bash
# Sets up what is missing, builds torpor and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build
swift test
