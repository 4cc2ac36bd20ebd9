"""The Python package on the GPU machine, in one run on one card (scripts/gpu/bench_python.sh runs it):

- torpor.load(pack, device="cuda") from the page cache and from the pinned host cache, against
  safetensors.torch.load_file(device="cuda") and a pinned copy of the uncompressed bytes, on the same model;
  every torpor load compared bit for bit with the safetensors load on the GPU;
- torpor.save of the model's GPU tensors in the background while the GPU keeps computing (matmuls on another
  stream): how long save() takes to return (the bytes are captured), how long until the file is written, and how
  much the computation slowed meanwhile; the saved container loads back bit-exact.

Usage: python bench_python.py MODEL_DIR CONTAINER WORK_DIR OUT_JSON (CONTAINER is written first, by torpor.save)
"""

import glob
import json
import os
import sys
import threading
import time

import torch
from safetensors.torch import load_file

import torpor

model, pack, work, out = sys.argv[1:5]
shards = sorted(glob.glob(os.path.join(model, "*.safetensors")))
assert len(shards) == 1, "one shard: the container is written by torpor.save from it"
# The container: torpor.save of the model's tensors from GPU memory, encoded there with nvCOMP.
packed = torpor.save(load_file(shards[0], device="cuda"), pack, gpu_encode=True, background=False)
torch.cuda.empty_cache()
total = sum(os.path.getsize(path) for path in shards)
results = {"card": torch.cuda.get_device_name(0), "date": time.strftime("%Y-%m-%d"), "modelBytes": total,
           "torpor": torpor.version(), "packRatio": packed.container_bytes / packed.source_bytes}


def timed(function, repeats):
    best, value = float("inf"), None
    for _ in range(repeats):
        torch.cuda.synchronize()
        started = time.perf_counter()
        value = function()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
        if repeats > 1:
            del value
            value = None
            torch.cuda.empty_cache()
    return best, value


def load_safetensors():
    tensors = {}
    for path in shards:
        tensors.update(load_file(path, device="cuda"))
    return tensors


def pinned_copy():
    hosts = []
    for path in shards:
        size = os.path.getsize(path)
        host = torch.empty(size, dtype=torch.uint8).pin_memory()
        with open(path, "rb", buffering=0) as handle:
            view, done = memoryview(host.numpy()), 0
            while done < size:
                done += handle.readinto(view[done:])
        hosts.append(host)
    devices = [torch.empty_like(host, device="cuda") for host in hosts]

    def copy():
        for host, device in zip(hosts, devices):
            device.copy_(host, non_blocking=True)
    seconds, _ = timed(copy, 3)
    del hosts, devices
    return seconds


seconds, _ = timed(load_safetensors, 2)
results["safetensorsLoadFileGBps"] = total / 1e9 / seconds
results["pinnedCopyGBps"] = total / 1e9 / pinned_copy()
reference = load_safetensors()

for source in ("file", "host-cache"):
    seconds, loaded = timed(lambda: torpor.load(pack, device="cuda", source=source), 1)  # first: setup included
    results[f"torporFirst_{source}GBps"] = total / 1e9 / seconds
    seconds, loaded = timed(lambda: torpor.load(pack, device="cuda", source=source), 3)
    loaded = torpor.load(pack, device="cuda", source=source)
    results[f"torpor_{source}GBps"] = total / 1e9 / seconds
    exact = set(loaded) == set(reference) and all(
        torch.equal(loaded[name].view(torch.uint8) if loaded[name].dim() else loaded[name],
                    reference[name].view(torch.uint8) if reference[name].dim() else reference[name])
        for name in reference)
    results[f"torpor_{source}BitExact"] = exact
    del loaded
    torch.cuda.empty_cache()

# Background save from GPU memory while the GPU computes.
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
side = torch.cuda.Stream()
stop = threading.Event()
counts = []


def compute(seconds):
    done, started = 0, time.perf_counter()
    with torch.cuda.stream(side):
        while time.perf_counter() - started < seconds and not stop.is_set():
            for _ in range(8):
                torch.matmul(a, b)
            side.synchronize()
            done += 8
    return done / (time.perf_counter() - started)


alone = compute(3.0)
rate = {}
worker = threading.Thread(target=lambda: rate.setdefault("during", compute(60.0)))
worker.start()
time.sleep(0.5)
path = os.path.join(work, "saved.torpor")
started = time.perf_counter()
handle = torpor.save(reference, path)  # CUDA tensors: captured, then encoded on the GPU in the background
captured = time.perf_counter() - started
handle.wait()
written = time.perf_counter() - started
stop.set()
worker.join()
results["save"] = {
    "captureSeconds": captured, "writtenSeconds": written, "sourceBytes": handle.source_bytes,
    "containerBytes": handle.container_bytes, "ratio": handle.container_bytes / handle.source_bytes,
    "matmulsPerSecondAlone": alone, "matmulsPerSecondDuringSave": rate["during"],
}
back = torpor.load(path, device="cuda")
results["save"]["bitExact"] = all(torch.equal(back[name].view(torch.uint8), reference[name].view(torch.uint8))
                                  for name in reference)

with open(out, "w") as handle_out:
    json.dump(results, handle_out, indent=1, sort_keys=True)
save = results["save"]
print(f"{results['card']}, {total / 1e9:.2f} GB bf16, torpor {results['torpor']}")
print(f"{'path':52} {'GB/s':>7}  vs pinned copy")
rows = [("safetensors.torch.load_file(cuda)", results["safetensorsLoadFileGBps"]),
        ("pinned H2D copy, uncompressed", results["pinnedCopyGBps"]),
        ("torpor.load(cuda), page cache", results["torpor_fileGBps"]),
        ("torpor.load(cuda, source='host-cache')", results["torpor_host-cacheGBps"])]
for name, value in rows:
    print(f"{name:52} {value:7.2f}  {value / results['pinnedCopyGBps']:.2f}x")
print(f"first loads (setup included): file {results['torporFirst_fileGBps']:.2f}, host cache "
      f"{results['torporFirst_host-cacheGBps']:.2f} GB/s; bit-exact: file {results['torpor_fileBitExact']}, "
      f"host cache {results['torpor_host-cacheBitExact']}")
print(f"background save of {save['sourceBytes'] / 1e9:.2f} GB from GPU memory: save() returned after "
      f"{save['captureSeconds']:.2f} s, file written after {save['writtenSeconds']:.2f} s, ratio {save['ratio']:.4f}, "
      f"bit-exact {save['bitExact']}; matmuls/s alone {save['matmulsPerSecondAlone']:.1f}, during the save "
      f"{save['matmulsPerSecondDuringSave']:.1f}")
