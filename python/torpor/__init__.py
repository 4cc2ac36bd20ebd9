"""Torpor checkpoints from Python.

    import torpor
    weights = torpor.load("model.torpor", device="cuda")          # dict[str, torch.Tensor]
    handle = torpor.save(model.state_dict(), "step-100.torpor")   # returns once the bytes are captured
    handle.wait()                                                 # raises torpor.TorporError on failure

`load` takes a container file or a pack directory (`torpor pack`); CPU loads decode on every core, CUDA loads go
through the pipelined GPU loader (every chunk checked on the GPU). `save` captures CPU and CUDA tensors before it
returns — the caller may change them at once — and encodes and writes in the background (on the GPU with nvCOMP
when the tensors are there). PyTorch is needed by `load` and `save` only: `open` works without it.
"""

from __future__ import annotations

import builtins
import ctypes
import json
import os
from typing import Iterable, Mapping, Optional

from ._lib import TorporError, library, check, TensorInfo, DeviceOptions, Tensor, SaveOptions, SaveInfo

__all__ = ["TorporError", "Container", "TensorEntry", "SaveHandle", "open", "load", "save", "version", "containers",
           "prepare_host_cache", "release_save_memory"]


def version() -> str:
    """libtorpor's version."""
    return library().torpor_version().decode()


class TensorEntry:
    """One tensor of a container: name, dtype (safetensors spelling), shape, nbytes, codec, gpu_only."""

    __slots__ = ("name", "dtype", "shape", "nbytes", "codec", "gpu_only")

    def __init__(self, info: TensorInfo):
        self.name = info.name.decode()
        self.dtype = info.dtype.decode()
        self.shape = tuple(info.shape[axis] for axis in range(info.ndim))
        self.nbytes = info.nbytes
        self.codec = info.codec.decode()
        self.gpu_only = bool(info.gpu_only)

    def __repr__(self) -> str:
        return f"TensorEntry({self.name!r}, {self.dtype}, {list(self.shape)}, {self.nbytes} bytes, {self.codec})"


class Container:
    """An open .torpor container (validated when opened). Use as a context manager or call close()."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        handle = ctypes.c_void_p()
        check(library().torpor_open(self.path.encode(), ctypes.byref(handle)))
        self._handle = handle
        lib = library()
        entries = []
        for index in range(lib.torpor_tensor_count(handle)):
            info = TensorInfo()
            check(lib.torpor_tensor_info_at(handle, index, ctypes.byref(info)))
            entries.append(TensorEntry(info))
        self.tensors = {entry.name: entry for entry in entries}
        self.metadata = json.loads(lib.torpor_metadata_json(handle).decode())

    def close(self) -> None:
        if self._handle:
            library().torpor_close(self._handle)
            self._handle = None

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _entries(self, names: Optional[Iterable[str]]) -> list[TensorEntry]:
        if names is None:
            return list(self.tensors.values())
        chosen = []
        for name in names:
            if name not in self.tensors:
                raise TorporError(1, f"{self.path}: no tensor named {name!r}")
            chosen.append(self.tensors[name])
        return chosen

    def read_into(self, destinations: Mapping[str, int], threads: int = 0) -> None:
        """Decodes tensors on the CPU into host memory: ``{name: address}``, each exactly the tensor's nbytes."""
        entries = self._entries(destinations.keys())
        count = len(entries)
        names = (ctypes.c_char_p * count)(*[entry.name.encode() for entry in entries])
        pointers = (ctypes.c_void_p * count)(*[destinations[entry.name] or None for entry in entries])
        sizes = (ctypes.c_int64 * count)(*[entry.nbytes for entry in entries])
        check(library().torpor_read(self._handle, names, pointers, sizes, count, threads))

    def read_bytes(self, name: str) -> bytes:
        """One tensor's decoded bytes, without PyTorch."""
        entry = self._entries([name])[0]
        buffer = ctypes.create_string_buffer(max(entry.nbytes, 1))
        self.read_into({name: ctypes.addressof(buffer) if entry.nbytes else 0})
        return buffer.raw[: entry.nbytes]

    def load_into_device(self, destinations: Mapping[str, int], device: int = 0, stream: int = 0,
                         source: str = "file", cache_dir: Optional[str] = None, direct: bool = False) -> None:
        """Loads tensors into GPU memory at ``{name: device address}`` with the pipelined loader, after the work
        queued on ``stream`` (a CUstream handle, 0 for the default stream). ``source``: "file" or "host-cache"."""
        entries = self._entries(destinations.keys())
        count = len(entries)
        names = (ctypes.c_char_p * count)(*[entry.name.encode() for entry in entries])
        pointers = (ctypes.c_uint64 * count)(*[destinations[entry.name] for entry in entries])
        sizes = (ctypes.c_int64 * count)(*[entry.nbytes for entry in entries])
        options = _device_options(device, source, cache_dir, stream=stream, direct=direct)
        check(library().torpor_load_device(self._handle, names, pointers, sizes, count, ctypes.byref(options)))

    def open_host_cache(self, device: int = 0, cache_dir: Optional[str] = None) -> None:
        """Makes this container's host cache (under ``cache_dir``, default /dev/shm) current, mapped and pinned for
        ``device`` in this process, so that later loads with source="host-cache" start at once. Releases the GIL:
        call it on a thread of its own to do that work while the process does other things."""
        options = _device_options(device, "host-cache", cache_dir)
        check(library().torpor_host_cache_open(self._handle, ctypes.byref(options)))


