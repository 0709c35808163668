"""The tensor codec of the bulk plane: ``dict[str, np.ndarray]`` <-> safetensors bytes.

``encode_tensors`` writes float32 or float16 safetensors, optionally zlib; ``decode_tensors``
reads bytes whose size and sha256 were already checked (``gossipnet.exchange`` does that,
while streaming) against the receiver's own model: decompression bounded by what that model
can occupy, the safetensors header (names, dtypes, shapes) before any tensor is
materialised, finiteness last. No pickle anywhere: safetensors is a JSON header plus raw
little-endian buffers. Manifests, fingerprints and the order of checks live in
``gossipnet.exchange``.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Mapping
from enum import StrEnum

import numpy as np
import safetensors.numpy


CODEC_RAW = "safetensors"
CODEC_ZLIB = "safetensors+zlib"
CODECS = (CODEC_RAW, CODEC_ZLIB)
DTYPES = {"float32": "F32", "float16": "F16"}  # numpy name -> safetensors name
MAX_HEADER = 1 << 20  # safetensors JSON header; ~100 bytes per tensor, so 10k tensors

Spec = Mapping[str, tuple[int, ...]]  # tensor name -> shape, of the receiver's own model


class NotFinite(ValueError):
    """A tensor to send has NaN/Inf values, or overflows the wire dtype (float16 > 65504)."""


class BlobReason(StrEnum):
    """Why a blob's bytes were refused (the ``gate`` stage of ``gossipnet.rejections``)."""

    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    BAD_DTYPE = "bad_dtype"
    BAD_SHAPE = "bad_shape"
    NOT_FINITE = "not_finite"
    DECOMPRESSION_BOMB = "decompression_bomb"


