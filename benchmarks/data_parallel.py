"""How a data-parallel step is driven, side by side: what each choice of
``nn.parallel.DataParallel`` is worth on this machine.

In one process, interleaved in short windows: the one-core step, and the all-cores step
driven three ways, each with its own workers:

* ``run``: ``DataParallel.run`` (three steps in flight), the batch split by the workers'
  measured speeds: what ``Trainer.train`` does;
* ``run, even split``: the same with ``balance=False``;
* ``step``: one ``DataParallel.step`` call per batch, the parent waiting for each.

Each all-cores window is divided by the mean of the one-core windows just before and after
it, so a host that speeds up or slows down over the run moves both sides of the ratio; the
medians of these ratios are printed (the machine may be shared: only they mean anything).
Beside them, each driver's mean spread of the workers' compute times per step: what the
first worker at the first barrier waited, which the split exists to shrink.

    python benchmarks/data_parallel.py                      # CIFAR net, batch 32, every core
    python benchmarks/data_parallel.py --rounds 50 --json   # final line: JSON with the medians
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads: one BLAS thread per process, as a node runs

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's gossipnet

from benchmarks.timing import images_per_s  # noqa: E402
from gossipnet.nn import SGD, Net, blas, get_preset, heap  # noqa: E402
from gossipnet.nn.parallel import DataParallel, available_cores  # noqa: E402


def barrier_wait(dp: DataParallel) -> float | None:
    """The last step's slowest worker's compute seconds less the fastest's: what the first
    to reach the first barrier waited there. None with fewer than two workers computing."""
    busy = [t for t in dp.last_busy if t > 0]
    return max(busy) - min(busy) if len(busy) > 1 else None


def mean_ms(waits: list[float | None]) -> float | None:
    """The mean of the steps' waits in ms, None if no step had two workers computing."""
    known = [w for w in waits if w is not None]
    return round(float(np.mean(known)) * 1e3, 3) if known else None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--net", default="convnetjs-cifar10")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--cores", type=int, default=None, help="workers (default: every core available)")
    p.add_argument("--rounds", type=int, default=30, help="interleaved rounds; medians reported")
    p.add_argument("--seconds", type=float, default=0.4, help="timed work per window")
    p.add_argument("--json", action="store_true", help="final line: JSON with every median")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.batch < 2 or args.rounds < 1 or args.seconds <= 0:
        print("--batch must be >= 2, --rounds >= 1 and --seconds > 0", file=sys.stderr)
        return 2
    cores = args.cores or available_cores()
    blas.set_threads(1)
    heap.keep_freed_memory()  # as Trainer does for every training process (nn/heap.py)
    preset = get_preset(args.net)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((args.batch, *preset.input_shape)).astype(np.float32)
    y = rng.integers(0, preset.spec[-1]["classes"], args.batch).astype(np.int64)

    net = Net(preset.spec, preset.input_shape, seed=0)
    opt = SGD(net.params(), lr=0.001, momentum=0.9)

    def one_core(n):
        for _ in range(n):
            net.loss_and_grads(x, y)
            opt.step(net.grads())

    counter = itertools.count()
    drivers = {}
    ratios, one = {}, []
    spreads: dict[str, list[float]] = {}  # per step: slowest worker's compute seconds - fastest's
    # on the way out, also after an error: each session's end, then its workers'
    with contextlib.ExitStack() as workers:
        for name, balance, pipelined in (("run", True, True), ("run, even split", False, True),
                                         ("step", True, False)):
            dnet = Net(preset.spec, preset.input_shape, seed=0)
            dopt = SGD(dnet.params(), lr=0.001, momentum=0.9)
            dp = DataParallel(dnet, cores, args.batch, balance=balance)
            workers.callback(dp.close)
            workers.enter_context(dp.session(dopt))

            def steps(n, dp=dp, dopt=dopt, pipelined=pipelined, spread=spreads.setdefault(name, [])):
                if pipelined:
                    for _ in dp.run(((x, y, 0, next(counter)) for _ in range(n)), dopt):
                        spread.append(barrier_wait(dp))
                else:
                    for _ in range(n):
                        dp.step(x, y, 0, next(counter), dopt)
                        spread.append(barrier_wait(dp))

            drivers[name] = steps
            ratios[name] = []
        print(f"{preset.name}, batch {args.batch}, {cores} cores, {args.rounds} rounds of "
              f"{args.seconds} s windows, load average {os.getloadavg()[0]:.1f}", flush=True)
        before = images_per_s(one_core, args.batch, args.seconds)
        for r in range(args.rounds):
            order = list(drivers) if r % 2 == 0 else list(reversed(drivers))
            for name in order:
                rate = images_per_s(drivers[name], args.batch, args.seconds)
                after = images_per_s(one_core, args.batch, args.seconds)
                ratios[name].append(rate / ((before + after) / 2))
                one.append(after)
                before = after
    out = {"net": preset.name, "batch": args.batch, "cores": cores, "rounds": args.rounds,
           "one_core_images_per_s": round(float(np.median(one)), 1),
           "over_one_core": {name: round(float(np.median(v)), 3) for name, v in ratios.items()},
           "quartiles": {name: [round(float(np.percentile(v, q)), 3) for q in (25, 75)]
                         for name, v in ratios.items()},
           # the mean over every step of the slowest worker's compute time less the fastest's
           # (None with one worker: no barrier)
           "barrier_wait_ms": {name: mean_ms(v) for name, v in spreads.items()},
           "load_average": round(os.getloadavg()[0], 2)}
    print(f"  one core: {out['one_core_images_per_s']:.0f} images/s (median)")
    for name, med in out["over_one_core"].items():
        q1, q3 = out["quartiles"][name]
        wait = out["barrier_wait_ms"][name]
        print(f"  {name:<16} {med:.3f}x one core   (quartiles {q1:.3f} {q3:.3f}); "
              + ("one worker, no barrier" if wait is None else f"first barrier's wait {wait:.3f} ms a step"))
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
