"""Does dropout ease recombining separately trained nets? Plain averaging vs weight matching.

Parents are trained on Fashion-MNIST from a shared or an independent initialisation, on
the same data in a different order or on disjoint label-skewed shards, with dropout
0 / 0.1 / 0.25 / 0.5 or a control regulariser (early stopping of the dropout-0 run,
picked so the parents' accuracy equals the dropout-0.5 parents'). Each pair is merged
along the interpolation path (11 points) by plain averaging, after weight matching, and
after matching + REPAIR; groups of 4 and 8 independent nets are merged at their mean.

Trained parents are cached on disk (``--cache``, safetensors via ``nn.state``) and shared
by every cell that uses them; results are appended as JSON lines to ``<cache>/results.jsonl``
as each cell finishes, so an interrupted run loses at most one cell and a re-run skips the
cells already done. ``--report`` prints the tables (mean and 95% t-interval over seeds).

    nice -n 10 python benchmarks/recombination.py --preset mlp --seeds 5
    nice -n 10 python benchmarks/recombination.py --preset fashion --seeds 5 --train-limit 20000
    python benchmarks/recombination.py --report            # markdown tables
    python benchmarks/recombination.py --match-speed --json  # matching cost, 1 MB models

What was run and cut is in docs/RECOMBINATION.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's gossipnet

from gossipnet.data import load_dataset, partition  # noqa: E402
from gossipnet.nn import Net, Trainer, blas, evaluate, get_preset, make_optimizer  # noqa: E402
from gossipnet.nn.state import load_state, save_state  # noqa: E402
from gossipnet.rebasin import (  # noqa: E402
    align, apply_permutation, match_many, merge_aligned, permutation_spec, repair, unit_statistics,
)
from gossipnet.rebasin.permutations import random_permutations  # noqa: E402

DATA_CANDIDATES = [Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fashion-mnist",
                   Path("/work/shared/datasets/fashion-mnist")]
DROPOUTS = (0.0, 0.1, 0.25, 0.5)
ALPHAS = tuple(i / 10 for i in range(11))
EARLY_FRACTIONS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)  # checkpoints of dropout-0 runs
SHARD_ALPHA = 0.3  # Dirichlet label skew of the disjoint shards (Hsu et al. 2019)
REPAIR_IMAGES = 500  # unlabelled images from parent A's own data: the node's sample
METHODS = ("average", "match", "match+repair")


@dataclass(frozen=True)
class Parent:
    """Everything that decides a trained parent: its cache key."""

    preset: str
    dropout: float
    init_seed: int
    order_seed: int
    shard: int  # -1: the whole training set; else this shard of ``shards``
    shards: int
    epochs: float
    train_limit: int
    fraction: float = 1.0  # < 1: an early-stopped checkpoint of the same run
    weight_decay: float = 0.0  # L2 (the second control); 0 keeps the preset's

    def key(self) -> str:
        fields = asdict(self)
        if not fields["weight_decay"]:
            del fields["weight_decay"]  # keys of runs cached before the L2 control existed
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


def spec_with_dropout(preset_name: str, rate: float) -> list[dict]:
    """The preset's spec with every dropout layer at ``rate``; an MLP gets one after each
    hidden ReLU. Dropout has no parameters, so names and shapes do not change."""
    preset = get_preset(preset_name)
    out = []
    has_dropout = any(d["type"] == "dropout" for d in preset.spec)
    for d in preset.spec:
        if d["type"] == "dropout":
            out.append({"type": "dropout", "rate": rate})
        else:
            out.append(dict(d))
            if d["type"] == "relu" and not has_dropout and out[-2]["type"] == "fc":
                out.append({"type": "dropout", "rate": rate})
    return out


class Lab:
    """Data, the parent cache and the evaluation sets of one run."""

    def __init__(self, args):
        self.args = args
        self.cache = Path(args.cache)
        self.cache.mkdir(parents=True, exist_ok=True)
        data_dir = args.data_dir or next((p for p in DATA_CANDIDATES if p.exists()), None)
        self.ds = load_dataset("fashion-mnist", data_dir)
        limit = args.train_limit or len(self.ds.y_train)
        self.x, self.y = self.ds.x_train[:limit], self.ds.y_train[:limit]
        self.x_test, self.y_test = self.ds.x_test, self.ds.y_test
        n_path = args.path_images
        self.x_path, self.y_path = self.x_test[:n_path], self.y_test[:n_path]
        self._nets: dict[str, Net] = {}

    def net(self, preset: str) -> Net:
        if preset not in self._nets:
            p = get_preset(preset)
            self._nets[preset] = Net(p.spec, p.input_shape)
        return self._nets[preset]

    def indices(self, parent: Parent) -> np.ndarray:
        if parent.shard < 0:
            return np.arange(len(self.y))
        return partition(self.y, parent.shards, alpha=SHARD_ALPHA, seed=1234)[parent.shard]

    def parent(self, p: Parent) -> tuple[dict[str, np.ndarray], float]:
        """(weights, test accuracy on the full test set), trained now or read from the cache."""
        path = self.cache / f"{p.key()}.safetensors"
        if path.exists():
            tensors, meta = load_state(path)
            return tensors, float(meta["test_accuracy"])
        self.train(p)
        tensors, meta = load_state(path)
        return tensors, float(meta["test_accuracy"])

    def train(self, p: Parent) -> None:
        """Train the full run of ``p`` (fraction 1), saving the early-stop checkpoints a
        dropout-0 run provides for the control."""
        preset = get_preset(p.preset)
        net = Net(spec_with_dropout(p.preset, p.dropout), preset.input_shape, seed=p.init_seed)
        opt = make_optimizer(preset.optimizer, net.params(), preset.lr,
                             p.weight_decay or preset.weight_decay, preset.momentum)
        trainer = Trainer(net, opt, preset.batch_size, seed=p.order_seed)
        idx = self.indices(p)
        x, y = self.x[idx], self.y[idx]
        total = max(1, round(p.epochs * len(x) / preset.batch_size))
        fractions = self.args.early_fractions if p.dropout == 0 and not p.weight_decay else (1.0,)
        t0 = time.perf_counter()
        for frac in fractions:
            target = max(1, round(frac * total))
            if target > trainer.step:
                trainer.train(x, y, target - trainer.step)
            acc = evaluate(net, self.x_test, self.y_test)["accuracy"]
            q = Parent(**{**asdict(p), "fraction": frac})
            save_state(self.cache / f"{q.key()}.safetensors", net.state_dict(),
                       {"test_accuracy": acc, "parent": asdict(q), "steps": trainer.step})
        log(f"  trained {p.preset} d{p.dropout} l2 {p.weight_decay:g} init {p.init_seed} order {p.order_seed} "
            f"shard {p.shard}/{p.shards}: {acc:.4f} in {time.perf_counter() - t0:.0f} s")

    def accuracy(self, preset: str, params, x=None, y=None) -> float:
        net = self.net(preset)
        net.load_state_dict(params)
        x = self.x_test if x is None else x
        y = self.y_test if y is None else y
        return evaluate(net, x, y)["accuracy"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of a 95% Student-t interval (0 for one value)."""
    from scipy import stats

    m = statistics.fmean(values)
    if len(values) < 2:
        return m, 0.0
    return m, float(stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values)))


