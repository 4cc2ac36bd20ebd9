"""ctypes declarations of libtorpor's C ABI (Sources/CTorporABI/include/torpor.h), and finding the library."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from pathlib import Path

ABI_VERSION = 2
MAX_DIMS = 16

STATUS_NAMES = {
    0: "ok",
    1: "invalid argument",
    2: "I/O error",
    3: "corrupt data",
    4: "invalid container",
    5: "unsupported",
    6: "no GPU",
    7: "out of memory",
    8: "GPU error",
    9: "internal error",
}


class TorporError(RuntimeError):
    """A libtorpor call failed. ``status`` is the C status code, ``reason`` its name; the message is the library's,
    naming what failed (file, tensor, chunk) and what to do."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.reason = STATUS_NAMES.get(status, f"status {status}")
        super().__init__(message or self.reason)


class TensorInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("dtype", ctypes.c_char_p),
        ("codec", ctypes.c_char_p),
        ("ndim", ctypes.c_int32),
        ("shape", ctypes.c_int64 * MAX_DIMS),
        ("nbytes", ctypes.c_int64),
        ("gpu_only", ctypes.c_int32),
    ]


class DeviceOptions(ctypes.Structure):
    _fields_ = [
        ("device", ctypes.c_int32),
        ("stream", ctypes.c_void_p),
        ("source", ctypes.c_int32),
        ("direct", ctypes.c_int32),
        ("cache_dir", ctypes.c_char_p),
        ("nvcomp_path", ctypes.c_char_p),
        ("nvrtc_path", ctypes.c_char_p),
    ]


class Tensor(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("dtype", ctypes.c_char_p),
        ("ndim", ctypes.c_int32),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("data", ctypes.c_void_p),
        ("nbytes", ctypes.c_int64),
        ("device", ctypes.c_int32),
    ]


class SaveOptions(ctypes.Structure):
    _fields_ = [
        ("codec", ctypes.c_char_p),
        ("gpu_encode", ctypes.c_int32),
        ("chunk_size", ctypes.c_int64),
        ("threads", ctypes.c_int32),
        ("stream", ctypes.c_void_p),
        ("metadata_json", ctypes.c_char_p),
        ("nvcomp_path", ctypes.c_char_p),
        ("keep_memory", ctypes.c_int32),
    ]


class SaveInfo(ctypes.Structure):
    _fields_ = [
        ("device_capture", ctypes.c_int32),
        ("memory_reused", ctypes.c_int32),
        ("memory_seconds", ctypes.c_double),
        ("wait_seconds", ctypes.c_double),
        ("copy_seconds", ctypes.c_double),
    ]


def _candidates() -> list[str]:
    """Where libtorpor is looked for, in order: TORPOR_LIBRARY, the package's own copy, the loader path."""
    found = []
    explicit = os.environ.get("TORPOR_LIBRARY")
    if explicit:
        found.append(explicit)
    here = Path(__file__).resolve().parent
    found += [str(here / "libtorpor.so")]
    name = ctypes.util.find_library("torpor")
    if name:
        found.append(name)
    found += ["libtorpor.so", "libtorpor-c.so"]
    return found


_library = None
_lock = threading.Lock()


def library() -> ctypes.CDLL:
    """libtorpor, loaded once with its functions declared. Raises TorporError naming every place it looked."""
    global _library
    with _lock:
        if _library is not None:
            return _library
        tried = []
        for candidate in _candidates():
            if os.sep in candidate and not os.path.exists(candidate):
                tried.append(f"{candidate}: no such file")
                continue
            try:
                handle = ctypes.CDLL(candidate)
            except OSError as error:
                tried.append(f"{candidate}: {error}")
                continue
            _declare(handle)
            if handle.torpor_abi_version() != ABI_VERSION:
                raise TorporError(
                    5,
                    f"{candidate} has ABI version {handle.torpor_abi_version()}, this package needs {ABI_VERSION}: "
                    "install matching versions of libtorpor and the torpor package",
                )
            _library = handle
            return handle
        raise TorporError(
            2,
            "libtorpor was not found; build it with scripts/build-libtorpor.sh (or `swift build --product torpor-c`) "
            "and set TORPOR_LIBRARY to the .so. Tried: " + "; ".join(tried),
        )


