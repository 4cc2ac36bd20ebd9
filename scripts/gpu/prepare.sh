#!/usr/bin/env bash
# Prepares what a GPU machine run carries (it has no Swift and no network): a static release build of torpor and
# a self-contained libtorpor.so (scripts/build-libtorpor.sh), stripped and compressed, the nvCOMP wheel (never
# committed: nvCOMP's license allows shipping it only inside an application), and the tiny-llama fixture's tokenizer
# files (the real-vLLM runs give their models that tokenizer). All go to .gpu/, which git ignores; pass it to the
# device run as `carry: [".gpu"]`.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/setup.sh
swift build -c release --static-swift-stdlib --scratch-path .build-static --product torpor
mkdir -p .gpu
cp .build-static/release/torpor .gpu/torpor
strip .gpu/torpor
xz -T0 -6 -f .gpu/torpor
scripts/build-libtorpor.sh .gpu/libtorpor.so
xz -T0 -6 -f .gpu/libtorpor.so
fixtures=${TORPOR_FIXTURES:-../shared/fixtures}
rm -rf .gpu/tokenizer && mkdir -p .gpu/tokenizer
cp "$fixtures"/tiny-llama/{config.json,tokenizer.json,tokenizer_config.json,chat_template.jinja,generation_config.json} \
    .gpu/tokenizer/
ls .gpu/nvidia_libnvcomp_cu13-6.0.0.12-*.whl >/dev/null 2>&1 \
    || pip download --no-deps -q nvidia-libnvcomp-cu13==6.0.0.12 -d .gpu
# nvCOMP's Python API, for scripts/gpu/lz4_check.sh only (nvCOMP's own LZ4 beside Torpor's codecs).
ls .gpu/nvidia_nvcomp_cu13-6.0.0.12-*.whl >/dev/null 2>&1 \
    || pip download --no-deps -q nvidia-nvcomp-cu13==6.0.0.12 -d .gpu
du -sh .gpu/*
