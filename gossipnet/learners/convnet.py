"""A convnet on this node's share of an image data set, merging peers' weights by gossip.

Merging follows gossip learning: each model carries an *age* (images it embodies),
an incoming model is averaged in with weight ``age_peer / (age_own + age_peer)`` and
the merged model keeps the larger age. The robust mode (ClippedGossip) moves towards
the peer by at most ``clip_radius`` in L2 norm, so one poisoned peer cannot drag the
node away. Optimiser moments are kept across merges, as local SGD does, and an Adam
node's second moment travels with its weights and is averaged like them
(``shared_moments``): each node then scales its steps like its peers, which on
label-skewed shards is worth 2-3 points of accuracy (docs/GOSSIP_LEARNING.md).

The learning rate decays with the model's age, not with a step count: the daemon
trains open-ended and never knows a total, while the age is what the model has
learned from (its own images and, through merges, its peers'). The rate is a pure
function of the age, so a checkpoint (which holds the age) restores it exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from gossipnet import merge
from gossipnet.data.dataset import Dataset
from gossipnet.errors import UserError
from gossipnet.learners.base import AbsorbResult, Learner, LearnerWire, Scalar, Snapshot
from gossipnet.learners.merge_guard import GuardConfig, MergeGuard
from gossipnet.model import CARD_TENSOR, ModelCard, TrainedModel
from gossipnet.nn import Net, Trainer, evaluate, fit_preset, get_preset, make_optimizer
from gossipnet.nn.parallel import DataParallel, WorkerDied, check_cores
from gossipnet.rebasin import apply_permutation, lineage

log = logging.getLogger(__name__)

KIND = "convnet"
MOMENTS = ("m", "v", "velocity")  # optimiser moments a swarm can share (Adam's, SGD's)
MOMENT_PREFIX = "moment."  # snapshot tensors "moment.<moment>.<param>"
MERGES = ("guarded", "average", "clipped")
GUARD_V_RATIO = 4.0  # guarded merge: a peer's root of Adam's v counts within x4 of ours
# Training workers that die (the OOM killer, a stray kill) are restarted at the next chunk;
# this many deaths within the window mean they will not stay up: train on one core instead.
WORKER_DEATHS_TO_ONE_CORE = 3
WORKER_DEATH_WINDOW_S = 600.0


@dataclass(frozen=True)
class ConvnetConfig:
    """How this node trains and merges. ``None`` takes the preset's tuned value."""

    net: str = "fashion"
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    seed: int = 0  # this node's shuffling and dropout
    # Initial weights are shared by the whole swarm: nets started from different random
    # inits average into nonsense (hidden units are permuted between them), while nets
    # from one init stay in one basin and average well (as in federated averaging).
    init_seed: int = 0
    # "guarded" (default): the age-weighted average with a member's lies bounded (claimed age,
    # share, weight norm, an adaptive ClippedGossip radius and a held-out loss check on
    # outliers; learners/merge_guard.py). "average": plain gossip learning (one poisoned
    # snapshot can replace the weights). "clipped": ClippedGossip at a fixed clip_radius.
    merge: str = "guarded"
    clip_radius: float = 1.0
    guard: GuardConfig = GuardConfig()
    held_out_images: int = 128  # from the node's own shard: the loss check of outlier merges
    # Learning rate = base * max(lr_floor, 1 / sqrt(1 + 3 * age / lr_half_life_images)):
    # half the base rate at an age of lr_half_life_images, a fifth at 8 x that. The
    # 1/sqrt(t) form is the rate of Adam's convergence analysis (Kingma & Ba 2015, sec. 4)
    # and of the Transformer's rsqrt schedule (Vaswani et al. 2017); unlike cosine it needs
    # no total. 30,000 images is 2 epochs of a node's shard when 4 nodes split Fashion-MNIST
    # (half an epoch of the whole set); the floor, reached at ~4M images, keeps an old node
    # learning from new data. Merged age is the larger of the two, so in a swarm of N equal
    # nodes the age counts one node's images: at an equal total the swarm's rate tends to sqrt(N)
    # times a lone node's, the large-batch rule. Measured (docs/GOSSIP_LEARNING.md): over 2-12
    # epochs of 4 Fashion-MNIST shards it narrows the nodes' spread but costs the swarm 0.6-1.2
    # points against "constant", so a node trains at the preset's rate unless asked to decay.
    lr_schedule: str = "constant"  # or "age" (the decay above)
    lr_half_life_images: float = 30_000.0
    lr_floor: float = 0.05
    lr_decay_power: float = 0.5  # 1: inverse-time decay, base / (1 + age / half-life)
    # Optimiser momentum (Adam's first moment, SGD's velocity) is multiplied by this on every
    # accepted merge: 1 keeps it (local SGD), 0 resets it. Measured in docs/GOSSIP_LEARNING.md.
    momentum_on_absorb: float = 1.0
    # Optimiser moments that travel with the weights and are averaged like them: "v" (Adam's
    # second moment, sent as its square root so float16 keeps its range) and "m" (Adam's first
    # moment; SGD's is "velocity"). Sharing "v" gives every node the same per-weight step
    # scale, so a node whose shard lacks a class no longer takes full-size steps on that
    # class's weights from its small local gradients. Measured in docs/GOSSIP_LEARNING.md.
    # None: "v" if the optimiser has it (Adam), nothing otherwise.
    shared_moments: tuple[str, ...] | None = None
    eval_images: int = 2000  # test images per evaluation: enough for +-1 point at 90%
    # A peer whose model grew from another init (its snapshot's "lineage" differs from ours)
    # has its units permuted into our order before the merge: "activations" (matching on
    # realign_images of our own images), "weights", or "off" (average as is).
    # gossipnet/rebasin/lineage.py says how, docs/RECOMBINATION.md what it costs and gains.
    realign: str = "activations"
    realign_repair: bool = True  # REPAIR the realigned merge: half a point closer at a join (measured)
    realign_images: int = 256
    visual_samples: int = 24
    # Worker processes that split each batch (gossipnet/nn/parallel.py): the same steps
    # as one core, to float32 rounding. 1 trains in the calling thread.
    cores: int = 1

    def __post_init__(self) -> None:
        if self.lr_schedule not in ("age", "constant"):
            raise UserError(f"learning-rate schedule {self.lr_schedule!r} unknown: use 'age' or 'constant'")
        if not (isinstance(self.lr_half_life_images, (int, float)) and self.lr_half_life_images > 0
                and math.isfinite(self.lr_half_life_images)):
            raise UserError(f"lr_half_life_images must be a positive number of images, "
                            f"got {self.lr_half_life_images!r}")
        if not (isinstance(self.lr_floor, (int, float)) and 0 < self.lr_floor <= 1):
            raise UserError(f"lr_floor must be in (0, 1] (a fraction of the base rate), got {self.lr_floor!r}")
        if not (isinstance(self.lr_decay_power, (int, float)) and 0 < self.lr_decay_power <= 2):
            raise UserError(f"lr_decay_power must be in (0, 2], got {self.lr_decay_power!r}")
        if not (isinstance(self.momentum_on_absorb, (int, float)) and 0 <= self.momentum_on_absorb <= 1):
            raise UserError(f"momentum_on_absorb must be in [0, 1], got {self.momentum_on_absorb!r}")
        check_cores(self.cores)
        moments = self.shared_moments or ()
        if set(moments) - set(MOMENTS) or len(set(moments)) != len(moments):
            raise UserError(f"shared_moments {self.shared_moments!r}: name each of "
                            f"{', '.join(MOMENTS)} at most once")


