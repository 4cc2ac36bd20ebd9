"""TorporModelLoader: vLLM's BaseModelLoader for Torpor packs and containers."""

from __future__ import annotations

import time
from collections.abc import Generator

import torch
import torch.nn as nn
from vllm.config import ModelConfig
from vllm.config.load import LoadConfig
from vllm.logger import init_logger
from vllm.model_executor.model_loader.base_loader import BaseModelLoader

import torpor
from torpor._torch import TO_TORCH

from .host_cache import fill_in_background, pin_after_level_2_sleeps, wait_for_cache
from .placement import direct_targets, target_device
from .stream import CheckpointLoadError, CheckpointStream

logger = init_logger("vllm.torpor")  # under "vllm", whose logging vLLM configures

_OPTIONS = {"source", "cache_dir", "group_bytes", "threads", "direct"}


class TorporModelLoader(BaseModelLoader):
    """Loads weights from a Torpor pack directory (or one .torpor container) in checkpoint naming, decoded on the
    engine's device: on a GPU through libtorpor's pipelined loader (every chunk checked there)."""

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
        self.group_bytes = int(extra.get("group_bytes", 4 << 30))
        if self.group_bytes <= 0:
            raise ValueError("torpor loader option group_bytes must be positive")
        self.threads = int(extra.get("threads", 0))
        self.direct = extra.get("direct", True)
        if not isinstance(self.direct, bool):
            raise ValueError(f"torpor loader option direct must be true or false, not {self.direct!r}")
        if self.source == "host-cache":
            pin_after_level_2_sleeps()

    def download_model(self, model_config: ModelConfig) -> None:
        """Nothing to download: checks that the model path is a Torpor pack or container."""
        torpor.containers(model_config.model)

    def _open(self, path: str, device: torch.device, source: str) -> CheckpointStream:
        if source == "host-cache":
            wait_for_cache(path, self.cache_dir)
        return CheckpointStream(path, device, source=source, cache_dir=self.cache_dir, group_bytes=self.group_bytes,
                                threads=self.threads)

    def get_all_weights(self, model_config: ModelConfig, model: nn.Module
                        ) -> Generator[tuple[str, torch.Tensor], None, None]:
        """Every tensor of the checkpoint at ``model_config.model`` (a `reload_weights` with ``weights_path`` sets
        it), in checkpoint naming, decoded on the engine's device in bounded groups.

        vLLM's `reload_weights` iterates this while it reloads layer by layer, with the parameters on ``meta``;
        the checkpoint is then decoded onto the worker's GPU. If decoding fails part way, the layers are put back
        in place (their weights incomplete) before the error propagates, so the engine stays up and a later
        reload can succeed."""
        path = model_config.model
        device = target_device(model)
        started = time.perf_counter()
        stream = self._open(path, device, self.source)
        try:
            yield from stream
        except CheckpointLoadError:
            _restore_layers(model, model_config)
            raise
        finally:
            stream.close()
        _log_loaded(stream.nbytes, path, device, self.source, time.perf_counter() - started)

    def load_weights(self, model: nn.Module, model_config: ModelConfig) -> None:
        """The first load: tensors that map unchanged onto a parameter are decoded into it; the rest go through
        the model's ``load_weights``. On a GPU with source host-cache it reads the file (faster than filling the
        cache first) and fills the host cache in the background, for level-2 wakes."""
        path = model_config.model
        device = target_device(model)
        started = time.perf_counter()
        source = "file" if device.type == "cuda" else self.source
        stream = self._open(path, device, source)
        try:
            direct = direct_targets(model, stream.entries(), TO_TORCH) if self.direct else {}
            stream.direct(direct)
            loaded = model.load_weights(stream)
        finally:
            stream.close()
        _log_loaded(stream.nbytes, path, device, source, time.perf_counter() - started, direct=len(direct))
        if self.source == "host-cache" and device.type == "cuda":
            fill_in_background(path, self.cache_dir)
        if model_config.quantization is None and loaded is not None:
            missing = {name for name, _ in model.named_parameters()} - set(loaded) - set(direct)
            if missing:
                raise ValueError(f"the Torpor checkpoint {path} lacks weights the model needs: "
                                 f"{sorted(missing)[:10]}")


def _log_loaded(nbytes: int, path: str, device: torch.device, source: str, seconds: float, direct: int = 0) -> None:
    into = f", {direct} tensors straight into their parameters" if direct else ""
    logger.info("torpor: loaded %.2f GB from %s onto %s (source %s) in %.3f s%s", nbytes / 1e9, path, device, source,
                seconds, into)


def _restore_layers(model: nn.Module, model_config: ModelConfig) -> None:
    """After a failed layer-wise reload: gives every layer its own tensors back, so the engine keeps a whole model
    (with incomplete weights) instead of layers left on ``meta``."""
    if not any(parameter.device.type == "meta" for parameter in model.parameters()):
        return
    try:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload
    except ImportError:  # a vLLM without layer-wise reloading never leaves layers on meta
        return
    try:
        finalize_layerwise_reload(model, model_config)
        logger.error("torpor: the reload failed part way; the layers are back in place with incomplete weights: "
                     "reload again, or restart the engine, before serving")
    except Exception:  # the original error is the one to report
        logger.exception("torpor: putting the layers back after a failed reload failed too")
