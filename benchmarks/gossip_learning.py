"""Does gossip learning pay? Nodes on non-IID shards: alone, gossiping, and one central node.

Three arms on the same shards, seeds and shared initial weights:

- ``alone``: every node trains on its own shard only and never merges;
- ``gossip``: after every chunk of ``--chunk`` steps each node announces its model
  to ``--fanout`` random peers, and each of those pulls and absorbs it;
- ``central``: one node trains on the whole training set for as many images as
  the nodes of a swarm train together;
- ``central-wide`` (optional): the same, with ``--nodes`` times the batch and so as
  many steps as one swarm node takes: what perfectly synchronous data-parallel
  training would do, which separates the cost of taking fewer sequential steps
  from the cost of merging by gossip on skewed shards.

The exchange goes through what the daemon runs, ``gossipnet.exchange``:
``ConvnetLearner.snapshot()`` -> ``publish`` (float16, the learner's declared wire dtype) ->
``Gate.check`` -> ``Download`` (size and hash) -> ``Gate.open`` (header, shape and
finiteness checks) -> ``ConvnetLearner.absorb()``. What is left out
is time: every node trains at the same speed, as equal machines on a LAN would, so
every node takes the same number of steps: ``--epochs`` passes over the *mean* shard
(a node with a small shard sees it more often than one with a large shard).

Every arm trains with ``ConvnetLearner``'s default learning-rate schedule (constant, what the
daemon runs) unless ``--age`` (the learner's decay with the model's age) or ``--cosine`` says
otherwise.

    python benchmarks/gossip_learning.py --epochs 2 --chunk 2 --fanout 3 --workers 2 --json

Each node's final accuracy is measured on the full test set (10,000 images for
Fashion-MNIST). Results and the settings tried are in docs/GOSSIP_LEARNING.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's gossipnet

from gossipnet import exchange  # noqa: E402
from gossipnet.data import Dataset, load_dataset, partition  # noqa: E402
from gossipnet.errors import UserError  # noqa: E402
from gossipnet.learners.base import Snapshot  # noqa: E402
from gossipnet.learners.convnet import ConvnetConfig, ConvnetLearner  # noqa: E402
from gossipnet.nn import blas, cosine_lr, get_preset  # noqa: E402
from gossipnet.rejections import Rejection, Rejections  # noqa: E402

FASHION_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fashion-mnist"
ARMS = ("alone", "gossip", "central", "central-wide")
INFLATED_AGE = 1e15  # what issue 12 measured the plain average accepting
POISONS = {  # what the last node does to each snapshot it publishes (weights, age)
    "none": None,
    "signflip": (lambda w: -w, None),
    "x100": (lambda w: 100 * w, None),
    "age": (None, INFLATED_AGE),
    "signflip-age": (lambda w: -w, INFLATED_AGE),  # both lies at once
    # The yardstick for the lies above: the last node keeps its shard but never gossips, so the
    # others are the same swarm without it (a refused liar is no better than an absent node).
    "absent": None,
}


@dataclass(frozen=True)
class Setup:
    """One experiment: how the data is split and how the nodes train and gossip."""

    nodes: int = 4
    alpha: float | None = 0.5  # Dirichlet label skew (None: IID shards)
    epochs: float = 2.0  # passes over the mean shard per node (= over the whole set for the swarm)
    chunk: int = 10  # optimizer steps between gossip rounds
    fanout: int = 1  # peers each node announces its model to per round
    net: str = "tiny"
    merge: str = ConvnetConfig.merge  # "guarded" (the daemon's default), "average" or "clipped"
    clip_radius: float = 1.0
    blob_dtype: str = ConvnetLearner.wire.dtype  # what Node sends
    seed: int = 0
    # The learning-rate schedule, in every arm: "age" is ConvnetLearner's own (what the daemon
    # runs: decay with the model's age), "constant" the preset's rate throughout, "cosine"
    # a decay to ~0 over this run's known length (which the open-ended daemon cannot know).
    schedule: str = ConvnetConfig.lr_schedule
    lr_half_life_images: float = ConvnetConfig.lr_half_life_images
    lr_decay_power: float = ConvnetConfig.lr_decay_power
    momentum_on_absorb: float = 1.0  # ConvnetConfig's: 1 keeps the optimizer momentum on merges
    swarm_lr_scale: float = 1.0  # the nodes' (alone and gossip) rate over the preset's; central keeps 1
    shared_moments: tuple[str, ...] | None = None  # ConvnetConfig's (None: its default, Adam's "v")
    # The last node is a member with valid credentials that lies in every snapshot it sends
    # (it trains and absorbs honestly): see POISONS. "none": an honest swarm.
    poison: str = "none"

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.chunk < 1 or self.fanout < 0:
            raise ValueError(f"need nodes >= 1, chunk >= 1, fanout >= 0 (got {self.nodes}, "
                             f"{self.chunk}, {self.fanout})")
        if not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise ValueError(f"epochs must be a positive number, got {self.epochs}")
        if self.schedule not in ("age", "constant", "cosine"):
            raise ValueError(f"schedule {self.schedule!r} unknown: use age, constant or cosine")
        try:  # the learner's own checks of its schedule and merge settings
            ConvnetConfig(lr_half_life_images=self.lr_half_life_images, lr_decay_power=self.lr_decay_power,
                          momentum_on_absorb=self.momentum_on_absorb)
        except UserError as exc:
            raise ValueError(str(exc)) from None
        if self.poison not in POISONS:
            raise ValueError(f"poison {self.poison!r} unknown: use one of {', '.join(POISONS)}")
        if self.poison != "none" and self.nodes < 2:
            raise ValueError("a poisoned member needs at least one honest node beside it")
        if not (self.swarm_lr_scale > 0 and math.isfinite(self.swarm_lr_scale)):
            raise ValueError(f"the learning-rate scale must be positive, got {self.swarm_lr_scale}")

    def steps_per_node(self, n_train: int) -> int:
        batch = get_preset(self.net).batch_size
        return max(1, math.ceil(self.epochs * n_train / (self.nodes * batch)))


def shards(data: Dataset, setup: Setup) -> list[np.ndarray]:
    return partition(data.y_train, setup.nodes, alpha=setup.alpha, seed=setup.seed)


def make_learner(data: Dataset, indices: np.ndarray | None, setup: Setup, node: int,
                 batch_size: int | None = None, lr: float | None = None) -> ConvnetLearner:
    """A node's learner: its own shuffling seed, the swarm's shared initial weights."""
    cfg = ConvnetConfig(net=setup.net, seed=setup.seed * 1000 + node, init_seed=setup.seed,
                        batch_size=batch_size, lr=lr,
                        lr_schedule="age" if setup.schedule == "age" else "constant",
                        lr_half_life_images=setup.lr_half_life_images, lr_decay_power=setup.lr_decay_power,
                        momentum_on_absorb=setup.momentum_on_absorb, shared_moments=setup.shared_moments,
                        merge=setup.merge, clip_radius=setup.clip_radius,
                        eval_images=len(data.y_test))
    return ConvnetLearner(data, indices, cfg)


class WireLink:
    """One node's end of the exchange, through ``gossipnet.exchange`` as ``Node`` does:
    publish a snapshot; check, download-verify, open and absorb a peer's."""

    def __init__(self, learner: ConvnetLearner, dtype: str | None = None) -> None:
        self.wire = replace(learner.wire, dtype=dtype or learner.wire.dtype)
        self.gate = exchange.Gate(learner.kind, learner.offer_shapes())
        self.rejections = Rejections({"learner": learner.wire.absorb_reasons})
        self.reasons: dict[str, int] = {}  # the learner's verdicts by reason (ok, checked, bad_norm, ...)

    @property
    def rejected(self) -> int:
        return self.rejections.total()

    def publish(self, learner: ConvnetLearner, poison: str = "none") -> exchange.Offer:
        snap = learner.snapshot()
        if POISONS[poison] is not None:
            weights, age = POISONS[poison]
            if weights is not None:  # the weights only: optimiser moments stay honest
                snap = Snapshot(snap.kind, snap.fingerprint, snap.age,
                                {k: v if k.startswith("moment.") else weights(v) for k, v in snap.tensors.items()},
                                snap.meta)
            if age is not None:
                snap = Snapshot(snap.kind, snap.fingerprint, age, snap.tensors, snap.meta)
        offer = exchange.publish(snap, self.wire, learner.step)
        assert offer is not None, "a convnet always has weights to offer"
        return offer

    def absorb(self, learner: ConvnetLearner, offer: exchange.Offer, peer: str) -> bool:
        outcome = self.gate.check(offer.manifest)
        if outcome is None:
            try:
                blob = exchange.Download.whole(offer.manifest, offer.data)
            except exchange.Refused as exc:
                outcome = exc.rejection
            else:
                snapshot = self.gate.open(blob)
                if isinstance(snapshot, Rejection):
                    outcome = snapshot
                else:
                    result = learner.absorb(snapshot, peer)
                    self.reasons[result.reason] = self.reasons.get(result.reason, 0) + 1
                    outcome = None if result.accepted else Rejection("learner", result.reason, result.detail)
        if outcome is not None:
            self.rejections.add(outcome)
        return outcome is None


