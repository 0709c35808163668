"""What to announce, to whom and when; which snapshots to pull (sans-IO).

Every ``interval`` a node tells ``fanout`` random alive peers what snapshot it
has (a MANIFEST datagram, small and signed by the wire layer); a peer that
wants it pulls the blob over HTTP.  This module only decides: the node does the
sending and the HTTP, then reports back with ``pull_done``.  The push-announce /
pull-payload split is memberlist's two planes (UDP gossip, TCP bulk) applied to
gossip learning (Ormandi, Hegedus, Jelasity 2013).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from gossipnet.membership import codec
from gossipnet.membership.codec import BadBody
from gossipnet.membership.types import Addr, MemberView, Outgoing
from gossipnet.wire import blobs
from gossipnet.wire.types import MsgType

MANIFEST_KEYS = {"kind", "fp", "age", "step", "sha256", "size", "codec", "port", "path", "meta"}
_NAME = re.compile(r"[a-z0-9][a-z0-9_.+-]{0,31}")
_PATH = re.compile(r"/[A-Za-z0-9_.~/-]{0,255}")
MAX_FP_CHARS = 128
MAX_AGE = 1e15  # examples seen; far beyond any real run, finite for JSON
MAX_STEP = 2**63 - 1


@dataclass(frozen=True)
class GossipConfig:
    """Announce and pull knobs; times in seconds."""

    # DESIGN.md: nodes gossip "every few seconds"; one announce per 2 s keeps a
    # 10-node LAN's merge rate near one per node per 2 s with fanout 2.
    interval: float = 2.0
    # memberlist GossipNodes is 3 for 200 ms rumours; models are bulkier, so 2.
    fanout: int = 2
    # Bulk payloads are 100 KB-10 MB (DESIGN.md): two at once bounds memory and bandwidth.
    max_concurrent_pulls: int = 2
    # A backstop when the HTTP client never reports back; memberlist TCPTimeout is 10 s,
    # a 10 MB blob on a busy LAN may need longer.
    pull_timeout: float = 30.0
    # After a failed pull, leave that peer alone this long.
    retry_after: float = 10.0
    max_blob_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("interval", "pull_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"GossipConfig.{name} must be a positive number, got {value!r}")
        if self.retry_after < 0:
            raise ValueError("GossipConfig.retry_after must be >= 0")
        if self.fanout < 1 or self.max_concurrent_pulls < 1 or self.max_blob_bytes < 1:
            raise ValueError("GossipConfig.fanout, max_concurrent_pulls and max_blob_bytes "
                             "must be >= 1")

    @classmethod
    def lan(cls) -> GossipConfig:
        return cls()

    @classmethod
    def local(cls) -> GossipConfig:
        """Loopback tests: announce often, give up quickly."""
        return cls(interval=0.5, pull_timeout=5.0, retry_after=2.0)


class Skip(str, Enum):
    """Why a valid manifest did not lead to a pull."""

    OTHER_KIND = "other_kind"  # a different learner (convnet vs evolution)
    OTHER_FINGERPRINT = "other_fingerprint"  # another architecture: never merge
    OTHER_CLASSES = "other_classes"  # a model whose outputs name other classes: never merge
    NOT_NEWER = "not_newer"  # not past the last snapshot absorbed from that peer
    ALREADY_PULLING = "already_pulling"  # one pull per peer at a time
    AT_CAPACITY = "at_capacity"  # max_concurrent_pulls reached
    BACKOFF = "backoff"  # that peer's last pull failed recently
    TOO_LARGE = "too_large"  # size above max_blob_bytes


class BadManifest(ValueError):
    """A MANIFEST body that does not match the schema."""


@dataclass(frozen=True)
class Manifest:
    """'I have this snapshot': the body of a MANIFEST datagram."""

    kind: str
    fp: str
    age: float
    step: int
    sha256: bytes
    size: int
    codec: str
    port: int
    path: str
    meta: dict[str, Any]

    def to_body(self) -> dict[str, Any]:
        return {"kind": self.kind, "fp": self.fp, "age": float(self.age), "step": self.step,
                "sha256": self.sha256, "size": self.size, "codec": self.codec,
                "port": self.port, "path": self.path, "meta": dict(self.meta)}

    @classmethod
    def from_blob(cls, blob: blobs.Manifest, step: int, port: int, path: str) -> Manifest:
        """Announce a blob made by ``wire.blobs.encode_blob``; its shape summary rides in meta."""
        meta = {"dtype": blob.dtype, "tensors": blob.n_tensors, "params": blob.n_params}
        return cls(blob.kind, blob.fingerprint, blob.age, step, blob.sha256, blob.size,
                   blob.codec, port, path, meta)

    def blob(self) -> blobs.Manifest:
        """The ``wire.blobs.Manifest`` the puller checks the download against."""
        body = {"sha256": self.sha256, "size": self.size, "codec": self.codec, "fp": self.fp,
                "kind": self.kind, "age": float(self.age), "dtype": self.meta.get("dtype"),
                "tensors": self.meta.get("tensors"), "params": self.meta.get("params")}
        try:
            return blobs.Manifest.from_body(body)
        except blobs.BlobRejected as exc:
            raise BadManifest(f"not a weights/genome blob manifest: {exc}") from None

    @classmethod
    def from_body(cls, body: Any) -> Manifest:
        """Validate strictly; raise BadManifest naming the first thing wrong."""
        if not isinstance(body, dict) or set(body) != MANIFEST_KEYS:
            raise BadManifest("manifest is not a map with exactly the keys "
                              f"{sorted(MANIFEST_KEYS)}")
        for key in ("kind", "codec"):
            if type(body[key]) is not str or not _NAME.fullmatch(body[key]):
                raise BadManifest(f"{key} is not a short lowercase name")
        fp = body["fp"]
        if type(fp) is not str or not 1 <= len(fp) <= MAX_FP_CHARS or not fp.isprintable():
            raise BadManifest("fp is not a printable string of 1..128 chars")
        age = body["age"]
        if type(age) not in (int, float) or not math.isfinite(age) or not 0 <= age <= MAX_AGE:
            raise BadManifest("age is not a finite number in [0, 1e15]")
        if type(body["step"]) is not int or not 0 <= body["step"] <= MAX_STEP:
            raise BadManifest("step is not a non-negative int")
        if type(body["sha256"]) is not bytes or len(body["sha256"]) != 32:
            raise BadManifest("sha256 is not 32 bytes")
        if type(body["size"]) is not int or not 1 <= body["size"] <= 2**40:
            raise BadManifest("size is not a positive int")
        if type(body["port"]) is not int or not 1 <= body["port"] <= 65535:
            raise BadManifest("port is not in 1..65535")
        path = body["path"]
        if (type(path) is not str or not _PATH.fullmatch(path) or "//" in path
                or ".." in path.split("/")):
            raise BadManifest("path is not a plain absolute URL path")
        try:
            meta = codec.meta(body["meta"])
        except BadBody as exc:
            raise BadManifest(str(exc)) from None
        return cls(body["kind"], fp, float(age), body["step"], body["sha256"], body["size"],
                   body["codec"], body["port"], path, meta)


@dataclass(frozen=True)
class Pull:
    """A decision to fetch ``http://host:port/path`` and check it against ``manifest``."""

    peer_id: str
    host: str
    port: int
    path: str
    manifest: Manifest
    started: float

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"


