#!/usr/bin/env bash
# The gateway soak of docs/benchmarks.md: 10 minutes of switching load with injected faults.
# Simulated engines; crashes, hung and failing sleeps and wakes, slow wakes, an engine killed while serving, the
# gateway killed and restarted. Checks that every request is answered, models outside a fault see no 5xx and every
# fault is recovered. Arguments go to scripts/soak.py (--minutes, --models, --clients). Results: a table on stdout
# and bench-results/soak.json.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release
mkdir -p bench-results
python3 scripts/soak.py .build/release/torpor bench-results/soak.json "$@"
