"""SWIM failure detection with Lifeguard's refinements, as a sans-IO state machine.

``Membership`` never touches a socket or a clock: the node calls ``tick(now)``
and ``handle(...)`` and performs the ``Outgoing`` sends they return (h11's
style; memberlist's probe loop in ``state.go`` with the goroutines unrolled
into deadlines).  ``next_deadline()`` says when ``tick`` next has work.
"""

from __future__ import annotations

import random
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from gossipnet.errors import UserError
from gossipnet.membership import codec
from gossipnet.membership.codec import BadBody
from gossipnet.membership.config import MembershipConfig, push_pull_scale, retransmit_limit
from gossipnet.membership.probe import FailureDetector
from gossipnet.membership.table import Table
from gossipnet.membership.types import (Addr, MemberEvent, MemberView, Outgoing, Reject,
                                        State)
from gossipnet.wire.types import MsgType

MAX_SEEDS = 256  # static --peer seeds: the user's word, kept until they answer
# Discovered seeds (mDNS records, unknown senders) are hints anyone on the LAN can forge:
# few at a time, a few join attempts each, then set aside for a while (docs/SECURITY.md).
MAX_DISCOVERED_SEEDS = 32
DISCOVERED_SEED_ATTEMPTS = 3
SEED_QUARANTINE = 3600.0  # seconds before an expired discovered address is tried again (it may join us itself)
MAX_QUARANTINED = 1024


@dataclass
class _Seed:
    due: float
    backoff: float
    static: bool  # --peer: never expires
    preferred: bool = True  # on our interface's subnet
    attempts: int = 0