# ---- cells ------------------------------------------------------------------------------------

def pair_parents(args, preset: str, dropout: float, data: str, init: str, seed: int,
                 fraction: float = 1.0, weight_decay: float = 0.0) -> tuple[Parent, Parent]:
    """Parent A and B of pair ``seed``. A is shared by the shared- and independent-init cells;
    B shares A's init (shared) or has its own (independent); both use their own order."""
    shards = 2 if data == "shards" else 1
    base = dict(preset=preset, dropout=dropout, shards=shards, epochs=args.epochs,
                train_limit=args.train_limit or 0, fraction=fraction, weight_decay=weight_decay)
    init_a = 1000 + 2 * seed
    a = Parent(init_seed=init_a, order_seed=2 * seed, shard=0 if shards > 1 else -1, **base)
    b = Parent(init_seed=init_a if init == "shared" else init_a + 1, order_seed=2 * seed + 1,
               shard=1 if shards > 1 else -1, **base)
    return a, b


def merge_path(lab: Lab, preset: str, a, b, x_repair) -> dict[str, list[float]]:
    """Accuracy on the path images at each alpha, per method."""
    net = lab.net(preset)
    spec = permutation_spec(net)
    t0 = time.perf_counter()
    b_aligned = align(spec, a, b)
    match_s = time.perf_counter() - t0
    stats = [unit_statistics(net, p, x_repair, spec) for p in (a, b_aligned)]
    out: dict[str, list[float]] = {m: [] for m in METHODS}
    merged_full: dict[str, float] = {}
    for alpha in ALPHAS:
        shares = [1 - alpha, alpha]
        plain = merge_aligned([a, b], shares)
        matched = merge_aligned([a, b_aligned], shares)
        fixed = repair(net, matched, [a, b_aligned], x_repair, spec, shares, parent_stats=stats)
        for m, w in zip(METHODS, (plain, matched, fixed)):
            out[m].append(lab.accuracy(preset, w, lab.x_path, lab.y_path))
            if alpha == 0.5:
                merged_full[m] = lab.accuracy(preset, w)
    return {"path": out, "merged": merged_full, "match_seconds": match_s}


