#!/usr/bin/env python3
"""nvCOMP LZ4 against ANS and no compression on bf16 weights, on the GPU: the seed's advice to use LZ4 for speed.

A level-2 wake from the pinned host cache moves the stored bytes over the host link and decodes them on the GPU,
so a codec is faster only if it stores fewer bytes or decodes faster than the link delivers. For each codec this
measures, on the same bytes (bf16 weights: random normal like bench_vllm_e2e.py's models, and a real safetensors
file when --file names one): the stored size, the copy of the stored bytes from pinned host memory to the GPU, the
decode on the GPU (nvCOMP's Python API, batched over its chunks), that the decoded bytes equal the originals, and
the wake time this gives for the 8B model (13.97 GB) with copy and decode overlapped (the larger of the two, as
Torpor's pipelined loader does) and one after the other. Writes --out (JSON) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import struct
import time

import torch
from nvidia import nvcomp

CODECS = {
    "raw (no codec)": None,
    "nvCOMP LZ4, 64 KiB chunks": {"algorithm": "LZ4", "uncomp_chunk_size": 1 << 16},
    "nvCOMP LZ4, 1 MiB chunks": {"algorithm": "LZ4", "uncomp_chunk_size": 1 << 20},
    "nvCOMP ANS float16, 1 MiB chunks (Torpor's ans16)": {"algorithm": "ANS", "data_type": "<f2",
                                                          "uncomp_chunk_size": 1 << 20},
}
MODEL_8B_BYTES = 13.97e9


def best_of(repeats: int, work) -> float:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        started = time.perf_counter()
        work()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(name: str, options: dict | None, original: torch.Tensor, repeats: int) -> dict:
    count = original.numel()
    if options is None:
        stored = original
    else:
        codec = nvcomp.Codec(**options)
        stored = torch.as_tensor(codec.encode(nvcomp.as_array(original)), device="cuda").view(torch.uint8).flatten()
        stored = stored.clone()  # own the bytes
    host = torch.empty(stored.numel(), dtype=torch.uint8, pin_memory=True)
    host.copy_(stored)
    landing = torch.empty_like(stored)
    copy_s = best_of(repeats, lambda: landing.copy_(host, non_blocking=True))
    decode_s, same = 0.0, bool(torch.equal(landing, original)) if options is None else False
    if options is not None:
        decoder = nvcomp.Codec(**options)
        decoded = {}

        def decode():
            decoded["out"] = decoder.decode(nvcomp.as_array(landing))

        decode_s = best_of(repeats, decode)
        out = torch.as_tensor(decoded["out"], device="cuda").view(torch.uint8).flatten()
        same = out.numel() == count and bool(torch.equal(out, original))
    ratio = stored.numel() / count
    scale = MODEL_8B_BYTES / count
    return {"codec": name, "bytes": count, "stored_bytes": stored.numel(), "ratio": round(ratio, 4),
            "copy_ms": round(copy_s * 1e3, 2), "copy_gb_s": round(stored.numel() / copy_s / 1e9, 1),
            "decode_ms": round(decode_s * 1e3, 2),
            "decode_gb_s": round(count / decode_s / 1e9, 1) if decode_s else None,
            "wake_8b_overlapped_ms": round(max(copy_s, decode_s) * scale * 1e3, 1),
            "wake_8b_sequential_ms": round((copy_s + decode_s) * scale * 1e3, 1), "same_bytes": same}


def safetensors_bytes(path: str) -> torch.Tensor:
    with open(path, "rb") as handle:
        header = struct.unpack("<Q", handle.read(8))[0]
        handle.seek(8 + header)
        data = handle.read()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).cuda()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=4.0, help="random bf16 weights to measure (GiB)")
    parser.add_argument("--file", help="also a real safetensors file (its tensors' bytes)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", required=True)
    arguments = parser.parse_args()
    torch.manual_seed(0)
    elements = int(arguments.gib * (1 << 30)) // 2
    inputs = {"random normal bf16 (std 0.02)":
              (torch.randn(elements, device="cuda") * 0.02).to(torch.bfloat16).view(torch.uint8)}
    if arguments.file:
        inputs[f"real bf16: {arguments.file.rsplit('/', 1)[-1]}"] = safetensors_bytes(arguments.file)
    rows = []
    device = torch.cuda.get_device_name()
    for label, original in inputs.items():
        for name, options in CODECS.items():
            try:
                row = measure(name, options, original, arguments.repeats)
            except Exception as error:  # one codec failing leaves the others' rows
                row = {"codec": name, "error": f"{type(error).__name__}: {error}"}
            row["input"] = label
            rows.append(row)
            print(json.dumps(row), flush=True)
            torch.cuda.empty_cache()
    with open(arguments.out, "w") as handle:
        json.dump({"device": device, "nvcomp": nvcomp.__version__, "rows": rows}, handle, indent=1)
    print(f"\n{device}, nvCOMP {nvcomp.__version__}")
    print("| input | codec | ratio | copy GB/s (stored) | decode GB/s | 8B wake, overlapped / sequential ms | same |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['input']} | {row['codec']} | {row['error']} | | | | |")
            continue
        print(f"| {row['input']} | {row['codec']} | {row['ratio']:.4f} | {row['copy_gb_s']} | "
              f"{row['decode_gb_s'] or '—'} | {row['wake_8b_overlapped_ms']:.0f} / {row['wake_8b_sequential_ms']:.0f} | "
              f"{'yes' if row['same_bytes'] else 'NO'} |")


if __name__ == "__main__":
    main()
