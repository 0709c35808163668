"""How much faster does a swarm of K nodes train than one? Per-node images to a target accuracy.

K in-process nodes train in lock step, as K equal machines on a LAN would (equal images/s
per node, so per-node images are wall-clock time). After every ``--chunk`` steps each node
publishes its model and ``--fanout`` random peers pull and absorb it, every exchange through
the daemon's path (``gossipnet.exchange`` via ``gossip_learning.WireLink``: publish -> gate
check -> download check -> gate open -> absorb, with the learner's wire dtype). At checkpoints the swarm's mean test accuracy is measured, and the run records the
per-node images at which it first reaches each ``--targets`` accuracy. The speed-up at K is
(one node's images to the target) / (a node's images in the K-swarm to the target).

Bounded so that K = 16 runs sequentially in one process: each checkpoint evaluates the
swarm on a fixed test subset of ``--eval-images`` images dealt out among the nodes (node i
scores images i, i+K, ...: every image is scored once, the mean over nodes is as precise as
one node on the whole subset), and a run stops at the last target or at
``--max-total-images`` (swarm total) / ``--max-node-images`` (per node).

    nice -n 15 python benchmarks/scaling.py --split iid --ks 1 --out docs/results/scaling-iid.json
    nice -n 15 python benchmarks/scaling.py --split iid --ks 16,4,2 --lr-scale sqrt \
        --max-total-images 48000 --base docs/results/scaling-iid.json --out docs/results/scaling-sqrt-iid.json
    python benchmarks/scaling.py --report docs/results/scaling-iid.json docs/results/scaling-sqrt-*.json \
        --report-targets 0.85 0.88 0.90 0.91 --plot docs/scaling.png --json   # table + plot from saved runs

``--lr-scale sqrt`` gives a K-node swarm sqrt(K) x the preset's rate (the daemon's ``--lr``),
``--lr-schedule age`` the learner's age-decayed rate (the daemon's ``--lr-schedule``).

Results are written at every checkpoint (a run still going is marked "finished": false), so
an interrupted run keeps what it measured; ``--report-targets 0.85 0.90`` reads the images to
any accuracy off the saved curves.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's gossipnet and benchmarks

from benchmarks.gossip_learning import FASHION_DIR, WireLink  # noqa: E402  the daemon's exchange path, one copy
from gossipnet.data import load_dataset, partition  # noqa: E402
from gossipnet.learners.convnet import ConvnetConfig, ConvnetLearner  # noqa: E402
from gossipnet.nn import blas, evaluate, get_preset  # noqa: E402

SPLITS = {"iid": None, "dirichlet": 0.5}


def lr_for(base: float, k: int, rule: str) -> float:
    """The nodes' learning rate under a scaling rule with the swarm's effective batch (K x)."""
    return base * {"none": 1.0, "sqrt": math.sqrt(k), "linear": float(k)}[rule]


def scale_adam_betas(optimizer, scale: float) -> None:
    """Adam's 1 - beta1 and 1 - beta2 times ``scale``: the square-root rule's other half
    (Malladi et al. 2022 scale them with the batch, as the rate by its square root)."""
    if scale == 1.0 or optimizer.kind != "adam":
        return
    b1, b2 = 1 - (1 - optimizer.b1) * scale, 1 - (1 - optimizer.b2) * scale
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise SystemExit(f"--adam-beta-scale {scale} makes Adam's betas {b1:.4g}, {b2:.4g}; "
                         "each must stay in [0, 1): use a smaller scale")
    optimizer.b1, optimizer.b2 = b1, b2


def run_k(data, k: int, args, log, progress=lambda partial: None) -> dict:
    """One swarm of ``k`` nodes until every target is reached or the image cap;
    ``progress`` gets the run so far at every checkpoint (to save it)."""
    preset = get_preset(args.net)
    alpha = SPLITS[args.split]
    parts = partition(data.y_train, k, alpha=alpha, seed=args.seed)
    lr = lr_for(preset.lr, k, args.lr_scale)
    learners = []
    for i, part in enumerate(parts):
        cfg = ConvnetConfig(net=args.net, seed=args.seed * 1000 + i, init_seed=args.seed, lr=lr,
                            eval_images=1, lr_schedule=args.lr_schedule,
                            lr_half_life_images=args.lr_half_life, lr_decay_power=args.lr_decay_power,
                            shared_moments=tuple(args.shared_moments.split(",")) if args.shared_moments else None)
        learners.append(ConvnetLearner(data, part, cfg))
        scale_adam_betas(learners[-1].optimizer, args.adam_beta_scale)
    links = [WireLink(learner) for learner in learners]
    rng = np.random.default_rng((args.seed, k, 7))
    fanout = min(args.fanout, k - 1)
    batch = preset.batch_size
    test = np.random.default_rng(args.seed).permutation(len(data.y_test))[: args.eval_images]
    node_cap = min(args.max_node_images, args.max_total_images // k)
    eval_every = max(batch, int(args.eval_every_total / k))  # per-node images between checkpoints
    targets = sorted(args.targets)
    reached: dict[str, int | None] = {f"{t:.2f}": None for t in targets}
    curve: list[tuple[int, float]] = []
    sent = np.zeros(k, np.int64)  # blob bytes each node served to pullers
    merges = rounds = 0
    node_images = next_eval = 0
    t0 = time.perf_counter()
    train_s = exchange_s = eval_s = 0.0

    def summary(finished: bool = False) -> dict:
        node_s = node_images / args.node_images_per_s  # wall time of a node at the nominal speed
        return {
            "k": k, "split": args.split, "lr": lr, "chunk": args.chunk, "fanout": fanout,
            "lr_schedule": args.lr_schedule, "lr_half_life": args.lr_half_life,
            "lr_decay_power": args.lr_decay_power, "shared_moments": args.shared_moments,
            "adam_beta_scale": args.adam_beta_scale,
            "shard_sizes": [len(p) for p in parts], "node_images_to": dict(reached), "finished": finished,
            "node_images": node_images, "capped": node_images >= node_cap and None in reached.values(),
            "curve": list(curve), "merges": merges, "rejected": sum(l.rejected for l in links),
            "bytes_sent_per_node": float(sent.mean()),
            "bytes_sent_per_node_per_s": float(sent.mean() / node_s) if node_s else 0.0,
            "seconds": {"train": round(train_s, 1), "exchange": round(exchange_s, 1), "eval": round(eval_s, 1)},
        }

    while node_images < node_cap:
        t = time.perf_counter()
        for learner in learners:
            learner.train(args.chunk)
        node_images += args.chunk * batch
        train_s += time.perf_counter() - t
        t = time.perf_counter()
        if fanout:
            rounds += 1
            offers = [link.publish(learner) for link, learner in zip(links, learners)]
            pulls = [(int(dst), src) for src in range(k)
                     for dst in rng.choice([j for j in range(k) if j != src], fanout, replace=False)]
            rng.shuffle(pulls)
            for dst, src in pulls:
                sent[src] += len(offers[src].data)
                merges += links[dst].absorb(learners[dst], offers[src], f"node-{src}")
        exchange_s += time.perf_counter() - t
        if node_images >= next_eval or node_images >= node_cap:
            next_eval = node_images + eval_every
            t = time.perf_counter()
            acc = swarm_accuracy(learners, data, test)
            eval_s += time.perf_counter() - t
            curve.append((node_images, acc))
            for tgt in targets:
                key = f"{tgt:.2f}"
                if reached[key] is None and acc >= tgt:
                    reached[key] = node_images
            log(f"  K={k} {args.split}: {node_images:>7} images/node, swarm mean {100 * acc:5.2f}% "
                f"({time.perf_counter() - t0:.0f} s)")
            progress(summary())
            if all(v is not None for v in reached.values()):
                break
    return summary(finished=True)


def swarm_accuracy(learners, data, test: np.ndarray) -> float:
    """Mean of the nodes' test accuracies, node i scoring test images i, i+K, ... of the subset."""
    k = len(learners)
    correct = 0.0
    for i, learner in enumerate(learners):
        idx = test[i::k]
        if len(idx):
            correct += evaluate(learner.net, data.x_test[idx], data.y_test[idx])["accuracy"] * len(idx)
    return correct / len(test)