def barrier(path: list[float]) -> float:
    """Largest drop below the straight line between the endpoints' accuracies (points)."""
    a0, a1 = path[0], path[-1]
    return max((1 - t) * a0 + t * a1 - acc for t, acc in zip(ALPHAS, path)) * 100


def run_pair_cell(lab: Lab, args, preset, reg, data, init, seed, done) -> None:
    cell = {"kind": "pair", "preset": preset, "reg": reg, "data": data, "init": init, "seed": seed,
            "epochs": args.epochs, "train_limit": args.train_limit or 0}
    cid = json.dumps(cell, sort_keys=True)
    if cid in done:
        return
    if reg == "early":
        fraction = early_fraction(lab, args, preset, data, init)
        a_p, b_p = pair_parents(args, preset, 0.0, data, init, seed, fraction)
        cell["fraction"] = fraction
    elif reg == "l2":
        decay = l2_decay(lab, args, preset, data, init)
        a_p, b_p = pair_parents(args, preset, 0.0, data, init, seed, weight_decay=decay)
        cell["weight_decay"] = decay
    else:
        a_p, b_p = pair_parents(args, preset, float(reg), data, init, seed)
    a, acc_a = lab.parent(a_p)
    b, acc_b = lab.parent(b_p)
    x_repair = lab.x[lab.indices(a_p)][:REPAIR_IMAGES]
    t0 = time.perf_counter()
    res = merge_path(lab, preset, a, b, x_repair)
    row = {**cell, "parents": [acc_a, acc_b], "parent_mean": (acc_a + acc_b) / 2,
           "merged": res["merged"], "barrier": {m: barrier(p) for m, p in res["path"].items()},
           "path": res["path"], "match_seconds": res["match_seconds"],
           "cell_seconds": time.perf_counter() - t0}
    record(lab, cid, row, done)
    gaps = {m: round(100 * (row["parent_mean"] - v), 2) for m, v in row["merged"].items()}
    log(f"pair {preset} {reg} {data} {init} seed {seed}: parents {row['parent_mean']:.4f}, "
        f"gap to merged (points) {gaps}, barrier {dict((m, round(v, 2)) for m, v in row['barrier'].items())}")


