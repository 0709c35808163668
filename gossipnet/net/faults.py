"""Seeded network misbehaviour: drop, delay, duplication and reordering per datagram.

The fault layer stands in for ``tc netem``, which this kernel lacks. ``FaultPlan``
only decides each datagram's fate (no I/O, no clock), so tests drive it directly;
``gossipnet.net.udp`` applies it on send, on receive, or both.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gossipnet.errors import UserError


@dataclass(frozen=True)
class FaultConfig:
    """Seeded network misbehaviour, applied per datagram in this order.

    ``drop``: probability the datagram is lost.
    ``duplicate``: probability a second copy is delivered too (each copy gets its own delay).
    ``delay_min``/``delay_max``: uniform one-way delay in seconds.
    ``reorder``: probability a copy is held back ``reorder_delay`` seconds more, so
    later datagrams overtake it (netem's ``reorder`` also works by holding packets back).
    """

    drop: float = 0.0
    duplicate: float = 0.0
    delay_min: float = 0.0
    delay_max: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.02
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UserError(f"fault {name} probability is {value}; give a value between 0 and 1")
        for name in ("delay_min", "delay_max", "reorder_delay"):
            if getattr(self, name) < 0:
                raise UserError(f"fault {name} is {getattr(self, name)} s; delays cannot be negative")
        if self.delay_min > self.delay_max:
            raise UserError(
                f"fault delay_min ({self.delay_min} s) exceeds delay_max ({self.delay_max} s); swap them"
            )

    @classmethod
    def lossy(cls, drop: float, seed: int | None = None) -> FaultConfig:
        """Loss only, like ``nft ... numgen random mod 100 lt N drop`` but in-process."""
        return cls(drop=drop, seed=seed)

    @classmethod
    def flaky_lan(cls, seed: int | None = None) -> FaultConfig:
        """A bad but plausible Wi-Fi LAN: 5% loss, 1-20 ms delay, 1% duplicates, 5% reordered."""
        return cls(drop=0.05, duplicate=0.01, delay_min=0.001, delay_max=0.02, reorder=0.05, seed=seed)


class FaultPlan:
    """Decides the fate of each datagram under a ``FaultConfig``; no I/O, so tests can drive it.

    ``fate()`` returns one delay in seconds per copy to deliver: ``[]`` means
    dropped, two entries mean duplicated.
    """

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)

    def fate(self) -> list[float]:
        c = self.config
        rng = self._rng
        if c.drop and rng.random() < c.drop:
            return []
        copies = 2 if c.duplicate and rng.random() < c.duplicate else 1
        delays = []
        for _ in range(copies):
            delay = rng.uniform(c.delay_min, c.delay_max) if c.delay_max else 0.0
            if c.reorder and rng.random() < c.reorder:
                delay += c.reorder_delay
            delays.append(delay)
        return delays
