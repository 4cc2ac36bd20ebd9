#!/usr/bin/env bash
# Builds, here, the pieces that carry real vLLM 0.25.1 to the GPU machine (it has PyTorch 2.11+cu130 but no vLLM
# and no network), from PyPI with the hashes of scripts/gpu/vllm-gpu-lock.txt:
#   .vk1/vllm.tar.zst   vLLM unpacked and trimmed of what a Hopper run of a dense model never loads (59 MB)
#   .vk2/fa3.so.zst     its FlashAttention 3 extension, without which vLLM cannot import its Llama model (17 MB),
#                       and the largest of the dependency wheels the GPU image lacks that fit beside it (deps.tar)
#   .vk3/deps.tar       the rest of those wheels (about 10 MB: it travels with .gpu, scripts/gpu/prepare.sh's)
#   .vk3/ray.tar.zst    Ray 2.60, which vLLM's `ipc` weight-transfer backend imports at module level (the RLHF
#                       example hands the trainer's GPU tensors to vLLM through it), unpacked and trimmed of the
#                       cluster daemons and the dashboard's web build that `import ray` never loads (16 MB)
# Each folder is carried by one device call (each call carries at most 64 MiB with the tree), in consecutive calls
# while the machine is warm; scripts/gpu/vllm-install.sh there stores each piece in /tmp and installs once all
# are in. docs/gpu.md#real-vllm-on-the-gpu-machine says how. Nothing here is committed (.gitignore).
set -euo pipefail
cd "$(dirname "$0")/../.."
lock=scripts/gpu/vllm-gpu-lock.txt
work=${TORPOR_KIT_WORK:-$HOME/.cache/torpor/vllm-kit}
platforms=()
for tag in manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 \
    manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
command -v zstd >/dev/null || { echo "vllm-kit: needs zstd (apt-get install zstd)" >&2; exit 1; }
mkdir -p "$work/wheels"
echo "vllm-kit: downloading vLLM 0.25.1 and $(grep -c '^[a-z]' "$lock") wheels into $work/wheels (about 300 MB)" >&2
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" --require-hashes -d "$work/wheels" -r "$lock"

# Piece 1: vLLM without the FA2 extension (190 MB), the Rust frontend, optional or other-architecture kernels,
# header trees only JIT builds for other GPUs read, and deep_gemm builds for other Pythons.
rm -rf "$work/unpacked" && mkdir -p "$work/unpacked"
python3 -m zipfile -e "$work"/wheels/vllm-0.25.1-*.whl "$work/unpacked"
vllm=$work/unpacked/vllm
rm -rf .vk1 .vk2 .vk3 && mkdir -p .vk1 .vk2 .vk3
mv "$vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so" "$work/fa3.so"
rm -rf "$vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so" "$vllm/vllm-rs" "$vllm/_moe_C_stable_libtorch.abi3.so" \
    "$vllm"/_flashmla* "$vllm"/_qutlass_C* "$vllm/third_party/deep_gemm/include" \
    "$vllm/third_party/fmha_sm100/cutlass"
find "$vllm/third_party/deep_gemm" -maxdepth 1 -name '_C.cpython-*' ! -name '_C.cpython-312-*' -delete
for keep in _C_stable_libtorch.abi3.so cumem_allocator.abi3.so; do
    [ -f "$vllm/$keep" ] || { echo "vllm-kit: the trimmed vLLM lacks $keep" >&2; exit 1; }
done
tar -C "$work/unpacked" -cf - . | zstd -q -19 --long=27 -T0 -f -o .vk1/vllm.tar.zst
# Ray (79 MB as a wheel): `import ray` needs its Python and _raylet.so, not the GCS server, the raylet, the Java
# jars or the dashboard's web build (110 MB together), which only a cluster start runs.
rm -rf "$work/ray" && mkdir -p "$work/ray"
python3 -m zipfile -e "$work"/wheels/ray-2.60.0-*.whl "$work/ray"
rm -rf "$work/ray/ray/core/src/ray/gcs/gcs_server" "$work/ray/ray/core/src/ray/raylet/raylet" "$work/ray/ray/jars" \
    "$work/ray/ray/dashboard/client/build"
tar -C "$work/ray" -cf - . | zstd -q -19 --long=27 -T0 -f -o .vk3/ray.tar.zst
zstd -q -6 -T0 -f "$work/fa3.so" -o .vk2/fa3.so.zst
# The dependency wheels (already compressed), largest first, fill piece 2 up to 58 MB; the rest go to piece 3.
room=$(( 58 * 1000 * 1000 - $(stat -c %s .vk2/fa3.so.zst) ))
: > "$work/deps-2.txt" && : > "$work/deps-3.txt"
find "$work/wheels" -name '*.whl' ! -name 'vllm-0.25.1-*' ! -name 'ray-2.60.0-*' -printf '%s %f\n' | sort -rn | while read -r size name; do
    if [ "$size" -le "$room" ]; then room=$(( room - size )); echo "$name" >> "$work/deps-2.txt"
    else echo "$name" >> "$work/deps-3.txt"; fi
done
tar -C "$work/wheels" -cf .vk2/deps.tar -T "$work/deps-2.txt"
tar -C "$work/wheels" -cf .vk3/deps.tar -T "$work/deps-3.txt"
for piece in .vk1 .vk2 .vk3; do
    size=$(du -sm "$piece" | cut -f1)
    [ "$size" -le 60 ] || { echo "vllm-kit: $piece is $size MB, more than a device call carries with the tree" >&2; exit 1; }
done
du -sh .vk1/* .vk2/* .vk3/*
