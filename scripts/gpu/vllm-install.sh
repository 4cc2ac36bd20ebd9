#!/usr/bin/env bash
# Runs on the GPU machine, sourced at the start of every device call of a real-vLLM run (scripts/gpu/vllm-kit.sh
# builds the pieces here): stores whichever of .vk1, .vk2, .vk3 this call carried in /tmp/torpor-vk (kept while the
# machine stays warm), and once all three are there installs vLLM 0.25.1 into /tmp/vllm and its dependencies (Ray's
# trimmed tree too) into /tmp/site, with the torpor package and its vLLM plugin (an entry point in a dist-info beside
# them) found from this checkout's python/. Then sets PYTHONPATH and vLLM's variables and returns 0; returns 3 while pieces are missing.
stash=/tmp/torpor-vk
mkdir -p "$stash"
for piece in .vk1 .vk2 .vk3; do
    if [ -d "$piece" ] && [ -n "$(ls -A "$piece")" ]; then
        mkdir -p "$stash/$piece" && cp -f "$piece"/* "$stash/$piece/"
    fi
done
missing=""
for file in .vk1/vllm.tar.zst .vk2/fa3.so.zst .vk2/deps.tar .vk3/deps.tar .vk3/ray.tar.zst; do
    [ -f "$stash/$file" ] || missing="$missing $file"
done
if [ -n "$missing" ]; then
    echo "vllm-install: waiting for$missing (carry the next piece in the next call while the machine is warm)"
    return 3 2>/dev/null || exit 3
fi
if [ ! -f /tmp/vllm/.installed ]; then
    echo "vllm-install: installing vLLM 0.25.1 into /tmp/vllm and /tmp/site"
    rm -rf /tmp/vllm /tmp/site /tmp/torpor-wheels && mkdir -p /tmp/vllm /tmp/site /tmp/torpor-wheels
    tar -C /tmp/torpor-wheels -xf "$stash/.vk2/deps.tar" && tar -C /tmp/torpor-wheels -xf "$stash/.vk3/deps.tar"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
        /tmp/torpor-wheels/*.whl || { echo "vllm-install: pip install failed"; return 1 2>/dev/null || exit 1; }
    PYTHONPATH=/tmp/site python3 - "$stash" <<'EOF' || { echo "vllm-install: unpacking failed"; return 1 2>/dev/null || exit 1; }
import sys, tarfile, zstandard
stash = sys.argv[1]
with open(f"{stash}/.vk1/vllm.tar.zst", "rb") as raw:
    reader = zstandard.ZstdDecompressor(max_window_size=1 << 27).stream_reader(raw)
    with tarfile.open(fileobj=reader, mode="r|") as archive:
        archive.extractall("/tmp/vllm", filter="tar")
with open(f"{stash}/.vk2/fa3.so.zst", "rb") as raw, \
        open("/tmp/vllm/vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so", "wb") as out:
    zstandard.ZstdDecompressor().copy_stream(raw, out)
with open(f"{stash}/.vk3/ray.tar.zst", "rb") as raw:
    reader = zstandard.ZstdDecompressor(max_window_size=1 << 27).stream_reader(raw)
    with tarfile.open(fileobj=reader, mode="r|") as archive:
        archive.extractall("/tmp/site", filter="tar")
EOF
    # The plugin's entry point: vLLM finds it through importlib.metadata on sys.path.
    mkdir -p /tmp/site/torpor-0.1.0.dist-info
    printf 'Metadata-Version: 2.1\nName: torpor\nVersion: 0.1.0\n' > /tmp/site/torpor-0.1.0.dist-info/METADATA
    printf '[vllm.general_plugins]\ntorpor = torpor_vllm:register\n' > /tmp/site/torpor-0.1.0.dist-info/entry_points.txt
    touch /tmp/vllm/.installed
fi
export PYTHONPATH=/tmp/vllm:/tmp/site:$PWD/python${PYTHONPATH:+:$PYTHONPATH}
export VLLM_SERVER_DEV_MODE=1 VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1
python3 -c "import vllm, torpor_vllm; print('vllm-install: vLLM', vllm.__version__, 'ready')" \
    || { echo "vllm-install: vLLM does not import"; return 1 2>/dev/null || exit 1; }
