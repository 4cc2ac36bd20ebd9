"""Filling a checkpoint's host caches in the background after a cold start, and waiting for that before a load
reads them.

Only the fill (a copy into /dev/shm) runs in the background: pinning the mapping is a CUDA call, which must not run
on another thread while vLLM captures CUDA graphs after loading, so the first load from the cache pins it."""

from __future__ import annotations

import os
import threading

import torpor
from vllm.logger import init_logger

logger = init_logger("vllm.torpor")

_fills: dict[tuple[str, str], threading.Thread] = {}
_lock = threading.Lock()


def _key(path: str, cache_dir: str | None) -> tuple[str, str]:
    return os.path.realpath(path), cache_dir or ""


def fill_in_background(path: str, cache_dir: str | None) -> threading.Thread:
    """Starts copying every container of ``path`` into its host cache under ``cache_dir`` unless that is under way;
    a failure is logged (the load that needs the cache then fills it itself, or reports why it cannot)."""

    def fill() -> None:
        try:
            caches = torpor.prepare_host_cache(path, cache_dir)
            logger.info("torpor: host cache of %s ready: %s", path, ", ".join(caches))
        except torpor.TorporError as error:
            logger.warning("torpor: filling the host cache of %s failed: %s", path, error)

    with _lock:
        key = _key(path, cache_dir)
        thread = _fills.get(key)
        if thread is None or not thread.is_alive():
            thread = threading.Thread(target=fill, name="torpor-host-cache", daemon=True)
            _fills[key] = thread
            thread.start()
        return thread


def wait_for_fill(path: str, cache_dir: str | None) -> None:
    """Returns once no background fill of ``path``'s host cache is running."""
    with _lock:
        thread = _fills.get(_key(path, cache_dir))
    if thread is not None:
        thread.join()
