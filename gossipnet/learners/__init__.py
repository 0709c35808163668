"""Learners: what a node trains. The node only ever sees the ``Learner`` interface."""

from gossipnet.learners.base import AbsorbResult, Learner, LearnerWire, Snapshot

__all__ = ["AbsorbResult", "Learner", "LearnerWire", "Snapshot"]
