#!/usr/bin/env python3
"""The GPU loading comparison of issue 5, on one card, one data set, one run (runs on the GPU machine).

    bench_load.py TORPOR MODEL_DIR PACK_DIR OUT_DIR

MODEL_DIR is an uncompressed safetensors model; PACK_DIR does not exist yet: this script packs it with
`torpor pack --gpu` (timed against merely reading the source and writing as many bytes) and then measures:
  (a) safetensors.torch.load_file(..., device="cuda") for every shard;
  (b) a pinned host->device copy of the uncompressed bytes (the ceiling of uncompressed loaders; a level-1 wake);
  (c) torpor load from its pinned host cache;       (d) torpor load from files in the page cache;
  (e) torpor load from cold files (page cache dropped, O_DIRECT) against the same pipeline reading the
      uncompressed files cold (and, for reference, buffered cold reads of both).
Loads are checked bit for bit against the original bytes (`torpor load --verify-against`). Prints a table and
writes OUT_DIR/load-bench.json.
"""
import glob
import hashlib
import json
import os
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file


def evict(paths):
    for path in paths:
        with open(path, "rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as control:
            control.write("3\n")
    except OSError:
        pass


def torpor_json(torpor, *arguments):
    started = time.perf_counter()
    result = subprocess.run([torpor, *arguments, "--json"], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"torpor {' '.join(arguments)} failed ({result.returncode}): {result.stderr.strip()}")
    report = json.loads(result.stdout)
    report["wallSeconds"] = time.perf_counter() - started
    return report


def main() -> None:
    torpor, model, pack, out = sys.argv[1:5]
    shards = sorted(glob.glob(os.path.join(model, "*.safetensors")))
    total = sum(os.path.getsize(path) for path in shards)
    results = {"card": torch.cuda.get_device_name(0), "modelBytes": total, "date": time.strftime("%Y-%m-%d")}

    # GPU pack against merely reading the source and writing the same number of bytes (both fsynced).
    for path in shards:  # both start from the page cache
        with open(path, "rb") as handle:
            while handle.read(64 << 20):
                pass
    started = time.perf_counter()
    subprocess.run([torpor, "pack", "--gpu", "-q", model, pack], check=True)
    pack_seconds = time.perf_counter() - started
    packed = sum(os.path.getsize(path) for path in glob.glob(os.path.join(pack, "*.torpor")))
    buffer = bytearray(64 << 20)
    view = memoryview(buffer)
    started = time.perf_counter()
    for path in shards:
        with open(path, "rb", buffering=0) as handle:
            while handle.readinto(view):
                pass
    scratch = os.path.join(pack, "..", "io-baseline.bin")
    with open(scratch, "wb", buffering=0) as handle:
        left = packed
        while left > 0:
            left -= handle.write(view[: min(left, len(buffer))])
        os.fsync(handle.fileno())
    io_seconds = time.perf_counter() - started
    os.remove(scratch)
    # For reading the pack's time: SHA-256 of every shard on one core (the packer hashes beside its encoding).
    started = time.perf_counter()
    for path in shards:
        digest = hashlib.sha256()
        with open(path, "rb", buffering=0) as handle:
            while count := handle.readinto(view):
                digest.update(view[:count])
    hash_seconds = time.perf_counter() - started
    results["pack"] = {"sha256OneCoreSeconds": hash_seconds,"seconds": pack_seconds, "sourceGBps": total / 1e9 / pack_seconds,
                       "ioBaselineSeconds": io_seconds, "ioBaselineGBps": total / 1e9 / io_seconds,
                       "packedBytes": packed, "ratio": packed / total}

    # (a) what users do today.
    torch.cuda.synchronize()
    for run in range(2):
        started = time.perf_counter()
        tensors = {}
        for path in shards:
            tensors.update(load_file(path, device="cuda"))
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        results.setdefault("safetensorsLoadFile", []).append({"seconds": seconds, "GBps": total / 1e9 / seconds})
        del tensors
        torch.cuda.empty_cache()

    # (b) pinned host->device copy of the uncompressed bytes.
    pinned, device = [], []
    for path in shards:
        size = os.path.getsize(path)
        host = torch.empty(size, dtype=torch.uint8).pin_memory()
        with open(path, "rb", buffering=0) as handle:
            view, done = memoryview(host.numpy()), 0
            while done < size:
                done += handle.readinto(view[done:])
        pinned.append(host)
        device.append(torch.empty(size, dtype=torch.uint8, device="cuda"))
    for run in range(3):
        torch.cuda.synchronize()
        started = time.perf_counter()
        for source, target in zip(pinned, device):
            target.copy_(source, non_blocking=True)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        results.setdefault("pinnedCopy", []).append({"seconds": seconds, "GBps": total / 1e9 / seconds})
    del pinned, device
    torch.cuda.empty_cache()

    # (c) host cache, (d) page cache, bit-exact check once.
    results["hostCache"] = torpor_json(torpor, "load", pack, "--source", "host-cache", "--repeat", "5")
    results["hostCacheByBatch"] = {
        megabytes: max(torpor_json(
            torpor, "load", pack, "--source", "host-cache", "--repeat", "3", "--batch-megabytes", megabytes
        )["gigabytesPerSecond"])
        for megabytes in ["16", "32", "128", "256"]}
    results["pageCache"] = torpor_json(torpor, "load", pack, "--repeat", "5", "--verify-against", model)
    # (e) cold: O_DIRECT after dropping the page cache, compressed vs uncompressed through the same pipeline.
    containers = glob.glob(os.path.join(pack, "*.torpor"))
    results["coldDirect"] = torpor_json(torpor, "load", pack, "--direct", "--drop-cache", "--repeat", "2")
    results["coldDirectUncompressed"] = torpor_json(
        torpor, "load", model, "--uncompressed", "--direct", "--drop-cache", "--repeat", "2")
    results["coldBuffered"] = torpor_json(torpor, "load", pack, "--drop-cache", "--repeat", "2")
    results["coldBufferedUncompressed"] = torpor_json(
        torpor, "load", model, "--uncompressed", "--drop-cache", "--repeat", "2")
    results["pageCacheUncompressed"] = torpor_json(torpor, "load", model, "--uncompressed", "--repeat", "3")
    evict(containers + shards)

    def best(entries, key="GBps"):
        return max(entry[key] for entry in entries)

    pinned_rate = best(results["pinnedCopy"])
    rows = [
        ("(a) safetensors load_file(cuda)", best(results["safetensorsLoadFile"]), None),
        ("(b) pinned H2D copy, uncompressed", pinned_rate, None),
        ("(c) torpor, pinned host cache", max(results["hostCache"]["gigabytesPerSecond"]), pinned_rate),
        ("(d) torpor, file in page cache", max(results["pageCache"]["gigabytesPerSecond"]), pinned_rate),
        ("    same pipeline, uncompressed file in page cache",
         max(results["pageCacheUncompressed"]["gigabytesPerSecond"]), pinned_rate),
        ("(e) torpor, cold file, O_DIRECT", max(results["coldDirect"]["gigabytesPerSecond"]),
         max(results["coldDirectUncompressed"]["gigabytesPerSecond"])),
        ("    uncompressed cold file, O_DIRECT", max(results["coldDirectUncompressed"]["gigabytesPerSecond"]), None),
        ("    torpor, cold file, buffered", max(results["coldBuffered"]["gigabytesPerSecond"]),
         max(results["coldBufferedUncompressed"]["gigabytesPerSecond"])),
        ("    uncompressed cold file, buffered",
         max(results["coldBufferedUncompressed"]["gigabytesPerSecond"]), None),
    ]
    print(f"{results['card']}, {total / 1e9:.2f} GB bf16, packed {results['pack']['ratio']:.4f}")
    print(f"{'path':52} {'GB/s':>8} {'vs baseline':>12}")
    for name, rate, baseline in rows:
        ratio = f"{rate / baseline:.2f}x" if baseline else ""
        print(f"{name:52} {rate:8.2f} {ratio:>12}")
    print("host cache by batch size (MB: GB/s):", results["hostCacheByBatch"], "64:", rows[2][1])
    print(f"SHA-256 of the source on one core: {hash_seconds:.2f} s; pack {pack_seconds:.2f} s")
    print(f"GPU pack {results['pack']['sourceGBps']:.2f} GB/s of source vs read+write baseline "
          f"{results['pack']['ioBaselineGBps']:.2f} GB/s: {results['pack']['sourceGBps'] / results['pack']['ioBaselineGBps']:.2f}x")
    results["table"] = [{"path": name.strip(), "GBps": rate, "baselineGBps": baseline} for name, rate, baseline in rows]
    with open(os.path.join(out, "load-bench.json"), "w") as handle:
        json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