def age_lr_factor(age: float, half_life_images: float, floor: float, power: float = 0.5) -> float:
    """The fraction of the base learning rate a model of this age trains at:
    ``(1 + (2**(1/power) - 1) * age / half_life_images) ** -power``, 1/2 at the half-life."""
    scale = 2.0 ** (1.0 / power) - 1.0
    return max(floor, (1.0 + scale * max(0.0, age) / half_life_images) ** -power)


def data_fingerprint(name: str, indices: np.ndarray, labels: np.ndarray) -> bytes:
    """16 bytes naming this node's training data: the data set, which images, their labels."""
    h = hashlib.sha256(name.encode() + b"\0")
    h.update(np.ascontiguousarray(indices, np.int64).tobytes())
    h.update(np.ascontiguousarray(labels, np.int64).tobytes())
    return h.digest()[:16]


def default_net_for(data: Dataset) -> str:
    """The preset tuned for this data set's image shape (colour: the CIFAR-10 net)."""
    return "convnetjs-cifar10" if data.input_shape[0] == 3 else "fashion"


def classes_digest(classes: tuple[str, ...]) -> str:
    """A short hash of the class list, in label order (announced, so a peer can say why not)."""
    return hashlib.sha256(json.dumps(list(classes)).encode()).hexdigest()[:12]