def speedups(runs: list[dict], base: dict | None = None) -> None:
    """Fill ``speedup_to`` in each run from the K = 1 run (``base``, or the one in ``runs``).

    One node holds the whole training set whatever the split, so one K = 1 run serves both.
    """
    base = base or next((r for r in runs if r["k"] == 1), None)
    for r in runs:
        r["speedup_to"], r["speedup_below"] = {}, {}
        for key, n in r["node_images_to"].items():
            b = base["node_images_to"].get(key) if base else None
            r["speedup_to"][key] = round(b / n, 2) if b and n else None
            if b and not n and r["node_images"]:  # not reached yet: it can only be later
                r["speedup_below"][key] = round(b / r["node_images"], 2)


def table(runs: list[dict]) -> str:
    keys = sorted({k for r in runs for k in r["node_images_to"]})
    head = ["split", "K", "lr"] + [f"images/node to {float(k):.0%}" for k in keys] + \
        [f"speed-up to {float(k):.0%}" for k in keys] + ["accuracy at the end", "KB sent/node/s", "merges"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(runs, key=lambda r: (r["k"] > 1, r["split"], r["k"])):
        cap = f"not reached by {r['node_images']:,}" + ("" if r.get("finished", True) else " (unfinished)")
        imgs = [f"{r['node_images_to'][k]:,}" if r["node_images_to"][k] else cap for k in keys]
        sp = [f"{r['speedup_to'][k]:.2f}" if r["speedup_to"].get(k) else
              f"< {r['speedup_below'][k]:.2f}" if r.get("speedup_below", {}).get(k) else "-" for k in keys]
        rate = f"{r['lr']:.2g}" + (f" {r['lr_schedule']}" if r.get("lr_schedule", "constant") != "constant" else "")
        split = "either (one node)" if r["k"] == 1 else r["split"]
        end = f"{100 * r['curve'][-1][1]:.2f}% at {r['curve'][-1][0]:,}" if r.get("curve") else "-"
        lines.append("| " + " | ".join([split, str(r["k"]), rate] + imgs + sp +
                                       [end, f"{r['bytes_sent_per_node_per_s'] / 1e3:,.0f}", str(r["merges"])]) + " |")
    return "\n".join(lines)


def plot(runs: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = sorted({r["split"] for r in runs})
    fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 4.2), squeeze=False)
    one = next((r for r in runs if r["k"] == 1), None)  # one node: the same run for every split
    for ax, split in zip(axes[0], splits):
        mine = [r for r in runs if r["split"] == split]
        if one is not None and not any(r["k"] == 1 for r in mine):
            mine.append(one)
        for r in sorted(mine, key=lambda r: r["k"]):
            xs, ys = zip(*r["curve"])
            ax.plot(np.array(xs) / 1e3, 100 * np.array(ys), marker=".", ms=4, label=f"K = {r['k']}")
        for t in (85, 88, 90, 91):
            ax.axhline(t, color="grey", lw=0.6, ls="--")
        ax.set(title=f"{split}: swarm mean test accuracy", xlabel="images per node (thousands)",
               ylabel="accuracy % (dots: checkpoints)", ylim=(60, 93), xlim=(0.8, 300), xscale="log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def first_reached(curve, target: float) -> int | None:
    """Per-node images where the curve first reaches ``target``, interpolated linearly
    between the checkpoints either side (they are 15,000 images apart at K = 1 but
    1,875 at K = 8: the first checkpoint above would favour the larger swarm)."""
    prev = (0, 0.0)
    for n, acc in curve:
        if acc >= target:
            n0, a0 = prev
            return round(n0 + (n - n0) * (target - a0) / (acc - a0)) if acc > a0 else n
        prev = (n, acc)
    return None


def same_setting(a: dict, b: dict) -> bool:
    """Two runs of one swarm: same split, K, rate, schedule and cadence (seeds are fixed)."""
    keys = ("split", "k", "lr", "chunk", "fanout", "shared_moments")
    return all(a.get(k) == b.get(k) for k in keys) and \
        a.get("lr_schedule", "constant") == b.get("lr_schedule", "constant") and \
        a.get("adam_beta_scale", 1.0) == b.get("adam_beta_scale", 1.0)


def merge_curves(a: dict, b: dict) -> dict:
    """The further of two runs of one setting, with the other's checkpoints added to its curve
    (a short run with dense checkpoints refines a long one's early crossings)."""
    long, short = (a, b) if a["node_images"] >= b["node_images"] else (b, a)
    points = dict(map(tuple, short["curve"])) | dict(map(tuple, long["curve"]))
    return {**long, "curve": sorted(points.items()), "runs_merged": long.get("runs_merged", 1) + 1}


def load_runs(paths: list[str], targets: list[float] | None = None) -> list[dict]:
    """Runs from result files (the furthest run of each split and K); with ``targets``,
    images to each target re-read from the curves (so unfinished runs count what they reached)."""
    best: dict[tuple[str, int], dict] = {}
    for p in paths:
        for r in json.loads(Path(p).read_text())["runs"]:
            key = (r["split"], r["k"])
            if key in best and same_setting(best[key], r):
                r = merge_curves(best[key], r)
            elif key in best and r["node_images"] <= best[key]["node_images"]:
                continue
            best[key] = r
    runs = list(best.values())
    if targets:
        for r in runs:
            r["node_images_to"] = {f"{t:.2f}": first_reached(r["curve"], t) for t in targets}
    base = next((r for r in runs if r["k"] == 1), None)
    for split in {r["split"] for r in runs}:
        speedups([r for r in runs if r["split"] == split], base)
    return runs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", choices=sorted(SPLITS), default="iid",
                   help="iid shards, or Dirichlet(0.5) label skew")
    p.add_argument("--ks", default="1,2,4,8,16", help="swarm sizes, run in this order")
    p.add_argument("--net", default="fashion")
    p.add_argument("--chunk", type=int, default=4, help="optimizer steps between gossip rounds")
    p.add_argument("--fanout", type=int, default=2, help="peers that pull each node's model per round")
    p.add_argument("--lr-scale", choices=("none", "sqrt", "linear"), default="none",
                   help="scale the nodes' learning rate with K (the swarm's effective batch)")
    p.add_argument("--lr-schedule", choices=("constant", "age"), default=ConvnetConfig.lr_schedule,
                   help="the learner's rate: constant, or decaying with the model's age (ConvnetConfig)")
    p.add_argument("--lr-half-life", type=float, default=ConvnetConfig.lr_half_life_images,
                   help="age schedule: images at which the rate is half the base")
    p.add_argument("--lr-decay-power", type=float, default=ConvnetConfig.lr_decay_power,
                   help="age schedule: 0.5 is 1/sqrt(age), 1 inverse-time")
    p.add_argument("--shared-moments", default=None,
                   help="optimiser moments that travel with the weights, e.g. 'v' or 'm,v' (default: the learner's)")
    p.add_argument("--adam-beta-scale", type=float, default=1.0,
                   help="Adam's 1 - beta1 and 1 - beta2 times this (e.g. K: the square-root rule's "
                        "other half; no gain at K = 8, docs/RESULTS.md)")
    p.add_argument("--targets", type=float, nargs="+", default=[0.90, 0.91])
    p.add_argument("--eval-images", type=int, default=5000, help="fixed test subset per checkpoint")
    p.add_argument("--eval-every-total", type=int, default=15000,
                   help="swarm images between checkpoints (a node's: this / K)")
    p.add_argument("--max-node-images", type=int, default=360_000, help="cap: 6 epochs of one node")
    p.add_argument("--max-total-images", type=int, default=1_200_000, help="cap on the swarm's total")
    p.add_argument("--node-images-per-s", type=float, default=1000.0,
                   help="a node's nominal speed, to express bytes sent per second")
    p.add_argument("--base", help="a result file whose K = 1 run is the baseline (the same for every split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=str(FASHION_DIR))
    p.add_argument("--out", help="write results (JSON) here after every K")
    p.add_argument("--report", nargs="+", help="print the table from saved result files and exit")
    p.add_argument("--plot", help="with --report: save the accuracy curves here (PNG)")
    p.add_argument("--report-targets", type=float, nargs="+",
                   help="with --report: images to these accuracies, interpolated on the saved curves")
    p.add_argument("--json", action="store_true", help="final line: JSON with every run")
    args = p.parse_args(argv)
    if args.report:
        runs = load_runs(args.report, args.report_targets)
        print(table(runs))
        if args.plot:
            plot(runs, args.plot)
        if args.json:
            print(json.dumps({"runs": [{k: v for k, v in r.items() if k != "curve"} for r in runs]}))
        return 0
    if not blas.user_chose_threads():
        blas.set_threads(1)
    data = load_dataset("fashion-mnist", args.data)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    log(f"{data.name}: {len(data.y_train)} train; split {args.split}; K {args.ks}; chunk {args.chunk}, "
        f"fanout {args.fanout}, lr scale {args.lr_scale}, "
        f"schedule {args.lr_schedule} (half-life {args.lr_half_life:g}, power {args.lr_decay_power:g}), "
        f"shared moments {args.shared_moments or 'default'}, Adam beta scale {args.adam_beta_scale:g}; "
        f"load average {os.getloadavg()[0]:.1f}")
    runs: list[dict] = []

    def save(extra: list[dict]) -> None:
        base = None
        if args.base and Path(args.base).exists():
            base = next((r for r in load_runs([args.base]) if r["k"] == 1), None)
        speedups(runs + extra, base)
        if args.out:
            doc = {"args": vars(args), "load_average": os.getloadavg(), "runs": runs + extra}
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(doc))

    for k in (int(v) for v in args.ks.split(",")):
        runs.append(run_k(data, k, args, log, progress=lambda partial: save([partial])))
        save([])
        log(table(runs))
    print(table(runs))
    if args.json:
        print(json.dumps({"runs": [{k: v for k, v in r.items() if k != "curve"} for r in runs]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
