"""A checkpoint's tensors streamed onto one device in bounded groups, the next group decoding while the engine
consumes this one."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch

import torpor
from torpor._torch import TO_TORCH


class CheckpointLoadError(RuntimeError):
    """A checkpoint could not be loaded into the engine; the message names the checkpoint and the cause (the file,
    tensor and chunk when libtorpor found a bad chunk)."""


@dataclass
class _Container:
    path: str
    handle: torpor.Container
    entries: list = field(default_factory=list)


class CheckpointStream:
    """Opens every container of ``path`` and checks, before anything is decoded, that each tensor can be decoded
    on ``device`` (a GPU codec needs a GPU; a dtype needs a torch dtype). Then ``direct(targets)`` decodes tensors
    straight into given tensors, and iterating yields the rest as ``(name, tensor)`` in checkpoint order, in
    groups of at most ``group_bytes`` of which at most two exist at once."""

    def __init__(self, path: str, device: torch.device, *, source: str, cache_dir: str | None, group_bytes: int,
                 threads: int):
        self.path, self.device, self.source, self.cache_dir = path, device, source, cache_dir
        self.group_bytes, self.threads = group_bytes, threads
        self.containers: list[_Container] = []
        try:
            for file in torpor.containers(path):
                if source == "host-cache" and device.type == "cpu":
                    # The host cache is a byte-for-byte copy of the container in RAM (/dev/shm): read that.
                    file = torpor.prepare_host_cache(file, cache_dir)[0]
                handle = torpor.open(file)
                self.containers.append(_Container(file, handle, list(handle.tensors.values())))
        except torpor.TorporError as error:
            self.close()
            raise CheckpointLoadError(f"the Torpor checkpoint {path} cannot be opened: {error}") from error
        for container in self.containers:
            for entry in container.entries:
                if entry.dtype not in TO_TORCH:
                    self.close()
                    raise CheckpointLoadError(f"{container.path}: tensor {entry.name!r} is {entry.dtype}, which "
                                              f"this PyTorch ({torch.__version__}) has no dtype for")
                if entry.gpu_only and device.type != "cuda":
                    self.close()
                    raise CheckpointLoadError(
                        f"{container.path}: tensor {entry.name!r} uses the GPU codec {entry.codec}, which only "
                        f"decodes on a CUDA device, and the engine's weights are on {device}")
        self.nbytes = sum(entry.nbytes for container in self.containers for entry in container.entries)

    def entries(self) -> Iterator:
        for container in self.containers:
            yield from container.entries

    def direct(self, targets: Mapping[str, torch.Tensor]) -> int:
        """Decodes the tensors named in ``targets`` into those tensors (on this stream's device, each exactly the
        tensor's size); they are left out of the iteration. Returns the bytes decoded."""
        done = 0
        for container in self.containers:
            chosen = {entry.name: targets[entry.name] for entry in container.entries if entry.name in targets}
            if not chosen:
                continue
            self._decode(container, chosen)
            container.entries = [entry for entry in container.entries if entry.name not in chosen]
            done += sum(tensor.nbytes for tensor in chosen.values())
        return done

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        plan = [(container, names) for container in self.containers for names in self._groups(container)]
        if not plan:
            return
        # One thread decodes ahead: it puts each group's tensors in the queue (or the error that stopped it), at
        # most one group ahead of the consumer, so at most two groups exist at once.
        ready: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None

        def decode_ahead() -> None:
            try:
                with _on(self.device, stream):
                    for container, names in plan:
                        if stop.is_set():
                            return
                        tensors = self._allocate(container, names)
                        self._decode(container, tensors)
                        ready.put((names, tensors))
                ready.put(None)
            except BaseException as error:  # handed to the consumer, which raises it
                ready.put(error)

        worker = threading.Thread(target=decode_ahead, name="torpor-decode", daemon=True)
        worker.start()
        try:
            while True:
                item = ready.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                names, tensors = item
                for name in names:
                    yield name, tensors.pop(name)
        finally:
            stop.set()
            while worker.is_alive():  # let a blocked put finish, then the thread ends at its stop check
                try:
                    ready.get(timeout=0.1)
                except queue.Empty:
                    pass
            worker.join()

    def close(self) -> None:
        for container in self.containers:
            container.handle.close()
        if self.device.type == "cuda":
            # The decoded groups came from PyTorch's caching allocator, which would keep their memory (up to
            # group_bytes) reserved after the load: more than the engine's share that the gateway's ledger counts.
            torch.cuda.empty_cache()

    def _groups(self, container: _Container) -> list[list[str]]:
        # Two groups exist at once, so each holds at most half of group_bytes (a bigger tensor is a group alone).
        limit = max(self.group_bytes // 2, 1)
        groups, group, size = [], [], 0
        for entry in container.entries:
            if group and size + entry.nbytes > limit:
                groups.append(group)
                group, size = [], 0
            group.append(entry.name)
            size += entry.nbytes
        if group:
            groups.append(group)
        return groups

    def _allocate(self, container: _Container, names: list[str]) -> dict[str, torch.Tensor]:
        entries = container.handle.tensors
        return {name: torch.empty(entries[name].shape, dtype=TO_TORCH[entries[name].dtype], device=self.device)
                for name in names}

    def _decode(self, container: _Container, tensors: Mapping[str, torch.Tensor]) -> None:
        addresses = {name: tensor.data_ptr() for name, tensor in tensors.items()}
        try:
            if self.device.type == "cuda":
                stream = torch.cuda.current_stream(self.device).cuda_stream
                container.handle.load_into_device(addresses, device=self.device.index, stream=stream,
                                                  source=self.source, cache_dir=self.cache_dir)
            else:
                container.handle.read_into(addresses, threads=self.threads)
        except torpor.TorporError as error:
            raise CheckpointLoadError(f"loading the Torpor checkpoint {self.path} failed: {error}") from error


class _on:
    """Runs the decoding thread on the consumer's device and CUDA stream: its allocations are ordered after the
    consumer's use of the memory they reuse, and each load waits for the consumer's queued work first."""

    def __init__(self, device: torch.device, stream):
        self.device, self.stream = device, stream
        self.contexts = []

    def __enter__(self):
        if self.device.type == "cuda":
            self.contexts = [torch.cuda.device(self.device), torch.cuda.stream(self.stream)]
        for context in self.contexts:
            context.__enter__()
        return self

    def __exit__(self, *details):
        for context in reversed(self.contexts):
            context.__exit__(*details)
