"""A stand-in learner for the simulator and tests: no numpy work, one tensor, real blobs.

Its age grows with simulated training and it takes the larger age on absorb, so the
spread of knowledge through a simulated swarm is observable. It declares its wire facts
like any learner, so ``exchange.publish`` and ``Gate.open`` treat it as a real one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gossipnet.learners.base import AbsorbResult, Learner, LearnerWire, Snapshot


class SimLearner(Learner):
    """A stand-in learner: its age grows with simulated training time and it takes the
    larger age on absorb, so the spread of knowledge through the swarm is observable."""

    kind = "sim"
    wire = LearnerWire(blob_kind="weights", dtype="float32", default_chunk=1, merge_event="merge")

    def __init__(self) -> None:
        self.age = 0.0
        self._step = 0

    @property
    def fingerprint(self) -> str:
        return "sim0"

    @property
    def step(self) -> int:
        return self._step

    def train(self, budget: int) -> dict[str, float]:
        self._step += budget
        self.age += float(budget)
        return {}

    def snapshot(self) -> Snapshot:
        return Snapshot(self.kind, self.fingerprint, self.age, {"age": np.array([self.age], np.float32)})

    def absorb(self, snapshot: Snapshot, peer: str) -> AbsorbResult:
        self.age = max(self.age, float(snapshot.age))
        return AbsorbResult(True)

    def evaluate(self) -> dict[str, float]:
        return {}

    def metrics(self) -> dict[str, Any]:
        return {"age": self.age}

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"age": np.array([self.age]), "step": np.array([self._step])}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.age, self._step = float(state["age"][0]), int(state["step"][0])
