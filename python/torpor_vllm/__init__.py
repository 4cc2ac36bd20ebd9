"""vLLM plugin: the `torpor` load format.

Installed with the `torpor` package, vLLM runs `register()` in every process it starts (entry point group
`vllm.general_plugins`). Then

    vllm serve PACKED_DIR --load-format torpor [--model-loader-extra-config '{"source": "host-cache"}']

starts from a pack made by `torpor pack` (its config.json and tokenizer files are copied there verbatim), and a
level-2 wake reloads from it: `/collective_rpc` `reload_weights` (optionally with `weights_path` naming another
pack or container) streams the checkpoint's tensors, in checkpoint naming, into the model.

Options (`--model-loader-extra-config`, a JSON object):
- "source": "file" (default) or "host-cache": on a GPU, reloads (level-2 wakes) read a pinned /dev/shm copy of the
  containers. The cold start reads the files and fills the copy in the background; the first level-2 sleep pins
  it, so no wake pays for either (another process, e.g. Torpor's gateway, may have made the copy already);
- "cache_dir": where host caches live (default /dev/shm);
- "group_bytes": the most decoded bytes that exist at once before vLLM has taken them (default 4 GiB: two groups,
  one decoding while vLLM consumes the other), which bounds the extra GPU memory a load needs;
- "direct": decode tensors that map unchanged onto a parameter straight into it at the cold start (default true);
- "threads": CPU decoding threads (default: every core).

The engine's device is where its parameters live; during vLLM's layer-wise reload (parameters on ``meta``) it is
the worker's current CUDA device. A load that fails names the checkpoint, file, tensor and chunk; a failed reload
puts the layers back in place (their weights incomplete) and raises, so /collective_rpc answers 500 and the
engine stays up for another reload or a restart.
"""

from __future__ import annotations

_registered = False


def register() -> None:
    """Registers the `torpor` load format with vLLM (idempotent; vLLM calls it in every process)."""
    global _registered
    if _registered:
        return
    from vllm.model_executor.model_loader import register_model_loader

    from .loader import TorporModelLoader

    register_model_loader("torpor")(TorporModelLoader)
    _registered = True
