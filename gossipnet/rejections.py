"""One record of everything a node refused, tagged by the stage that refused it and why (sans-IO).

A datagram or a snapshot can be turned away at six places, cheapest first:

- ``udp``: the socket layer dropped the datagram (oversize, queue full) before anyone read it;
- ``wire``: the envelope failed a check (``wire.receiver.Reason``: swarm, signature, replay ...);
- ``membership``: a verified SWIM message membership refused (``membership.types.Reject``: malformed,
  a ping for a previous owner of our address, an ack nobody asked for, we are leaving);
- ``gate``: a manifest or a pulled blob does not fit our model (``exchange``: shapes, size, dtype);
- ``pull``: fetching the blob failed (unreachable, timeout, size or hash differs from the manifest);
- ``learner``: the learner refused a verified snapshot (``AbsorbResult.reason``);
- ``volunteer``: a browser volunteer's lease request or update (``gossipnet.volunteers``).

Every stage counts into the same ``Rejections``, so a reason that two stages share (``too_large``
at the wire and at the gate) is two counters, never one overwriting the other. The status page,
``/api/status`` and ``/metrics`` all read this one record.

Adding a stage or a known reason is one line in ``KNOWN_REASONS``; known reasons start at 0, so
Prometheus ``rate()`` works from the first scrape. Reasons nobody declared are still counted
(under a sanitised name) the first time they happen.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gossipnet.membership.types import Reject as MembershipReject
from gossipnet.wire.receiver import Reason as WireReason

# stage -> the reasons it reports from the start. A new stage is a new line here.
KNOWN_REASONS: dict[str, tuple[str, ...]] = {
    # net.udp.DropReason (a test syncs)
    "udp": ("oversize", "empty", "queue_full", "priority_queue_full", "fault", "kernel"),
    "wire": tuple(r.value for r in WireReason),
    "membership": tuple(r.value for r in MembershipReject),
    "gate": ("malformed", "not_a_member", "too_large", "bad_shape", "bad_dtype", "not_finite",
             "decompression_bomb"),
    "pull": ("too_large", "size_mismatch", "hash_mismatch", "timeout", "unreachable", "gone", "http_error",
             "redirect"),
    "learner": (),  # each learner declares its own (LearnerWire.absorb_reasons)
    "volunteer": (),  # browser volunteers' requests: the node sets gossipnet.volunteers' REASONS
}

MAX_REASONS_PER_STAGE = 64  # a peer cannot grow the record without bound through odd reasons
_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,47}")


@dataclass(frozen=True)
class Rejection:
    """One thing refused: where, why (a short counter name), and a detail for the log."""

    stage: str
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.stage}:{self.reason}" + (f" ({self.detail})" if self.detail else "")


class Rejections:
    """Counts by stage and reason. Not thread-safe: count from the event loop only."""

    def __init__(self, extra: Mapping[str, Iterable[str]] | None = None) -> None:
        self._counts: dict[str, dict[str, int]] = {s: dict.fromkeys(r, 0) for s, r in KNOWN_REASONS.items()}
        for stage, reasons in (extra or {}).items():
            for reason in reasons:
                self._slot(stage, reason)

    def add(self, rejection: Rejection, n: int = 1) -> None:
        self.count(rejection.stage, rejection.reason, n)

    def count(self, stage: str, reason: str, n: int = 1) -> None:
        group, name = self._slot(stage, reason)
        group[name] += n

    def set_totals(self, stage: str, totals: Mapping[str, int]) -> None:
        """Take over counters another layer keeps (the UDP socket's drops): set, not add."""
        for reason, total in totals.items():
            group, name = self._slot(stage, reason)
            group[name] = int(total)

    def get(self, stage: str, reason: str) -> int:
        return self._counts.get(stage, {}).get(reason, 0)

    def total(self, stage: str | None = None) -> int:
        groups = [self._counts[stage]] if stage is not None else self._counts.values()
        return sum(sum(g.values()) for g in groups)

    def as_dict(self) -> dict[str, dict[str, int]]:
        """{stage: {reason: count}}, every known reason included (0 until it happens)."""
        return {stage: dict(group) for stage, group in self._counts.items()}

    def _slot(self, stage: str, reason: str) -> tuple[dict[str, int], str]:
        if stage not in self._counts:
            raise KeyError(f"unknown rejection stage {stage!r}; add it to KNOWN_REASONS")
        group = self._counts[stage]
        name = reason if isinstance(reason, str) and _NAME.fullmatch(reason) else "other"
        if name not in group and len(group) >= MAX_REASONS_PER_STAGE:
            name = "other"
        group.setdefault(name, 0)
        return group, name