def early_fraction(lab: Lab, args, preset: str, data: str, init: str) -> float:
    """The early-stop checkpoint of the dropout-0 runs whose parents' mean accuracy is
    closest to the dropout-0.5 parents' (over the seeds run): the accuracy-matched control."""
    target = []
    for seed in range(args.seeds):
        for p in pair_parents(args, preset, 0.5, data, init, seed):
            target.append(lab.parent(p)[1])
    goal = statistics.fmean(target)
    best, best_gap = 1.0, math.inf
    for frac in args.early_fractions:
        accs = []
        for seed in range(args.seeds):
            for p in pair_parents(args, preset, 0.0, data, init, seed, frac):
                accs.append(lab.parent(p)[1])
        gap = abs(statistics.fmean(accs) - goal)
        if gap < best_gap:
            best, best_gap = frac, gap
    return best


_L2_CHOICE: dict = {}


def l2_decay(lab: Lab, args, preset: str, data: str, init: str) -> float:
    """The L2 coefficient (from ``--l2-grid``) whose parent (pair 0's A, one run per value)
    comes closest to the dropout-0.5 parents' mean accuracy: the second accuracy-matched
    control, which unlike early stopping trains for as many steps as dropout."""
    key = (preset, data)
    if key not in _L2_CHOICE:
        goal = statistics.fmean(lab.parent(p)[1] for seed in range(args.seeds)
                                for p in pair_parents(args, preset, 0.5, data, init, seed))
        tried = {}
        for decay in args.l2_grid:
            a, _ = pair_parents(args, preset, 0.0, data, init, 0, weight_decay=decay)
            tried[decay] = lab.parent(a)[1]
        _L2_CHOICE[key] = min(tried, key=lambda d: abs(tried[d] - goal))
        log(f"L2 control for {preset} {data}: dropout-0.5 parents {goal:.4f}; tried {tried}; "
            f"chose {_L2_CHOICE[key]:g}")
    return _L2_CHOICE[key]


def run_group_cell(lab: Lab, args, preset, reg, k, seed, done) -> None:
    """k independently initialised parents on the whole training set, merged at their mean.
    The pool is the 2 * seeds independent parents of the pair cells (plus more if k needs
    them); group ``seed`` takes k of them starting at a rotating offset."""
    cell = {"kind": "group", "preset": preset, "reg": reg, "k": k, "seed": seed,
            "epochs": args.epochs, "train_limit": args.train_limit or 0}
    cid = json.dumps(cell, sort_keys=True)
    if cid in done:
        return
    pool = []
    for s in range(max(args.seeds, math.ceil(k / 2))):
        pool += list(pair_parents(args, preset, float(reg), "same", "independent", s))
    chosen = [pool[(seed * k + i) % len(pool)] for i in range(k)]
    loaded = [lab.parent(p) for p in chosen]
    models = [w for w, _ in loaded]
    accs = [acc for _, acc in loaded]
    net = lab.net(preset)
    spec = permutation_spec(net)
    x_repair = lab.x[:REPAIR_IMAGES]
    t0 = time.perf_counter()
    aligned = match_many(spec, models, seed=seed)
    match_s = time.perf_counter() - t0
    matched = merge_aligned(aligned)
    fixed = repair(net, matched, aligned, x_repair, spec)
    merged = {m: lab.accuracy(preset, w) for m, w in
              zip(METHODS, (merge_aligned(models), matched, fixed))}
    row = {**cell, "parents": accs, "parent_mean": statistics.fmean(accs), "merged": merged,
           "match_seconds": match_s, "members": [asdict(p) for p in chosen]}
    record(lab, cid, row, done)
    log(f"group {preset} {reg} k={k} seed {seed}: parents {row['parent_mean']:.4f}, merged "
        f"{dict((m, round(v, 4)) for m, v in merged.items())}, matching {match_s:.1f} s")


