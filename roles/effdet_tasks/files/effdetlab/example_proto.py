"""Serialize tf.train.Example protos with the standard library only.

Worker processes use this so they never import tensorflow (≈2.5 s and ~1 GB of
address space each).  The wire format (tensorflow/core/example/{example,feature}.proto):

  Example   { Features features = 1; }
  Features  { map<string, Feature> feature = 1; }   // map entry: {string key = 1; Feature value = 2;}
  Feature   { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
  BytesList { repeated bytes value = 1; }
  FloatList { repeated float value = 1 [packed = true]; }
  Int64List { repeated int64 value = 1 [packed = true]; }

tests/effdet/test_example_proto.py checks the bytes parse to the same message
tensorflow builds.
"""

import struct
from typing import Dict, Iterable, Sequence, Tuple


def _varint_slow(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 two's complement -> 10-byte varint, as protobuf does
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


_SMALL = [bytes((i,)) for i in range(128)]


def _varint(n: int) -> bytes:
    return _SMALL[n] if 0 <= n < 128 else _varint_slow(n)


def _ld(field_tag: int, payload: bytes) -> bytes:
    """Length-delimited field: tag byte (field_number << 3 | 2), varint length, payload."""
    n = len(payload)
    return b"".join((_SMALL[field_tag], _SMALL[n] if n < 128 else _varint_slow(n), payload))


def bytes_feature(values: Sequence[bytes]) -> bytes:
    if len(values) == 1:
        v = values[0]
        n = len(v)
        inner = b"".join((b"\x0a", _SMALL[n] if n < 128 else _varint_slow(n), v))
    else:
        inner = b"".join([_ld(0x0A, v) for v in values])
    return _ld(0x0A, inner)


def float_feature(values: Sequence[float]) -> bytes:
    if not values:
        return b"\x12\x00"
    return _ld(0x12, _ld(0x0A, struct.pack(f"<{len(values)}f", *values)))


def int64_feature(values: Iterable[int]) -> bytes:
    packed = b"".join([_varint(int(v)) for v in values])
    if not packed:
        return b"\x1a\x00"
    return _ld(0x1A, _ld(0x0A, packed))


_KEY_CACHE: Dict[str, bytes] = {}


def feature_entry(key: str, feature: bytes) -> bytes:
    """One entry of Features.feature (a map<string, Feature>), already wrapped as field 1."""
    k = _KEY_CACHE.get(key)
    if k is None:
        k = _KEY_CACHE[key] = _ld(0x0A, key.encode("utf-8"))
    n = len(feature)
    inner = b"".join((k, b"\x12", _SMALL[n] if n < 128 else _varint_slow(n), feature))
    return _ld(0x0A, inner)


def example_parts(*parts: bytes) -> Tuple[bytes, ...]:
    """Example as a tuple of pieces whose concatenation is the serialized message."""
    n = sum(len(p) for p in parts)
    return (b"\x0a" + (_SMALL[n] if n < 128 else _varint_slow(n)),) + parts


def example(*parts: bytes) -> bytes:
    """Example from concatenated feature_entry() bytes (given as one or more parts)."""
    return b"".join(example_parts(*parts))


def bytes_entry_header(key: str, value_len: int) -> bytes:
    """feature_entry(key, bytes_feature([v])) == bytes_entry_header(key, len(v)) + v,
    so a large value (image/encoded) is copied once, when the record is assembled."""
    k = _KEY_CACHE.get(key)
    if k is None:
        k = _KEY_CACHE[key] = _ld(0x0A, key.encode("utf-8"))
    bl = _varint(value_len)                  # BytesList.value length
    bl_len = 1 + len(bl) + value_len         # BytesList message
    f_len = 1 + len(_varint(bl_len)) + bl_len  # Feature message
    inner_len = len(k) + 1 + len(_varint(f_len)) + f_len
    return b"".join((b"\x0a", _varint(inner_len), k, b"\x12", _varint(f_len),
                     b"\x0a", _varint(bl_len), b"\x0a", bl))
