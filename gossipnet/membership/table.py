"""The membership table and SWIM's rules for applying rumours to it.

Ports memberlist's ``aliveNode``, ``suspectNode``, ``deadNode`` and
``mergeState`` (state.go): an update wins only with a higher incarnation, or
with the same incarnation when it moves a node towards death
(alive -> suspect -> dead).  A node hearing itself suspected or declared dead
refutes by raising its incarnation and broadcasting that it is alive.

Members may lie (issue 12), so with a ``signer`` (every daemon) two rules guard the
table: an alive record counts only if its own node signed it (records.py), so only a
node raises its incarnation or moves its address; and a suspect or dead rumour may not
name an incarnation far above the highest one we know (a "dead at 2**53" rumour
would otherwise make the refutation 2**53 + 1 unencodable, a permanent kill). Nodes we
hear of from third parties wait in ``intros`` until they speak to us themselves. Without
a signer (in-process simulations of honest nodes) records are unsigned and trusted.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from gossipnet.membership import records
from gossipnet.membership.broadcasts import Broadcasts
from gossipnet.membership.codec import MAX_INCARNATION, Update, encode_entry, encode_update
from gossipnet.membership.config import MembershipConfig, suspicion_timeout
from gossipnet.membership.intros import Intros
from gossipnet.membership.timers import Awareness, Suspicion
from gossipnet.membership.types import Addr, EventKind, Member, MemberEvent, MemberView, State

LIVE = (State.ALIVE, State.SUSPECT)
MAX_EVENTS = 4096
MAX_MEMBERS = 4096  # a LAN swarm is tens to hundreds; a bound keeps a liar from filling memory
# How far above a member's known incarnation an accusation may go: refutations step by 1,
# so a lie can add at most this per round trip, and 2**53 stays out of reach.
ACCUSATION_LEAD = 8


class Table:
    """Our own identity plus what we believe about everyone else."""

    def __init__(self, self_id: str, self_addr: Addr, meta: dict[str, Any],
                 config: MembershipConfig, incarnation: int, counters: Counter[str],
                 signer: records.RecordSigner | None = None) -> None:
        self.signer = signer
        self._signed: Update | None = None  # our last signed record (re-signed when it changes)
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
        self._origin = ""  # the sender of the rumour being applied (who introduced a node)
        self.live_peers = 0  # alive or suspect, not counting ourselves
        # Bounded in case the node never drains them; the oldest go first.
        self.events: deque[MemberEvent] = deque(maxlen=MAX_EVENTS)
        self.broadcasts = Broadcasts()
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.intros = Intros(counters)
        self.broadcasts.add(self.self_update())

    # ------------------------------------------------------------ reading

    def num_nodes(self) -> int:
        """memberlist's estNumNodes: live members including ourselves."""
        return self.live_peers + 1

    def self_update(self) -> Update:
        u = Update(State.ALIVE, self.self_id, self.incarnation, self.self_addr, self.meta)
        if self.signer is None:
            return u
        s = self._signed
        if s is None or (s.incarnation, s.addr, s.meta) != (u.incarnation, u.addr, u.meta):
            self._signed = s = self.signer.sign(u)
        return s

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
        me = self.self_update()
        rows = [encode_entry(self.self_id, self.incarnation, State.ALIVE, self.self_addr,
                             self.meta, (me.pubkey, me.sig) if me.sig else None)]
        rows += [encode_entry(m.node_id, m.incarnation, m.state, m.addr, m.meta, m.record)
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
        if max(self.incarnation, incarnation) >= MAX_INCARNATION:
            self.counters["refutations_impossible"] += 1  # only unsigned swarms get here
            self.nudge()
            return
        self.incarnation = max(self.incarnation, incarnation) + 1
        self.broadcasts.add(self.self_update())
        self.awareness.apply(1)  # Lifeguard: being suspected hints at our own slowness
        self.counters["refutations"] += 1

    def _signed_ok(self, u: Update, authentic: bool = False) -> bool:
        """In a signed swarm, is ``u`` its own node's record?  (Counted when not.)

        First-hand (``authentic``: the node's own envelope) needs no record to be believed
        by us; only what we relay must carry one for others to believe it.
        """
        if self.signer is None or authentic or records.verify(u):
            return True
        self.counters["rejected.unsigned_record"] += 1
        return False

    def alive(self, u: Update, authentic: bool, now: float) -> None:
        """An alive rumour; ``authentic`` when the node itself signed the message."""
        assert u.addr is not None and u.meta is not None
        if u.node_id == self.self_id:
            self._alive_about_self(u, now)
            return
        m = self.members.get(u.node_id)
        if m is None:
            if not authentic:
                # A row only once it speaks to us; its news still travels on (within the
                # quota, which is checked before the costly signature).
                if self.intros.room(u, self._origin) and self._signed_ok(u) \
                        and self.intros.add(u, self._origin, now):
                    self.broadcasts.add(u)
                return
            if self._signed_ok(u, authentic):
                self.admit(u, now)
            return
        changed = u.addr != m.addr or u.meta != m.meta
        reclaim = (authentic and m.state in (State.DEAD, State.LEFT)
                   and now - m.since >= self.config.dead_node_reclaim_time)
        if not reclaim:
            if u.incarnation < m.incarnation:
                return
            if u.incarnation == m.incarnation and not (
                    m.state == State.ALIVE and authentic and changed and self.signer is None):
                return
        if not self._signed_ok(u, authentic):
            return
        old = m.state
        m.incarnation = u.incarnation
        m.record = (u.pubkey, u.sig) if u.sig is not None else None
        if changed:
            self._set_addr(m, u.addr)
            m.meta = dict(u.meta)
        if old != State.ALIVE:
            self._set_state(m, State.ALIVE, now)
            self._event(EventKind.RECOVERED, m, now)
        elif changed:
            self._event(EventKind.UPDATED, m, now)
        self.broadcasts.add(u)

    def admit(self, u: Update, now: float) -> bool:
        """A new row for a node that spoke to us (``u``: its alive record, checked)."""
        if len(self.members) >= MAX_MEMBERS:
            self.counters["table_full"] += 1
            return False
        m = Member(u.node_id, u.addr, u.incarnation, dict(u.meta), State.DEAD, now)
        m.record = (u.pubkey, u.sig) if u.sig is not None else None
        self.members[u.node_id] = m
        self._set_addr(m, u.addr)
        self._set_state(m, State.ALIVE, now)
        self._event(EventKind.JOINED, m, now)
        self.broadcasts.add(u)
        return True

    def _alive_about_self(self, u: Update, now: float) -> None:
        same = (u.incarnation == self.incarnation and u.addr == self.self_addr
                and u.meta == self.meta)
        if same or self.leaving:
            return
        if self.signer is None:
            if u.incarnation >= self.incarnation:
                self.refute(u.incarnation, now)
            return
        if u.incarnation > self.incarnation and records.verify(u):
            self.refute(u.incarnation, now)  # we signed it in a former life: out-bid ourselves
        else:
            self.counters["rejected.misquoted_self"] += 1  # a forgery or a stale copy
            self.nudge()

    def _rumour_about_self(self, incarnation: int, now: float) -> None:
        """Someone says we are suspect or dead: refute a current rumour, re-announce on a stale one."""
        if self.leaving:
            return
        if incarnation > self.incarnation + ACCUSATION_LEAD:
            # Beyond what peers accept, and we never had it: a lie. Repeat our record.
            self.counters["rejected.future_incarnation"] += 1
            self.nudge()
        elif incarnation >= self.incarnation:
            # Peers accept accusations a little above our incarnation (a lost refutation of
            # ours, or a lie within the lead): out-bid it, or they would declare us dead.
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
        if not self._known_incarnation(m, incarnation):
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

    def dead(self, node_id: str, incarnation: int, origin: str, left: bool, now: float,
             first_hand: bool = False) -> None:
        """``first_hand``: the node's own LEAVE (its envelope is signed), so any incarnation."""
        if node_id == self.self_id:
            self._rumour_about_self(incarnation, now)
            return
        m = self.members.get(node_id)
        if m is None or incarnation < m.incarnation or m.state in (State.DEAD, State.LEFT):
            return
        if not first_hand and not self._known_incarnation(m, incarnation):
            return
        m.incarnation = incarnation
        state = State.LEFT if left else State.DEAD
        self._set_state(m, state, now)
        self._event(EventKind.LEFT if left else EventKind.DEAD, m, now)
        self.broadcasts.add(Update(state, node_id, incarnation, origin=origin))

    def _known_incarnation(self, m: Member, incarnation: int) -> bool:
        """Accusations may not name an incarnation far above the node's known one (counted).

        A little above is normal: the accused refuted (+1 each time) and its alive record
        has not reached us yet, while the accusation has; dropping those would slow the very
        rumour the accused needs to hear to refute (the lossy simulations showed it).
        """
        if incarnation <= m.incarnation + ACCUSATION_LEAD:
            return True
        self.counters["rejected.future_incarnation"] += 1
        return False

    def apply(self, u: Update, sender_id: str, now: float, from_sync: bool) -> None:
        """One rumour (piggy-back) or one SYNC row, from an authenticated sender."""
        self.counters["updates_received"] += 1
        self._origin = sender_id
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
