"""Weights and genomes on the bulk plane: safetensors blobs described by a signed manifest.

The sender encodes ``dict[str, np.ndarray]`` with safetensors (float32 or float16,
optionally zlib) and announces a ``Manifest`` in a MANIFEST envelope. The puller
checks, cheapest and safest first: the manifest against its own model (fingerprint,
codec, declared size) before it pulls; the size while it reads; the sha256 before it
parses; decompression bounded by what its own model can occupy; the safetensors
header (names, dtypes, shapes) before any tensor is materialised; finiteness last.
No pickle anywhere: safetensors is a JSON header plus raw little-endian buffers.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import safetensors.numpy

from gossipnet.wire.body import BodyError, Bytes, Range, validate

CODEC_RAW = "safetensors"
CODEC_ZLIB = "safetensors+zlib"
CODECS = (CODEC_RAW, CODEC_ZLIB)
DTYPES = {"float32": "F32", "float16": "F16"}  # numpy name -> safetensors name
KINDS = ("weights", "genome")
MAX_HEADER = 1 << 20  # safetensors JSON header; ~100 bytes per tensor, so 10k tensors
DEFAULT_MAX_BLOB = 64 << 20  # design: blobs are 100 KB to 10 MB; leave headroom

Spec = Mapping[str, tuple[int, ...]]  # tensor name -> shape, of the receiver's own model


class BlobReason(StrEnum):
    TOO_LARGE = "too_large"
    HASH_MISMATCH = "hash_mismatch"
    MALFORMED = "malformed"
    BAD_DTYPE = "bad_dtype"
    BAD_SHAPE = "bad_shape"
    NOT_FINITE = "not_finite"
    DECOMPRESSION_BOMB = "decompression_bomb"
    WRONG_FINGERPRINT = "wrong_fingerprint"


class BlobRejected(Exception):
    """A peer's manifest or blob that we refuse, with the reason to count."""

    def __init__(self, reason: BlobReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


def spec_of(tensors: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(int(d) for d in arr.shape) for name, arr in tensors.items()}


def fingerprint(spec: Spec) -> str:
    """Architecture fingerprint: 16 hex digits of sha256 over the sorted names and shapes."""
    canon = json.dumps(sorted((name, list(shape)) for name, shape in spec.items()), separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def raw_size_bound(spec: Spec, dtype: str) -> int:
    """The most bytes a well-formed blob for ``spec`` can decompress to (data + header)."""
    itemsize = np.dtype(dtype).itemsize
    data = sum(math.prod(shape) * itemsize for shape in spec.values())
    header = 8 + 256 + sum(len(name.encode()) + 96 + 24 * len(shape) for name, shape in spec.items())
    return data + header


@dataclass(frozen=True)
class Manifest:
    """What a node announces about one snapshot; fits in a MANIFEST datagram body."""

    sha256: bytes
    size: int
    codec: str
    fingerprint: str
    kind: str
    age: float  # training age (samples or generations), for age-weighted merging
    dtype: str
    n_tensors: int
    n_params: int

    def to_body(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "codec": self.codec, "fp": self.fingerprint,
                "kind": self.kind, "age": float(self.age), "dtype": self.dtype,
                "tensors": self.n_tensors, "params": self.n_params}

    @classmethod
    def from_body(cls, body: Any) -> Manifest:
        """Parse a peer's manifest body; raises BlobRejected(MALFORMED) naming the bad field."""
        try:
            validate(body, MANIFEST_SCHEMA, "manifest")
        except BodyError as exc:
            raise BlobRejected(BlobReason.MALFORMED, str(exc)) from None
        if body["codec"] not in CODECS or body["dtype"] not in DTYPES or body["kind"] not in KINDS:
            raise BlobRejected(BlobReason.MALFORMED, f"unknown codec/dtype/kind "
                               f"{body['codec']!r}/{body['dtype']!r}/{body['kind']!r}")
        if not math.isfinite(body["age"]) or body["age"] < 0:
            raise BlobRejected(BlobReason.MALFORMED, f"age {body['age']!r}")
        return cls(body["sha256"], body["size"], body["codec"], body["fp"], body["kind"],
                   float(body["age"]), body["dtype"], body["tensors"], body["params"])


MANIFEST_SCHEMA = {
    "sha256": Bytes(32, 32),
    "size": Range(0, 2**40),
    "codec": str,
    "fp": str,
    "kind": str,
    "age": float,
    "dtype": str,
    "tensors": Range(0, 1 << 20),
    "params": Range(0, 2**40),
}


def encode_blob(tensors: Mapping[str, np.ndarray], *, kind: str = "weights", age: float = 0.0,
                dtype: str = "float32", compress: bool = False, level: int = 6) -> tuple[bytes, Manifest]:
    """Serialise float tensors as safetensors (cast to ``dtype``), optionally zlib; plus manifest."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not tensors:
        raise ValueError("no tensors to encode")
    out: dict[str, np.ndarray] = {}
    for name, arr in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"bad tensor name {name!r}")
        arr = np.asarray(arr)
        if arr.dtype.kind != "f":
            raise TypeError(f"tensor {name!r} has dtype {arr.dtype}; only floating point is sent")
        with np.errstate(over="ignore"):  # overflow to inf is caught just below, with a name
            cast = arr.astype(dtype, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        if not np.isfinite(cast).all():
            raise ValueError(f"tensor {name!r} has NaN/Inf values (after casting to {dtype})")
        out[name] = cast
    raw = safetensors.numpy.save(out)
    data = zlib.compress(raw, level) if compress else raw
    manifest = Manifest(
        sha256=hashlib.sha256(data).digest(), size=len(data), codec=CODEC_ZLIB if compress else CODEC_RAW,
        fingerprint=fingerprint(spec_of(out)), kind=kind, age=float(age), dtype=dtype,
        n_tensors=len(out), n_params=sum(a.size for a in out.values()),
    )
    return data, manifest


# --- receiving -------------------------------------------------------------------------------


def check_size(declared: int, limit: int) -> None:
    """Refuse a transfer whose declared (or actual) size exceeds ``limit``, before reading it."""
    if declared > limit:
        raise BlobRejected(BlobReason.TOO_LARGE, f"{declared} bytes, limit {limit}")


def check_manifest(manifest: Manifest, spec: Spec, max_size: int = DEFAULT_MAX_BLOB) -> None:
    """Decide before pulling: same architecture, sane size and counts."""
    if manifest.fingerprint != fingerprint(spec):
        raise BlobRejected(BlobReason.WRONG_FINGERPRINT,
                           f"peer model {manifest.fingerprint}, ours {fingerprint(spec)}")
    raw = raw_size_bound(spec, manifest.dtype)
    # zlib's worst case adds 5 bytes per 16 KiB stored block plus 11 (zlib.h, compressBound)
    check_size(manifest.size, min(max_size, raw + raw // 16384 * 5 + 64))
    if manifest.n_tensors != len(spec) or manifest.n_params != sum(math.prod(s) for s in spec.values()):
        raise BlobRejected(BlobReason.BAD_SHAPE, "tensor or parameter count differs from ours")


class BlobHasher:
    """Streaming check while a blob downloads: abort as soon as it overruns its declared size."""

    def __init__(self, manifest: Manifest, limit: int = DEFAULT_MAX_BLOB) -> None:
        check_size(manifest.size, limit)
        self.manifest = manifest
        self.received = 0
        self._hash = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.manifest.size:
            raise BlobRejected(BlobReason.TOO_LARGE, f"more than the declared {self.manifest.size} bytes")
        self._hash.update(chunk)

    def finish(self) -> None:
        if self.received != self.manifest.size:
            raise BlobRejected(BlobReason.HASH_MISMATCH, f"{self.received} of {self.manifest.size} bytes")
        if self._hash.digest() != self.manifest.sha256:
            raise BlobRejected(BlobReason.HASH_MISMATCH, "sha256 differs from the manifest")


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


def decode_blob(data: bytes, manifest: Manifest, spec: Spec,
                max_size: int = DEFAULT_MAX_BLOB) -> dict[str, np.ndarray]:
    """Check and parse a pulled blob; float32 arrays shaped like ``spec``, or BlobRejected."""
    check_manifest(manifest, spec, max_size)
    check_size(len(data), manifest.size)
    if len(data) != manifest.size or hashlib.sha256(data).digest() != manifest.sha256:
        raise BlobRejected(BlobReason.HASH_MISMATCH, "content differs from the manifest")
    bound = raw_size_bound(spec, manifest.dtype)
    raw = _inflate(data, bound) if manifest.codec == CODEC_ZLIB else data
    if len(raw) > bound:
        raise BlobRejected(BlobReason.TOO_LARGE, f"{len(raw)} bytes for a model of at most {bound}")
    _check_header(raw, spec, manifest.dtype)
    try:
        tensors = safetensors.numpy.load(raw)
    except Exception as exc:  # safetensors raises its own SafetensorError and others on bad offsets
        raise BlobRejected(BlobReason.MALFORMED, f"safetensors: {type(exc).__name__}: {exc}") from None
    result = {}
    for name, arr in tensors.items():
        if arr.dtype != np.dtype(manifest.dtype) or arr.shape != tuple(spec[name]):
            raise BlobRejected(BlobReason.BAD_SHAPE, f"{name!r} parsed as {arr.dtype}{arr.shape}")
        if not np.isfinite(arr).all():
            raise BlobRejected(BlobReason.NOT_FINITE, f"{name!r} has NaN or Inf")
        result[name] = arr.astype(np.float32, copy=False)
    return result


class BlobGate:
    """The puller's checks for one local model, with counters for the status page."""

    def __init__(self, spec: Spec, max_size: int = DEFAULT_MAX_BLOB) -> None:
        self.spec = dict(spec)
        self.max_size = max_size
        self._counts = {"accepted": 0, **{r.value: 0 for r in BlobReason}}

    @property
    def counters(self) -> dict[str, int]:
        return dict(self._counts)

    def count(self, rejection: BlobRejected) -> BlobRejected:
        self._counts[rejection.reason.value] += 1
        return rejection

    def check_manifest(self, manifest: Manifest) -> BlobRejected | None:
        """None if the blob is worth pulling, else the counted rejection."""
        try:
            check_manifest(manifest, self.spec, self.max_size)
        except BlobRejected as exc:
            return self.count(exc)
        return None

    def open(self, data: bytes, manifest: Manifest) -> dict[str, np.ndarray] | BlobRejected:
        try:
            tensors = decode_blob(data, manifest, self.spec, self.max_size)
        except BlobRejected as exc:
            return self.count(exc)
        self._counts["accepted"] += 1
        return tensors
