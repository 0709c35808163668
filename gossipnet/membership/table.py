"""The membership table and SWIM's rules for applying rumours to it.

Ports memberlist's ``aliveNode``, ``suspectNode``, ``deadNode`` and
``mergeState`` (state.go): an update wins only with a higher incarnation, or
with the same incarnation when it moves a node towards death
(alive -> suspect -> dead).  A node hearing itself suspected or declared dead
refutes by raising its incarnation and broadcasting that it is alive.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from gossipnet.membership.broadcasts import Broadcasts
from gossipnet.membership.codec import Update, encode_entry, encode_update
from gossipnet.membership.config import MembershipConfig, suspicion_timeout
from gossipnet.membership.timers import Awareness, Suspicion
from gossipnet.membership.types import Addr, EventKind, Member, MemberEvent, MemberView, State

LIVE = (State.ALIVE, State.SUSPECT)
MAX_EVENTS = 4096
MAX_MEMBERS = 4096  # a LAN swarm is tens to hundreds; a bound keeps a liar from filling memory


class Table:
    """Our own identity plus what we believe about everyone else."""

    def __init__(self, self_id: str, self_addr: Addr, meta: dict[str, Any],
                 config: MembershipConfig, incarnation: int, counters: Counter[str]) -> None:
        self.self_id = self_id
        self.self_addr = self_addr
        self.meta = dict(meta)
        self.incarnation = incarnation
        self.config = config
        self.counters = counters
        self.leaving = False
        self.members: dict[str, Member] = {}
        self.suspects: dict[str, Member] = {}
        self.by_addr: dict[Addr, str] = {}
        self.live_peers = 0  # alive or suspect, not counting ourselves
        # Bounded in case the node never drains them; the oldest go first.
        self.events: deque[MemberEvent] = deque(maxlen=MAX_EVENTS)
        self.broadcasts = Broadcasts()
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.broadcasts.add(self.self_update())

    # ------------------------------------------------------------ reading

    def num_nodes(self) -> int:
        """memberlist's estNumNodes: live members including ourselves."""
        return self.live_peers + 1

    def self_update(self) -> Update:
        return Update(State.ALIVE, self.self_id, self.incarnation, self.self_addr, self.meta)

    def self_view(self) -> MemberView:
        return MemberView(self.self_id, self.self_addr, State.LEFT if self.leaving else State.ALIVE,
                          self.incarnation, dict(self.meta), 0.0)

    def view_update(self, node_id: str) -> dict[str, Any] | None:
        """Our belief about a suspect or dead node, to tell that node first (buddy system)."""
        m = self.members.get(node_id)
        if m is None or m.state in (State.ALIVE, State.LEFT):
            return None
        origin = self.self_id
        return encode_update(Update(m.state, m.node_id, m.incarnation, origin=origin))

    def entries(self) -> list[dict[str, Any]]:
        """Full state for a SYNC: ourselves first, then every member and tombstone."""
        rows = [encode_entry(self.self_id, self.incarnation, State.ALIVE, self.self_addr,
                             self.meta)]
        rows += [encode_entry(m.node_id, m.incarnation, m.state, m.addr, m.meta)
                 for m in self.members.values()]
        return rows

    # ------------------------------------------------------------ changing

    def _event(self, kind: EventKind, m: Member, now: float) -> None:
        self.events.append(MemberEvent(kind, m.node_id, m.incarnation, now))
        self.counters[f"events.{kind.value}"] += 1

    def _set_state(self, m: Member, state: State, now: float) -> None:
        if (m.state in LIVE) != (state in LIVE):
            self.live_peers += 1 if state in LIVE else -1
        if state != State.SUSPECT:
            m.suspicion = None
            self.suspects.pop(m.node_id, None)
        else:
            self.suspects[m.node_id] = m
        m.state = state
        m.since = now

    def _set_addr(self, m: Member, addr: Addr) -> None:
        if self.by_addr.get(m.addr) == m.node_id:
            del self.by_addr[m.addr]
        m.addr = addr
        self.by_addr[addr] = m.node_id

    def remove(self, node_id: str) -> None:
        """Forget a tombstone for good."""
        m = self.members.pop(node_id)
        if m.state in LIVE:
            self.live_peers -= 1
        self.suspects.pop(node_id, None)
        if self.by_addr.get(m.addr) == node_id:
            del self.by_addr[m.addr]

    def nudge(self) -> None:
        """Someone holds an outdated rumour about us: repeat our current alive (no bump)."""
        queued = self.broadcasts.about(self.self_id)
        if queued is None or queued["i"] != self.incarnation:
            self.broadcasts.add(self.self_update())
            self.counters["nudges"] += 1

    def refute(self, incarnation: int, now: float) -> None:
        """Someone says we are not alive (or misquotes us): out-bid them."""
        self.incarnation = max(self.incarnation, incarnation) + 1
        self.broadcasts.add(self.self_update())
        self.awareness.apply(1)  # Lifeguard: being suspected hints at our own slowness
        self.counters["refutations"] += 1

    def alive(self, u: Update, authentic: bool, now: float) -> None:
        """An alive rumour; ``authentic`` when the node itself signed the message."""
        assert u.addr is not None and u.meta is not None
        if u.node_id == self.self_id:
            same = (u.incarnation == self.incarnation and u.addr == self.self_addr
                    and u.meta == self.meta)
            if u.incarnation >= self.incarnation and not same and not self.leaving:
                self.refute(u.incarnation, now)
            return
        m = self.members.get(u.node_id)
        if m is None:
            if len(self.members) >= MAX_MEMBERS:
                self.counters["table_full"] += 1
                return
            m = Member(u.node_id, u.addr, u.incarnation, dict(u.meta), State.DEAD, now)
            self.members[u.node_id] = m
            self._set_addr(m, u.addr)
            self._set_state(m, State.ALIVE, now)
            self._event(EventKind.JOINED, m, now)
            self.broadcasts.add(u)
            return
        changed = u.addr != m.addr or u.meta != m.meta
        reclaim = (authentic and m.state in (State.DEAD, State.LEFT)
                   and now - m.since >= self.config.dead_node_reclaim_time)
        if not reclaim:
            if u.incarnation < m.incarnation:
                return
            if u.incarnation == m.incarnation and not (
                    m.state == State.ALIVE and authentic and changed):
                return
        old = m.state
        m.incarnation = u.incarnation
        if changed:
            self._set_addr(m, u.addr)
            m.meta = dict(u.meta)
        if old != State.ALIVE:
            self._set_state(m, State.ALIVE, now)
            self._event(EventKind.RECOVERED, m, now)
        elif changed:
            self._event(EventKind.UPDATED, m, now)
        self.broadcasts.add(u)

    def _rumour_about_self(self, incarnation: int, now: float) -> None:
        """Someone says we are suspect or dead: refute a current rumour, re-announce on a stale one."""
        if self.leaving:
            return
        if incarnation >= self.incarnation:
            self.refute(incarnation, now)
        else:
            self.nudge()

    def suspect(self, node_id: str, incarnation: int, origin: str, now: float) -> None:
        if node_id == self.self_id:
            self._rumour_about_self(incarnation, now)
            return
        m = self.members.get(node_id)
        if m is None or incarnation < m.incarnation or m.state in (State.DEAD, State.LEFT):
            return
        if m.state == State.SUSPECT:
            # Lifeguard: an independent suspicion of the same node shortens the timer.
            if m.suspicion.confirm(origin):
                self.counters["suspicion_confirmations"] += 1
                self.broadcasts.add(Update(State.SUSPECT, node_id, m.incarnation, origin=origin))
            return
        n = self.num_nodes()
        k = self.config.suspicion_mult - 2
        if n - 2 < k:  # too few nodes to expect confirmations (memberlist suspectNode)
            k = 0
        low = suspicion_timeout(self.config, n)
        high = self.config.suspicion_max_timeout_mult * low
        m.incarnation = incarnation
        self._set_state(m, State.SUSPECT, now)
        m.suspicion = Suspicion(origin, k, low, high, now)
        self._event(EventKind.SUSPECT, m, now)
        self.broadcasts.add(Update(State.SUSPECT, node_id, incarnation, origin=origin))

    def dead(self, node_id: str, incarnation: int, origin: str, left: bool, now: float) -> None:
        if node_id == self.self_id:
            self._rumour_about_self(incarnation, now)
            return
        m = self.members.get(node_id)
        if m is None or incarnation < m.incarnation or m.state in (State.DEAD, State.LEFT):
            return
        m.incarnation = incarnation
        state = State.LEFT if left else State.DEAD
        self._set_state(m, state, now)
        self._event(EventKind.LEFT if left else EventKind.DEAD, m, now)
        self.broadcasts.add(Update(state, node_id, incarnation, origin=origin))

    def apply(self, u: Update, sender_id: str, now: float, from_sync: bool) -> None:
        """One rumour (piggy-back) or one SYNC row, from an authenticated sender."""
        self.counters["updates_received"] += 1
        about_sender = u.node_id == sender_id
        if u.state == State.ALIVE:
            self.alive(u, about_sender, now)
        elif u.state == State.LEFT:
            self.dead(u.node_id, u.incarnation, u.node_id, True, now)
        elif about_sender:
            return  # a node cannot meaningfully suspect or kill itself
        elif from_sync:
            # memberlist mergeState: remote dead/suspect becomes a local suspicion,
            # so the accused gets a chance to refute.
            self.suspect(u.node_id, u.incarnation, sender_id, now)
        elif u.state == State.SUSPECT:
            self.suspect(u.node_id, u.incarnation, u.origin or sender_id, now)
        else:
            self.dead(u.node_id, u.incarnation, u.origin or sender_id, False, now)

    def expire_suspicions(self, now: float) -> None:
        for m in [m for m in self.suspects.values() if now >= m.suspicion.deadline]:
            self.counters["suspicion_timeouts"] += 1
            self.dead(m.node_id, m.incarnation, self.self_id, False, now)
