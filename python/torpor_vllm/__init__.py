"""vLLM plugin: the `torpor` load format.

Installed with the `torpor` package, vLLM runs `register()` in every process it starts (entry point group
`vllm.general_plugins`). Then

    vllm serve PACKED_DIR --load-format torpor [--model-loader-extra-config '{"source": "host-cache"}']

starts from a pack made by `torpor pack` (its config.json and tokenizer files are copied there verbatim), and a
level-2 wake reloads from it: `/collective_rpc` `reload_weights` (optionally with `weights_path` naming another
pack or container) streams the checkpoint's tensors, in checkpoint naming, into the model.

Options (`--model-loader-extra-config`, a JSON object):
- "source": "file" (default) or "host-cache": on a GPU, load from a pinned /dev/shm copy of the containers
  (made on first use and kept; another process — Torpor's gateway — may have made it already);
- "cache_dir": where host caches live (default /dev/shm);
- "group_bytes": the most bytes loaded at once before they are handed to the model (default 1 GiB), which bounds
  the extra memory a load needs;
- "threads": CPU decoding threads (default: every core).
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
