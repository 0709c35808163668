"""SWIM's failure detector: direct probe, indirect probe through helpers, NACKs.

memberlist's ``probeNode`` and ``handleIndirectPing`` (state.go, net.go) with the
goroutines and timers unrolled into deadlines checked by ``advance(now)``.
Outcomes go to the ``Table``: a failed probe suspects (or, on a suspect,
confirms) the target; the result also feeds Lifeguard's local health score.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gossipnet.membership import codec
from gossipnet.membership.config import MembershipConfig
from gossipnet.membership.table import LIVE, Table
from gossipnet.membership.types import Addr, Outgoing, State
from gossipnet.wire.types import MsgType

MAX_RELAYS = 256  # indirect probes we run for others at once; more are refused

# Builds a datagram with piggy-backed rumours: (addr, type, body, about-node) -> Outgoing.
Send = Callable[[Addr, MsgType, dict[str, Any], str | None], Outgoing]


@dataclass
class Probe:
    """Our one probe in flight."""

    target: str
    addr: Addr
    seq: int
    timeout_at: float  # direct ACK expected by then, else ask helpers
    deadline: float  # any ACK expected by then, else suspect
    helpers: set[str] = field(default_factory=set)
    nacks: set[str] = field(default_factory=set)
    asked: bool = False


@dataclass
class Relay:
    """An indirect probe we run on someone else's behalf (PING_REQ)."""

    origin_id: str
    origin_addr: Addr
    origin_seq: int
    target: str
    nack_at: float  # Lifeguard: NACK at 80% of the probe timeout, before the origin gives up
    deadline: float
    nack: bool


class FailureDetector:
    def __init__(self, table: Table, config: MembershipConfig, rng: random.Random,
                 counters: Counter[str], send: Send) -> None:
        self._t = table
        self.config = config
        self.rng = rng
        self.counters = counters
        self._send = send
        self._seq = rng.randrange(codec.MAX_SEQ)
        self.probe: Probe | None = None
        self.last_seq = -1  # the probe that just ended: its late ACKs and NACKs are no news
        self._order: list[str] = []
        self._relays: dict[int, Relay] = {}
        self._next_probe: float | None = None

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & codec.MAX_SEQ
        return self._seq

    def deadlines(self) -> list[float]:
        times = [] if self._next_probe is None else [self._next_probe]
        if self.probe:
            times.append(self.probe.deadline if self.probe.asked else self.probe.timeout_at)
        times += [r.nack_at if r.nack else r.deadline for r in self._relays.values()]
        return times

    def advance(self, now: float) -> list[Outgoing]:
        """Ask helpers, fail the probe, start the next one, time out relays: whatever is due."""
        out: list[Outgoing] = []
        if self._next_probe is None:
            # Stagger nodes started together, as memberlist's randomised first tick.
            self._next_probe = now + self.rng.uniform(0, self.config.probe_interval)
        p = self.probe
        if p and not p.asked and now >= p.timeout_at and now < p.deadline:
            out += self._ask_helpers(p)
        if p and now >= p.deadline:
            self.probe = None
            self.last_seq = p.seq
            self._failed(p, now)
        if self.probe is None and now >= self._next_probe:
            out += self._start(now)
        for seq, relay in list(self._relays.items()):
            if relay.nack and now >= relay.nack_at:
                relay.nack = False
                out.append(Outgoing(relay.origin_addr, MsgType.NACK, {"q": relay.origin_seq},
                                    relay.origin_id))
                self.counters["sent.nack"] += 1
            if now >= relay.deadline:
                del self._relays[seq]
                self.counters["relay_timeouts"] += 1
        return out

    def _next_target(self) -> str | None:
        """memberlist's round robin over a shuffled list, skipping the dead."""
        for _ in range(2):
            while self._order:
                node_id = self._order.pop()
                m = self._t.members.get(node_id)
                if m is not None and m.state in LIVE:
                    return node_id
            self._order = [m.node_id for m in self._t.members.values() if m.state in LIVE]
            self.rng.shuffle(self._order)
        return None

    def _start(self, now: float) -> list[Outgoing]:
        scale = self._t.awareness.scale
        self._next_probe = now + scale(self.config.probe_interval)
        target = self._next_target()
        if target is None:
            return []
        m = self._t.members[target]
        self.probe = Probe(target, m.addr, self.next_seq(),
                           now + scale(self.config.probe_timeout), self._next_probe)
        self.counters["probes"] += 1
        return [self._send(m.addr, MsgType.PING, {"q": self.probe.seq, "t": target}, target)]

    def _ask_helpers(self, p: Probe) -> list[Outgoing]:
        p.asked = True
        helpers = [m for m in self._t.members.values()
                   if m.state == State.ALIVE and m.node_id != p.target]
        helpers = self.rng.sample(helpers, min(len(helpers), self.config.indirect_checks))
        out = []
        for h in helpers:
            p.helpers.add(h.node_id)
            self.counters["ping_reqs_sent"] += 1
            out.append(self._send(h.addr, MsgType.PING_REQ,
                                  {"q": p.seq, "t": p.target, "a": list(p.addr), "k": True},
                                  h.node_id))
        return out

    def _failed(self, p: Probe, now: float) -> None:
        self.counters["probes_failed"] += 1
        # Lifeguard (memberlist probeNode): missing NACKs mean *we* may be the slow one;
        # with nobody to ask, every failed probe counts against us.
        helpers = len(p.helpers)
        self._t.awareness.apply(helpers - len(p.nacks) if helpers else 1)
        m = self._t.members.get(p.target)
        if m is not None and m.state in LIVE:
            # On a suspect this is Lifeguard's independent confirmation (memberlist probeNode).
            self._t.suspect(p.target, m.incarnation, self._t.self_id, now)

    def on_ack(self, sender_id: str, seq: int) -> list[Outgoing] | None:
        """An ACK for our probe or for a relay we run; None if it is neither."""
        p = self.probe
        if p and seq == p.seq and (sender_id == p.target or sender_id in p.helpers):
            self.probe = None
            self.last_seq = p.seq
            if sender_id == p.target and not p.asked:
                self._t.awareness.apply(-1)
                self.counters["probes_acked"] += 1
            else:
                self.counters["probes_acked_indirect"] += 1
            return []
        relay = self._relays.get(seq)
        if relay and sender_id == relay.target:
            del self._relays[seq]
            self.counters["relays_acked"] += 1
            return [self._send(relay.origin_addr, MsgType.ACK, {"q": relay.origin_seq},
                               relay.origin_id)]
        return None

    def on_nack(self, sender_id: str, seq: int) -> bool:
        """A helper's NACK for our probe; False if it is not one."""
        p = self.probe
        if p and seq == p.seq and sender_id in p.helpers:
            p.nacks.add(sender_id)
            self.counters["nacks_received"] += 1
            return True
        return False

    def on_ping_req(self, sender_id: str, sender_addr: Addr, msg: codec.PingReq,
                    now: float) -> list[Outgoing] | None:
        """Probe ``msg.target`` for the sender; None if the request makes no sense."""
        if msg.target in (self._t.self_id, sender_id):
            return None
        if len(self._relays) >= MAX_RELAYS:
            self.counters["relays_refused"] += 1
            return []
        seq = self.next_seq()
        # memberlist handleIndirectPing: the unscaled probe timeout.
        timeout = self.config.probe_timeout
        self._relays[seq] = Relay(sender_id, sender_addr, msg.seq, msg.target,
                                  now + 0.8 * timeout, now + timeout, msg.nack)
        return [self._send(msg.target_addr, MsgType.PING, {"q": seq, "t": msg.target},
                           msg.target)]