class BlobRejected(Exception):
    """A peer's manifest or blob that we refuse, with the reason to count."""

    def __init__(self, reason: BlobReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


def spec_of(tensors: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(int(d) for d in arr.shape) for name, arr in tensors.items()}


def raw_size_bound(spec: Spec, dtype: str) -> int:
    """The most bytes a well-formed blob for ``spec`` can decompress to (data + header)."""
    itemsize = np.dtype(dtype).itemsize
    data = sum(math.prod(shape) * itemsize for shape in spec.values())
    header = 8 + 256 + sum(len(name.encode()) + 96 + 24 * len(shape) for name, shape in spec.items())
    return data + header


def compressed_bound(raw: int) -> int:
    """The most bytes zlib can turn ``raw`` bytes into: 5 per 16 KiB stored block plus 11
    (zlib.h, compressBound), rounded up."""
    return raw + raw // 16384 * 5 + 64


def encode_tensors(tensors: Mapping[str, np.ndarray], *, dtype: str = "float32", compress: bool = False,
                   level: int = 6) -> bytes:
    """Serialise float tensors as safetensors (cast to ``dtype``), optionally zlib."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if not tensors:
        raise ValueError("no tensors to encode")
    out: dict[str, np.ndarray] = {}
    for name, arr in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"bad tensor name {name!r}")
        arr = np.asarray(arr)
        if arr.dtype.kind != "f":
            raise TypeError(f"tensor {name!r} has dtype {arr.dtype}; only floating point is sent")
        if not _finite_as(arr, dtype):
            raise NotFinite(f"tensor {name!r} has NaN/Inf values (after casting to {dtype})")
        out[name] = arr.astype(dtype, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
    raw = safetensors.numpy.save(out)
    return zlib.compress(raw, level) if compress else raw


def _finite_as(arr: np.ndarray, dtype: str) -> bool:
    """Is every value finite once cast to ``dtype``? Checked on the extremes only: min and
    max propagate NaN, and a cast is monotonic, so if the smallest and largest values stay
    finite (float16 overflows beyond 65504) every value between does. Two reductions, not a
    pass over the float16 copy, where numpy's isfinite is ~10x slower (issue 17)."""
    if arr.size == 0:
        return True
    with np.errstate(over="ignore"):
        extremes = np.array([arr.min(), arr.max()]).astype(dtype)
    return bool(np.isfinite(extremes).all())


# --- receiving -------------------------------------------------------------------------------


def _inflate(data: bytes, max_length: int) -> bytes:
    """zlib with an output cap: never allocates more than ``max_length`` + 1 bytes."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, max_length + 1)
    except zlib.error as exc:
        raise BlobRejected(BlobReason.MALFORMED, f"zlib: {exc}") from None
    if len(out) > max_length or d.unconsumed_tail:
        raise BlobRejected(BlobReason.DECOMPRESSION_BOMB, f"inflates past {max_length} bytes")
    if not d.eof or d.unused_data:
        raise BlobRejected(BlobReason.MALFORMED, "truncated or trailing zlib data")
    return out


def _check_header(raw: bytes, spec: Spec, dtype: str) -> None:
    """Names, dtypes and shapes from the safetensors JSON header, before any tensor is built."""
    if len(raw) < 8:
        raise BlobRejected(BlobReason.MALFORMED, "shorter than a safetensors header")
    (n,) = struct.unpack_from("<Q", raw)
    if n > min(MAX_HEADER, len(raw) - 8):
        raise BlobRejected(BlobReason.MALFORMED, f"header length {n}")
    try:
        header = json.loads(raw[8:8 + n])
    except (ValueError, UnicodeDecodeError) as exc:
        raise BlobRejected(BlobReason.MALFORMED, f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise BlobRejected(BlobReason.MALFORMED, "header is not a JSON object")
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    if set(entries) != set(spec):
        missing, extra = sorted(set(spec) - set(entries)), sorted(set(entries) - set(spec))
        raise BlobRejected(BlobReason.BAD_SHAPE, f"tensor names differ: missing {missing[:3]}, extra {extra[:3]}")
    for name, entry in entries.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list):
            raise BlobRejected(BlobReason.MALFORMED, f"header entry {name!r}")
        if entry.get("dtype") != DTYPES[dtype]:
            raise BlobRejected(BlobReason.BAD_DTYPE, f"{name!r} is {entry.get('dtype')!r}, expected {DTYPES[dtype]}")
        if tuple(entry["shape"]) != tuple(spec[name]):
            raise BlobRejected(BlobReason.BAD_SHAPE, f"{name!r} is {entry['shape']}, expected {list(spec[name])}")


def decode_tensors(data: bytes, codec: str, dtype: str, spec: Spec) -> dict[str, np.ndarray]:
    """Parse a blob whose bytes are already verified against its manifest (size and sha256):
    bounded inflate, header before tensors, finiteness last. float32 arrays shaped like
    ``spec``, or BlobRejected with the reason."""
    if codec not in CODECS or dtype not in DTYPES:
        raise BlobRejected(BlobReason.MALFORMED, f"unknown codec/dtype {codec!r}/{dtype!r}")
    bound = raw_size_bound(spec, dtype)
    raw = _inflate(data, bound) if codec == CODEC_ZLIB else data
    if len(raw) > bound:
        raise BlobRejected(BlobReason.TOO_LARGE, f"{len(raw)} bytes for a model of at most {bound}")
    _check_header(raw, spec, dtype)
    try:
        tensors = safetensors.numpy.load(raw)
    except Exception as exc:  # safetensors raises its own SafetensorError and others on bad offsets
        raise BlobRejected(BlobReason.MALFORMED, f"safetensors: {type(exc).__name__}: {exc}") from None
    result = {}
    for name, arr in tensors.items():
        if arr.dtype != np.dtype(dtype) or arr.shape != tuple(spec[name]):
            raise BlobRejected(BlobReason.BAD_SHAPE, f"{name!r} parsed as {arr.dtype}{arr.shape}")
        arr = arr.astype(np.float32, copy=False)  # exact, NaN and Inf included: check after,
        if not np.isfinite(arr).all():  # where isfinite is ~10x faster than on float16
            raise BlobRejected(BlobReason.NOT_FINITE, f"{name!r} has NaN or Inf")
        result[name] = arr
    return result