class Gossip:
    """Announce schedule and pull bookkeeping for one node."""

    def __init__(self, kind: str, fingerprint: str, config: GossipConfig | None = None,
                 rng: random.Random | None = None) -> None:
        self.kind = kind
        self.fingerprint = fingerprint
        self.config = config or GossipConfig.lan()
        self.rng = rng or random.Random()
        self.counters: Counter[str] = Counter()
        self._pulls: dict[str, Pull] = {}
        self._absorbed: dict[str, tuple[int, bytes]] = {}  # peer -> (step, sha256)
        self._backoff: dict[str, float] = {}
        self._next_announce: float | None = None
        # Our learner's class-list digest (Learner.classes_digest): a manifest whose
        # fingerprint differs because of it is skipped as OTHER_CLASSES, a clearer reason.
        self.classes: str | None = None

    def in_flight(self) -> list[Pull]:
        return list(self._pulls.values())

    def next_deadline(self) -> float | None:
        times = [p.started + self.config.pull_timeout for p in self._pulls.values()]
        if self._next_announce is not None:
            times.append(self._next_announce)
        return min(times) if times else None

    def forget(self, peer_id: str) -> None:
        """A peer restarted or left: its step counter means nothing any more."""
        self._absorbed.pop(peer_id, None)
        self._backoff.pop(peer_id, None)

    def tick(self, now: float, alive_peers: Sequence[MemberView],
             manifest: Manifest | None) -> list[Outgoing]:
        """Expire stuck pulls; announce ``manifest`` to ``fanout`` random peers when due."""
        for peer_id, pull in list(self._pulls.items()):
            if now - pull.started >= self.config.pull_timeout:
                del self._pulls[peer_id]
                self._backoff[peer_id] = now + self.config.retry_after
                self.counters["rejected.timeout"] += 1
        if self._next_announce is None:
            # Spread nodes started together over the first interval.
            self._next_announce = now + self.rng.uniform(0, self.config.interval)
        if now < self._next_announce:
            return []
        self._next_announce = now + self.config.interval
        if manifest is None or not alive_peers:
            return []
        body = manifest.to_body()
        targets = self.rng.sample(list(alive_peers), min(self.config.fanout, len(alive_peers)))
        self.counters["announced"] += len(targets)
        return [Outgoing(p.addr, MsgType.MANIFEST, dict(body)) for p in targets]

    def on_manifest(self, peer_id: str, peer_addr: Addr, body: Any, now: float) -> Pull | None:
        """A peer's announcement: the pull to start, or None (counted, with a reason)."""
        try:
            manifest = Manifest.from_body(body)
            host, _ = codec.addr(peer_addr)
            codec.node_id(peer_id)
        except (BadManifest, BadBody):
            self.counters["rejected.malformed"] += 1
            return None
        reason = self._skip_reason(peer_id, manifest, now)
        if reason is not None:
            self.counters[f"skipped.{reason.value}"] += 1
            return None
        pull = Pull(peer_id, host, manifest.port, manifest.path, manifest, now)
        self._pulls[peer_id] = pull
        self.counters["pulls_started"] += 1
        return pull

    def _skip_reason(self, peer_id: str, m: Manifest, now: float) -> Skip | None:
        if m.kind != self.kind:
            return Skip.OTHER_KIND
        if m.fp != self.fingerprint:
            theirs = m.meta.get("classes")
            if self.classes is not None and theirs is not None and theirs != self.classes:
                return Skip.OTHER_CLASSES
            return Skip.OTHER_FINGERPRINT
        if m.size > self.config.max_blob_bytes:
            return Skip.TOO_LARGE
        last = self._absorbed.get(peer_id)
        if last is not None and (m.step <= last[0] or m.sha256 == last[1]):
            return Skip.NOT_NEWER
        if peer_id in self._pulls:
            return Skip.ALREADY_PULLING
        if len(self._pulls) >= self.config.max_concurrent_pulls:
            return Skip.AT_CAPACITY
        if now < self._backoff.get(peer_id, -math.inf):
            return Skip.BACKOFF
        return None

    def pull_done(self, peer_id: str, manifest: Manifest, ok: bool, reason: str | None,
                  now: float) -> None:
        """The node fetched (and verified and absorbed) the blob, or failed with ``reason``."""
        pull = self._pulls.get(peer_id)
        if pull is None or pull.manifest.sha256 != manifest.sha256:
            self.counters["late"] += 1  # timed out already, or never ours
            return
        del self._pulls[peer_id]
        if ok:
            self._absorbed[peer_id] = (manifest.step, manifest.sha256)
            self._backoff.pop(peer_id, None)
            self.counters["absorbed"] += 1
        else:
            label = reason if isinstance(reason, str) and _NAME.fullmatch(reason) else "other"
            self.counters[f"rejected.{label}"] += 1
            self._backoff[peer_id] = now + self.config.retry_after


