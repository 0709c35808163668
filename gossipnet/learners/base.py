"""The interface between a node and whatever it trains.

The node never asks which learner it holds: a convnet on an image shard and an
island of evolving policies look the same from here. A learner is not
thread-safe; the node calls it from one worker thread at a time (training,
absorbing and snapshotting are serialised there), so the event loop never
blocks on numpy work.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

from gossipnet.errors import UserError

Scalar = int | float | str | bool


@dataclass(frozen=True)
class Snapshot:
    """What a learner offers its peers: named arrays plus a few scalars.

    ``fingerprint`` names the architecture (convnet spec hash) or the task and
    genome layout; peers merge only snapshots whose fingerprint equals their own.
    ``age`` is how much training the snapshot embodies (images seen, or
    environment steps) and weights age-weighted merges.
    ``meta`` holds small, untrusted claims (for example migrants' fitness);
    it travels inside the signed manifest, so keep it to a few hundred bytes.
    """

    kind: str
    fingerprint: str
    age: float
    tensors: dict[str, np.ndarray]
    meta: dict[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True)
class LearnerWire:
    """What a learner's snapshots are on the wire, declared by the learner so the node never
    has to ask which learner it holds (``learner.wire``)."""

    blob_kind: str  # what the manifest announces: "weights" or "genome" (exchange.KINDS)
    dtype: str  # the tensors' wire dtype: "float16" halves the bytes of weights, "float32" is exact
    default_chunk: int  # training steps (batches, generations) per worker call, between merges
    merge_event: str  # what an accepted absorb is called in the history and on the PNG
    absorb_reasons: tuple[str, ...] = ()  # AbsorbResult reasons it may give; counted from 0


@dataclass(frozen=True)
class AbsorbResult:
    """The outcome of merging one peer's snapshot: accepted, or rejected with a reason."""

    accepted: bool
    reason: str = "ok"
    detail: str = ""


class Learner(abc.ABC):
    """A trainable thing that can share what it learned and merge what peers learned."""

    kind: str = "abstract"
    # A short hash of what the outputs mean (a convnet's class list), announced with every
    # snapshot so a peer with another one can name the reason it will not merge; None: n/a.
    classes_digest: str | None = None
    wire: LearnerWire  # every learner declares one (see ConvnetLearner.wire)

    @property
    @abc.abstractmethod
    def fingerprint(self) -> str:
        """Hash of what must match for two learners' snapshots to merge."""

    @property
    @abc.abstractmethod
    def step(self) -> int:
        """Monotonic count of training steps (batches, or generations) since creation."""

    @abc.abstractmethod
    def train(self, budget: int) -> dict[str, float]:
        """Train for ``budget`` steps; return this chunk's metrics (loss, images/s, ...)."""

    @abc.abstractmethod
    def snapshot(self) -> Snapshot:
        """What to offer peers now."""

    def offer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the tensors this learner offers and accepts from peers.

        Fixed for the learner's life, and known before it has trained: the node checks
        peers' blobs against it, so even a learner with nothing to offer yet can take
        what its peers send. By default, the shapes of the current snapshot.
        """
        return {name: tuple(int(d) for d in np.shape(t)) for name, t in self.snapshot().tensors.items()}

    @abc.abstractmethod
    def absorb(self, snapshot: Snapshot, peer: str) -> AbsorbResult:
        """Merge a peer's verified snapshot, or reject it with a reason; never raise on bad data."""

    @abc.abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Held-out evaluation (test accuracy, or mean episode return)."""

    @abc.abstractmethod
    def metrics(self) -> dict[str, Scalar]:
        """Current scalars for the status page and /metrics."""

    def visuals(self) -> dict[str, np.ndarray | list[str]]:
        """Arrays the progress PNG can draw, beyond the metrics history.

        A convnet offers ``filters`` (first-layer kernels, (n, c, h, w)), ``samples``
        (a few test images, (k, c, h, w)), ``sample_labels``, ``sample_preds`` and
        ``classes``; an island may offer ``rollout`` frames ((t, h, w, 3) uint8).
        Empty by default: the page then shows curves only.
        """
        return {}

    def model(self):
        """A copy of the current model a user can download and use (``gossipnet.model.TrainedModel``),
        or None when this learner has none (an island of policies)."""
        return None

    def after_rollback(self) -> None:
        """The node put back an earlier state after a divergence: avoid replaying the same steps.

        By default nothing; a learner whose batches are a pure function of its position
        should move on (the convnet starts a new epoch, in a new order).
        """

    def close(self) -> None:
        """Release what training holds (worker processes); the learner may train again after."""

    def start_from(self, model) -> None:
        """Begin from a trained model file (``gossipnet run --start-from``) instead of an init."""
        raise UserError(f"--start-from takes a convnet model; a {self.kind} node cannot start from "
                        "one: leave out --start-from")

    @abc.abstractmethod
    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to resume (model, optimiser, counters) as named arrays."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Resume from ``state_dict()``; raise ``UserError`` if it does not fit."""
