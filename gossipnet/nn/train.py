"""The pure training loop: shuffled mini-batches, resumable at any step, and evaluation.

A node's learner calls ``Trainer.train(x, y, steps)`` in short chunks between gossip
rounds, and may checkpoint and restart in between; everything random is a function of
(seed, epoch) or (seed, step), and the position in the epoch is part of the state dict,
so chunked, resumed training sees exactly the batches one long run would.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from gossipnet.errors import UserError
from gossipnet.nn import heap
from gossipnet.nn.loss import check_labels, log_softmax
from gossipnet.nn.net import Net
from gossipnet.nn.optim import Optimizer

log = logging.getLogger(__name__)


class Diverged(UserError):
    """The loss became NaN or infinite: the weights are no longer usable."""


def _check_data(net: Net, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    net.check_input(x)
    if len(x) == 0:
        raise UserError("no images to train or evaluate on (the data set is empty)")
    return check_labels(y, len(x), net.num_classes)


def one_core_step(net: Net, optimizer: Optimizer, x: np.ndarray, y: np.ndarray,
                  seed: int, step: int) -> tuple[float, np.ndarray]:
    """One training step in this thread, with the (seed, step) dropout masks: the mean
    loss and the logits. What the data-parallel workers' step must equal."""
    net.set_rng(seed, step)
    loss, logits = net.loss_and_grads(x, y)
    optimizer.step(net.grads())
    return loss, logits


def one_core_steps(net: Net, optimizer: Optimizer,
                   batches: Iterable[tuple[np.ndarray, np.ndarray, int, int]]) -> Iterator[tuple[float, np.ndarray]]:
    """``one_core_step`` for each (x, y, seed, step) of ``batches``, yielding (loss, logits)."""
    for x, y, seed, step in batches:
        yield one_core_step(net, optimizer, x, y, seed, step)


