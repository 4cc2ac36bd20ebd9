#!/usr/bin/env python3
"""Write a small synthetic bf16 model directory (standard library only) for the demo where no fixture exists.

Weights are drawn from N(0, sigma) per tensor, like trained weights; a config.json is written beside them.
"""
import json
import os
import random
import struct
import sys


def bf16(value: float) -> int:
    bits = struct.unpack("<I", struct.pack("<f", value))[0]
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


def main(directory: str) -> None:
    rng = random.Random(42)
    os.makedirs(directory, exist_ok=True)
    shapes = {"embed.weight": ([2048, 256], 0.02), "layer0.proj.weight": ([256, 1024], 0.03),
              "layer0.norm.weight": ([256], 0.2), "head.weight": ([2048, 256], 0.02)}
    header, blobs, offset = {}, [], 0
    for name, (shape, sigma) in shapes.items():
        count = 1
        for dim in shape:
            count *= dim
        data = struct.pack(f"<{count}H", *(bf16(rng.gauss(0, sigma)) for _ in range(count)))
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(os.path.join(directory, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump({"model_type": "synthetic", "torch_dtype": "bfloat16"}, f)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "synthetic-model")