def run_swarm(data: Dataset, setup: Setup, gossip: bool, log=None,
              parts: list[np.ndarray] | None = None) -> dict[str, object]:
    """Train ``setup.nodes`` learners on their shards, merging through the wire if ``gossip``.

    ``parts`` overrides the Dirichlet shards (one index array per node).
    """
    parts = shards(data, setup) if parts is None else parts
    if len(parts) != setup.nodes:
        raise ValueError(f"{len(parts)} shards for {setup.nodes} nodes")
    lr = get_preset(setup.net).lr * setup.swarm_lr_scale if setup.swarm_lr_scale != 1 else None
    learners = [make_learner(data, part, setup, i, lr=lr) for i, part in enumerate(parts)]
    total = setup.steps_per_node(len(data.y_train))
    if setup.schedule == "cosine":
        for learner in learners:
            _cosine(learner, total)
    links = [WireLink(learner, setup.blob_dtype) for learner in learners]
    rng = np.random.default_rng((setup.seed, 7))
    fanout = min(setup.fanout, setup.nodes - 1)
    t0 = time.perf_counter()
    done = merges = 0
    while done < total:
        steps = min(setup.chunk, total - done)
        for learner in learners:
            learner.train(steps)
        done += steps
        if gossip and fanout > 0:
            offers = [link.publish(learner, setup.poison if i == setup.nodes - 1 else "none")
                      for i, (link, learner) in enumerate(zip(links, learners))]
            members = range(setup.nodes - 1) if setup.poison == "absent" else range(setup.nodes)
            pulls = [(int(dst), src) for src in members
                     for dst in rng.choice([j for j in members if j != src], min(fanout, len(members) - 1),
                                           replace=False)]
            rng.shuffle(pulls)  # arrival order on a LAN is arbitrary
            for dst, src in pulls:
                merges += links[dst].absorb(learners[dst], offers[src], f"node-{src}")
        if log and (done // setup.chunk) % max(1, total // setup.chunk // 10) == 0:
            log(f"  {'gossip' if gossip else 'alone'}: step {done}/{total} ({time.perf_counter() - t0:.0f} s)")
    accs = [learner.evaluate()["test_accuracy"] for learner in learners]
    reasons: dict[str, int] = {}
    for link in links:
        for reason, n in link.reasons.items():
            reasons[reason] = reasons.get(reason, 0) + n
    return {"arm": "gossip" if gossip else "alone", "accuracy": accs,
            # the nodes that never lie (all but the last), comparable with and without --poison
            "honest_accuracy": accs[:-1] if setup.nodes > 1 else accs,
            "absorb_reasons": reasons,
            "consensus_accuracy": consensus_accuracy(data, setup, learners),
            "shard_sizes": [len(p) for p in parts], "steps_per_node": total,
            "images": sum(learner.trainer.images for learner in learners),
            "merges": merges, "rejected": sum(link.rejected for link in links),
            "seconds": round(time.perf_counter() - t0, 1)}


def _cosine(learner: ConvnetLearner, total: int) -> None:
    base = learner.base_lr
    learner.trainer.lr_schedule = lambda step: cosine_lr(base, step, total)


def consensus_accuracy(data: Dataset, setup: Setup, learners: list[ConvnetLearner]) -> float:
    """Test accuracy of the plain average of all nodes' weights: a diagnostic no node holds.

    When it beats every node, the nodes are pulled apart by their own shards between
    merges (client drift), rather than short of what the swarm knows together.
    """
    probe = make_learner(data, np.arange(1), setup, setup.nodes + 1)
    for name, w in probe.net.params().items():
        w[...] = np.mean([learner.net.params()[name] for learner in learners], axis=0)
    return probe.evaluate()["test_accuracy"]


def run_central(data: Dataset, setup: Setup, log=None, wide: bool = False) -> dict[str, object]:
    """One node on all the data, for as many images as the whole swarm trains.

    ``wide``: ``nodes`` times the batch for ``steps_per_node`` steps instead.
    """
    batch = get_preset(setup.net).batch_size * (setup.nodes if wide else 1)
    learner = make_learner(data, None, setup, setup.nodes, batch_size=batch)
    total = setup.steps_per_node(len(data.y_train)) * (1 if wide else setup.nodes)
    if setup.schedule == "cosine":
        _cosine(learner, total)
    t0 = time.perf_counter()
    block = max(1, total // 10)
    for done in range(0, total, block):
        learner.train(min(block, total - done))
        if log:
            log(f"  central{'-wide' if wide else ''}: step {min(done + block, total)}/{total} "
                f"({time.perf_counter() - t0:.0f} s)")
    return {"arm": "central-wide" if wide else "central", "accuracy": [learner.evaluate()["test_accuracy"]],
            "steps_per_node": total, "images": learner.trainer.images,
            "seconds": round(time.perf_counter() - t0, 1)}


def summarise(result: dict[str, object], central: float | None) -> dict[str, object]:
    accs = result["accuracy"]
    out = dict(result, mean=statistics.fmean(accs), min=min(accs))
    if result.get("honest_accuracy"):
        out["honest_mean"] = statistics.fmean(result["honest_accuracy"])
    if central is not None:
        out["gap_mean_to_central"] = central - out["mean"]
        out["gap_min_to_central"] = central - out["min"]
    return out


def subset(data: Dataset, n_train: int, n_test: int, seed: int) -> Dataset:
    """A random, class-mixed subset (the IDX files are not shuffled by class, but be safe)."""
    rng = np.random.default_rng(seed)
    tr = np.sort(rng.permutation(len(data.y_train))[:n_train])
    te = np.sort(rng.permutation(len(data.y_test))[:n_test])
    return Dataset(data.name, data.x_train[tr], data.y_train[tr], data.x_test[te], data.y_test[te], data.classes)


def _load(where: str, quick: bool, train_images: int | None = None) -> Dataset:
    data = load_dataset("embedded") if where == "embedded" else load_dataset("fashion-mnist", where)
    if train_images:  # a smaller training set, the whole test set: cheaper runs, same yardstick
        return subset(data, min(train_images, len(data.y_train)), len(data.y_test), seed=0)
    return subset(data, 6000, 2000, seed=0) if quick else data


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _run(data: Dataset, arm: str, setup: Setup, log=_log) -> dict[str, object]:
    if arm in ("central", "central-wide"):
        r = run_central(data, setup, log, wide=arm == "central-wide")
    else:
        r = run_swarm(data, setup, gossip=arm == "gossip", log=log)
    name = arm if arm != "gossip" else f"gossip {setup.merge} chunk {setup.chunk} fanout {setup.fanout}"
    log(f"{name}: {_fmt(r['accuracy'])} ({r['seconds']} s)")
    return r


def _job(job: tuple[str, bool, int, str, Setup, int | None]) -> dict[str, object]:
    """One arm in a worker process (spawned: it loads the data itself)."""
    where, quick, threads, arm, setup, train_images = job
    if not blas.user_chose_threads():
        blas.set_threads(threads)
    return _run(_load(where, quick, train_images), arm, setup)


def _fmt(accs: list[float]) -> str:
    return " ".join(f"{100 * a:5.2f}" for a in accs)


def _jobs(args: argparse.Namespace) -> list[tuple[str, Setup]]:
    """(arm, setup) pairs in the order they are reported; ValueError on a bad setting."""
    base = Setup(nodes=args.nodes, alpha=args.alpha or None, epochs=args.epochs, net=args.net,
                 seed=args.seed, schedule=args.schedule, lr_half_life_images=args.lr_half_life,
                 lr_decay_power=args.lr_decay_power,
                 momentum_on_absorb=args.momentum_on_absorb, swarm_lr_scale=args.swarm_lr_scale,
                 shared_moments=None if args.shared_moments is None else tuple(args.shared_moments),
                 clip_radius=args.clip_radius, chunk=args.chunk[0], fanout=args.fanout[0],
                 poison=args.poison)
    get_preset(base.net)  # an unknown net fails here, before any data is read
    jobs = [(arm, base) for arm in ("central", "central-wide", "alone") if arm in args.arms]
    if "gossip" in args.arms:
        jobs += [("gossip", replace(base, merge=m, chunk=c, fanout=f))
                 for m in args.merge for c in args.chunk for f in args.fanout]
    if not jobs:
        raise ValueError("no arms to run")
    return jobs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(FASHION_DIR),
                   help="Fashion-MNIST IDX directory, or 'embedded' for the packaged subset")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label skew; 0 for IID shards")
    p.add_argument("--epochs", type=float, default=2.0, help="passes per node over the mean shard")
    p.add_argument("--chunk", type=int, nargs="+", default=[10], help="steps between gossip rounds (several: a sweep)")
    p.add_argument("--fanout", type=int, nargs="+", default=[1], help="peers per announcement (several: a sweep)")
    p.add_argument("--merge", nargs="+", default=[ConvnetConfig.merge], choices=["guarded", "average", "clipped"])
    p.add_argument("--poison", default="none", choices=list(POISONS),
                   help="the last node lies in every snapshot it sends: sign-flipped or x100 weights, "
                        "an age of 1e15, or sign flip and age together; reported: honest_mean over the others")
    p.add_argument("--clip-radius", type=float, default=1.0)
    p.add_argument("--net", default="fashion")
    p.add_argument("--seed", type=int, default=0)
    sched = p.add_mutually_exclusive_group()
    sched.add_argument("--cosine", dest="schedule", action="store_const", const="cosine",
                       default=ConvnetConfig.lr_schedule,
                       help="cosine learning-rate decay to ~0 over the run in every arm "
                            "(default: the learner's own default schedule, as the daemon trains)")
    sched.add_argument("--age", dest="schedule", action="store_const", const="age",
                       help="the learner's decay with age (1/sqrt), in every arm")
    sched.add_argument("--constant", dest="schedule", action="store_const", const="constant",
                       help="the preset's learning rate throughout, in every arm")
    p.add_argument("--lr-half-life", type=float, default=ConvnetConfig.lr_half_life_images,
                   help="images of age at which the learner's rate is half its base (age schedule)")
    p.add_argument("--lr-decay-power", type=float, default=ConvnetConfig.lr_decay_power,
                   help="the age schedule's exponent: 0.5 inverse square root, 1 inverse time")
    p.add_argument("--momentum-on-absorb", type=float, default=1.0,
                   help="multiply the optimizer's momentum by this on every merge (0 resets it)")
    p.add_argument("--shared-moments", nargs="*", choices=["m", "v", "velocity"],
                   help="optimiser moments merged along with the weights (default: the learner's, "
                        "Adam's v; give the flag alone for none)")
    p.add_argument("--swarm-lr-scale", type=float, default=1.0,
                   help="multiply the nodes' learning rate (alone and gossip arms; central keeps the preset's)")
    p.add_argument("--arms", nargs="+", default=["central", "alone", "gossip"], choices=ARMS)
    p.add_argument("--quick", action="store_true", help="6,000 training and 2,000 test images: a smoke run")
    p.add_argument("--train-images", type=int, default=None,
                   help="train on a random subset of this many images (the whole test set is kept)")
    p.add_argument("--blas-threads", type=int, default=1,
                   help="OpenBLAS threads (1 is fastest on a shared machine, see gossipnet/nn/blas.py)")
    p.add_argument("--workers", type=int, default=1, help="arms run side by side in this many processes")
    p.add_argument("--json", action="store_true", help="print the results as one JSON line at the end")
    args = p.parse_args(argv)

    if args.workers < 1 or args.blas_threads < 1:
        p.error("--workers and --blas-threads must be at least 1")
    if not blas.user_chose_threads():
        blas.set_threads(args.blas_threads)
    try:
        jobs = _jobs(args)
    except (ValueError, UserError) as exc:
        p.error(str(exc))
    try:
        data = _load(args.data, args.quick, args.train_images)
        shards(data, jobs[0][1])  # a bad --alpha or too many --nodes fail here, not in a worker
    except UserError as exc:
        p.error(str(exc))
    base = jobs[0][1]
    _log(f"{data.name}: {len(data.y_train)} train, {len(data.y_test)} test; {base.nodes} nodes, "
         f"alpha {base.alpha}, {base.steps_per_node(len(data.y_train))} steps per node, net {base.net}")
    if args.workers > 1:
        # Arms are independent given their seeds: run them side by side, one process each.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
            raw = list(pool.map(_job, [(args.data, args.quick, args.blas_threads, arm, s, args.train_images)
                                       for arm, s in jobs]))
    else:
        raw = [_run(data, arm, s) for arm, s in jobs]
    central = next((r["accuracy"][0] for r in raw if r["arm"] == "central"), None)
    results = [dict(summarise(r, central), setup=asdict(s)) for r, (_, s) in zip(raw, jobs)]

    print(f"{'arm':<34} {'per-node test accuracy %':<30} {'mean':>6} {'min':>6} {'gap':>6} {'avg-model':>9}"
          f" {'honest':>6}")
    for r in results:
        s = r["setup"]
        name = r["arm"] if r["arm"] != "gossip" else f"gossip {s['merge']} chunk {s['chunk']} fanout {s['fanout']}"
        gap = f"{100 * r['gap_mean_to_central']:6.2f}" if "gap_mean_to_central" in r else f"{'':>6}"
        avg = f"{100 * r['consensus_accuracy']:9.2f}" if "consensus_accuracy" in r else f"{'':>9}"
        honest = f"{100 * r['honest_mean']:6.2f}" if "honest_mean" in r else f"{'':>6}"
        print(f"{name:<34} {_fmt(r['accuracy']):<30} {100 * r['mean']:6.2f} {100 * r['min']:6.2f} {gap} {avg} {honest}")
        if r.get("absorb_reasons"):
            print(f"{'':<34} absorbs: {r['absorb_reasons']}")
    if args.json:
        print(json.dumps({"args": vars(args), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