class Trainer:
    """Trains one net with one optimizer on in-memory arrays (x float32 NCHW, y int64)."""

    def __init__(self, net: Net, optimizer: Optimizer, batch_size: int, seed: int = 0,
                 lr_schedule: Callable[[int], float] | None = None, parallel=None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"batch size must be a positive integer, got {batch_size!r}")
        heap.keep_freed_memory()  # or every step faults its temporaries back in (nn/heap.py)
        self.net, self.optimizer = net, optimizer
        self.batch_size, self.seed = batch_size, seed
        self.lr_schedule = lr_schedule
        # a nn.parallel.DataParallel over this net: each batch split over its worker
        # processes, which also update the parameters, the same step to float32
        # rounding; None computes in this thread
        self.parallel = parallel
        self.step = 0  # optimizer steps taken
        self.epoch = 0  # completed passes over the data
        self.position = 0  # index into this epoch's permutation
        self.images = 0  # images trained on, for age-weighted merges
        self._n: int | None = None  # data set size the position refers to
        self._perm: np.ndarray | None = None

    def _permutation(self, n: int) -> np.ndarray:
        if self._perm is None or len(self._perm) != n:
            self._perm = np.random.default_rng((self.seed, self.epoch)).permutation(n)
        return self._perm

    def train(self, x: np.ndarray, y: np.ndarray, steps: int) -> dict[str, float]:
        """Take ``steps`` optimizer steps; mean loss, accuracy and speed over this chunk."""
        y = _check_data(self.net, x, y)
        n = len(x)
        if self._n is not None and self._n != n:
            raise UserError(f"training data changed size ({self._n} -> {n} images) mid-epoch; "
                            "resume with the same data set, or start a new trainer")
        self._n = n
        loss_sum = correct = seen = 0.0
        t0 = time.perf_counter()
        labels: deque[np.ndarray] = deque()  # of the batches handed out and not yet scored
        batches = self._batches(x, y, n, steps, labels)
        if self.parallel is None:
            results = one_core_steps(self.net, self.optimizer, batches)
            session = contextlib.nullcontext()
        else:
            # the workers take each batch while the one before it trains; the weights and
            # moments live in their shared memory for the chunk
            results = self.parallel.run(batches, self.optimizer)
            session = self.parallel.session(self.optimizer)
        with session:
            for loss, logits in results:
                yb = labels.popleft()
                loss_sum += loss * len(yb)
                correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
                seen += len(yb)
        secs = time.perf_counter() - t0
        if seen and not np.isfinite(loss_sum):
            raise Diverged("training diverged (loss is NaN or infinite); lower the learning rate")
        return {
            "steps": float(steps),
            "loss": loss_sum / seen if seen else float("nan"),
            "accuracy": correct / seen if seen else float("nan"),
            "seconds": secs,
            "images_per_s": seen / secs if secs > 0 else 0.0,
            "lr": self.optimizer.lr,
            "epoch": self.epoch + self.position / n,
        }

    def _batches(self, x: np.ndarray, y: np.ndarray, n: int, steps: int,
                 labels: deque) -> Iterator[tuple[np.ndarray, np.ndarray, int, int]]:
        """The next ``steps`` batches as (x, y, seed, step), each with the learning rate of
        its step set on the optimizer; the position in the epoch moves on as the next one is
        asked for, so the schedule sees every batch before it counted."""
        for _ in range(steps):
            perm = self._permutation(n)
            idx = perm[self.position : self.position + self.batch_size]
            xb, yb = x[idx], y[idx]
            if self.lr_schedule is not None:
                self.optimizer.lr = self.lr_schedule(self.step)
            labels.append(yb)
            yield xb, yb, self.seed, self.step
            self.step += 1
            self.images += len(idx)
            self.position += len(idx)
            if self.position >= n:
                self.epoch, self.position, self._perm = self.epoch + 1, 0, None

    def state_dict(self) -> dict[str, np.ndarray]:
        """Counters as int64 scalars under ``trainer.*`` (merge with net and optimizer state)."""
        vals = {"step": self.step, "epoch": self.epoch, "position": self.position,
                "images": self.images, "seed": self.seed, "n": -1 if self._n is None else self._n}
        return {f"trainer.{k}": np.array(v, np.int64) for k, v in vals.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        keys = ("step", "epoch", "position", "images", "seed", "n")
        try:
            vals = {k: int(np.asarray(state[f"trainer.{k}"])) for k in keys}
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"trainer state is missing or malformed ({exc}); "
                            "was the file written by gossipnet?") from None
        if min(vals["step"], vals["epoch"], vals["position"], vals["images"]) < 0:
            raise UserError(f"trainer state has negative counters: {vals}")
        self.step, self.epoch, self.position = vals["step"], vals["epoch"], vals["position"]
        self.images = vals["images"]
        self._n = None if vals["n"] < 0 else vals["n"]
        self._perm = None
        if vals["seed"] != self.seed:
            # Our seed (--seed, or the node's own) wins: a checkpoint must not silently
            # replace it. The saved epoch position belongs to the old seed's order.
            log.warning("checkpoint was trained with seed %d, this run has seed %d: keeping %d "
                        "and starting a new epoch", vals["seed"], self.seed, self.seed)
            self.new_epoch()

    def new_epoch(self) -> None:
        """Start the next epoch from its first batch, in that epoch's order (the data or the
        seed changed, or a divergence was rolled back)."""
        self.epoch += 1
        self.position, self._n, self._perm = 0, None, None


def evaluate(net: Net, x: np.ndarray, y: np.ndarray, batch_size: int = 500) -> dict[str, float]:
    """Mean loss and accuracy of ``net`` on (x, y), in evaluation mode and in batches."""
    y = _check_data(net, x, y)
    loss_sum = 0.0
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = net.forward(x[i : i + batch_size], train=False)
        yb = y[i : i + batch_size]
        loss_sum -= float(log_softmax(logits)[np.arange(len(yb)), yb].sum())
        correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
    return {"loss": loss_sum / len(x), "accuracy": correct / len(x)}


def train_sequence(net: Net, optimizer: Optimizer, x: np.ndarray, y: np.ndarray,
                   batch_size: int, seed: int) -> list[float]:
    """Train on ``x`` in the given order, ``len(x) // batch_size`` steps, with hash dropout
    masks keyed by (``seed``, step): exactly what a browser volunteer's lease computes
    (``gossipnet/web/train.js``), so the node can recompute it. Returns each step's loss."""
    y = _check_data(net, x, y)
    losses = []
    for s in range(len(x) // batch_size):
        rows = slice(s * batch_size, (s + 1) * batch_size)
        net.set_hash_masks(seed, s)
        loss, _ = net.loss_and_grads(x[rows], y[rows])
        optimizer.step(net.grads())
        losses.append(loss)
    return losses
