#!/usr/bin/env python3
"""Convert the float tensors of a safetensors file to another float dtype (F32 -> F16 or BF16), with numpy only.

Used by bench-cpu.sh to make fp16 and bf16 copies of a real fp32 model for the codec benchmarks.
BF16 conversion rounds to nearest even, as torch does.
"""
import json
import struct
import sys

import numpy as np


def convert(source: str, target: str, dtype: str) -> None:
    with open(source, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    metadata = header.pop("__metadata__", None)
    out_header, chunks, offset = {}, [], 0
    for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
        begin, end = info["data_offsets"]
        raw = body[begin:end]
        kind = info["dtype"]
        if kind == "F32":
            values = np.frombuffer(raw, dtype="<f4")
            if dtype == "F16":
                raw = values.astype("<f2").tobytes()
            else:
                bits = values.view("<u4").astype(np.uint64)
                rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
                raw = rounded.astype("<u2").tobytes()
            kind = dtype
        out_header[name] = {"dtype": kind, "shape": info["shape"], "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    if metadata is not None:
        out_header["__metadata__"] = metadata
    encoded = json.dumps(out_header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(target, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for raw in chunks:
            f.write(raw)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[3] not in ("F16", "BF16"):
        sys.exit("usage: convert_safetensors.py SOURCE TARGET F16|BF16")
    convert(sys.argv[1], sys.argv[2], sys.argv[3])
