"""One node's protocol core, sans-IO, in the shape of h11's ``Connection``.

Inputs are what the node's I/O produced: a message the wire layer accepted
(``on_message``), a rejection it counted (``reject``), the outcome of a pull
(``pull_done``), and the time (``tick``). Each returns an ``Output``: datagrams to
send, blobs to pull, and what happened (member events, merges, refusals) for the
history and the log. The core owns membership, gossip, the exchange gate and the
node's counters; it never awaits, never touches a socket, never trains.

``node.py`` drives it with asyncio, sockets and a worker thread; ``sim.py`` drives the
very same class on a virtual clock, so the simulator's tests test the glue the daemon
runs (including forgetting a restarted peer's step counter).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gossipnet.exchange import BadManifest, Gate, Manifest
from gossipnet.gossip import Gossip, GossipConfig, Pull
from gossipnet.learners.base import AbsorbResult, Learner, LearnerWire
from gossipnet.membership import (BadBody, EventKind, MemberEvent, Membership, MembershipConfig, MemberView,
                                  Outgoing, State, codec)
from gossipnet.membership.types import Addr
from gossipnet.rejections import Rejection, Rejections
from gossipnet.wire.types import MsgType

# Membership events the history shows, by the name the progress PNG marks them with.
MEMBER_EVENTS = {EventKind.JOINED: "peer_joined", EventKind.RECOVERED: "peer_joined",
                 EventKind.DEAD: "peer_dead", EventKind.LEFT: "peer_left"}


@dataclass(frozen=True)
class Event:
    """Something the operator may want to see: ``kind`` is a history event name
    (``peer_joined``, ``peer_dead``, ``peer_left``, the learner's merge event, ``rejected``),
    ``detail`` the text the history and the log show."""

    kind: str
    peer: str
    detail: str = ""


@dataclass
class Output:
    """What the core asks the node to do, and what happened (``members``: membership's own
    events, every kind, for the simulator's figures; ``events``: what the history shows)."""

    sends: list[Outgoing] = field(default_factory=list)
    pulls: list[Pull] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    members: list[MemberEvent] = field(default_factory=list)


class NodeCore:
    """Membership, gossip and the exchange gate of one node, with its counters."""

    def __init__(self, node_id: str, addr: Addr, *, learner_kind: str, fingerprint: str,
                 wire: LearnerWire, shapes: dict[str, tuple[int, ...]], http_port: int,
                 membership_rng: random.Random, gossip_rng: random.Random, incarnation: int = 0,
                 membership_config: MembershipConfig | None = None,
                 gossip_config: GossipConfig | None = None, classes: str | None = None,
                 signing_key: Ed25519PrivateKey | None = None) -> None:
        """``signing_key``: the node's identity key, to sign its alive records (daemons)."""
        self.node_id = node_id
        self.wire = wire
        self.http_port = http_port
        meta = {"http": http_port, "kind": learner_kind}
        self.membership = Membership(node_id, addr, meta, membership_config or MembershipConfig.lan(),
                                     membership_rng, incarnation=incarnation, signing_key=signing_key)
        self.gossip_config = gossip_config or GossipConfig.lan()
        self.gossip = Gossip(wire.blob_kind, fingerprint, self.gossip_config, gossip_rng)
        self.gossip.classes = classes  # Learner.classes_digest: another class list is skipped by name
        self.gate = Gate(learner_kind, shapes, max_size=self.gossip_config.max_blob_bytes)
        self.rejections = Rejections({"learner": wire.absorb_reasons})
        self.exchange: Counter[str] = Counter(dict.fromkeys(("sent", "pulled", "absorbed"), 0))
        self.messages_in: Counter[str] = Counter()
        self.messages_out: Counter[str] = Counter()
        self.peer_exchange: dict[str, float] = {}  # peer -> wall time of the last absorbed snapshot
        self.last_merge: dict[str, Any] | None = None
        self._announce: Manifest | None = None

    @classmethod
    def for_learner(cls, node_id: str, addr: Addr, learner: Learner, **kw: Any) -> NodeCore:
        """A core built from the learner's declarations (kind, fingerprint, wire facts, shapes,
        class list): ``Node.make_core`` and ``sim.Swarm.make_core`` both build theirs here, so
        the simulator runs the core exactly as the daemon configures it. ``kw``: the rest of
        ``__init__``'s keywords (ports, rngs, incarnation, configs, signing key)."""
        return cls(node_id, addr, learner_kind=learner.kind, fingerprint=learner.fingerprint, wire=learner.wire,
                   shapes=learner.offer_shapes(), classes=learner.classes_digest, **kw)

    # ------------------------------------------------------------------ inputs

    def offer(self, manifest: Manifest | None) -> None:
        """Announce this snapshot from now on (the newest one published)."""
        if manifest is None or (self._announce is not None and self._announce.sha256 == manifest.sha256):
            return
        self._announce = manifest.at(self.http_port)

    @property
    def announcing(self) -> Manifest | None:
        return self._announce

    def add_seed(self, addr: Addr, now: float) -> None:
        self.membership.add_seed(addr, now)

    def discovered(self, node_id: str, addr: Addr, now: float, preferred: bool = True) -> None:
        """An mDNS record; ``preferred``: its address is on our interface's subnet."""
        self.membership.discovered(node_id, addr, now, preferred)

    def reject(self, rejection: Rejection) -> None:
        """Count a refusal the node's I/O made (the wire layer's, a pull that failed)."""
        self.rejections.add(rejection)

    def on_message(self, sender: str, addr: Addr, msg_type: MsgType, body: Any, now: float) -> Output:
        """A message the wire layer accepted from ``sender`` at ``addr``."""
        out = Output()
        if sender == self.node_id:
            return out
        self.messages_in[msg_type.name] += 1
        if msg_type == MsgType.MANIFEST:
            out.pulls += self._on_manifest(sender, addr, body, now)
        else:
            out.sends += self._sent(self.membership.handle(sender, addr, msg_type, body, now))
        self._member_events(out)
        return out

    def tick(self, now: float) -> Output:
        """Timers: probes, rumours, announcements, stuck pulls."""
        out = Output()
        out.sends += self.membership.tick(now)
        self._member_events(out)
        if self._gossiping():
            out.sends += self.gossip.tick(now, self.membership.alive_peers(), self._announce)
        out.sends = self._sent(out.sends)
        return out

    def pull_done(self, pull: Pull, outcome: AbsorbResult | Rejection, now: float, wall: float) -> Output:
        """How a pull ended: refused at some stage (a ``Rejection``) or the learner's answer."""
        if isinstance(outcome, AbsorbResult) and not outcome.accepted:
            outcome = Rejection("learner", outcome.reason, outcome.detail)
        ok = isinstance(outcome, AbsorbResult)
        self.gossip.pull_done(pull.peer_id, pull.manifest, ok, None if ok else outcome.reason, now)
        out = Output()
        if isinstance(outcome, Rejection):
            self.rejections.add(outcome)
            if outcome.stage == "pull":  # nothing arrived: not a merge attempt
                return out
        self.exchange["pulled"] += 1
        reason = "ok" if ok else outcome.reason
        self.last_merge = {"at": wall, "peer": pull.peer_id, "accepted": ok, "reason": reason}
        if ok:
            self.exchange["absorbed"] += 1
            self.peer_exchange[pull.peer_id] = wall
            out.events.append(Event(self.wire.merge_event, pull.peer_id,
                                    f"{pull.peer_id} step {pull.manifest.step}"))
        else:
            out.events.append(Event("rejected", pull.peer_id, str(outcome)))
        return out

    def leave(self, now: float) -> list[Outgoing]:
        """Goodbyes to send before shutting down."""
        return self._sent(self.membership.leave(now))

    def next_deadline(self) -> float | None:
        """When ``tick`` next has work (the driver may also call it earlier)."""
        gossip = self.gossip.next_deadline() if self._gossiping() else None
        times = [t for t in (self.membership.next_deadline(), gossip) if t is not None]
        return min(times) if times else None

    def _gossiping(self) -> bool:
        """Gossip has timers only with something to announce or pulls in flight, so a
        membership-only core (the simulator's) wakes for membership alone."""
        return self._announce is not None or bool(self.gossip.in_flight())

    # ------------------------------------------------------------------ views

    def peers(self) -> list[MemberView]:
        """Every member but ourselves."""
        return self.membership.members()[1:]

    def members_by_state(self) -> dict[str, list[str]]:
        """Peers' node ids grouped by membership state, every state present (tests and the CLI summary)."""
        out: dict[str, list[str]] = {s.label: [] for s in State}
        for m in self.peers():
            out[m.state.label].append(m.node_id)
        return out

    def counters(self) -> dict[str, dict[str, int]]:
        """The counter groups of the status document (docs/API.md)."""
        return {"exchange": dict(self.exchange), "messages_in": dict(self.messages_in),
                "messages_out": dict(self.messages_out), "membership": dict(self.membership.counters),
                "gossip": dict(self.gossip.counters)}

    # ------------------------------------------------------------------ internals

    def _on_manifest(self, sender: str, addr: Addr, body: Any, now: float) -> list[Pull]:
        # Pull only from the address the member itself announced, never from the datagram's
        # source: a spoofed or replayed manifest must not choose the server we GET from.
        member = self.membership.member(sender)
        if member is None or member.state != State.ALIVE:
            self.rejections.add(Rejection("gate", "not_a_member", sender))
            return []
        try:
            manifest = Manifest.from_body(body)
            host, _ = codec.addr(member.addr)
            codec.node_id(sender)
        except (BadManifest, BadBody) as exc:
            self.rejections.add(Rejection("gate", "malformed", str(exc)))
            return []
        if self.gossip.wants(sender, manifest, now) is not None:
            return []
        problem = self.gate.check(manifest)  # before any HTTP request
        if problem is not None:
            self.rejections.add(problem)
            return []
        return [self.gossip.start_pull(sender, host, manifest, now)]

    def _member_events(self, out: Output) -> None:
        self.rejections.set_totals("membership", {
            key.split(".", 1)[1]: n for key, n in self.membership.counters.items() if key.startswith("rejected.")})
        for ev in self.membership.drain_events():
            out.members.append(ev)
            if ev.kind in (EventKind.JOINED, EventKind.RECOVERED):
                self.gossip.forget(ev.node_id)  # a restarted peer's step counter may start over
            name = MEMBER_EVENTS.get(ev.kind)
            if name is not None:
                out.events.append(Event(name, ev.node_id, ev.node_id))

    def _sent(self, outs: list[Outgoing]) -> list[Outgoing]:
        for o in outs:
            self.messages_out[o.msg_type.name] += 1
            if o.msg_type == MsgType.MANIFEST:
                self.exchange["sent"] += 1
        return outs