def _device_options(device: int, source: str, cache_dir: Optional[str], *, stream: int = 0,
                    direct: bool = False) -> DeviceOptions:
    if source not in ("file", "host-cache"):
        raise TorporError(1, f"unknown source {source!r}: use 'file' or 'host-cache'")
    options = DeviceOptions()
    library().torpor_device_options_init(ctypes.byref(options))
    options.device = device
    options.stream = stream or None
    options.source = 1 if source == "host-cache" else 0
    options.direct = 1 if direct else 0
    options.cache_dir = cache_dir.encode() if cache_dir else None
    return options


def open(path: str | os.PathLike) -> Container:  # noqa: A001 - mirrors the builtin on purpose
    """Opens one container file."""
    return Container(path)


def containers(path: str | os.PathLike) -> list[str]:
    """The container files of ``path``: itself when it is a file, else a pack directory's, in manifest order."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    manifest = os.path.join(path, "torpor-manifest.json")
    if not os.path.isfile(manifest):
        if os.path.isdir(path):
            raise TorporError(4, f"{path} is not a complete torpor pack: it has no torpor-manifest.json")
        raise TorporError(2, f"{path} does not exist")
    with builtins.open(manifest, "rb") as handle:
        files = json.load(handle).get("files", [])
    return [os.path.join(path, entry["container"]) for entry in files if entry.get("kind") == "packed"]


def prepare_host_cache(path: str | os.PathLike, cache_dir: Optional[str] = None) -> list[str]:
    """Copies every container of ``path`` into its host cache file under ``cache_dir`` (default /dev/shm) unless it
    is there and current; returns the cache files. A GPU load with source="host-cache" then maps and pins them."""
    lib = library()
    caches = []
    for container in containers(path):
        out = ctypes.create_string_buffer(4096)
        check(lib.torpor_host_cache_prepare(os.fspath(container).encode(),
                                            cache_dir.encode() if cache_dir else None, out, len(out)))
        caches.append(out.value.decode())
    return caches


def load(path: str | os.PathLike, device="cpu", *, names: Optional[Iterable[str]] = None, source: str = "file",
         cache_dir: Optional[str] = None, threads: int = 0) -> dict:
    """Loads tensors of a container or pack directory as ``{name: torch.Tensor}`` on ``device`` ("cpu", "cuda",
    "cuda:1", a torch.device). ``names`` picks tensors (default: all). Loads read the container files or, with
    source="host-cache", their copies in ``cache_dir`` (default /dev/shm), made on first use: pinned for CUDA
    loads."""
    from ._torch import load as load_torch

    return load_torch(path, device, names=names, source=source, cache_dir=cache_dir, threads=threads)


class SaveHandle:
    """A save in progress. ``wait()`` blocks until the container is written and raises TorporError on failure;
    ``done()`` polls; ``source_bytes`` and ``container_bytes`` are known once it is finished."""

    _CAPTURES = {0: "host", 1: "device-snapshot", 2: "device-to-host"}

    def __init__(self, handle: ctypes.c_void_p, path: str):
        self._handle = handle
        self.path = path
        self.source_bytes: Optional[int] = None
        self.container_bytes: Optional[int] = None
        info = SaveInfo()
        check(library().torpor_save_get_info(handle, ctypes.byref(info)))
        #: How the bytes were captured before ``save`` returned: ``capture`` is "host" (no CUDA tensors),
        #: "device-snapshot" (copied within GPU memory, to the host in the background) or "device-to-host" (the GPU
        #: had no room for a snapshot); ``memory_reused`` says the host memory of an earlier save was reused; the
        #: ``*_seconds`` split the call's time.
        self.capture = {"capture": self._CAPTURES.get(info.device_capture, str(info.device_capture)),
                        "memory_reused": bool(info.memory_reused), "memory_seconds": info.memory_seconds,
                        "wait_seconds": info.wait_seconds, "copy_seconds": info.copy_seconds}

    def done(self) -> bool:
        return bool(library().torpor_save_done(self._handle)) if self._handle else True

    def wait(self) -> "SaveHandle":
        if self._handle and self.container_bytes is None:
            source = ctypes.c_int64()
            container = ctypes.c_int64()
            check(library().torpor_save_sizes(self._handle, ctypes.byref(source), ctypes.byref(container)))
            self.source_bytes, self.container_bytes = source.value, container.value
        return self

    def __del__(self) -> None:
        handle, self._handle = getattr(self, "_handle", None), None
        if handle:
            try:
                library().torpor_save_free(handle)
            except Exception:
                pass


def save(state_dict: Mapping, path: str | os.PathLike, codec: str = "auto", background: bool = True, *,
         gpu_encode: Optional[bool] = None, chunk_size: int = 0, threads: int = 0,
         metadata: Optional[Mapping[str, str]] = None, keep_memory: bool = True) -> SaveHandle:
    """Saves ``{name: torch.Tensor}`` (CPU or CUDA) into a new container at ``path``. Returns once the bytes are
    captured; with ``background=False`` also waits for the file. ``gpu_encode``: None encodes on the GPU when the
    tensors are on one and nvCOMP is installed, True requires it, False never. ``metadata`` goes into the
    container's safetensors ``__metadata__``. ``keep_memory``: keep the host memory the file was assembled in
    (pinned, after CUDA tensors) and the GPU encoder for the next save, so a loop that saves every step does not
    allocate and pin the model's size again each time; ``release_save_memory()`` frees what is kept."""
    from ._torch import save as save_torch

    handle = save_torch(state_dict, os.fspath(path), codec=codec, gpu_encode=gpu_encode, chunk_size=chunk_size,
                        threads=threads, metadata=metadata, keep_memory=keep_memory)
    if not background:
        handle.wait()
    return handle


def release_save_memory() -> int:
    """Frees the host memory and GPU encoders that finished saves kept for the next one (``save(keep_memory=True)``,
    the default); returns the host bytes freed. Saves still running keep theirs until they end."""
    return int(library().torpor_save_release_memory())