def record(lab: Lab, cid: str, row: dict, done: dict) -> None:
    done[cid] = row
    with open(lab.cache / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def load_done(cache: Path) -> dict:
    done = {}
    path = cache / "results.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            keys = ("kind", "preset", "reg", "data", "init", "seed", "epochs", "train_limit") \
                if row["kind"] == "pair" else ("kind", "preset", "reg", "k", "seed", "epochs", "train_limit")
            done[json.dumps({k: row[k] for k in keys}, sort_keys=True)] = row
    return done


# ---- matching speed -------------------------------------------------------------------------

def match_speed(args) -> dict:
    """CPU seconds (one BLAS thread, so one core) to weight-match two independently
    initialised nets of the 1 MB MLP preset and of the convnet preset; median of
    ``repeats``. CPU time, not wall time, because the machine is shared: wall time
    measures the neighbours. Untrained weights need more sweeps than trained ones."""
    from gossipnet.rebasin import weight_matching

    out = {}
    for name in ("mlp", "fashion"):
        p = get_preset(name)
        net = Net(p.spec, p.input_shape)
        spec = permutation_spec(net)
        a = Net(p.spec, p.input_shape, seed=1).state_dict()
        b = apply_permutation(spec, random_permutations(spec, np.random.default_rng(0)),
                              Net(p.spec, p.input_shape, seed=2).state_dict())
        cpu, wall = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            weight_matching(spec, a, b)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - t0)
        out[name] = {"megabytes": round(net.num_params * 4 / 1e6, 3),
                     "median_cpu_seconds": round(statistics.median(cpu), 4),
                     "max_cpu_seconds": round(max(cpu), 4),
                     "median_wall_seconds": round(statistics.median(wall), 4)}
        print(f"weight matching {name:<8} {out[name]['megabytes']:.2f} MB: median "
              f"{out[name]['median_cpu_seconds']:.3f} CPU s on one core (max "
              f"{out[name]['max_cpu_seconds']:.3f}; wall {out[name]['median_wall_seconds']:.3f} s) "
              f"over {args.repeats}; target < 1 s for 1 MB")
        # what a daemon merge across lineages adds: activation matching on 256 of the node's
        # images plus REPAIR of the merged model (gossipnet/rebasin/lineage.py)
        from gossipnet.rebasin.lineage import Realigner

        x = np.random.default_rng(0).standard_normal((256, *p.input_shape)).astype(np.float32)
        realigner = Realigner(net, x, "activations", use_repair=True)
        cpu = []
        for _ in range(args.repeats):
            c0 = time.process_time()
            perms = realigner.find(a, b)
            b_al = apply_permutation(spec, perms, b)
            realigner.repaired(merge_aligned([a, b_al]), a, b_al, 0.5)
            cpu.append(time.process_time() - c0)
        out[name]["daemon_realign_cpu_seconds"] = round(statistics.median(cpu), 4)
        print(f"daemon realign  {name:<8} activations on 256 images + REPAIR: median "
              f"{statistics.median(cpu):.3f} CPU s per merge")
    return out


# ---- report ---------------------------------------------------------------------------------

def fmt(values: list[float], scale: float = 100.0) -> str:
    m, h = mean_ci([v * scale for v in values])
    return f"{m:.1f} ± {h:.1f}"


def _setting(r: dict) -> str:
    images = r["train_limit"] or 60000
    return f"{r['preset']}, parents trained on {images:,} images x {r['epochs']:g} epochs"


