"""What to announce, to whom and when; which snapshots to pull (sans-IO).

Every ``announce_interval`` a node tells ``fanout`` random alive peers what snapshot it
has (a MANIFEST datagram whose body is an ``exchange.Manifest``, signed by the wire
layer); a peer that wants it pulls the blob over HTTP. This module only decides: the
node core checks the manifest against its model (``exchange.Gate``), the node does the
sending and the HTTP, then reports back with ``pull_done``. The push-announce /
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

from gossipnet.exchange import Manifest
from gossipnet.membership.types import MemberView, Outgoing
from gossipnet.wire.types import MsgType

_NAME = re.compile(r"[a-z0-9][a-z0-9_.+-]{0,31}")


@dataclass(frozen=True)
class GossipConfig:
    """Announce and pull knobs; times in seconds."""

    # DESIGN.md: nodes gossip "every few seconds". 5 s is what the daemon ran with when
    # docs/RESULTS.md was measured; with fanout 2 each node is offered a snapshot every 2.5 s
    # on average, a little more often than a convnet node trains a 20-batch chunk here.
    # (Not the membership rumour interval: that is MembershipConfig.rumour_interval, 0.2 s.)
    announce_interval: float = 5.0
    # memberlist GossipNodes is 3 for 200 ms rumours; models are bulkier, so 2.
    fanout: int = 2
    # Bulk payloads are 100 KB-10 MB (DESIGN.md): two at once bounds memory and bandwidth.
    max_concurrent_pulls: int = 2
    # A backstop when the HTTP client never reports back; memberlist TCPTimeout is 10 s,
    # a 10 MB blob on a busy LAN may need longer.
    pull_timeout: float = 30.0
    # After a failed pull, leave that peer alone this long.
    retry_after: float = 10.0
    # The puller's cap; the gate (exchange.Gate) refuses a manifest above it, or above what
    # our own model can occupy, before pulling.
    max_blob_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("announce_interval", "pull_timeout"):
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
        """Loopback tests and the demo: announce often, give up quickly."""
        return cls(announce_interval=0.5, pull_timeout=5.0, retry_after=2.0)


class Skip(str, Enum):
    """Why a valid manifest did not lead to a pull."""

    OTHER_KIND = "other_kind"  # a different blob kind (weights vs genome)
    OTHER_FINGERPRINT = "other_fingerprint"  # another architecture: never merge
    OTHER_CLASSES = "other_classes"  # a model whose outputs name other classes: never merge
    NOT_NEWER = "not_newer"  # not past the last snapshot absorbed from that peer
    ALREADY_PULLING = "already_pulling"  # one pull per peer at a time
    AT_CAPACITY = "at_capacity"  # max_concurrent_pulls reached
    BACKOFF = "backoff"  # that peer's last pull failed recently


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
        """``kind`` is the blob kind we take (``LearnerWire.blob_kind``), ``fingerprint`` the learner's."""
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

    @property
    def next_announce(self) -> float | None:
        """When the next MANIFEST is due (None before the first tick): the node encodes its
        offer just before (``LearnerHost``), not on a cadence of its own."""
        return self._next_announce

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
            self._next_announce = now + self.rng.uniform(0, self.config.announce_interval)
        if now < self._next_announce:
            return []
        self._next_announce = now + self.config.announce_interval
        if manifest is None or not alive_peers:
            return []
        body = manifest.to_body()
        targets = self.rng.sample(list(alive_peers), min(self.config.fanout, len(alive_peers)))
        self.counters["announced"] += len(targets)
        return [Outgoing(p.addr, MsgType.MANIFEST, dict(body), p.node_id) for p in targets]

    def wants(self, peer_id: str, manifest: Manifest, now: float) -> Skip | None:
        """Why a peer's (valid) manifest is not worth a pull now, counted; None if it is."""
        reason = self._skip_reason(peer_id, manifest, now)
        if reason is not None:
            self.counters[f"skipped.{reason.value}"] += 1
        return reason

    def start_pull(self, peer_id: str, host: str, manifest: Manifest, now: float) -> Pull:
        """Book a pull slot for ``manifest`` (after ``wants`` said yes and the gate agreed)."""
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


