"""Where a checkpoint's tensors are decoded: the engine's device, and the parameters that take them unchanged."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import torch
import torch.nn as nn

# Weight loaders that, on one tensor-parallel rank and for a tensor of the parameter's own shape and dtype, do
# nothing but copy it into the parameter (vLLM's names; a subclass's override is a different name, and not here).
_COPYING_LOADERS = frozenset({
    "default_weight_loader",
    "ReplicatedLinear.weight_loader",
    "RowParallelLinear.weight_loader",
    "RowParallelLinear.weight_loader_v2",
    "VocabParallelEmbedding.weight_loader",
})


def target_device(model: nn.Module) -> torch.device:
    """The device the engine's weights live on, where the checkpoint is decoded.

    A parameter on a real device names it. While vLLM reloads weights layer by layer (`reload_weights` after a
    level-2 wake) every parameter is on ``meta``: then the worker's current CUDA device, which vLLM set to its own
    GPU, or the CPU where there is none. ``TORPOR_VLLM_DEVICE`` overrides only that last guess."""
    for parameter in model.parameters():
        if parameter.device.type != "meta":
            return parameter.device
    for buffer in model.buffers():
        if buffer.device.type != "meta":
            return buffer.device
    explicit = os.environ.get("TORPOR_VLLM_DEVICE")
    if explicit:
        return torch.device(explicit)
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def direct_targets(model: nn.Module, entries: Iterable, dtypes: Mapping[str, torch.dtype]) -> dict[str, torch.Tensor]:
    """The checkpoint tensors that can be decoded straight into their parameter, ``{name: parameter data}``.

    A tensor qualifies when a parameter of the same name has its shape and dtype, is contiguous, is not on
    ``meta``, and its weight loader only copies (``_COPYING_LOADERS``, one tensor-parallel rank): the model's own
    ``load_weights`` would do nothing else with it. Fused parameters (q/k/v into qkv_proj, gate/up), sharded or
    padded ones, and everything of a quantized model go through ``load_weights`` as usual."""
    if _tensor_parallel_size() != 1:
        return {}
    parameters = dict(model.named_parameters())
    targets = {}
    for entry in entries:
        parameter = parameters.get(entry.name)
        if parameter is None or parameter.device.type == "meta" or not parameter.data.is_contiguous():
            continue
        if tuple(parameter.shape) != tuple(entry.shape) or parameter.dtype != dtypes.get(entry.dtype):
            continue
        loader = getattr(parameter, "weight_loader", None)
        name = "default_weight_loader" if loader is None else getattr(loader, "__qualname__", "")
        if name in _COPYING_LOADERS:
            targets[entry.name] = parameter.data
    return targets


def _tensor_parallel_size() -> int:
    try:
        from vllm.distributed import get_tensor_model_parallel_world_size

        return get_tensor_model_parallel_world_size()
    except (ImportError, AssertionError, RuntimeError):
        return 1  # no parallel state: a model built outside an engine