class Membership:
    """Who is in the swarm, and the datagrams that keep that knowledge fresh."""

    def __init__(self, self_id: str, self_addr: Addr, meta: dict[str, Any] | None = None,
                 config: MembershipConfig | None = None, rng: random.Random | None = None,
                 incarnation: int = 0) -> None:
        try:
            codec.node_id(self_id)
            self_addr = codec.addr(self_addr)
            meta = codec.meta(meta or {})
            codec.incarnation(incarnation)
        except BadBody as exc:
            raise UserError(f"cannot start membership with id {self_id!r}, address {self_addr!r}: "
                            f"{exc}; check the node's --host/--port and key file") from None
        self.config = config or MembershipConfig.lan()
        self.rng = rng or random.Random()
        self.counters: Counter[str] = Counter()
        self._t = Table(self_id, self_addr, meta, self.config, incarnation, self.counters)
        self._fd = FailureDetector(self._t, self.config, self.rng, self.counters, self._gossip)
        self._seeds: dict[Addr, _Seed] = {}
        self._quarantine: OrderedDict[Addr, float] = OrderedDict()  # expired addr -> retry after
        self._sync_replied: dict[str, float] = {}
        self._started = False
        self._next_sync = self._next_reconnect = self._next_reap = 0.0
        self._next_gossip = 0.0

    # ------------------------------------------------------------ reading

    @property
    def self_id(self) -> str:
        return self._t.self_id

    @property
    def self_addr(self) -> Addr:
        return self._t.self_addr

    @property
    def incarnation(self) -> int:
        """Ours; it grows on refutation, so persist it and start above it next time."""
        return self._t.incarnation

    @property
    def awareness(self) -> int:
        return self._t.awareness.score

    def members(self) -> list[MemberView]:
        """Ourselves first, then every member and tombstone."""
        return [self._t.self_view()] + [m.view() for m in self._t.members.values()]

    def member(self, node_id: str) -> MemberView | None:
        if node_id == self.self_id:
            return self._t.self_view()
        m = self._t.members.get(node_id)
        return m.view() if m else None

    def alive_peers(self) -> list[MemberView]:
        return [m.view() for m in self._t.members.values() if m.state == State.ALIVE]

    def drain_events(self) -> list[MemberEvent]:
        events = list(self._t.events)
        self._t.events.clear()
        return events

    def next_deadline(self) -> float | None:
        """The earliest time ``tick`` has something to do (None before the first tick)."""
        if not self._started or self._t.leaving:
            return None
        times = [self._next_sync, self._next_reconnect, self._next_reap] + self._fd.deadlines()
        if len(self._t.broadcasts):
            times.append(self._next_gossip)
        times += [m.suspicion.deadline for m in self._t.suspects.values()]
        times += [s.due for s in self._seeds.values()]
        return min(times)

    # ------------------------------------------------------------ inputs

    def add_seed(self, addr: Addr, now: float | None = None) -> None:
        """A static --peer: join it by full sync until it answers."""
        try:
            addr = codec.addr(addr)
        except BadBody as exc:
            raise UserError(f"bad peer address {addr!r}: {exc}; give peers as host:port") from None
        self._add_seed(addr, now, static=True)

    def _add_seed(self, addr: Addr, now: float | None, static: bool = False,
                  preferred: bool = True) -> None:
        if addr == self._t.self_addr:
            return
        seed = self._seeds.get(addr)
        if seed is not None:
            seed.static = seed.static or static
            return
        if static:
            if sum(s.static for s in self._seeds.values()) >= MAX_SEEDS:
                self.counters["seeds_refused"] += 1
                return
        elif not self._room_for_discovered(addr, preferred, now):
            return
        due = now if now is not None else 0.0
        if self._seeds or self._t.live_peers:
            # Only the first join is immediate.  The rest are spread over a retry
            # interval and dropped if the node shows up alive meanwhile: when mDNS
            # reveals n nodes at once, that is a few syncs instead of n^2.
            due += self.rng.uniform(0, self.config.join_retry_interval)
        self._seeds[addr] = _Seed(due, self.config.join_retry_interval, static, preferred)

    def _room_for_discovered(self, addr: Addr, preferred: bool, now: float | None) -> bool:
        """Whether a discovered seed may join the list, evicting a worse one if it is full."""
        until = self._quarantine.get(addr)
        if until is not None:
            if now is not None and now < until:
                self.counters["seeds_quarantined"] += 1
                return False
            del self._quarantine[addr]
        found = [(a, s) for a, s in self._seeds.items() if not s.static]
        if len(found) < MAX_DISCOVERED_SEEDS:
            return True
        # Full: evict the off-subnet seed, else the one that has had the most tries; a seed
        # that has not been tried yet keeps its place, so a flood cannot starve a real peer.
        victims = [(s.preferred, -s.attempts, a) for a, s in found if s.attempts or (preferred and not s.preferred)]
        if not victims:
            self.counters["seeds_refused"] += 1
            return False
        best = min(victims)
        if best[0] and not preferred:
            self.counters["seeds_refused"] += 1
            return False
        victim = self._seeds.pop(best[2])
        if victim.attempts and now is not None:
            self._set_aside(best[2], now)
        self.counters["seeds_evicted"] += 1
        return True

    def _set_aside(self, addr: Addr, now: float) -> None:
        self._quarantine[addr] = now + SEED_QUARANTINE
        self._quarantine.move_to_end(addr)
        if len(self._quarantine) > MAX_QUARANTINED:
            self._quarantine.popitem(last=False)

    def discovered(self, node_id: str | None, addr: Addr, now: float, preferred: bool = True) -> None:
        """mDNS (or the CLI) saw a node; join it unless we already know it alive there.

        ``preferred``: the address is on our interface's subnet (a forged record's often is not).
        """
        try:
            addr = codec.addr(addr)
            if node_id is not None:
                codec.node_id(node_id)
        except BadBody:
            self._reject(Reject.MALFORMED)  # mDNS records are hints from anyone on the LAN
            return
        if node_id == self.self_id:
            return
        m = self._t.members.get(node_id) if node_id else None
        if m is not None and m.state == State.ALIVE and m.addr == addr:
            return
        self._add_seed(addr, now, preferred=preferred)

    def leave(self, now: float) -> list[Outgoing]:
        """Graceful goodbye: tell some peers directly; they gossip it on."""
        if self._t.leaving:
            return []
        self._t.leaving = True
        peers = self.alive_peers()
        peers = self.rng.sample(peers, min(len(peers), self.config.leave_fanout))
        body = {"i": self._t.incarnation}
        return [self._out(p.addr, MsgType.LEAVE, dict(body), p.node_id) for p in peers]

    def tick(self, now: float) -> list[Outgoing]:
        """Advance timers to ``now``; return what to send."""
        if self._t.leaving:
            return []
        out: list[Outgoing] = []
        if not self._started:
            self._started = True
            self._next_sync = now + self.config.push_pull_interval
            self._next_reconnect = now + self.config.reconnect_interval
            self._next_reap = now + self.config.push_pull_interval
            self._next_gossip = now
        for addr, seed in list(self._seeds.items()):
            known = self._t.members.get(self._t.by_addr.get(addr, ""))
            if known is not None and known.state == State.ALIVE:
                del self._seeds[addr]  # joined through someone else
            elif now >= seed.due:
                if not seed.static and seed.attempts >= DISCOVERED_SEED_ATTEMPTS:
                    del self._seeds[addr]  # never answered: a stale or forged hint
                    self._set_aside(addr, now)
                    self.counters["seeds_expired"] += 1
                    continue
                self.counters["joins_sent"] += 1
                out += self._sync(addr, MsgType.SYNC)
                seed.attempts += 1
                seed.due = now + seed.backoff
                seed.backoff = min(2 * seed.backoff, self.config.push_pull_interval)
        out += self._fd.advance(now)
        self._t.expire_suspicions(now)
        if now >= self._next_gossip:
            self._next_gossip = now + self.config.rumour_interval
            out += self._gossip_round(now)
        if now >= self._next_sync:
            self._next_sync = now + push_pull_scale(self.config.push_pull_interval,
                                                    self._t.num_nodes())
            peers = self.alive_peers()
            if peers:
                self.counters["syncs_started"] += 1
                peer = self.rng.choice(peers)
                out += self._sync(peer.addr, MsgType.SYNC, peer.node_id)
        if now >= self._next_reconnect:
            self._next_reconnect = now + self.config.reconnect_interval
            out += self._reconnect()
        if now >= self._next_reap:
            self._next_reap = now + self.config.push_pull_interval
            self._reap(now)
        return out

    def handle(self, sender_id: str, sender_addr: Addr, msg_type: MsgType, body: Any,
               now: float) -> list[Outgoing]:
        """One authenticated datagram body; returns the replies.  Never raises on bad input."""
        if self._t.leaving:
            return self._reject(Reject.LEAVING)
        try:
            msg_type = MsgType(msg_type)
        except ValueError:
            return self._reject(Reject.MALFORMED)
        try:
            msg = codec.parse(msg_type, body)
            codec.node_id(sender_id)
            sender_addr = codec.addr(sender_addr)
        except BadBody:
            return self._reject(Reject.MALFORMED)
        if sender_id == self.self_id:
            return self._reject(Reject.MALFORMED)
        if isinstance(msg, codec.Ping) and msg.target != self.self_id:
            return self._reject(Reject.WRONG_TARGET)  # memberlist: a ping for a previous owner
        self.counters[f"received.{msg_type.name.lower()}"] += 1
        self._seeds.pop(sender_addr, None)
        if isinstance(msg, codec.Sync):
            for u in msg.entries:
                self._t.apply(u, sender_id, now, from_sync=True)
        elif not isinstance(msg, (codec.Nack, codec.Leave)):
            for u in msg.updates:
                self._t.apply(u, sender_id, now, from_sync=False)
        out: list[Outgoing] = []
        if sender_id not in self._t.members and not isinstance(msg, codec.Sync):
            # It knows us, we do not know it (we reaped it, or it joined via a peer):
            # a full sync tells us its address and meta.
            self._add_seed(sender_addr, now)
        if isinstance(msg, codec.Ping):
            out.append(self._gossip(sender_addr, MsgType.ACK, {"q": msg.seq}, sender_id))
        elif isinstance(msg, codec.Ack):
            replies = self._fd.on_ack(sender_id, msg.seq)
            if replies is not None:
                out += replies
            elif msg.seq == self._fd.last_seq:
                self.counters["late_acks"] += 1  # another path answered first, or too late
            else:
                self._reject(Reject.UNEXPECTED)
        elif isinstance(msg, codec.PingReq):
            replies = self._fd.on_ping_req(sender_id, sender_addr, msg, now)
            if replies is None:
                self._reject(Reject.MALFORMED)
            else:
                out += replies
        elif isinstance(msg, codec.Nack):
            if self._fd.on_nack(sender_id, msg.seq):
                pass
            elif msg.seq == self._fd.last_seq:
                self.counters["late_nacks"] += 1
            else:
                self._reject(Reject.UNEXPECTED)
        elif isinstance(msg, codec.Sync) and msg.reply:
            last = self._sync_replied.get(sender_id)
            if last is None or now - last >= self.config.probe_interval:
                self._sync_replied[sender_id] = now
                out += self._sync(sender_addr, MsgType.SYNC_REPLY, sender_id)
        elif isinstance(msg, codec.Leave):
            self._t.dead(sender_id, msg.incarnation, sender_id, True, now)
        return out

    # ------------------------------------------------------------ spreading

    def _gossip_round(self, now: float) -> list[Outgoing]:
        """memberlist's gossip(): pending rumours to a few random peers, the recently dead too.

        One-way GOSSIP datagrams: nothing answers them (a lost one is covered by the
        rumour's other retransmissions), which halves this traffic against PING + ACK.
        """
        if not len(self._t.broadcasts):
            return []
        recent = now - self.config.gossip_to_the_dead_time
        peers = [m for m in self._t.members.values()
                 if m.state in (State.ALIVE, State.SUSPECT)
                 or (m.state == State.DEAD and m.since >= recent)]
        out = []
        for m in self.rng.sample(peers, min(len(peers), self.config.gossip_nodes)):
            out.append(self._gossip(m.addr, MsgType.GOSSIP, {}, m.node_id))
        self.counters["gossip_rounds"] += 1
        return out

    # ------------------------------------------------------------ sync

    def _sync(self, addr: Addr, msg_type: MsgType, to: str | None = None) -> list[Outgoing]:
        """Our full state in as many datagrams as it takes; only the first asks for a reply."""
        chunks = codec.chunk_rows(self._t.entries(), self.config.max_body_bytes,
                                  reply_flag=msg_type == MsgType.SYNC)
        return [self._out(addr, msg_type, body, to) for body in chunks]

    def _reconnect(self) -> list[Outgoing]:
        """Serf's reconnect: sync with a random dead member, more often the more are dead."""
        dead = [m for m in self._t.members.values() if m.state == State.DEAD]
        if not dead or self.rng.random() > len(dead) / self._t.num_nodes():
            return []
        self.counters["reconnects"] += 1
        peer = self.rng.choice(dead)
        return self._sync(peer.addr, MsgType.SYNC, peer.node_id)

    def _reap(self, now: float) -> None:
        for m in list(self._t.members.values()):
            if m.state in (State.DEAD, State.LEFT) and now - m.since >= self.config.tombstone_time:
                self._t.remove(m.node_id)
                self._sync_replied.pop(m.node_id, None)
                self.counters["reaped"] += 1

    # ------------------------------------------------------------ sending

    def _out(self, addr: Addr, msg_type: MsgType, body: dict[str, Any],
             to: str | None = None) -> Outgoing:
        self.counters[f"sent.{msg_type.name.lower()}"] += 1
        return Outgoing(addr, msg_type, body, to)

    def _gossip(self, addr: Addr, msg_type: MsgType, body: dict[str, Any],
                to: str | None) -> Outgoing:
        """``body`` plus as many piggy-backed updates as fit, news about ``to`` first."""
        first = self._t.view_update(to) if to else None
        limit = retransmit_limit(self.config, self._t.num_nodes())
        body["u"] = []
        body["u"] = self._t.broadcasts.take(body, self.config.max_body_bytes, limit, first)
        self.counters["updates_sent"] += len(body["u"])
        return self._out(addr, msg_type, body, to)

    def _reject(self, reason: Reject) -> list[Outgoing]:
        self.counters[f"rejected.{reason.value}"] += 1
        return []
