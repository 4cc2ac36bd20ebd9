#!/usr/bin/env python3
"""The L2-wake-and-load benchmark through real vLLM on the GPU machine (scripts/gpu/bench_vllm_e2e.sh runs it).

For each model size: random bf16 Llama-shaped weights (the tiny-llama fixture's tokenizer); three engines up at
once — vLLM's own safetensors load, Torpor's load format reading files, and Torpor's load format from the pinned
host cache — with the same flags (sleep mode, eager mode, the same memory share). Every path of a wake in one run:
level 1; level 2 with vLLM's own reload_weights from safetensors (page cache, and page cache dropped); level 2
through Torpor for each codec from the page cache, dropped page cache and the host cache. Each row: the wake split
into its steps, host RAM and GPU memory held asleep, the first token after the wake, and whether the greedy
answers equal those before any sleep.

Usage: bench_vllm_e2e.py --torpor BIN --tokenizer DIR --work DIR --out FILE.json [--sizes 1b,8b] [--codecs ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vllm_engine import Engine, drop_page_cache, gpu_used_mib, host_used_bytes, process_gpu_mib  # noqa: E402

# hidden, layers, intermediate, heads, kv heads
SHAPES = {"1b": (2048, 16, 8192, 16, 8), "8b": (4096, 32, 14336, 32, 8), "14b": (5120, 40, 13824, 40, 8)}
PACK_FLAGS = {"ans16": ["--gpu"], "byteplane": ["--codec", "byteplane"], "zstd": ["--codec", "zstd"],
              "raw": ["--codec", "raw"]}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Rows(list):
    """The result rows, written to ``path`` after every row (a run cut short keeps what it measured)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def append(self, row) -> None:
        super().append(row)
        self.save()

    def save(self) -> None:
        with open(self.path + ".partial", "w") as handle:
            json.dump(list(self), handle, indent=1)
        os.replace(self.path + ".partial", self.path)


def make_model(directory: str, size: str, tokenizer: str, seed: int = 17) -> float:
    """Writes the model (weights drawn from ``seed``); returns its weights' GB."""
    import torch
    from safetensors.torch import save_file

    hidden, layers, intermediate, heads, kv_heads = SHAPES[size]
    head_dim = hidden // heads
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(tokenizer):
        if name != "config.json" and not name.endswith(".safetensors"):
            shutil.copy(os.path.join(tokenizer, name), directory)
    with open(os.path.join(tokenizer, "config.json")) as handle:
        config = json.load(handle)
    config.update(hidden_size=hidden, num_hidden_layers=layers, intermediate_size=intermediate,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim, dtype="bfloat16",
                  tie_word_embeddings=False, max_position_embeddings=4096)
    config.pop("torch_dtype", None)
    with open(os.path.join(directory, "config.json"), "w") as handle:
        json.dump(config, handle, indent=2)
    vocab = config["vocab_size"]
    generator = torch.Generator(device="cuda").manual_seed(seed)

    def tensor(*shape, norm=False):
        values = torch.randn(shape, generator=generator, device="cuda") * (0.02 if not norm else 0.05)
        return (values + (1.0 if norm else 0.0)).to(torch.bfloat16).cpu()

    shard, shards, total = {}, [], 0
    shard["model.embed_tokens.weight"] = tensor(vocab, hidden)
    for layer in range(layers):
        prefix = f"model.layers.{layer}."
        shard[prefix + "self_attn.q_proj.weight"] = tensor(heads * head_dim, hidden)
        shard[prefix + "self_attn.k_proj.weight"] = tensor(kv_heads * head_dim, hidden)
        shard[prefix + "self_attn.v_proj.weight"] = tensor(kv_heads * head_dim, hidden)
        shard[prefix + "self_attn.o_proj.weight"] = tensor(hidden, heads * head_dim)
        shard[prefix + "mlp.gate_proj.weight"] = tensor(intermediate, hidden)
        shard[prefix + "mlp.up_proj.weight"] = tensor(intermediate, hidden)
        shard[prefix + "mlp.down_proj.weight"] = tensor(hidden, intermediate)
        shard[prefix + "input_layernorm.weight"] = tensor(hidden, norm=True)
        shard[prefix + "post_attention_layernorm.weight"] = tensor(hidden, norm=True)
        if sum(t.nbytes for t in shard.values()) >= 5e9:
            shards.append(shard)
            shard = {}
    shard["model.norm.weight"] = tensor(hidden, norm=True)
    shard["lm_head.weight"] = tensor(vocab, hidden)
    shards.append(shard)
    weight_map = {}
    for number, tensors in enumerate(shards, 1):
        file = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, os.path.join(directory, file), metadata={"format": "pt"})
        for name, value in tensors.items():
            weight_map[name] = file
            total += value.nbytes
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as handle:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, handle)
    return total / 1e9