class ConvnetLearner(Learner):
    kind = KIND
    # Weights travel as float16 (half the bytes, no measurable loss after merging);
    # 20 batches between merges is the chunk the daemon's figures were measured with.
    wire = LearnerWire(blob_kind="weights", dtype="float16", default_chunk=20, merge_event="merge",
                       absorb_reasons=("wrong_kind", "other_classes", "wrong_fingerprint", "bad_age", "bad_moments",
                                       "bad_names", "bad_type", "bad_shape", "bad_dtype", "bad_not_finite",
                                       "bad_norm", "bad_direction", "worse_loss"))  # the last 3: guarded

    def __init__(self, data: Dataset, train_indices: np.ndarray | None = None,
                 config: ConvnetConfig | None = None):
        self.config = cfg = config or ConvnetConfig(net=default_net_for(data))
        if cfg.merge not in MERGES:
            raise UserError(f"merge rule {cfg.merge!r} unknown: use one of {', '.join(MERGES)}")
        if cfg.realign not in lineage.METHODS:
            raise UserError(f"realign {cfg.realign!r} unknown: use one of {', '.join(lineage.METHODS)}")
        preset = get_preset(cfg.net)
        if tuple(preset.input_shape) != tuple(data.input_shape) and data.name != "folder":
            raise UserError(
                f"net {cfg.net!r} takes images of shape {preset.input_shape} but data set "
                f"{data.name!r} has {data.input_shape}; choose --net {default_net_for(data)}"
            )
        # An image folder has its own side and class count; the preset gives the layers.
        spec = fit_preset(preset, data.input_shape, data.num_classes, f"data set {data.name!r}")
        idx = np.arange(len(data.y_train)) if train_indices is None else np.asarray(train_indices)
        if len(idx) == 0:
            raise UserError("this node's shard of the training data is empty; use fewer --shards")
        self.x, self.y = data.x_train[idx], data.y_train[idx]
        self.data_fingerprint = data_fingerprint(data.name, idx, self.y)
        self.x_test, self.y_test = data.x_test[: cfg.eval_images], data.y_test[: cfg.eval_images]
        self.classes = data.classes
        self.pixel_mean, self.pixel_std = data.pixel_mean, data.pixel_std  # browser volunteers' images
        # An image folder's undecodable pictures (logged with their paths when loaded) stay
        # visible as a metric on the status page and in Prometheus.
        self.skipped_images = len(data.skipped) if data.name == "folder" else None
        self.net = Net(spec, data.input_shape, seed=cfg.init_seed)
        self.card = ModelCard(tuple(self.net.spec), self.net.input_shape, tuple(data.classes),
                              tuple(data.pixel_mean or (0.0,) * data.input_shape[0]),
                              tuple(data.pixel_std or (1.0,) * data.input_shape[0]), data.name)
        self.base_lr = cfg.lr or preset.lr
        self.optimizer = make_optimizer(
            cfg.optimizer or preset.optimizer, self.net.params(), self.base_lr,
            weight_decay=preset.weight_decay, momentum=preset.momentum,
        )
        batch = cfg.batch_size or preset.batch_size
        self.trainer = Trainer(self.net, self.optimizer, batch, seed=cfg.seed)
        self.parallel: DataParallel | None = None  # started on the first train(): see _workers
        self.shared_moments: tuple[str, ...] = (
            cfg.shared_moments if cfg.shared_moments is not None
            else tuple(m for m in ("v",) if m in self.optimizer.state))
        missing = [m for m in self.shared_moments if m not in self.optimizer.state]
        if missing:
            raise UserError(f"the {self.optimizer.kind} optimiser has no moment {missing[0]!r} to share; "
                            f"it has: {', '.join(self.optimizer.state) or 'none'}")
        self._fingerprint = self.net.fingerprint
        if self.shared_moments:  # peers must share the same moments, or never merge with us
            tag = f"{self.net.fingerprint}/{self.optimizer.kind}/{','.join(sorted(self.shared_moments))}"
            self._fingerprint = hashlib.sha256(tag.encode()).hexdigest()[:32]
        # Peers must agree on what each output means, not only on the shapes: Fashion-MNIST
        # and MNIST fit one net, and two image folders of 3 classes fit one net.
        self.classes_digest = classes_digest(data.classes)
        tag = f"{self._fingerprint}/classes={self.classes_digest}"
        self._fingerprint = hashlib.sha256(tag.encode()).hexdigest()[:32]
        self.lineage = lineage.lineage_of(cfg.init_seed)  # the init our unit order descends from
        self.realigner = None if cfg.realign == "off" else lineage.Realigner(
            self.net, self.x[: max(1, cfg.realign_images)], cfg.realign, cfg.realign_repair)
        self.realigned = 0  # merges that needed a permutation first
        self.age = 0.0  # images embodied in the model, own and merged (gossip learning's age)
        self.merges = 0
        self.guard = MergeGuard(cfg.guard)
        pick = np.random.default_rng((cfg.seed, 12)).permutation(len(self.y))[: cfg.held_out_images]
        self._held_out = (self.x[np.sort(pick)], self.y[np.sort(pick)])
        self._scratch: Net | None = None  # scores candidate weights on the held-out sample
        self._own_loss: tuple[tuple[int, int], float] | None = None  # ((images, merges), loss)
        self.last: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}
        self._chunk_start = (0.0, 0)  # (age, trainer.images) when the current train() began
        # CPU seconds spent training (this thread + the workers) and evaluating: what the
        # node spends on anything else is its overhead (benchmarks/gossip_cost.py)
        self.cpu = {"train_cpu_s": 0.0, "eval_cpu_s": 0.0, "process_cpu_s": 0.0}
        self._worker_cpu_closed = 0.0  # CPU of workers already shut down
        self.cores = cfg.cores  # what the workers are started with; 1 after they kept dying
        self.worker_restarts = 0
        self._worker_deaths: list[float] = []  # monotonic times, within the window
        if cfg.lr_schedule == "age":
            self.trainer.lr_schedule = self._scheduled_lr
            self.optimizer.lr = self.lr_at(self.age)

    def lr_at(self, age: float) -> float:
        """The learning rate at this age (the base rate if the schedule is 'constant')."""
        if self.config.lr_schedule == "constant":
            return self.base_lr
        cfg = self.config
        return self.base_lr * age_lr_factor(age, cfg.lr_half_life_images, cfg.lr_floor, cfg.lr_decay_power)

    def _scheduled_lr(self, _step: int) -> float:
        # The Trainer asks before every step; the age grows by each batch within a chunk.
        age0, images0 = self._chunk_start
        return self.lr_at(age0 + self.trainer.images - images0)

    # -- Learner --------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """The net's, or (sharing optimiser moments) a hash of the net, optimiser and moments."""
        return self._fingerprint

    @property
    def step(self) -> int:
        return self.trainer.step

    def _workers(self) -> None:
        """Start the data-parallel workers on first use (in the thread that trains, so a
        learner that is built and never trained, as in tests and tools, spawns nothing)."""
        if self.cores > 1 and self.trainer.parallel is None:
            self.parallel = DataParallel(self.net, self.cores, self.trainer.batch_size)
            self.trainer.parallel = self.parallel

    def _worker_died(self, exc: WorkerDied) -> None:
        """A training worker died mid-chunk: the steps it had applied stay (the session copied
        the weights back), the rest of the chunk is skipped, and new workers start with the
        next chunk, unless they keep dying: then the node trains on one core and says so."""
        self.close()
        now = time.monotonic()
        self._worker_deaths = [t for t in self._worker_deaths if now - t < WORKER_DEATH_WINDOW_S]
        self._worker_deaths.append(now)
        if len(self._worker_deaths) >= WORKER_DEATHS_TO_ONE_CORE:
            self.cores = 1
            log.error("%s (killed, or out of memory?). Training workers died %d times in %.0f "
                      "minutes: training on one core from now on (restart the node to try %d cores "
                      "again)", exc.what, len(self._worker_deaths), WORKER_DEATH_WINDOW_S / 60,
                      self.config.cores)
        else:
            self.worker_restarts += 1
            log.warning("%s (killed, or out of memory?): starting new training workers for the "
                        "next chunk", exc.what)

    def close(self) -> None:
        """Stop the training workers (they also stop by themselves when this process ends)."""
        if self.parallel is not None:
            self._worker_cpu_closed += self.parallel.cpu_seconds()
            self.parallel.close()
            self.parallel = self.trainer.parallel = None

    def train(self, budget: int) -> dict[str, float]:
        before = self.trainer.images
        self._chunk_start = (self.age, before)
        cpu0 = time.thread_time()
        try:
            self._workers()
            out = self.trainer.train(self.x, self.y, budget)
        except WorkerDied as exc:
            self._worker_died(exc)
            out = None
        self.cpu["train_cpu_s"] += time.thread_time() - cpu0
        # the whole process's CPU (every thread) at the same instant, so a reader can
        # difference the two counters between chunk ends without racing a chunk
        self.cpu["process_cpu_s"] = time.process_time()
        # the batches handed out (after a worker died, its last few may not have been applied)
        self.age += self.trainer.images - before
        if self.config.lr_schedule == "age":
            self.optimizer.lr = self.lr_at(self.age)  # the rate the next step takes, as reported
        if out is None:
            return {}
        self.last = {
            "loss": out["loss"], "train_accuracy": out["accuracy"],
            "images_per_s": out["images_per_s"], "epoch": out["epoch"],
        }
        return dict(out)

    def snapshot(self) -> Snapshot:
        tensors = self.net.state_dict()
        for moment in self.shared_moments:
            for name, arr in self.optimizer.state[moment].items():
                tensors[f"{MOMENT_PREFIX}{moment}.{name}"] = np.sqrt(arr) if moment == "v" else arr.copy()
        return Snapshot(KIND, self.fingerprint, float(self.age), tensors,
                        {"step": self.step, "classes": self.classes_digest, "lineage": self.lineage})

    def absorb(self, snapshot: Snapshot, peer: str) -> AbsorbResult:
        if snapshot.kind != KIND:
            return AbsorbResult(False, "wrong_kind", f"a {snapshot.kind!r} snapshot, not a convnet")
        theirs = snapshot.meta.get("classes")
        if theirs is not None and theirs != self.classes_digest:
            return AbsorbResult(False, "other_classes", "a model of another class list (data set)")
        if snapshot.fingerprint != self.fingerprint:
            return AbsorbResult(False, "wrong_fingerprint", "another network architecture")
        age = snapshot.age
        if not isinstance(age, (int, float)) or not math.isfinite(age) or age < 0:
            return AbsorbResult(False, "bad_age", f"age {age!r} is not a finite count >= 0")
        own = self.net.params()
        peer_w, peer_moments = {}, {}
        for name, arr in snapshot.tensors.items():
            if isinstance(arr, np.ndarray) and arr.dtype == np.float16:
                arr = arr.astype(np.float32)  # blobs travel as float16 to halve the bytes
            if name.startswith(MOMENT_PREFIX):
                peer_moments[name] = arr
            else:
                peer_w[name] = arr
        problem = self._check_moments(peer_moments)
        if problem:
            return AbsorbResult(False, "bad_moments", problem)
        perms = None
        peer_lineage = snapshot.meta.get("lineage")
        if (self.realigner is not None and isinstance(peer_lineage, str) and 0 < len(peer_lineage) <= 64
                and peer_lineage != self.lineage):
            try:
                perms = self.realigner.find(own, peer_w)
            except (KeyError, ValueError, UserError):
                perms = None  # names, shapes or values off: the merge's checks below say which
            if perms is not None:
                spec = self.realigner.spec
                peer_w = apply_permutation(spec, perms, peer_w)
                peer_moments = lineage.permute_named(spec, perms, peer_moments,
                                                     lambda key: key.split(".", 2)[2])
        if self.config.merge == "guarded":  # after realigning: an unaligned peer points nowhere near us
            return self._absorb_guarded(own, float(age), peer_w, peer_moments, peer, perms, peer_lineage)
        share = merge.age_share(self.age, float(age))
        try:
            if self.config.merge == "average":
                merged, new_age = merge.age_weighted(own, self.age, peer_w, float(age))
            else:
                if share <= 0:
                    return AbsorbResult(True, "ok", "peer model untrained: nothing to merge")
                merged = merge.clipped(own, peer_w, self.config.clip_radius, weight=min(1.0, share))
                new_age = max(self.age, float(age))
        except merge.MergeMismatch as exc:
            return AbsorbResult(False, f"bad_{exc.reason}", str(exc))
        distance = merge.difference_norm(own, peer_w)
        if perms is not None:
            merged = self.realigner.repaired(merged, own, peer_w, share)
        for name, w in merged.items():
            own[name][...] = w
        if self.config.merge == "average":
            self._merge_moments(peer_moments, share)
        if perms is not None:
            self._adopt_lineage(perms, peer_lineage)
        self.age = new_age
        self.merges += 1
        self._after_merge()
        return AbsorbResult(True, "ok", f"distance {distance:.3g} from {peer}")

    def _adopt_lineage(self, perms, peer_lineage: str) -> None:
        """After a merge across lineages, the later-sorting lineage permutes into the other's
        unit order (weights and every optimiser moment) and takes its name, so a swarm
        converges to one lineage and plain averaging (gossipnet/rebasin/lineage.py)."""
        self.realigned += 1
        if peer_lineage >= self.lineage:
            return
        spec, back = self.realigner.spec, lineage.invert(perms)
        params = self.net.params()
        for name, arr in lineage.permute_named(spec, back, params, lambda k: k).items():
            params[name][...] = arr
        for moments in self.optimizer.state.values():
            for name, arr in lineage.permute_named(spec, back, moments, lambda k: k).items():
                moments[name][...] = arr
        self.lineage = peer_lineage

    def _absorb_guarded(self, own: dict[str, np.ndarray], age: float, peer_w: dict[str, np.ndarray],
                        peer_moments: dict[str, np.ndarray], peer: str, perms=None,
                        peer_lineage: str | None = None) -> AbsorbResult:
        try:
            v = self.guard.judge(own, self.age, float(self.trainer.images), peer_w, age, peer,
                                 self._held_out_loss, chance_loss=math.log(len(self.classes)),
                                 foreign=perms is not None)
        except merge.MergeMismatch as exc:
            return AbsorbResult(False, f"bad_{exc.reason}", str(exc))
        if not v.accepted:
            return AbsorbResult(False, v.reason, v.detail)
        weights = v.weights
        if perms is not None:
            weights = self.realigner.repaired(weights, own, peer_w, v.share)
        for name, w in weights.items():
            own[name][...] = w
        self._merge_moments(peer_moments, v.share, bound=GUARD_V_RATIO)
        if perms is not None:
            self._adopt_lineage(perms, peer_lineage)
        self.age = v.age
        self.merges += 1
        self._after_merge()
        return AbsorbResult(True, v.reason, f"{v.detail} from {peer}")

    def _held_out_loss(self, weights: dict[str, np.ndarray]) -> float:
        own = weights is self.net.params()
        key = (self.trainer.images, self.merges)
        if own and self._own_loss is not None and self._own_loss[0] == key:
            return self._own_loss[1]  # several offers between two training chunks: score us once
        loss = self._score(weights)
        if own:
            self._own_loss = (key, loss)
        return loss

    def _score(self, weights: dict[str, np.ndarray]) -> float:
        if self._scratch is None:
            # our own net's spec: a preset fitted to the data set's classes differs from the preset
            self._scratch = Net(self.net.spec, self.net.input_shape, seed=self.config.init_seed)
        for name, p in self._scratch.params().items():
            p[...] = weights[name]
        return evaluate(self._scratch, *self._held_out)["loss"]

    def _check_moments(self, peer: dict[str, np.ndarray]) -> str:
        """'' if ``peer`` holds exactly the moments we share, shaped like ours, finite, and
        (for "v", sent as its root) non-negative; else what is wrong."""
        want = {f"{MOMENT_PREFIX}{m}.{name}": arr for m in self.shared_moments
                for name, arr in self.optimizer.state[m].items()}
        if set(peer) != set(want):
            return f"expected {len(want)} optimiser moment arrays, got {len(peer)}"
        for key, arr in peer.items():
            if not isinstance(arr, np.ndarray) or arr.shape != want[key].shape:
                return f"{key} is not an array of shape {want[key].shape}"
            if not np.all(np.isfinite(arr)) or (key.startswith(f"{MOMENT_PREFIX}v.") and arr.min() < 0):
                return f"{key} holds non-finite or (a root mean square) negative values"
        return ""

    def _merge_moments(self, peer: dict[str, np.ndarray], share: float, bound: float = 0.0) -> None:
        """Average the shared moments with the weights' share; "v" as a mean of squares.

        With ``bound``, a peer's root of "v" is first clipped to within that factor of ours,
        so a liar's tiny roots cannot inflate our steps (nor huge ones stall them) beyond it.
        In the moments' own dtype and in place: float64 copies made this a third of a
        merge's cost (issue 17).
        """
        for m in self.shared_moments:
            for name, arr in self.optimizer.state[m].items():
                theirs = peer[f"{MOMENT_PREFIX}{m}.{name}"].astype(arr.dtype)  # a copy: the caller's
                if m == "v" and bound:
                    root = np.sqrt(arr)
                    np.clip(theirs, root / bound, root * bound, out=theirs)
                if m == "v":
                    np.square(theirs, out=theirs)
                theirs *= share
                arr *= 1.0 - share
                arr += theirs

    def _after_merge(self) -> None:
        """Scale the momentum (config) and move the rate to the merged age."""
        keep = self.config.momentum_on_absorb
        if keep != 1.0:
            moment = "m" if "m" in self.optimizer.state else "velocity"
            for arr in self.optimizer.state.get(moment, {}).values():
                arr *= keep
        if self.config.lr_schedule == "age":
            self.optimizer.lr = self.lr_at(self.age)

    def add_delta(self, delta: dict[str, np.ndarray], images: int) -> None:
        """Add a validated volunteer update (gossipnet.volunteers) to the weights; the model
        then embodies its images too."""
        params = self.net.params()
        for name, d in delta.items():
            params[name] += d
        self.age += images
        self._after_merge()

    def evaluate(self) -> dict[str, float]:
        t0, cpu0 = time.perf_counter(), time.thread_time()
        res = evaluate(self.net, self.x_test, self.y_test)
        self.cpu["eval_cpu_s"] += time.thread_time() - cpu0
        self.last_eval = {"test_accuracy": res["accuracy"], "test_loss": res["loss"],
                          "eval_seconds": time.perf_counter() - t0}
        return dict(self.last_eval)

    def metrics(self) -> dict[str, Scalar]:
        out: dict[str, Scalar] = {"step": self.step, "images": self.trainer.images,
                                  "age": self.age, "merges": self.merges, "lr": self.optimizer.lr}
        if self.skipped_images is not None:
            out["skipped_images"] = self.skipped_images
        if self.realigner is not None and self.realigner.matches:
            out["realigned_merges"] = self.realigned
            out["realign_seconds"] = self.realigner.last_seconds
        out.update(self.last)
        out.update(self.last_eval)
        if self.worker_restarts or self.cores != self.config.cores:
            out["worker_restarts"] = self.worker_restarts
            out["cores"] = self.cores
        workers = self._worker_cpu_closed + (self.parallel.cpu_seconds() if self.parallel else 0.0)
        out["train_cpu_s"] = round(self.cpu["train_cpu_s"] + workers, 3)
        out["eval_cpu_s"] = round(self.cpu["eval_cpu_s"], 3)
        out["process_cpu_s"] = round(self.cpu["process_cpu_s"] + workers, 3)
        return out

    def visuals(self) -> dict[str, np.ndarray | list[str]]:
        first = next(k for k in self.net.params() if k.endswith(".weight"))
        k = min(self.config.visual_samples, len(self.x_test))
        samples = self.x_test[:k]
        preds = self.net.predict(samples) if k else np.zeros(0, np.int64)
        return {
            "filters": self.net.params()[first].copy(),
            "samples": samples.copy(),
            "sample_labels": self.y_test[:k].copy(),
            "sample_preds": np.asarray(preds),
            "classes": list(self.classes),
        }

    def after_rollback(self) -> None:
        self.trainer.new_epoch()  # the same batches in the same order could diverge again

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        state.update({f"opt.{k}": v for k, v in self.optimizer.state_dict().items()})
        state.update(self.trainer.state_dict())
        state["learner.age"] = np.array(self.age, np.float64)
        state["learner.merges"] = np.array(self.merges, np.int64)
        state["learner.fingerprint"] = np.frombuffer(self.fingerprint.encode(), np.uint8).copy()
        state[CARD_TENSOR] = self.card.to_bytes()  # what gossipnet predict needs from a node
        state["learner.lineage"] = np.frombuffer(self.lineage.encode(), np.uint8).copy()
        state["learner.data"] = np.frombuffer(self.data_fingerprint, np.uint8).copy()
        return state

    def start_from(self, model: TrainedModel) -> None:
        """Begin from a trained model (``gossipnet run --start-from``) instead of the random init.

        The model must be this node's net on this node's classes; its images become our age,
        so its training keeps its weight in merges. Its lineage is the file's (or a digest of
        its weights): nodes started from the same file average plainly, others realign.
        """
        card, where = model.card, model.source or "the model"
        problems = []
        if Net(card.spec, card.input_shape).fingerprint != self.net.fingerprint:
            problems.append(f"its net ({len(card.spec)} layers, input {card.input_shape}) is not this "
                            f"node's --net {self.config.net} (input {self.net.input_shape})")
        if tuple(card.classes) != tuple(self.classes):
            problems.append(f"its classes ({', '.join(card.classes[:4])}...) are not this data set's "
                            f"({', '.join(self.classes[:4])}...)")
        if problems:
            raise UserError(f"cannot start from {where}: {'; '.join(problems)}; start the node with the "
                            "--net and --dataset the model was trained with, or leave out --start-from")
        self.net.load_state_dict(model.weights)
        self.age = float(model.images)
        digest = hashlib.sha256(b"".join(np.ascontiguousarray(v, np.float32).tobytes()
                                         for _, v in sorted(model.weights.items()))).hexdigest()[:16]
        self.lineage = model.lineage or f"file-{digest}"
        if self.config.lr_schedule == "age":
            self.optimizer.lr = self.lr_at(self.age)

    def model(self) -> TrainedModel:
        """The current weights as a model a user can download (a copy: training goes on)."""
        return TrainedModel(self.card, self.net.state_dict(), "this node's current model")

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        fp = bytes(np.asarray(state.get("learner.fingerprint", np.zeros(0, np.uint8)), np.uint8)).decode(
            "ascii", "replace")
        if fp != self.fingerprint:
            raise UserError(
                f"checkpoint holds a different network (fingerprint {fp or 'missing'}, this node "
                f"runs {self.fingerprint}); use the --net it was trained with, or another --state-dir"
            )
        self.net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        self.optimizer.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("opt.")})
        self.trainer.load_state_dict(state)
        saved = bytes(np.asarray(state.get("learner.data", np.zeros(0, np.uint8)), np.uint8))
        if saved != self.data_fingerprint:
            # Another data set, shard count, skew or shard index: the saved epoch position
            # points into other data. Keep what was learned (weights, optimiser, age).
            log.warning("training data differs from the checkpoint's (another --dataset, --shards, "
                        "--shard or --alpha): keeping weights, optimiser and age, starting a new epoch")
            self.trainer.new_epoch()
        self.age = float(state["learner.age"])
        self.merges = int(state["learner.merges"])
        if "learner.lineage" in state:  # checkpoints from before lineages keep the init's
            self.lineage = bytes(np.asarray(state["learner.lineage"], np.uint8)).decode("ascii", "replace")
        self._own_loss = None
        if self.config.lr_schedule == "age":
            self.optimizer.lr = self.lr_at(self.age)