def report(cache: Path) -> str:
    """Markdown tables: mean ± 95% t-interval over seeds; gap = parents' mean - merged."""
    rows = list(load_done(cache).values())
    lines = []
    pairs = [r for r in rows if r["kind"] == "pair"]
    for setting in sorted({_setting(r) for r in pairs}):
        lines.append(f"\n### Pairs: {setting}\n")
        lines.append("| data | init | reg | n | parents | average | avg barrier | match | match barrier "
                     "| match+REPAIR | gap | REPAIR barrier |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        sel_rows = [r for r in pairs if _setting(r) == setting]
        keys = sorted({(r["data"], r["init"], str(r["reg"])) for r in sel_rows})
        for data, init, reg in keys:
            sel = [r for r in sel_rows if r["data"] == data and r["init"] == init and str(r["reg"]) == reg]
            cells = [fmt([r["parent_mean"] for r in sel])]
            for m in METHODS:
                cells.append(fmt([r["merged"][m] for r in sel]))
                if m == METHODS[-1]:
                    cells.append(fmt([r["parent_mean"] - r["merged"][m] for r in sel]))
                cells.append(fmt([r["barrier"][m] for r in sel], 1.0))
            label = (f"early stop at {sel[0].get('fraction')}" if reg == "early"
                     else f"L2 {sel[0].get('weight_decay'):g}" if reg == "l2" else f"dropout {reg}")
            lines.append(f"| {data} | {init} | {label} | {len(sel)} | " + " | ".join(cells) + " |")
    groups = [r for r in rows if r["kind"] == "group"]
    for setting in sorted({_setting(r) for r in groups}):
        lines.append(f"\n### Groups of independently initialised nets: {setting}\n")
        lines.append("| k | reg | n | parents | average | match (MergeMany) | match+REPAIR | gap "
                     "| MergeMany wall s |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        sel_rows = [r for r in groups if _setting(r) == setting]
        for k, reg in sorted({(r["k"], str(r["reg"])) for r in sel_rows}):
            sel = [r for r in sel_rows if r["k"] == k and str(r["reg"]) == reg]
            lines.append(f"| {k} | dropout {reg} | {len(sel)} | {fmt([r['parent_mean'] for r in sel])} | "
                         + " | ".join(fmt([r["merged"][m] for r in sel]) for m in METHODS)
                         + f" | {fmt([r['parent_mean'] - r['merged'][METHODS[-1]] for r in sel])}"
                         + f" | {statistics.median(r['match_seconds'] for r in sel):.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="mlp")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--train-limit", type=int, default=0, help="first N training images (0: all)")
    ap.add_argument("--path-images", type=int, default=2000, help="test images per path point")
    ap.add_argument("--dropouts", default=",".join(str(d) for d in DROPOUTS))
    ap.add_argument("--data", default="same,shards")
    ap.add_argument("--inits", default="independent,shared")
    ap.add_argument("--groups", default="4,8", help="group sizes (independent init, same data)")
    ap.add_argument("--group-regs", default="0.0,0.5")
    ap.add_argument("--control", action="store_true", help="add the early-stopping control")
    ap.add_argument("--l2-control", action="store_true", help="add the L2 control")
    ap.add_argument("--l2-grid", default="0.001,0.003,0.01,0.03,0.1",
                    help="L2 coefficients tried for the control")
    ap.add_argument("--early-fractions", default=",".join(map(str, EARLY_FRACTIONS)),
                    help="where dropout-0 runs save early-stop checkpoints (fractions of the run)")
    ap.add_argument("--only", default="", help="'pairs' or 'groups'")
    ap.add_argument("--cache", default="/tmp/gossipnet-recombination")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--match-speed", action="store_true")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    args.early_fractions = tuple(float(f) for f in args.early_fractions.split(","))
    args.l2_grid = tuple(float(f) for f in args.l2_grid.split(","))
    if args.early_fractions[-1] != 1.0:
        ap.error("--early-fractions must end with 1.0 (the full run)")
    if not blas.user_chose_threads():
        blas.set_threads(1)
    if args.match_speed:
        out = match_speed(args)
        if args.json:
            print(json.dumps({"match_speed": out}))
        return 0
    if args.report:
        print(report(Path(args.cache)))
        return 0
    lab = Lab(args)
    done = load_done(lab.cache)
    dropouts = [float(d) for d in args.dropouts.split(",") if d]
    regs: list = ([str(d) for d in dropouts] + (["early"] if args.control else [])
                  + (["l2"] if args.l2_control else []))
    if args.only != "groups":
        for data in args.data.split(","):
            for reg in regs:
                for init in args.inits.split(","):
                    for seed in range(args.seeds):
                        run_pair_cell(lab, args, args.preset, reg, data, init, seed, done)
    if args.only != "pairs":
        for reg in args.group_regs.split(","):
            for k in [int(v) for v in args.groups.split(",") if v]:
                for seed in range(args.seeds):
                    run_group_cell(lab, args, args.preset, str(float(reg)), k, seed, done)
    if args.json:
        print(json.dumps({"results": list(done.values())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
