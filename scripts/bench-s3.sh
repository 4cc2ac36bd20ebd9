#!/usr/bin/env bash
# The object-storage benchmark of docs/benchmarks.md: torpor pull and pull+decode from moto's S3 server on
# loopback against a plain download of the same bytes (scripts/bench_s3.py). The model is MODEL_DIR, or eight
# copies of the MiniLM fixture as shards. Results: a table on stdout and bench-results/s3.json.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
python=$(scripts/setup-moto.sh)
swift build -c release --product torpor
model=${1:-}
if [ -z "$model" ]; then
    model=$(mktemp -d)
    trap 'rm -rf "$model"' EXIT
    fixture=${TORPOR_FIXTURES:-../shared/fixtures}/minilm-l6-bf16.safetensors
    for i in 1 2 3 4 5 6 7 8; do cp "$fixture" "$model/model-0000$i-of-00008.safetensors"; done
fi
mkdir -p bench-results
python3 scripts/bench_s3.py .build/release/torpor "$python" "$model" bench-results/s3.json "${@:2}"
