#!/usr/bin/env bash
# Runs on the GPU machine (after scripts/gpu/prepare.sh here, carried as ".gpu"):
# loads of the same 5.6 GB synthetic bf16 model (Llama-3.1-8B widths, 8 layers) from the host cache, packed with
# the CPU's byte-plane codec (decoded by Torpor's NVRTC kernel) and with ANS on the GPU, beside a pinned copy of
# the uncompressed bytes. Results go to $OUT/byteplane.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
exec > >(tee "$OUT/byteplane.log") 2>&1
mkdir -p /tmp/torpor-gpu
source scripts/gpu/unpack.sh
work=/tmp/torpor-byteplane && rm -rf "$work" && mkdir -p "$work"
python3 scripts/gpu/make_llama_like.py "$work/model" --layers 8
/usr/bin/time -f "byteplane CPU pack: %e s" $torpor pack -q --codec byteplane "$work/model" "$work/byteplane"
$torpor pack -q --gpu "$work/model" "$work/ans"
for pack in byteplane ans; do
    echo "$pack: $(du -cb "$work/$pack"/*.torpor | tail -1 | cut -f1) of $(du -cb "$work/model"/*.safetensors | tail -1 | cut -f1) bytes"
    $torpor load "$work/$pack" --source host-cache --repeat 3 --verify-against "$work/model"
done
# The kernel decodes each chunk's rANS plane with one warp (the format's 32 lanes), so a batch needs many chunks
# to fill the GPU: the byteplane pack by batch size (MB of stored bytes per decoder launch).
for megabytes in 32 128 256 512; do
    printf 'byteplane, %3d MB batches: ' $megabytes
    $torpor load "$work/byteplane" --source host-cache --repeat 3 --batch-megabytes $megabytes | tail -1
done
# ... and by the number of batches decoding at once (the loader's decode streams), for both packs.
for streams in 1 2 4; do
    for pack in byteplane ans; do
        printf '%-9s %d decode streams: ' $pack $streams
        $torpor load "$work/$pack" --source host-cache --repeat 5 --decode-streams $streams | sort -t, -k2 -g | tail -1
    done
done
python3 - "$work/model" <<'PY'
import glob, os, sys, time, torch
paths = sorted(glob.glob(os.path.join(sys.argv[1], "*.safetensors")))
hosts = []
for path in paths:
    size = os.path.getsize(path)
    host = torch.empty(size, dtype=torch.uint8).pin_memory()
    with open(path, "rb", buffering=0) as handle:
        view, done = memoryview(host.numpy()), 0
        while done < size:
            done += handle.readinto(view[done:])
    hosts.append((host, torch.empty(size, dtype=torch.uint8, device="cuda")))
total = sum(host.numel() for host, _ in hosts)
best = 0.0
for _ in range(3):
    torch.cuda.synchronize(); started = time.perf_counter()
    for host, device in hosts:
        device.copy_(host, non_blocking=True)
    torch.cuda.synchronize(); best = max(best, total / 1e9 / (time.perf_counter() - started))
print(f"pinned copy of the uncompressed bytes: {best:.2f} GB/s")
PY
rm -rf "$work" /dev/shm/torpor-*.cache
