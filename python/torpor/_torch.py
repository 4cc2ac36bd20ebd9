"""load() and save() for PyTorch tensors (imported only when they are called)."""

from __future__ import annotations

import ctypes
import json
import os
from typing import Iterable, Mapping, Optional

try:
    import torch
except ImportError as error:  # pragma: no cover - exercised where torch is missing
    raise ImportError("torpor.load and torpor.save need PyTorch: pip install torch") from error

from ._lib import TorporError, library, check, Tensor, SaveOptions

# safetensors dtype names ↔ torch dtypes (those this torch has).
_DTYPES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16", "I32": "int32", "U32": "uint32",
    "I64": "int64", "U64": "uint64", "F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
    "C64": "complex64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu",
}
TO_TORCH = {name: getattr(torch, attribute) for name, attribute in _DTYPES.items() if hasattr(torch, attribute)}
FROM_TORCH = {dtype: name for name, dtype in TO_TORCH.items()}


def _torch_dtype(entry, path: str):
    dtype = TO_TORCH.get(entry.dtype)
    if dtype is None:
        raise TorporError(5, f"{path}: tensor {entry.name!r} is {entry.dtype}, which this PyTorch ({torch.__version__}) "
                             "has no dtype for; read its bytes with torpor.open(path).read_bytes(name)")
    return dtype


def load(path, device, *, names: Optional[Iterable[str]], source: str, cache_dir: Optional[str],
         threads: int) -> dict:
    from . import Container, containers, prepare_host_cache

    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type not in ("cpu", "cuda"):
        raise TorporError(1, f"torpor.load loads into 'cpu' or 'cuda' memory, not {device}")
    wanted = None if names is None else set(names)
    result = {}
    for file in containers(path):
        if device.type == "cpu" and source == "host-cache":
            # The host cache is a byte-for-byte copy of the container in RAM (/dev/shm): read that instead.
            file = prepare_host_cache(file, cache_dir)[0]
        with Container(file) as container:
            entries = [entry for entry in container.tensors.values() if wanted is None or entry.name in wanted]
            tensors = {entry.name: torch.empty(entry.shape, dtype=_torch_dtype(entry, file), device=device)
                       for entry in entries}
            for entry in entries:
                if tensors[entry.name].numel() * tensors[entry.name].element_size() != entry.nbytes:
                    raise TorporError(4, f"{file}: tensor {entry.name!r} has {entry.nbytes} bytes, which does not "
                                         f"match {entry.dtype} {list(entry.shape)}")
            addresses = {name: tensor.data_ptr() for name, tensor in tensors.items()}
            if device.type == "cpu":
                container.read_into(addresses, threads=threads)
            else:
                stream = torch.cuda.current_stream(device).cuda_stream
                container.load_into_device(addresses, device=device.index, stream=stream, source=source,
                                           cache_dir=cache_dir)
            result.update(tensors)
    if wanted is not None and wanted - result.keys():
        missing = ", ".join(repr(name) for name in sorted(wanted - result.keys()))
        raise TorporError(1, f"{os.fspath(path)} has no tensor named {missing}")
    return result


def save(state_dict: Mapping, path: str, *, codec: str, gpu_encode: Optional[bool], chunk_size: int, threads: int,
         metadata: Optional[Mapping[str, str]], keep_memory: bool):
    from . import SaveHandle

    keep = []  # every tensor and shape array stays alive until libtorpor has captured the bytes
    items = []
    streams = set()
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise TorporError(1, f"{name!r} is a {type(tensor).__name__}, not a torch.Tensor")
        if tensor.dtype not in FROM_TORCH:
            raise TorporError(1, f"tensor {name!r} has dtype {tensor.dtype}, which safetensors cannot hold")
        if tensor.device.type not in ("cpu", "cuda"):
            raise TorporError(1, f"tensor {name!r} is on {tensor.device}; torpor.save takes CPU and CUDA tensors")
        tensor = tensor.detach()
        if not tensor.is_contiguous():
            tensor = tensor.contiguous()
        shape = (ctypes.c_int64 * max(tensor.dim(), 1))(*tensor.shape)
        keep += [tensor, shape]
        device = -1 if tensor.device.type == "cpu" else tensor.device.index
        if device >= 0:
            streams.add(torch.cuda.current_stream(tensor.device).cuda_stream)
        items.append(Tensor(name=str(name).encode(), dtype=FROM_TORCH[tensor.dtype].encode(), ndim=tensor.dim(),
                            shape=shape, data=tensor.data_ptr() or None,
                            nbytes=tensor.numel() * tensor.element_size(), device=device))
    if len(streams) > 1:
        # Tensors on several GPUs: finish each one's queued work here (libtorpor waits on one stream).
        for index in {int(item.device) for item in items if item.device >= 0}:
            torch.cuda.current_stream(index).synchronize()
    array = (Tensor * max(len(items), 1))(*items)
    options = SaveOptions()
    library().torpor_save_options_init(ctypes.byref(options))
    options.codec = codec.encode()
    options.gpu_encode = -1 if gpu_encode is None else int(bool(gpu_encode))
    options.chunk_size = chunk_size
    options.threads = threads
    options.stream = next(iter(streams)) if len(streams) == 1 else None
    options.metadata_json = json.dumps(dict(metadata)).encode() if metadata else None
    options.keep_memory = int(bool(keep_memory))
    handle = ctypes.c_void_p()
    check(library().torpor_save_start(path.encode(), array, len(items), ctypes.byref(options),
                                      ctypes.byref(handle)))
    return SaveHandle(handle, path)
