"""msgpack with numpy arrays, byte-compatible with openpi-client's `msgpack_numpy`.

An array travels as a map {b"__ndarray__": True, b"data": raw bytes, b"dtype": dtype.str,
b"shape": shape}; a numpy scalar as {b"__npgeneric__": True, b"data": item, b"dtype": ...}.
No pickle anywhere: object, void (structured) and complex dtypes are refused both ways, so a
message can only ever decode to dicts, lists, strings, numbers and plain numeric arrays.

Decoded arrays are read-only views of the message bytes (copy before writing into them).
"""
from __future__ import annotations

import functools

import msgpack
import numpy as np

_REFUSED_KINDS = ("O", "V", "c")


class CodecError(ValueError):
  """A message that is not valid msgpack-numpy."""


def _encode(obj):
  if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in _REFUSED_KINDS:
    raise TypeError(f"cannot send arrays of dtype {obj.dtype}")
  if isinstance(obj, np.ndarray):
    arr = np.ascontiguousarray(obj)
    return {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": arr.dtype.str,
            b"shape": arr.shape}
  if isinstance(obj, np.generic):
    return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
  if hasattr(obj, "__array__"):   # jax arrays and friends
    return _encode(np.asarray(obj))
  raise TypeError(f"cannot serialise an object of type {type(obj).__name__}")


def _dtype(value) -> np.dtype:
  if isinstance(value, bytes):
    value = value.decode("ascii")
  if not isinstance(value, str):
    raise CodecError(f"array dtype must be a string, got {type(value).__name__}")
  try:
    dt = np.dtype(value)
  except TypeError as e:
    raise CodecError(f"unknown array dtype {value!r}") from e
  if dt.kind in _REFUSED_KINDS:
    raise CodecError(f"array dtype {dt} is not accepted")
  return dt


def _decode(obj):
  if b"__ndarray__" in obj:
    dt = _dtype(obj.get(b"dtype"))
    shape = obj.get(b"shape")
    data = obj.get(b"data")
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(d, int) and d >= 0 for d in shape):
      raise CodecError(f"array shape must be a list of non-negative ints, got {shape!r}")
    if not isinstance(data, (bytes, bytearray)):
      raise CodecError("array data must be bytes")
    n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if n != len(data):
      raise CodecError(f"array of shape {tuple(shape)} and dtype {dt} needs {n} bytes, "
                       f"the message carries {len(data)}")
    return np.ndarray(buffer=data, dtype=dt, shape=tuple(shape))
  if b"__npgeneric__" in obj:
    dt = _dtype(obj.get(b"dtype"))
    try:
      return dt.type(obj.get(b"data"))
    except (TypeError, ValueError, OverflowError) as e:
      raise CodecError(f"bad numpy scalar: {e}") from e
  return obj


def packb(obj) -> bytes:
  return msgpack.packb(obj, default=_encode)


Packer = functools.partial(msgpack.Packer, default=_encode)


def unpackb(data: bytes):
  """Decodes one message; anything malformed raises CodecError."""
  try:
    return msgpack.unpackb(data, object_hook=_decode)
  except CodecError:
    raise
  except Exception as e:  # noqa: BLE001 -- msgpack raises many types for bad input
    raise CodecError(f"malformed msgpack message ({type(e).__name__}: {e})") from None
