#!/usr/bin/env bash
# Runs on the GPU machine: examples/rlhf_colocate.py on real vLLM 0.25.1 (scripts/gpu/rlhf_gpu.py), both ways of
# handing each new policy to vLLM, and the baseline without checkpoints. Carries as bench_vllm_e2e.sh (vLLM's pieces
# in the calls before, or already installed while the machine is warm). Results: $OUT/rlhf-gpu.json, rlhf-gpu.log
# and one log per run.
set -uo pipefail
cd "$(dirname "$0")/../.."
LOG_NAME=rlhf-gpu source scripts/gpu/vllm-env.sh
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
timeout "${RLHF_TIMEOUT:-540}" python3 scripts/gpu/rlhf_gpu.py --torpor "$torpor" --tokenizer .gpu/tokenizer \
    --out "$OUT" ${RLHF_STEPS:+--steps "$RLHF_STEPS"}
status=$?
echo "exit $status"
exit $status