def _declare(lib: ctypes.CDLL) -> None:
    c = ctypes
    status = c.c_int
    lib.torpor_version.restype = c.c_char_p
    lib.torpor_abi_version.restype = c.c_int32
    lib.torpor_last_error.restype = c.c_char_p
    lib.torpor_open.argtypes = [c.c_char_p, c.POINTER(c.c_void_p)]
    lib.torpor_open.restype = status
    lib.torpor_close.argtypes = [c.c_void_p]
    lib.torpor_close.restype = None
    lib.torpor_tensor_count.argtypes = [c.c_void_p]
    lib.torpor_tensor_count.restype = c.c_int64
    lib.torpor_tensor_info_at.argtypes = [c.c_void_p, c.c_int64, c.POINTER(TensorInfo)]
    lib.torpor_tensor_info_at.restype = status
    lib.torpor_metadata_json.argtypes = [c.c_void_p]
    lib.torpor_metadata_json.restype = c.c_char_p
    lib.torpor_read.argtypes = [
        c.c_void_p, c.POINTER(c.c_char_p), c.POINTER(c.c_void_p), c.POINTER(c.c_int64), c.c_int64, c.c_int32,
    ]
    lib.torpor_read.restype = status
    lib.torpor_device_options_init.argtypes = [c.POINTER(DeviceOptions)]
    lib.torpor_device_options_init.restype = None
    lib.torpor_load_device.argtypes = [
        c.c_void_p, c.POINTER(c.c_char_p), c.POINTER(c.c_uint64), c.POINTER(c.c_int64), c.c_int64,
        c.POINTER(DeviceOptions),
    ]
    lib.torpor_load_device.restype = status
    lib.torpor_host_cache_open.argtypes = [c.c_void_p, c.POINTER(DeviceOptions)]
    lib.torpor_host_cache_open.restype = status
    lib.torpor_host_cache_prepare.argtypes = [c.c_char_p, c.c_char_p, c.c_char_p, c.c_size_t]
    lib.torpor_host_cache_prepare.restype = status
    lib.torpor_save_options_init.argtypes = [c.POINTER(SaveOptions)]
    lib.torpor_save_options_init.restype = None
    lib.torpor_save_start.argtypes = [
        c.c_char_p, c.POINTER(Tensor), c.c_int64, c.POINTER(SaveOptions), c.POINTER(c.c_void_p),
    ]
    lib.torpor_save_start.restype = status
    lib.torpor_save_done.argtypes = [c.c_void_p]
    lib.torpor_save_done.restype = c.c_int32
    lib.torpor_save_wait.argtypes = [c.c_void_p]
    lib.torpor_save_wait.restype = status
    lib.torpor_save_sizes.argtypes = [c.c_void_p, c.POINTER(c.c_int64), c.POINTER(c.c_int64)]
    lib.torpor_save_sizes.restype = status
    lib.torpor_save_free.argtypes = [c.c_void_p]
    lib.torpor_save_free.restype = None
    lib.torpor_save_get_info.argtypes = [c.c_void_p, c.POINTER(SaveInfo)]
    lib.torpor_save_get_info.restype = status
    lib.torpor_save_release_memory.argtypes = []
    lib.torpor_save_release_memory.restype = c.c_int64


def check(status: int) -> None:
    """Raises TorporError with the calling thread's last libtorpor message when ``status`` is not 0."""
    if status != 0:
        message = library().torpor_last_error() or b""
        raise TorporError(status, message.decode("utf-8", "replace"))
