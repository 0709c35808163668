"""A snapshot's way from one learner to another, sans-IO: publish, check, download, open.

``publish`` turns a learner's ``Snapshot`` into blob bytes and the one ``Manifest`` that
describes them (the MANIFEST datagram's body). A receiver then checks, cheapest first, and
each check happens exactly once:

1. ``Manifest.from_body``: the body's schema (types, ranges, known codec/dtype/kind);
2. ``Gossip.wants``: the same kind and fingerprint (the learner's own), newer than what we
   took from that peer, a free pull slot (not rejections: a peer of another kind is normal);
3. ``Gate.check``: tensor and parameter counts and the declared size against *our* model,
   before any HTTP request is made;
4. ``Download``: size and sha256 while the bytes stream in, stopping at the first extra byte;
5. ``Gate.open``: bounded inflate, safetensors header (names, dtypes, shapes) before any
   tensor is built, finiteness; the result is a ``Snapshot`` the learner can ``absorb``.

Every refusal is a ``Rejection`` tagged with its stage (``pull`` for 4, ``gate`` for 1, 3, 5)
for the node's one record (``gossipnet.rejections``). ``Node``, ``sim.Swarm`` and
``benchmarks/gossip_learning.py`` all go through these functions.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

from gossipnet.learners.base import LearnerWire, Snapshot
from gossipnet.membership import codec
from gossipnet.membership.codec import BadBody
from gossipnet.rejections import Rejection
from gossipnet.wire import blobs

log = logging.getLogger(__name__)

KINDS = ("weights", "genome")  # blob kinds a manifest may announce (LearnerWire.blob_kind)
MANIFEST_KEYS = frozenset({"kind", "fp", "age", "step", "sha256", "size", "codec", "dtype", "tensors",
                           "params", "port", "path", "meta"})
MAX_FP_CHARS = 128
MAX_AGE = 1e15  # examples seen; far beyond any real run, finite for JSON
MAX_STEP = 2**63 - 1
MAX_TENSORS = 1 << 20
MAX_PARAMS = 2**40
DEFAULT_MAX_BLOB = 64 << 20  # design: blobs are 100 KB to 10 MB; leave headroom
KEEP_OFFERS = 3  # recent blobs still served, so a pull started just before a refresh completes
_PATH = re.compile(r"/[A-Za-z0-9_.~/-]{0,255}")


class BadManifest(ValueError):
    """A MANIFEST body that does not match the schema; the message names the field."""


@dataclass(frozen=True)
class Manifest:
    """'I have this snapshot': what it is, how to check it, where to fetch it.

    ``fp`` is the learner's fingerprint (what must match for two snapshots to merge);
    ``tensors``/``params``/``dtype`` summarise the blob's shapes so a receiver can refuse
    one that cannot fit its model before pulling; ``meta`` carries the learner's small
    claims (migrants' fitness), untrusted. ``port`` and ``path`` say where the blob is
    served: ``at(port)`` fills them in once the HTTP server is bound.
    """

    kind: str
    fp: str
    age: float
    step: int
    sha256: bytes
    size: int
    codec: str
    dtype: str
    tensors: int
    params: int
    port: int = 0
    path: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sha_hex(self) -> str:
        return self.sha256.hex()

    def at(self, port: int) -> Manifest:
        """The same manifest, served by this node's HTTP server on ``port``."""
        return replace(self, port=port, path=f"/blob/{self.sha_hex}")

    def to_body(self) -> dict[str, Any]:
        if not 1 <= self.port <= 65535:
            raise ValueError("announce a manifest only once it says where it is served (Manifest.at)")
        return {"kind": self.kind, "fp": self.fp, "age": float(self.age), "step": self.step,
                "sha256": self.sha256, "size": self.size, "codec": self.codec, "dtype": self.dtype,
                "tensors": self.tensors, "params": self.params, "port": self.port, "path": self.path,
                "meta": dict(self.meta)}

    @classmethod
    def from_body(cls, body: Any) -> Manifest:
        """Validate a peer's body strictly; raise BadManifest naming the first thing wrong."""
        if not isinstance(body, dict) or set(body) != MANIFEST_KEYS:
            raise BadManifest(f"manifest is not a map with exactly the keys {sorted(MANIFEST_KEYS)}")
        _choice(body, "kind", KINDS)
        _choice(body, "codec", blobs.CODECS)
        _choice(body, "dtype", tuple(blobs.DTYPES))
        fp = body["fp"]
        if type(fp) is not str or not 1 <= len(fp) <= MAX_FP_CHARS or not fp.isprintable():
            raise BadManifest(f"fp is not a printable string of 1..{MAX_FP_CHARS} chars")
        age = body["age"]
        if type(age) not in (int, float) or not math.isfinite(age) or not 0 <= age <= MAX_AGE:
            raise BadManifest("age is not a finite number in [0, 1e15]")
        for key, low, high in (("step", 0, MAX_STEP), ("size", 1, 2**40), ("tensors", 1, MAX_TENSORS),
                               ("params", 0, MAX_PARAMS), ("port", 1, 65535)):
            if type(body[key]) is not int or not low <= body[key] <= high:
                raise BadManifest(f"{key} is not an int in {low}..{high}")
        if type(body["sha256"]) is not bytes or len(body["sha256"]) != 32:
            raise BadManifest("sha256 is not 32 bytes")
        path = body["path"]
        if type(path) is not str or not _PATH.fullmatch(path) or "//" in path or ".." in path.split("/"):
            raise BadManifest("path is not a plain absolute URL path")
        try:
            meta = codec.meta(body["meta"])
        except BadBody as exc:
            raise BadManifest(str(exc)) from None
        return cls(body["kind"], fp, float(age), body["step"], body["sha256"], body["size"], body["codec"],
                   body["dtype"], body["tensors"], body["params"], body["port"], path, meta)


def _choice(body: dict[str, Any], key: str, allowed: tuple[str, ...]) -> None:
    if type(body[key]) is not str or body[key] not in allowed:
        raise BadManifest(f"{key} is not one of {', '.join(allowed)}")


@dataclass(frozen=True)
class Offer:
    """A published snapshot: the blob's bytes and the manifest that describes them."""

    data: bytes
    manifest: Manifest


def publish(snapshot: Snapshot, wire: LearnerWire, step: int, *, compress: bool = False) -> Offer | None:
    """Encode a learner's snapshot for its peers; None if it has nothing to offer yet
    (an island before its first generation). Claims in ``snapshot.meta`` that do not fit a
    datagram are dropped with a warning: the blob still goes out."""
    tensors = dict(snapshot.tensors)
    if not tensors or any(getattr(t, "size", 1) == 0 for t in tensors.values()):
        return None
    data = blobs.encode_tensors(tensors, dtype=wire.dtype, compress=compress)
    meta = dict(snapshot.meta)
    try:
        codec.meta(meta)
    except BadBody as exc:
        log.warning("snapshot meta too large to announce, sent without it: %s", exc)
        meta = {}
    spec = blobs.spec_of(tensors)
    manifest = Manifest(wire.blob_kind, snapshot.fingerprint, float(snapshot.age), int(step),
                        hashlib.sha256(data).digest(), len(data),
                        blobs.CODEC_ZLIB if compress else blobs.CODEC_RAW, wire.dtype,
                        len(spec), sum(math.prod(s) for s in spec.values()), meta=meta)
    return Offer(data, manifest)


class Refused(Exception):
    """A download or blob we stop at; ``rejection`` says the stage and reason to count."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(str(rejection))
        self.rejection = rejection


@dataclass(frozen=True)
class Blob:
    """Bytes whose size and sha256 match their manifest. Made only by ``Download.finish``."""

    data: bytes
    manifest: Manifest


class Download:
    """The streaming check of one pull: feed chunks as they arrive, ``finish()`` for the Blob.

    Stops at the first byte past the declared size; the sha256 is computed once, here.
    """

    def __init__(self, manifest: Manifest, limit: int = DEFAULT_MAX_BLOB) -> None:
        if not 0 < manifest.size <= limit:
            raise Refused(Rejection("pull", "too_large", f"declared {manifest.size} bytes, limit {limit}"))
        self.manifest = manifest
        self.received = 0
        self._hash = hashlib.sha256()
        self._parts: list[bytes] = []

    @classmethod
    def whole(cls, manifest: Manifest, data: bytes, limit: int = DEFAULT_MAX_BLOB) -> Blob:
        """Check bytes that arrived in one piece (the simulator, the benchmarks)."""
        download = cls(manifest, limit)
        download.feed(data)
        return download.finish()

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.manifest.size:
            raise Refused(Rejection("pull", "size_mismatch", f"more than the {self.manifest.size} bytes announced"))
        self._hash.update(chunk)
        self._parts.append(bytes(chunk))

    def finish(self) -> Blob:
        if self.received != self.manifest.size:
            raise Refused(Rejection("pull", "size_mismatch", f"{self.received} of {self.manifest.size} bytes"))
        if self._hash.digest() != self.manifest.sha256:
            raise Refused(Rejection("pull", "hash_mismatch", "content does not match the signed manifest"))
        data = b"".join(self._parts)
        self._parts = []
        return Blob(data, self.manifest)


class Gate:
    """Our model's side of the exchange: what a peer's snapshot must look like to be opened.

    Immutable once made, so ``open`` may run in the worker thread while the event loop
    calls ``check``. ``shapes`` are the learner's ``offer_shapes()``, fixed for its life.
    """

    def __init__(self, kind: str, shapes: blobs.Spec, max_size: int = DEFAULT_MAX_BLOB) -> None:
        self.kind = kind
        self.spec = {name: tuple(int(d) for d in shape) for name, shape in shapes.items()}
        self.max_size = max_size
        self._params = sum(math.prod(s) for s in self.spec.values())

    def check(self, manifest: Manifest) -> Rejection | None:
        """Before pulling: could this blob be our model at all? None if worth the download."""
        if manifest.tensors != len(self.spec) or manifest.params != self._params:
            return Rejection("gate", "bad_shape", f"{manifest.tensors} tensors / {manifest.params} params, "
                                                  f"ours {len(self.spec)} / {self._params}")
        raw = blobs.raw_size_bound(self.spec, manifest.dtype)
        limit = min(self.max_size, blobs.compressed_bound(raw) if manifest.codec == blobs.CODEC_ZLIB else raw)
        if manifest.size > limit:
            return Rejection("gate", "too_large", f"{manifest.size} bytes declared, our model fits in {limit}")
        return None

    def open(self, blob: Blob) -> Snapshot | Rejection:
        """The snapshot inside a downloaded blob, or why not. Never raises for any bytes."""
        m = blob.manifest
        try:
            tensors = blobs.decode_tensors(blob.data, m.codec, m.dtype, self.spec)
        except blobs.BlobRejected as exc:
            return Rejection("gate", exc.reason.value, exc.detail)
        return Snapshot(self.kind, m.fp, m.age, tensors, dict(m.meta))


class Shelf:
    """The few most recent offers, by sha256 hex: what this node's HTTP server hands out."""

    def __init__(self, keep: int = KEEP_OFFERS) -> None:
        self.keep = keep
        self._offers: OrderedDict[str, Offer] = OrderedDict()

    def put(self, offer: Offer) -> None:
        sha = offer.manifest.sha_hex
        self._offers[sha] = offer
        self._offers.move_to_end(sha)  # an unchanged model hashes alike: it is still the newest
        while len(self._offers) > self.keep:
            self._offers.popitem(last=False)

    def get(self, sha_hex: str) -> bytes | None:
        offer = self._offers.get(sha_hex)
        return None if offer is None else offer.data

    def newest(self) -> Offer | None:
        return next(reversed(self._offers.values()), None)