def pack(torpor: str, model: str, out: str, codec: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([torpor, "pack", "--quiet", *PACK_FLAGS[codec], model, out], check=True)
    seconds = time.perf_counter() - started
    stored = sum(os.path.getsize(os.path.join(out, name)) for name in os.listdir(out) if name.endswith(".torpor"))
    return {"pack_s": round(seconds, 2), "stored_gb": round(stored / 1e9, 3)}


def cache_bytes(cache_dir: str) -> int:
    return sum(os.path.getsize(os.path.join(cache_dir, name)) for name in os.listdir(cache_dir))


class Run:
    def __init__(self, size: str, model_gb: float, reference: list[str], rows: list):
        self.size, self.model_gb, self.reference, self.rows = size, model_gb, reference, rows

    def wake_row(self, engine: Engine, path: str, codec: str, level: int, *, reload_from: str | None = None,
                 drop: str | None = None, held_bytes=lambda: 0, note: str = "") -> dict:
        """Sleeps ``engine`` at ``level``, wakes it (reloading at level 2), and records the row. Host RAM held
        asleep: what the sleep added, plus ``held_bytes()`` (after the wake: the host cache it read)."""
        awake_used = host_used_bytes()
        sleep_s = engine.sleep(level)
        asleep_host = host_used_bytes() - awake_used
        asleep_gpu = gpu_used_mib()
        asleep_engine_gpu = process_gpu_mib(engine.pids())
        if drop:
            drop_page_cache(drop)
        steps = {"sleep_ms": sleep_s * 1e3}
        if level == 1:
            steps["wake_ms"] = engine.wake() * 1e3
            wake_ms = steps["wake_ms"]
        else:
            steps["wake_weights_ms"] = engine.wake("weights") * 1e3
            steps["reload_ms"] = engine.reload(reload_from) * 1e3
            steps["wake_kv_cache_ms"] = engine.wake("kv_cache") * 1e3
            wake_ms = steps["wake_weights_ms"] + steps["reload_ms"] + steps["wake_kv_cache_ms"]
        ttft = engine.first_token_seconds() * 1e3
        asleep_host += held_bytes()
        answers = engine.greedy()
        same = answers == self.reference
        row = {"model_gb": round(self.model_gb, 2), "size": self.size, "path": path, "codec": codec,
               "wake_ms": round(wake_ms, 1), "steps": {k: round(v, 1) for k, v in steps.items()},
               "host_ram_gb": round(asleep_host / 1e9, 2), "gpu_asleep_mib": asleep_engine_gpu,
               "gpu_used_mib_all_engines": asleep_gpu,
               "first_token_ms": round(ttft, 1), "same_text": same}
        if note:
            row["note"] = note
        if not same:
            row["answers"] = answers
        self.rows.append(row)
        log(f"{self.size} {path} {codec}: wake {wake_ms:.0f} ms {row['steps']} host {row['host_ram_gb']} GB "
            f"gpu asleep {asleep_engine_gpu} MiB (all engines {asleep_gpu}) first token {ttft:.0f} ms same {same}")
        return row


def bench_size(size: str, arguments, rows: list) -> None:
    work = os.path.join(arguments.work, size)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    model = os.path.join(work, "model")
    started = time.perf_counter()
    model_gb = make_model(model, size, arguments.tokenizer)
    log(f"{size}: {model_gb:.2f} GB model made in {time.perf_counter() - started:.1f} s")
    packs = {"ans16": os.path.join(work, "pack-ans16")}
    packed = {"ans16": pack(arguments.torpor, model, packs["ans16"], "ans16")}
    log(f"{size}: ans16 pack {packed['ans16']}")
    cache_dir = os.path.join("/dev/shm", f"torpor-bench-{size}")
    shutil.rmtree(cache_dir, ignore_errors=True)
    os.makedirs(cache_dir)

    engines = {}
    try:
        utilization = arguments.utilization
        for name, path, extra in (
            ("safetensors", model, []),
            ("torpor-file", packs["ans16"], ["--load-format", "torpor"]),
            ("torpor-host", packs["ans16"], ["--load-format", "torpor", "--model-loader-extra-config",
                                             json.dumps({"source": "host-cache", "cache_dir": cache_dir})]),
        ):
            # Without prefix caching: a random model's greedy text near a tie depends on whether a prompt's
            # prefix came from the cache (scripts/gpu/greedy_check.py, 14B), and the answers must depend on the
            # weights alone.
            engine = Engine(name, path, os.path.join(arguments.logs, f"{size}-{name}.log"), utilization=utilization,
                            extra=["--no-enable-prefix-caching", *extra])
            engine.wait_ready()
            engines[name] = engine
            weights = engine.log_seconds(
                r"(?:Loading weights took|torpor: loaded [0-9.]+ GB from \S+ onto \S+ \(source \S+\) in) ([0-9.]+) s")
            loading = engine.log_seconds(r"Model loading took [0-9.]+ GiB (?:memory )?and ([0-9.]+) seconds")
            rows.append({"model_gb": round(model_gb, 2), "size": size, "path": "cold start", "codec":
                         "safetensors" if name == "safetensors" else f"ans16 ({name})",
                         "wake_ms": round(engine.ready_s * 1e3, 1),
                         "steps": {"load_weights_s": weights[:1], "model_loading_s": loading[:1]},
                         "host_ram_gb": None, "same_text": None})
            log(f"{size}: {name} ready in {engine.ready_s:.1f} s (weights {weights}, model loading {loading})")

        reference = engines["safetensors"].greedy()
        run = Run(size, model_gb, reference, rows)
        for name in ("torpor-file", "torpor-host"):
            same = engines[name].greedy() == reference
            log(f"{size}: {name} cold start answers as safetensors: {same}")
            rows[-3 + ["safetensors", "torpor-file", "torpor-host"].index(name)]["same_text"] = same
        rows[-3]["same_text"] = True
        rows.save()

        safetensors = engines["safetensors"]
        for _ in range(arguments.repeat):
            run.wake_row(safetensors, "L1 sleep+wake (vLLM)", "none", 1)
        for _ in range(arguments.repeat):
            run.wake_row(safetensors, "L2 + reload_weights safetensors, page cache (vLLM)", "safetensors", 2)
        run.wake_row(safetensors, "L2 + reload_weights safetensors, page cache dropped (vLLM)", "safetensors", 2,
                     drop=model)

        for codec in arguments.codecs:
            if codec not in packs:
                packs[codec] = os.path.join(work, f"pack-{codec}")
                packed[codec] = pack(arguments.torpor, model, packs[codec], codec)
                log(f"{size}: {codec} pack {packed[codec]}")
            stored = packed[codec]["stored_gb"]
            file_engine, host_engine = engines["torpor-file"], engines["torpor-host"]
            for _ in range(arguments.repeat):
                row = run.wake_row(file_engine, "L2 + Torpor reload, page cache", codec, 2, reload_from=packs[codec])
                row["stored_gb"] = stored
            row = run.wake_row(file_engine, "L2 + Torpor reload, page cache dropped", codec, 2,
                               reload_from=packs[codec], drop=packs[codec])
            row["stored_gb"] = stored
            for attempt in range(arguments.repeat + 1):
                row = run.wake_row(host_engine, "L2 + Torpor reload, pinned host cache", codec, 2,
                                   reload_from=packs[codec], held_bytes=lambda: cache_bytes(cache_dir),
                                   note="first use: fills and pins the cache" if attempt == 0 and codec != "ans16"
                                   else "first use: pins the cache" if attempt == 0 else "")
                row["stored_gb"] = stored
                if attempt == 0:
                    row["first_use"] = True
            # This codec's cache stays mapped (and in RAM) in the host engine; its file goes, so that the next
            # codec's rows count only their own cache.
            for name in os.listdir(cache_dir):
                os.unlink(os.path.join(cache_dir, name))
            if codec != "ans16":
                shutil.rmtree(packs[codec])
    finally:
        for engine in engines.values():
            engine.stop()
        shutil.rmtree(cache_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--torpor", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--work", default="/tmp/torpor-e2e")
    parser.add_argument("--logs", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sizes", default="1b,8b")
    parser.add_argument("--codecs", default="ans16,byteplane,zstd,raw")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--utilization", type=float, default=0.28)
    arguments = parser.parse_args()
    arguments.codecs = arguments.codecs.split(",")
    os.makedirs(arguments.logs, exist_ok=True)
    rows = Rows(arguments.out)
    failed = None
    for size in arguments.sizes.split(","):
        try:
            bench_size(size, arguments, rows)
        except Exception as error:  # keep the rows of the sizes that ran
            failed = f"{size}: {error}"
            log(f"FAILED {failed}")
        rows.save()
    from e2e_table import ratios, table

    print(table(rows), ratios(rows), sep="\n\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
