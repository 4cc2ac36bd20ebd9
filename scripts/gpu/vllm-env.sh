# Sourced at the start of the scripts that run real vLLM on the GPU machine (bench_vllm_e2e.sh, gateway_gpu.sh),
# after `cd` to the checkout: $OUT, the script's log under $OUT (NAME.log: set LOG_NAME), torpor and libtorpor
# unpacked (unpack.sh), vLLM installed from the carried pieces (vllm-install.sh; exits 3 while pieces are missing).
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
exec > >(tee "$OUT/$LOG_NAME.log") 2>&1
source scripts/gpu/unpack.sh
source scripts/gpu/vllm-install.sh || exit $?
[ -x "$torpor" ] && [ -n "${TORPOR_LIBRARY:-}" ] || { echo "$LOG_NAME: carry .gpu/torpor.xz and .gpu/libtorpor.so.xz"; exit 3; }
export PYTHONUNBUFFERED=1
