"""A checkpoint's host caches made ready ahead of the wake that reads them, and waited for by that wake.

After a cold start (which reads the files) the caches are filled — copied into /dev/shm — on a thread of their own.
Pinning them (registering the mapping with the CUDA driver) waits for the engine's first level-2 sleep: a CUDA
call on another thread must not run while vLLM captures CUDA graphs after loading, and a sleeping engine runs no
GPU work. A wake's reload waits for both, so the first wake from the cache costs what every later one does."""

from __future__ import annotations

import os
import threading

import torpor
from vllm.logger import init_logger

logger = init_logger("vllm.torpor")

_work: dict[tuple[str, str], threading.Thread] = {}
_pinned: set[tuple[str, int]] = set()
_lock = threading.Lock()


def _key(path: str, cache_dir: str | None) -> tuple[str, str]:
    return os.path.realpath(path), cache_dir or ""


def _start(path: str, cache_dir: str | None, name: str, work) -> threading.Thread:
    """Runs ``work`` on a thread after the one already under way for this checkpoint, if any."""
    with _lock:
        key = _key(path, cache_dir)
        before = _work.get(key)

        def run() -> None:
            if before is not None:
                before.join()
            try:
                work()
            except torpor.TorporError as error:  # the load that needs the cache does this itself, or says why not
                logger.warning("torpor: %s of the host cache of %s failed: %s", name, path, error)

        thread = threading.Thread(target=run, name=f"torpor-host-cache-{name}", daemon=True)
        _work[key] = thread
        thread.start()
        return thread


def fill_in_background(path: str, cache_dir: str | None) -> threading.Thread:
    """Copies every container of ``path`` into its host cache under ``cache_dir`` (no CUDA call)."""

    def fill() -> None:
        caches = torpor.prepare_host_cache(path, cache_dir)
        logger.info("torpor: host cache of %s filled: %s", path, ", ".join(caches))

    return _start(path, cache_dir, "fill", fill)


def pin_in_background(path: str, cache_dir: str | None, device: int) -> threading.Thread:
    """Fills (when needed), maps and pins every container's host cache for ``device`` in this process."""

    def pin() -> None:
        for file in torpor.containers(path):
            with torpor.open(file) as container:
                container.open_host_cache(device=device, cache_dir=cache_dir)  # at once when already pinned
        if (path, device) not in _pinned:
            _pinned.add((path, device))
            logger.info("torpor: host cache of %s pinned for cuda:%d", path, device)

    return _start(path, cache_dir, "pin", pin)


def wait_for_cache(path: str, cache_dir: str | None) -> None:
    """Returns once no fill or pin of ``path``'s host cache is under way."""
    with _lock:
        thread = _work.get(_key(path, cache_dir))
    if thread is not None:
        thread.join()


_patched = False


def pin_after_level_2_sleeps() -> None:
    """Wraps vLLM's GPU worker's ``sleep`` (once per process): after a level-2 sleep of an engine that loads with
    the torpor format from the host cache, that checkpoint's cache is pinned in the background."""
    global _patched
    if _patched:
        return
    try:
        from vllm.v1.worker.gpu_worker import Worker
    except ImportError:  # not a CUDA worker (the CPU build): nothing is pinned there
        _patched = True
        return
    original = Worker.sleep

    def sleep(self, level: int = 1) -> None:
        original(self, level)
        if level != 2:
            return
        load_config = self.vllm_config.load_config
        extra = dict(load_config.model_loader_extra_config or {})
        if str(load_config.load_format) != "torpor" or extra.get("source") != "host-cache":
            return
        import torch

        pin_in_background(self.model_config.model, extra.get("cache_dir"), torch.cuda.current_device())

    sleep.__wrapped__ = original
    sleep.__doc__ = original.__doc__
    Worker.sleep = sleep
    _patched = True
