"""TFRecord file framing without importing tensorflow (when possible).

A TFRecord file is a sequence of
    uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)
(little endian; tensorflow/core/lib/io/record_writer.cc).  Python's stdlib has no
CRC-32C, and `import tensorflow` costs ~2 s, longer than converting 1,000 images.
So the fast path binds the CRC-32C routine that tensorflow's own record writer
uses, `tsl::crc32c::Extend` (`tensorflow::crc32c::Extend` before TF 2.13), from the
installed libtensorflow_framework.so.2 (in tensorflow_core/ for TF 2.0 and 2.1) via
ctypes (~25 ms), and checks it against the CRC-32C check value of "123456789"
(0xE3069283) before use.  If the library or symbol is not there (another TF
build or version), or EFFDETLAB_RECORD_WRITER=tf is set, the writer falls back to
tf.io.TFRecordWriter.  Both produce byte-identical files (tested).
"""

import ctypes
import importlib.util
import os
import struct
from typing import Callable, List, Optional, Sequence

_MASK_DELTA = 0xA282EAD8
_CHECK_INPUT, _CHECK_VALUE = b"123456789", 0xE3069283
# The packages whose folder may hold the library: tensorflow, and tensorflow_core in TF 2.0/2.1.
_PACKAGES = ("tensorflow", "tensorflow_core")
# tsl::crc32c::Extend(uint32, const char*, size_t) in TF 2.13+; tensorflow:: in older builds.
_SYMBOLS = ("_ZN3tsl6crc32c6ExtendEjPKcm", "_ZN10tensorflow6crc32c6ExtendEjPKcm")

_crc_fn: Optional[Callable[[int, bytes, int], int]] = None
_crc_loaded = False


def _load_native_crc32c() -> Optional[Callable[[int, bytes, int], int]]:
    if os.environ.get("EFFDETLAB_RECORD_WRITER", "").lower() == "tf":
        return None
    for d in _package_dirs():
        lib_path = os.path.join(d, "libtensorflow_framework.so.2")
        if not os.path.isfile(lib_path):
            continue
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # the library logs an INFO line on load
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError:
            continue
        for sym in _SYMBOLS:
            fn = getattr(lib, sym, None)
            if fn is None:
                continue
            fn.restype = ctypes.c_uint32
            fn.argtypes = [ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t]
            if fn(0, _CHECK_INPUT, len(_CHECK_INPUT)) == _CHECK_VALUE:
                return fn
    return None


def _package_dirs() -> List[str]:
    """The folders that may hold libtensorflow_framework.so.2, found without importing tensorflow:
    the tensorflow package, and tensorflow_core (TF 2.0 and 2.1 keep the library there; their
    tensorflow package is a thin shim)."""
    dirs = []  # type: List[str]
    for name in _PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            dirs.extend(d for d in spec.submodule_search_locations if d not in dirs)
    return dirs


def native_crc32c() -> Optional[Callable[[int, bytes, int], int]]:
    """The ctypes CRC-32C function, or None when only tensorflow's writer can be used."""
    global _crc_fn, _crc_loaded
    if not _crc_loaded:
        _crc_fn, _crc_loaded = _load_native_crc32c(), True
    return _crc_fn


def _mask(c: int) -> int:
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def masked_crc32c(crc: Callable[[int, bytes, int], int], data: bytes) -> int:
    return _mask(crc(0, data, len(data)))


class NativeRecordWriter:
    """Drop-in for tf.io.TFRecordWriter (uncompressed) using the native CRC-32C."""

    def __init__(self, path: str, crc: Callable[[int, bytes, int], int]) -> None:
        self._crc = crc
        self._f = open(path, "wb")

    def write(self, record: bytes) -> None:
        self.write_parts((record,))

    def write_parts(self, parts: Sequence[bytes]) -> None:
        """Write one record given as consecutive pieces (no concatenation copy)."""
        crc = self._crc
        header = struct.pack("<Q", sum(len(p) for p in parts))
        self._f.write(header + struct.pack("<I", masked_crc32c(crc, header)))
        c = 0
        for p in parts:
            self._f.write(p)
            c = crc(c, p, len(p))
        self._f.write(struct.pack("<I", _mask(c)))

    def close(self) -> None:
        self._f.close()


def open_writer(path: str):  # -> NativeRecordWriter | tf.io.TFRecordWriter
    crc = native_crc32c()
    if crc is not None:
        return NativeRecordWriter(path, crc)
    import tensorflow as tf  # fallback: ~2 s import
    return tf.io.TFRecordWriter(path)


def backend() -> str:
    return "native-crc32c" if native_crc32c() is not None else "tf.io.TFRecordWriter"
