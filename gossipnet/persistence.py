"""A node's durable learner state: checkpoints that survive faults, and a last good state.

Three faults used to end a node or lose its training, and each is handled here (no I/O
beyond the ``CheckpointStore``, no asyncio):

- a failed write (ENOSPC, EMFILE) is logged, counted and retried with a doubling
  backoff up to the checkpoint interval, while the node trains and serves on;
- a non-finite state (NaN or infinite weights) is never written: the learner is
  rolled back to the last good state instead, as it is when its loss diverges;
- on start, a checkpoint the learner refuses (another architecture, non-finite
  weights, a bad file) makes it try ``checkpoint.prev`` before giving up.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

import numpy as np

from gossipnet.checkpoint import Checkpoint, CheckpointStore
from gossipnet.errors import UserError
from gossipnet.learners.base import Learner

log = logging.getLogger(__name__)

LEARNER_PREFIX = "learner/"
RETRY_MIN_S = 5.0  # first retry after a failed write; doubles up to the checkpoint interval


def non_finite(tensors: Mapping[str, np.ndarray]) -> list[str]:
    """Names of floating-point arrays holding a NaN or an infinity."""
    bad = []
    for name, t in tensors.items():
        a = np.asarray(t)
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            bad.append(name)
    return bad


def learner_part(ckpt: Checkpoint) -> dict[str, np.ndarray]:
    return {k[len(LEARNER_PREFIX):]: v for k, v in ckpt.tensors.items() if k.startswith(LEARNER_PREFIX)}


class StateKeeper:
    """Saves and restores one learner through a ``CheckpointStore``; ``counters`` say what happened."""

    def __init__(self, store: CheckpointStore, interval: float) -> None:
        self.store = store
        self.interval = interval
        self.counters: Counter[str] = Counter()
        self.next_due = 0.0
        self._backoff = min(RETRY_MIN_S, interval)
        self._good: dict[str, np.ndarray] | None = None

    # -- start ------------------------------------------------------------------------------

    def restore(self, learner: Learner) -> Checkpoint | None:
        """Load the newest checkpoint the learner accepts into it; None if there is none.

        Raises ``UserError`` naming every file's problem when checkpoints exist but the
        learner accepts none of them: starting from scratch silently would lose training.
        """
        problems: list[str] = []
        found = False
        for path, ckpt, problem in self.store.candidates():
            found = True
            if ckpt is None:
                problems.append(f"{path}: {problem}")
                continue
            state = learner_part(ckpt)
            bad = non_finite(state)
            try:
                if bad:
                    raise UserError(f"non-finite values in {', '.join(bad[:3])}")
                learner.load_state_dict(state)
            except UserError as exc:
                log.warning("checkpoint %s refused (%s); trying the previous one", path, exc)
                problems.append(f"{path}: {exc}")
                self.counters["refused_on_start"] += 1
                continue
            if problems:
                ckpt.meta["recovered_from"] = str(path)
                ckpt.meta["recovery_problems"] = problems
            self._remember(learner)
            return ckpt
        if found:
            raise UserError("no usable checkpoint: " + "; ".join(problems) + ". Move the state "
                            "directory's checkpoint files aside to start this node from scratch.")
        self._remember(learner)
        return None

    # -- running ----------------------------------------------------------------------------

    def save(self, learner: Learner, extra: Mapping[str, np.ndarray], meta: dict, now: float) -> bool:
        """Write a checkpoint of ``learner`` (plus ``extra`` tensors) if its state is finite.

        Never raises for a full disk or a lack of descriptors: the failure is counted and
        the next attempt scheduled (``next_due``). A non-finite state is not written; the
        learner goes back to the last good state.
        """
        state = learner.state_dict()
        bad = non_finite(state)
        if bad:
            self.counters["non_finite_not_saved"] += 1
            log.error("learner state is not finite (%s): not saved; rolling back to the last good state",
                      ", ".join(bad[:3]))
            self.rollback(learner)
            self.next_due = now + self._backoff
            return False
        tensors = {f"{LEARNER_PREFIX}{k}": v for k, v in state.items()}
        tensors.update(extra)
        try:
            size = self.store.save(Checkpoint(tensors, meta))
        except OSError as exc:
            self.counters["write_failures"] += 1
            log.warning("checkpoint write failed (%s); retrying in %.0f s, training goes on",
                        exc.strerror or exc, self._backoff)
            self.next_due = now + self._backoff
            self._backoff = min(2 * self._backoff, self.interval)
            return False
        self.counters["saved"] += 1
        log.debug("checkpoint: %d bytes", size)
        self._good = {k: np.array(v, copy=True) for k, v in state.items()}
        self._backoff = min(RETRY_MIN_S, self.interval)
        self.next_due = now + self.interval
        return True

    def rollback(self, learner: Learner) -> bool:
        """Put the last good state back into ``learner``; False if there is none."""
        if self._good is None:
            return False
        learner.load_state_dict({k: np.array(v, copy=True) for k, v in self._good.items()})
        self.counters["rollbacks"] += 1
        return True

    def _remember(self, learner: Learner) -> None:
        state = learner.state_dict()
        if not non_finite(state):
            self._good = {k: np.array(v, copy=True) for k, v in state.items()}
