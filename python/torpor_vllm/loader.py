"""TorporModelLoader: vLLM's BaseModelLoader for Torpor packs and containers."""

from __future__ import annotations

import os
from collections.abc import Generator

import torch
import torch.nn as nn
from vllm.config import ModelConfig
from vllm.config.load import LoadConfig
from vllm.logger import init_logger
from vllm.model_executor.model_loader.base_loader import BaseModelLoader

import torpor

logger = init_logger("vllm.torpor")  # under "vllm", whose logging vLLM configures

_OPTIONS = {"source", "cache_dir", "group_bytes", "threads"}


class TorporModelLoader(BaseModelLoader):
    """Loads weights from a Torpor pack directory (or one .torpor container) in checkpoint naming."""

    def __init__(self, load_config: LoadConfig):
        super().__init__(load_config)
        extra = dict(load_config.model_loader_extra_config or {})
        unknown = set(extra) - _OPTIONS
        if unknown:
            raise ValueError(f"unknown torpor loader options {sorted(unknown)}; the options are {sorted(_OPTIONS)}")
        self.source = extra.get("source", "file")
        if self.source not in ("file", "host-cache"):
            raise ValueError(f"torpor loader option source must be 'file' or 'host-cache', not {self.source!r}")
        self.cache_dir = extra.get("cache_dir")
        self.group_bytes = int(extra.get("group_bytes", 1 << 30))
        if self.group_bytes <= 0:
            raise ValueError("torpor loader option group_bytes must be positive")
        self.threads = int(extra.get("threads", 0))

    def download_model(self, model_config: ModelConfig) -> None:
        """Nothing to download: checks that the model path is a Torpor pack or container."""
        torpor.containers(model_config.model)

    def get_all_weights(self, model_config: ModelConfig, model: nn.Module
                        ) -> Generator[tuple[str, torch.Tensor], None, None]:
        """Every tensor of the checkpoint at ``model_config.model`` (a `reload_weights` with ``weights_path`` sets
        it), in groups of at most ``group_bytes``, decoded where the model's parameters live."""
        path = model_config.model
        device = _device_of(model)
        loaded = 0
        for file in torpor.containers(path):
            with torpor.open(file) as container:
                groups, group, size = [], [], 0
                for entry in container.tensors.values():
                    if group and size + entry.nbytes > self.group_bytes:
                        groups.append(group)
                        group, size = [], 0
                    group.append(entry.name)
                    size += entry.nbytes
                if group:
                    groups.append(group)
            for names in groups:
                tensors = torpor.load(file, device=device, names=names, source=self.source,
                                      cache_dir=self.cache_dir, threads=self.threads)
                for name in names:
                    loaded += tensors[name].nbytes
                    yield name, tensors.pop(name)
        logger.info("torpor: loaded %.2f GB from %s onto %s", loaded / 1e9, path, device)

    def load_weights(self, model: nn.Module, model_config: ModelConfig) -> None:
        loaded = model.load_weights(self.get_all_weights(model_config, model))
        if model_config.quantization is None and loaded is not None:
            missing = {name for name, _ in model.named_parameters()} - set(loaded)
            if missing:
                raise ValueError(f"the Torpor checkpoint {model_config.model} lacks weights the model needs: "
                                 f"{sorted(missing)[:10]}")


def _device_of(model: nn.Module) -> torch.device:
    """Where the model's parameters live ("cpu" or a CUDA device): the checkpoint is decoded straight there."""
    for parameter in model.parameters():
        if parameter.device.type == "cuda":
            return parameter.device
        if parameter.device.type == "cpu":
            return torch.device("cpu")
    return torch.device(os.environ.get("TORPOR_VLLM_DEVICE", "cpu"))
