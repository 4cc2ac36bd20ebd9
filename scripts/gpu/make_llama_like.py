#!/usr/bin/env python3
"""Writes a synthetic bf16 model with the tensor shapes of Llama-3.1-8B (about 16 GB, four shards, as on the Hub).

Runs on the GPU machine (PyTorch and safetensors there): every tensor is N(0, sigma) with its own sigma (norm
weights are 1 + N(0, sigma)), drawn on the GPU so that 8 billion samples take seconds. Usage:
    make_llama_like.py OUTPUT_DIR [--layers N] [--dtype bf16|f32] [--small]
"""
import argparse
import json
import os
import random

import torch
from safetensors.torch import save_file


def shapes(layers: int, small: bool):
    hidden, intermediate, kv, vocab = (1024, 3584, 256, 8192) if small else (4096, 14336, 1024, 128256)
    yield "model.embed_tokens.weight", [vocab, hidden], False
    for layer in range(layers):
        prefix = f"model.layers.{layer}."
        yield prefix + "self_attn.q_proj.weight", [hidden, hidden], False
        yield prefix + "self_attn.k_proj.weight", [kv, hidden], False
        yield prefix + "self_attn.v_proj.weight", [kv, hidden], False
        yield prefix + "self_attn.o_proj.weight", [hidden, hidden], False
        yield prefix + "mlp.gate_proj.weight", [intermediate, hidden], False
        yield prefix + "mlp.up_proj.weight", [intermediate, hidden], False
        yield prefix + "mlp.down_proj.weight", [hidden, intermediate], False
        yield prefix + "input_layernorm.weight", [hidden], True
        yield prefix + "post_attention_layernorm.weight", [hidden], True
    yield "model.norm.weight", [hidden], True
    yield "lm_head.weight", [vocab, hidden], False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    parser.add_argument("--shard-gb", type=float, default=5.0)
    parser.add_argument("--small", action="store_true", help="a quarter of the width and a small vocabulary")
    arguments = parser.parse_args()
    dtype = torch.bfloat16 if arguments.dtype == "bf16" else torch.float32
    os.makedirs(arguments.output, exist_ok=True)
    rng = random.Random(8)
    generator = torch.Generator(device="cuda").manual_seed(8)
    shards, current, size = [], {}, 0
    for name, shape, is_norm in shapes(arguments.layers, arguments.small):
        sigma = rng.uniform(0.006, 0.05) if not is_norm else rng.uniform(0.01, 0.1)
        tensor = torch.randn(shape, generator=generator, device="cuda", dtype=torch.float32) * sigma
        if is_norm:
            tensor += 1.0
        current[name] = tensor.to(dtype).cpu()
        size += current[name].numel() * current[name].element_size()
        if size >= arguments.shard_gb * 1e9:
            shards.append(current)
            current, size = {}, 0
    if current:
        shards.append(current)
    weight_map, total = {}, 0
    for number, shard in enumerate(shards, 1):
        file = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(arguments.output, file), metadata={"format": "pt"})
        for name, tensor in shard.items():
            weight_map[name] = file
            total += tensor.numel() * tensor.element_size()
    with open(os.path.join(arguments.output, "model.safetensors.index.json"), "w") as index:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, index, indent=2)
    with open(os.path.join(arguments.output, "config.json"), "w") as config:
        json.dump({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": arguments.layers,
                   "torch_dtype": "bfloat16" if dtype == torch.bfloat16 else "float32"}, config)
    print(f"{arguments.output}: {len(shards)} shards, {total / 1e9:.2f} GB of {arguments.dtype}")


if __name__ == "__main__":
    main()
