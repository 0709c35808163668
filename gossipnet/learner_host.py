"""Everything a node does with its learner, in the one worker thread that may touch it.

A learner is not thread-safe, so the node runs every call to it here, one at a time:
resume from and write checkpoints, train a chunk, evaluate and publish when due, open a
pulled blob and absorb it, and between chunks trade with the browser volunteers' desk
(``volunteers.hosting``). Checkpoints go through ``persistence.StateKeeper``: a failed
write is retried, a non-finite state is never saved, a refused checkpoint falls back to
the previous one, and a diverged learner is rolled back to the last good state. The event
loop only reads what this leaves behind (``step``, ``metrics``, ``visuals``, the ``shelf``
of published blobs), each replaced whole, never mutated in place, and calls only
``record`` and ``note``, which touch the history, not the learner. No asyncio here:
``node.py`` awaits ``run_in_executor`` around it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from gossipnet import exchange
from gossipnet.checkpoint import CheckpointStore
from gossipnet.learners.base import AbsorbResult, Learner, LearnerWire
from gossipnet.nn.train import Diverged
from gossipnet.persistence import StateKeeper
from gossipnet.rejections import Rejection
from gossipnet.status.history import MetricsHistory
from gossipnet.volunteers import VolunteerDesk
from gossipnet.volunteers.hosting import trade

if TYPE_CHECKING:
    from gossipnet.core import Event

log = logging.getLogger(__name__)
OFFER_LEAD_S = 0.25  # publish this much (plus two chunks) before the core's next announcement


class LearnerHost:
    """The learner, its cadence (evaluate, publish, checkpoint) and what it has published."""

    def __init__(self, learner: Learner, history: MetricsHistory, store: CheckpointStore, *,
                 train_chunk: int | None, eval_interval: float, publish_interval: float,
                 checkpoint_interval: float, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, volunteers: VolunteerDesk | None = None) -> None:
        """``volunteers``: the node's browser volunteers' desk (``volunteers.hosting``), or None."""
        if not isinstance(getattr(learner, "wire", None), LearnerWire):
            raise TypeError(f"{type(learner).__name__} must declare its wire facts: "
                            "a class attribute `wire = LearnerWire(...)` (see learners/base.py)")
        self.learner = learner
        self.history = history
        self.store = store
        self.keeper = StateKeeper(store, checkpoint_interval)  # its counters: the status page's "checkpoint"
        self.chunk = train_chunk or learner.wire.default_chunk
        self.eval_interval = eval_interval
        self.publish_interval = publish_interval
        self.checkpoint_interval = checkpoint_interval
        self.clock, self.wall = clock, wall
        self.volunteers = volunteers
        self.shelf = exchange.Shelf()  # the snapshots our HTTP server hands out
        self.step = 0
        self.metrics: dict[str, Any] = {}
        self._visuals: Mapping[str, Any] = {}
        self._visuals_seen = False  # read since they were drawn: someone watches the status page
        self.model = None  # a copy of the current model for the status page's downloads (or None)
        # Who could pull our next offer, and when the core announces it next, as of the last
        # chunk (``record``; None until the node says). Encoding and hashing a snapshot costs
        # ~15 ms (fashion net): done every publish interval and after every merge, it was for
        # nobody on a lone node and twice per announcement in a swarm (issue 17).
        self.audience: int | None = None
        self.announce_at: float | None = None
        self._changes = 0  # model changes besides training: merges, rollbacks, volunteers
        self._offered: tuple[int, int] | None = None  # (step, changes) of the newest offer
        self._offered_for: float | None = None  # the announcement it was made for
        self._chunk_s = 0.0  # how long the last work() took: how early to publish for an announcement
        self._next_offer = 0.0  # not knowing when announcements go out: the publish cadence
        self.restored_from: str | None = None
        self.resumed_exchange: dict[str, int] = {}  # the node's exchange counters at the checkpoint
        self._last_eval: dict[str, Any] = {}  # the newest evaluate(), shown until the next one
        self._next_eval = self._next_publish = self._next_checkpoint = 0.0

    @property
    def visuals(self) -> Mapping[str, Any]:
        """The learner's pictures for the status page, as of the last evaluation, or of the
        last publish once someone reads them (drawing them costs a forward pass)."""
        self._visuals_seen = True
        return self._visuals

    def restore(self) -> None:
        """Resume from the newest checkpoint, if any, and publish a first snapshot."""
        ckpt = self.keeper.restore(self.learner)  # falls back to checkpoint.prev if refused
        if ckpt is None:
            self.history.event(self.wall(), "start", "fresh state")
        else:
            history_state = {k[8:]: v for k, v in ckpt.tensors.items() if k.startswith("history/")}
            if history_state:
                self.history.load_state_dict(history_state)
            counters = ckpt.meta.get("exchange", {})
            if isinstance(counters, dict):
                self.resumed_exchange = {str(k): int(v) for k, v in counters.items() if isinstance(v, int)}
            self.restored_from = str(ckpt.meta.get("recovered_from", self.store.current))
            self.history.event(self.wall(), "restart", f"resumed at step {self.learner.step}")
            log.info("resumed from %s at step %d", self.restored_from, self.learner.step)
        self.step = self.learner.step
        self.metrics = dict(self.learner.metrics())
        self._visuals, self.model = self.learner.visuals(), self.learner.model()
        self.publish()
        # The first evaluation waits one interval: at step 0 it would only measure chance.
        self._next_eval = self.clock() + self.eval_interval

    def checkpoint(self, meta: Mapping[str, Any]) -> bool:
        """Save now; never raises for a full disk (counted, retried at ``keeper.next_due``)."""
        extra = {f"history/{k}": v for k, v in self.history.state_dict().items()}
        ok = self.keeper.save(self.learner, extra, {**meta, "step": self.learner.step, "saved_at": self.wall()},
                              self.clock())
        self._next_checkpoint = self.keeper.next_due
        return ok

    def publish(self) -> None:
        """Encode the learner's current snapshot as the newest blob on the shelf."""
        offer = exchange.publish(self.learner.snapshot(), self.learner.wire, self.learner.step)
        if offer is not None:
            self.shelf.put(offer)
        self._offered = self._version()

    def _version(self) -> tuple[int, int]:
        return (self.learner.step, self._changes)

    def _offer_due(self, now: float) -> bool:
        """Encode a new offer now? Only if someone could pull it, the model moved since the
        last one, and the core's next announcement is at most two chunks away (one offer per
        announcement, as fresh as it gets); if the node has not said when that is, on the
        publish cadence."""
        if self.audience == 0 or self._offered == self._version():
            return False
        if self.announce_at is None:
            return now >= self._next_offer
        return (self._offered_for != self.announce_at
                and self.announce_at - now <= 2 * self._chunk_s + OFFER_LEAD_S)

    def work(self, train: bool, checkpoint_meta: Callable[[], Mapping[str, Any]]) -> dict[str, float]:
        """One unit of worker time: train a chunk, evaluate, publish and checkpoint when due;
        then trade with the volunteers' desk (between chunks, never while the learner trains)."""
        out: dict[str, float] = {}
        start = self.clock()
        if train:
            try:
                out = self.learner.train(self.chunk)
            except Diverged as exc:
                self._roll_back(exc)
        now = self.clock()
        if now >= self._next_eval:
            self._last_eval = dict(self.learner.evaluate())
            self._visuals = self.learner.visuals()
            out.update(self._last_eval)
            self._next_eval = now + self.eval_interval
        if self._offer_due(now):
            self.publish()
            self._offered_for, self._next_offer = self.announce_at, now + self.publish_interval
        if now >= self._next_publish:  # the status page's model download and pictures
            self.model = self.learner.model()
            if self._visuals_seen:  # drawing them is a forward pass: only while someone looks
                self._visuals, self._visuals_seen = self.learner.visuals(), False
            self._next_publish = now + self.publish_interval
        if now >= self._next_checkpoint:
            if self._next_checkpoint:
                self.checkpoint(checkpoint_meta())  # sets the next due time (sooner after a failure)
            else:
                self._next_checkpoint = now + self.checkpoint_interval
        self.step = self.learner.step
        self.metrics = {**self.learner.metrics(), **self._last_eval}
        if self.volunteers is not None:
            trade(self.volunteers, self.learner, self.clock())
            self._changes += 1  # volunteers' updates may have changed the model between steps
        self._chunk_s = self.clock() - start
        return out

    def note(self, events: Iterable[Event]) -> None:
        """What the core reported, into the history and the log: a refused snapshot is only
        logged (the rejections count it), the learner's frequent merge event logs at DEBUG."""
        for ev in events:
            if ev.kind == "rejected":
                log.warning("rejected %s's snapshot: %s", ev.peer, ev.detail)
                continue
            self.history.event(self.wall(), ev.kind, ev.detail)
            log.log(logging.DEBUG if ev.kind == self.learner.wire.merge_event else logging.INFO,
                    "%s: %s", ev.kind, ev.detail)

    def record(self, peers: int, announce_at: float | None = None) -> None:
        """Add the numeric metrics of the last chunk (and the peer count) to the history.
        ``peers`` could pull our next offer, which the core announces at ``announce_at``
        (``clock`` time): offers are encoded for them, just before (``_offer_due``)."""
        self.audience, self.announce_at = peers, announce_at
        values = {k: float(v) for k, v in self.metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.history.record(self.wall(), self.step, values, peers)

    def _roll_back(self, exc: Diverged) -> None:
        """NaN weights must neither end the daemon nor be saved or offered to peers."""
        rolled = self.keeper.rollback(self.learner)
        self._changes += 1
        if rolled:
            self.learner.after_rollback()
        self.keeper.counters["diverged"] += 1
        self.history.event(self.wall(), "diverged", "rolled back" if rolled else "no good state yet")
        log.warning("%s; %s", exc, "rolled back to the last good state" if rolled
                    else "no good state to roll back to yet")

    def absorb(self, gate: exchange.Gate, blob: exchange.Blob, peer: str) -> AbsorbResult | Rejection:
        """Open a downloaded blob against our model and hand it to the learner."""
        snapshot = gate.open(blob)
        if isinstance(snapshot, Rejection):
            return snapshot
        try:
            result = self.learner.absorb(snapshot, peer)
        except Exception as exc:  # a peer's snapshot must never end the daemon, whatever it trips
            log.exception("absorbing %s's snapshot failed; refused and counted", peer)
            return AbsorbResult(False, "absorb_failed", f"{type(exc).__name__}: {exc}")
        if result.accepted:
            self.metrics = {**self.learner.metrics(), **self._last_eval}
            self._changes += 1
            self._next_publish = self._next_offer = 0.0  # show and offer the merged model soon
        return result
