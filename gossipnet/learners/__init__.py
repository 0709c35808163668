"""Learners: what a node trains. The node only ever sees the ``Learner`` interface."""

from gossipnet.learners.base import AbsorbResult, Learner, Snapshot

__all__ = ["AbsorbResult", "Learner", "Snapshot"]
