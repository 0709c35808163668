"""Lifeguard's two timers: suspicion that shrinks with confirmations, and local health.

Ports of memberlist's ``suspicion.go`` and ``awareness.go`` with time as an input.
"""

from __future__ import annotations

import math


class Suspicion:
    """Deadline for declaring a suspect dead.

    Lifeguard: start at ``max_timeout``; each independent confirmation (another
    node suspecting the same incarnation) pulls the deadline towards
    ``min_timeout`` on a log scale, reaching it after ``k`` confirmations.
    With ``k < 1`` there is nobody to confirm and the minimum applies at once.
    """

    def __init__(self, origin: str, k: int, min_timeout: float, max_timeout: float,
                 start: float) -> None:
        self.k = k
        self.min_timeout = min_timeout
        self.max_timeout = max_timeout
        self.start = start
        self.confirmations: set[str] = {origin}  # the origin never counts as a confirmation
        self.deadline = start + (max_timeout if k >= 1 else min_timeout)

    @property
    def confirmed(self) -> int:
        return len(self.confirmations) - 1

    def confirm(self, node_id: str) -> bool:
        """Record ``node_id``'s suspicion; True if it was new (and so worth re-gossiping)."""
        if self.confirmed >= self.k or node_id in self.confirmations:
            return False
        self.confirmations.add(node_id)
        self.deadline = self.start + remaining_timeout(self.confirmed, self.k,
                                                       self.min_timeout, self.max_timeout)
        return True


def remaining_timeout(n: int, k: int, min_timeout: float, max_timeout: float) -> float:
    """memberlist's remainingSuspicionTime, measured from the start of suspicion."""
    if k < 1:
        return min_timeout
    frac = math.log(n + 1.0) / math.log(k + 1.0)
    raw = max_timeout - frac * (max_timeout - min_timeout)
    return max(min_timeout, math.floor(raw * 1000.0) / 1000.0)


class Awareness:
    """Lifeguard's local health score: a slow or overloaded node waits longer.

    Failed probes without the expected NACKs and refutations of our own
    suspicion raise the score; successful probes lower it.  Timeouts are scaled
    by ``score + 1`` (memberlist ``awareness.ScaleTimeout``).
    """

    def __init__(self, max_multiplier: int) -> None:
        self.max = max_multiplier
        self.score = 0

    def apply(self, delta: int) -> None:
        self.score = min(self.max - 1, max(0, self.score + delta))

    def scale(self, timeout: float) -> float:
        return timeout * (self.score + 1)
