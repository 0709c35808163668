"""Nodes a member told us about that have not spoken to us yet: bounded, per origin.

Issue 12 measured 65 SYNC datagrams of invented node ids filling the whole 4,096-row
table, so that a real node joining later was refused and probes of the invented rows
pinned the victim's health score. A third party's word is therefore not enough for a
row: an introduced node waits here, is pinged (a small PING, ``attempts`` times,
``retry`` seconds apart), and gets its row only when it answers with a message its own
key signed (any authenticated datagram from it; ``Membership.handle``). Each origin may
have at most ``per_origin`` introductions waiting, all origins together ``total``; the
oldest waiting introduction makes room for a new one when the total is reached, so a
liar's invented ids expire instead of crowding out real ones.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

from gossipnet.membership.codec import Update

PER_ORIGIN = 32
TOTAL = 512
ATTEMPTS = 3
RETRY = 2.0  # seconds between pings of one introduced node


@dataclass
class Intro:
    update: Update  # the alive record that introduced it (verified, in signed swarms)
    origin: str
    due: float
    attempts: int = 0


class Intros:
    def __init__(self, counters: Counter[str], per_origin: int = PER_ORIGIN, total: int = TOTAL,
                 attempts: int = ATTEMPTS, retry: float = RETRY) -> None:
        self.counters = counters
        self.per_origin, self.total, self.attempts, self.retry = per_origin, total, attempts, retry
        self._waiting: OrderedDict[str, Intro] = OrderedDict()
        self._by_origin: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, node_id: str) -> bool:
        return node_id in self._waiting

    def get(self, node_id: str) -> Update | None:
        intro = self._waiting.get(node_id)
        return intro.update if intro else None

    def room(self, u: Update, origin: str) -> bool:
        """Would ``add`` take ``u``?  (Checked before verifying its signature; counted.)"""
        old = self._waiting.get(u.node_id)
        if old is not None:
            return u.incarnation > old.update.incarnation
        if self._by_origin[origin] >= self.per_origin:
            self.counters["rejected.intro_quota"] += 1
            return False
        return True

    def add(self, u: Update, origin: str, now: float) -> bool:
        """Wait for ``u.node_id`` to speak; True if ``u`` is news (new, or a newer record).

        False when ``origin`` is over its quota (``room`` counts that).
        """
        old = self._waiting.get(u.node_id)
        if old is not None:
            if u.incarnation <= old.update.incarnation:
                return False  # old news: nothing to pass on
            old.update = u  # a newer record: ping where it says
            return True
        if self._by_origin[origin] >= self.per_origin:
            return False
        if len(self._waiting) >= self.total:
            self._drop(next(iter(self._waiting)))
            self.counters["intros_evicted"] += 1
        self._waiting[u.node_id] = Intro(u, origin, now)
        self._by_origin[origin] += 1
        self.counters["intros"] += 1
        return True

    def pop(self, node_id: str) -> Update | None:
        """It spoke: its record, to become a row."""
        intro = self._waiting.get(node_id)
        if intro is None:
            return None
        self._drop(node_id)
        return intro.update

    def due(self, now: float) -> list[Update]:
        """Introduced nodes to ping now; those that never answered are forgotten."""
        out = []
        for node_id, intro in list(self._waiting.items()):
            if now < intro.due:
                continue
            if intro.attempts >= self.attempts:
                self._drop(node_id)
                self.counters["intros_expired"] += 1
                continue
            intro.attempts += 1
            intro.due = now + self.retry
            out.append(intro.update)
        return out

    def next_due(self) -> float | None:
        return min((i.due for i in self._waiting.values()), default=None)

    def _drop(self, node_id: str) -> None:
        intro = self._waiting.pop(node_id)
        self._by_origin[intro.origin] -= 1
        if self._by_origin[intro.origin] <= 0:
            del self._by_origin[intro.origin]
