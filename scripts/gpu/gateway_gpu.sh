#!/usr/bin/env bash
# Runs on the GPU machine: `torpor serve` in front of three real vLLM 0.25.1 engines (scripts/gpu/gateway_gpu.py).
# Carries as bench_vllm_e2e.sh (vLLM's pieces in the calls before, or already installed while the machine is warm).
# Results: $OUT/gateway-gpu.json (one row per check), gateway-gpu.log, gateway-logs.tar.xz.
set -uo pipefail
cd "$(dirname "$0")/../.."
LOG_NAME=gateway-gpu source scripts/gpu/vllm-env.sh
logs=/tmp/torpor-gateway-gpu-logs && rm -rf "$logs" && mkdir -p "$logs"
# Ends well inside the device call's limit (give the call GATEWAY_TIMEOUT + 60 s): a timeout stops the gateway and
# keeps the logs.
timeout "${GATEWAY_TIMEOUT:-480}" python3 scripts/gpu/gateway_gpu.py --torpor "$torpor" --tokenizer .gpu/tokenizer \
    --logs "$logs" --gateway-log "$OUT/gateway.log" --out "$OUT/gateway-gpu.json" ${SKIP_FAULTS:+--skip-faults}
status=$?
tar -C "$logs" -cJf "$OUT/gateway-logs.tar.xz" .
echo "exit $status"
exit $status
