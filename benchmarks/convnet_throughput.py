"""Training throughput of the numpy engine against PyTorch on CPU, side by side.

Trains convnet.js's CIFAR-10 net (32x32x3, random data) with gossipnet.nn and, when
torch imports, the identical net in PyTorch (same weights, same SGD+momentum, same
thread count), interleaved and repeated, and prints median images/s per batch size
and the ratio numpy / torch. The machine may be shared: only medians of interleaved
runs and their ratios mean anything.

    python benchmarks/convnet_throughput.py                 # 2 threads, batch 1 4 32 128
    python benchmarks/convnet_throughput.py --threads 1 --json
    python benchmarks/convnet_throughput.py --profile       # per-layer time, numpy, batch 32

Then, at batch 32, the whole machine: numpy on one core (one BLAS thread) and on every
core (``nn.parallel.DataParallel``: one worker process per core, one BLAS thread each),
against PyTorch at each thread count from 1 to the core count, interleaved; the final
JSON line holds ``core_scaling`` (numpy all cores / one core), ``single_core_ratio``
(numpy / PyTorch, one core each) and ``whole_machine_ratio`` (numpy on all cores /
PyTorch at its best thread count). ``--cores N`` sets "all cores". It also runs the same
one-core step in that many processes that share nothing, at once: ``independent_scaling``
is what the machine itself allows (cores busy together may each run slower), and
``split_efficiency`` (all cores over that) what splitting one batch keeps of it. Each
ratio is the median over rounds of the ratio within a round (windows seconds apart);
``of_medians`` has the ratios of the whole run's medians as well.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="BLAS / torch threads for both")
    p.add_argument("--batch-sizes", default="1,4,32,128")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds; medians reported")
    p.add_argument("--seconds", type=float, default=0.6, help="timed work per measurement")
    p.add_argument("--net", default="convnetjs-cifar10")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--profile", action="store_true", help="per-layer times of the numpy engine")
    p.add_argument("--json", action="store_true", help="final line: JSON with every median")
    p.add_argument("--cores", type=int, default=None,
                   help="'all cores' for the machine comparison (default: every core available)")
    p.add_argument("--no-machine", action="store_true", help="skip the one-core / all-cores comparison")
    return p.parse_args(argv)


ARGS = parse_args()
# Before numpy and torch load their thread pools: both get the same count.
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's gossipnet

from benchmarks.timing import images_per_s  # noqa: E402
from gossipnet.nn import SGD, Net, get_preset  # noqa: E402
from gossipnet.nn import blas, heap  # noqa: E402
from gossipnet.nn.parallel import DataParallel, available_cores  # noqa: E402

try:
    if ARGS.no_torch:
        raise ImportError("--no-torch")
    import torch
    import torch.nn as tnn
except ImportError as exc:
    torch = None
    print(f"torch not available ({exc}); numpy only", file=sys.stderr)


def numpy_model(preset, seed=0):
    net = Net(preset.spec, preset.input_shape, seed=seed)
    opt = SGD(net.params(), lr=0.001, momentum=0.9)

    def step(x, y):
        net.loss_and_grads(x, y)
        opt.step(net.grads())

    return net, step


def torch_model(net: Net):
    """The same architecture built layer by layer from the numpy net, with its weights."""
    from gossipnet.nn import layers as L

    mods = []
    c = net.input_shape[0]
    for layer in net.spec:
        t = layer["type"]
        if t == "conv":
            mods.append(tnn.Conv2d(c, layer["filters"], layer["size"], layer["stride"], layer["pad"]))
            c = layer["filters"]
        elif t == "relu":
            mods.append(tnn.ReLU())
        elif t == "pool":
            mods.append(tnn.MaxPool2d(layer["size"], layer["stride"]))
        elif t == "dropout":
            mods.append(tnn.Dropout(layer["rate"]))
        elif t in ("fc", "softmax"):
            if not any(isinstance(m, tnn.Flatten) for m in mods):
                mods.append(tnn.Flatten())
            n = layer["units"] if t == "fc" else layer["classes"]
            mods.append(tnn.LazyLinear(n))
    model = tnn.Sequential(*mods)
    model(torch.zeros(1, *net.input_shape))  # materialise lazy layers
    ours = [l for l in net.layers if isinstance(l, (L.Conv2D, L.Dense))]
    theirs = [m for m in model if isinstance(m, (tnn.Conv2d, tnn.Linear))]
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            b.weight.copy_(torch.from_numpy(a.params["weight"]))
            b.bias.copy_(torch.from_numpy(a.params["bias"]))
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    loss_fn = tnn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return model, step


def each(step):
    """``steps(x, y, n)`` for a function that takes one step."""
    def steps(x, y, n):
        for _ in range(n):
            step(x, y)
    return steps


def profile(net: Net, batch: int, rounds: int = 20) -> None:
    """Per-layer forward/backward milliseconds (median over rounds) at one batch size."""
    x = np.random.default_rng(0).standard_normal((batch, *net.input_shape)).astype(np.float32)
    fwd = {l.name: [] for l in net.layers}
    bwd = {l.name: [] for l in net.layers}
    for _ in range(rounds):
        a = x.transpose(0, 2, 3, 1)
        for l in net.layers:
            t = time.perf_counter()
            a = l.forward(a, True)
            fwd[l.name].append(time.perf_counter() - t)
        g = np.full(a.shape, 1.0 / a.size, np.float32)
        for l in reversed(net.layers):
            t = time.perf_counter()
            g = l.backward(g)
            bwd[l.name].append(time.perf_counter() - t)
            if g is None:
                break
    total = 0.0
    print(f"\nper-layer time, numpy, batch {batch} (median ms over {rounds} rounds)")
    for l in net.layers:
        f = float(np.median(fwd[l.name])) * 1e3
        b = float(np.median(bwd[l.name])) * 1e3 if bwd[l.name] else 0.0
        total += f + b
        print(f"  {l.name:<24} fwd {f:7.3f}  bwd {b:7.3f}")
    print(f"  {'total':<24} {total:7.3f} ms = {batch / total * 1e3:.0f} images/s (no optimizer)")


# One of ``independent``'s processes: the one-core step of ``numpy_model``, timed from "go".
INDEPENDENT = r"""
import sys, time
import numpy as np
from gossipnet.nn import SGD, Net, blas, get_preset, heap
blas.set_threads(1)
heap.keep_freed_memory()
p, batch, steps = get_preset(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
net = Net(p.spec, p.input_shape)
opt = SGD(net.params(), lr=0.001, momentum=0.9)
rng = np.random.default_rng(3)
x = rng.standard_normal((batch, *p.input_shape)).astype(np.float32)
y = rng.integers(0, 10, batch)
for _ in range(3):
    net.loss_and_grads(x, y)
    opt.step(net.grads())
print("ready", flush=True)
sys.stdin.readline()
t = time.perf_counter()
for _ in range(steps):
    net.loss_and_grads(x, y)
    opt.step(net.grads())
print(time.perf_counter() - t, flush=True)
"""


def independent(preset, cores: int, batch: int, steps: int) -> float:
    """Images/s of ``cores`` separate one-core processes training at once, sharing nothing:
    the most any split of one batch could reach here, since cores busy together may each run
    slower than one alone (shared caches and memory, a hypervisor's scheduling)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen([sys.executable, "-c", INDEPENDENT, preset.name, str(batch), str(steps)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(cores)]
    try:
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("an independent training process failed to start")
        for p in procs:  # every process is warm: start them together
            p.stdin.write("go\n")
            p.stdin.flush()
        secs = [float(p.stdout.readline()) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    return cores * steps * batch / max(secs)


def machine(preset, batch: int = 32) -> dict:
    """Batch-32 images/s: numpy on one core and on all cores, PyTorch at 1..cores threads."""
    cores = ARGS.cores or available_cores()
    blas.set_threads(1)
    net, one_step = numpy_model(preset)
    opt = SGD(net.params(), lr=0.001, momentum=0.9)
    dp = DataParallel(net, cores, batch)

    counter = itertools.count()

    def all_steps(x, y, n):
        # forward, backward and update, all in the workers; as a node's Trainer does, the
        # next batch is handed over while this one trains (DataParallel.run)
        for _ in dp.run(((x, y, 0, next(counter)) for _ in range(n)), opt):
            pass

    rng = np.random.default_rng(3)
    x = rng.standard_normal((batch, *preset.input_shape)).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int64)
    impls = {"numpy 1 core": (each(one_step), x, y), f"numpy {cores} cores": (all_steps, x, y)}
    if torch is not None:
        _, t_step = torch_model(net)
        xt, yt = torch.from_numpy(x.copy()), torch.from_numpy(y.copy())
        for t in range(1, cores + 1):
            def step(a, b, t=t):
                torch.set_num_threads(t)
                t_step(a, b)
            impls[f"torch {t} thread{'s' if t > 1 else ''}"] = (each(step), xt, yt)
    runs = {name: [] for name in impls}
    per_cpu = {name: [] for name in impls}  # images per CPU-second: what a loaded machine can't hide
    parent_ms = []  # the parent's own CPU per all-cores step: the serial part
    alone = []  # images/s of `cores` independent one-core processes at once (the machine's ceiling)
    print(f"\nbatch {batch}, the whole machine ({cores} cores), load average {os.getloadavg()[0]:.1f}", flush=True)
    try:
        with dp.session(opt):  # the weights live in the workers' shared memory meanwhile
            for r in range(ARGS.repeats):
                order = list(impls) if r % 2 == 0 else list(reversed(impls))
                for name in order:
                    steps, a, b = impls[name]
                    if name.startswith("torch"):
                        torch.set_num_threads(int(name.split()[1]))
                    runs[name].append(images_per_s(lambda n: steps(a, b, n), len(a), ARGS.seconds))
                    p0, w0 = time.process_time(), dp.cpu_seconds()
                    n = max(2, int(runs[name][-1] * ARGS.seconds / batch / 2))
                    steps(a, b, n)
                    parent = time.process_time() - p0
                    per_cpu[name].append(n * batch / max(parent + dp.cpu_seconds() - w0, 1e-9))
                    if name == f"numpy {cores} cores":
                        parent_ms.append(parent / n * 1e3)
                steps = max(5, int(runs["numpy 1 core"][-1] * ARGS.seconds / batch))
                alone.append(independent(preset, cores, batch, steps))
    finally:
        dp.close()
    med = {name: float(np.median(v)) for name, v in runs.items()}
    cpu_med = {name: float(np.median(v)) for name, v in per_cpu.items()}
    one, full = med["numpy 1 core"], med[f"numpy {cores} cores"]
    torch_med = {n: v for n, v in med.items() if n.startswith("torch")}
    best = max(torch_med, key=torch_med.get) if torch_med else None

    def paired(a: list[float], b: list[float]) -> float:
        """Median over rounds of a / b, each from the same round: windows seconds apart, so
        a host whose speed drifts over the run (this VM's did, by up to 30% within minutes)
        moves both sides of each ratio, which the ratio of whole-run medians does not undo."""
        return round(float(np.median(np.array(a) / np.array(b))), 3)

    one_runs, full_runs = runs["numpy 1 core"], runs[f"numpy {cores} cores"]
    for name, v in med.items():
        print(f"  {name:<18} {v:8.0f} img/s {cpu_med[name]:8.0f} img/CPU-s"
              + ("   <- PyTorch's best" if name == best else ""))
    out = {"cores": cores, "images_per_s": {n: round(v, 1) for n, v in med.items()},
           "images_per_cpu_s": {n: round(v, 1) for n, v in cpu_med.items()},
           # all cores' images per CPU-second over one core's: 1.0 means splitting the batch
           # wastes no CPU, so on an idle machine core_scaling approaches the core count
           "cpu_efficiency": round(cpu_med[f"numpy {cores} cores"] / cpu_med["numpy 1 core"], 3),
           # every ratio: the median over rounds of the two windows of the same round
           "core_scaling": paired(full_runs, one_runs),
           "single_core_ratio": paired(one_runs, runs["torch 1 thread"]) if torch_med else None,
           "whole_machine_ratio": paired(full_runs, runs[best]) if best else None,
           "parent_cpu_ms_per_step": round(float(np.median(parent_ms)), 3),
           # the same step in `cores` processes that share nothing, over one: what the machine
           # itself allows; core_scaling over it is what splitting one batch keeps of that
           "independent_scaling": paired(alone, one_runs),
           "split_efficiency": paired(full_runs, alone),
           # the ratios of the whole run's medians, as sessions 5-7 reported them
           "of_medians": {"core_scaling": round(full / one, 3),
                          "single_core_ratio": round(one / torch_med["torch 1 thread"], 3) if torch_med else None,
                          "whole_machine_ratio": round(full / torch_med[best], 3) if best else None,
                          "independent_scaling": round(float(np.median(alone)) / one, 3),
                          "split_efficiency": round(full / float(np.median(alone)), 3)},
           "per_round": {"core_scaling": [round(a / b, 3) for a, b in zip(full_runs, one_runs)],
                         "independent_scaling": [round(a / b, 3) for a, b in zip(alone, one_runs)]},
           "torch_best": best, "load_average": round(os.getloadavg()[0], 2)}
    print(f"  core_scaling (numpy {cores} cores / 1 core): {out['core_scaling']:.2f}   target >= 1.8 on 2 cores")
    print(f"  independent_scaling ({cores} one-core processes sharing nothing / 1): "
          f"{out['independent_scaling']:.2f}; core_scaling / that: {out['split_efficiency']:.2f}")
    print(f"  cpu_efficiency (images per CPU-s, {cores} cores / 1 core): {out['cpu_efficiency']:.2f}; "
          f"the parent's own CPU per step: {out['parent_cpu_ms_per_step']:.2f} ms")
    if best:
        print(f"  single_core_ratio (numpy / torch, 1 core each): {out['single_core_ratio']:.2f}   moonshot >= 1.0")
        print(f"  whole_machine_ratio (numpy {cores} cores / {best}): {out['whole_machine_ratio']:.2f}   moonshot >= 1.0")
    return out


def main() -> int:
    heap.keep_freed_memory()  # as Trainer does for every training process (nn/heap.py)
    preset = get_preset(ARGS.net)
    batch_sizes = [int(b) for b in ARGS.batch_sizes.split(",")]
    blas.set_threads(ARGS.threads)
    if torch is not None:
        torch.set_num_threads(ARGS.threads)
    net, np_step = numpy_model(preset)
    impls = {"numpy": np_step}
    if torch is not None:
        model, t_step = torch_model(net)
        x = np.random.default_rng(1).standard_normal((8, *preset.input_shape)).astype(np.float32)
        with torch.no_grad():
            diff = np.abs(model(torch.from_numpy(x)).numpy() - net.forward(x)).max()
        print(f"same weights, max |logit difference| numpy vs torch: {diff:.2e}")
        impls["torch"] = t_step
    rng = np.random.default_rng(2)
    data = {}
    for b in batch_sizes:
        x = rng.standard_normal((b, *preset.input_shape)).astype(np.float32)
        y = rng.integers(0, 10, b).astype(np.int64)
        data[b] = {"numpy": (x, y)}
        if torch is not None:
            data[b]["torch"] = (torch.from_numpy(x.copy()), torch.from_numpy(y.copy()))
    results = {name: {b: [] for b in batch_sizes} for name in impls}
    print(f"{preset.name}: threads {ARGS.threads}, BLAS: {blas.describe()}; "
          f"load average {os.getloadavg()[0]:.1f}; {ARGS.repeats} interleaved rounds", flush=True)
    for r in range(ARGS.repeats):
        for b in batch_sizes:
            order = list(impls) if r % 2 == 0 else list(reversed(impls))  # A/B then B/A
            for name in order:
                x, y = data[b][name]
                results[name][b].append(images_per_s(lambda n: each(impls[name])(x, y, n), b, ARGS.seconds))
    med = {name: {b: float(np.median(v)) for b, v in per.items()} for name, per in results.items()}
    print(f"\n{'batch':>6} {'numpy img/s':>12} {'torch img/s':>12} {'ratio':>7}")
    ratios = {}
    for b in batch_sizes:
        t = med.get("torch", {}).get(b)
        ratios[b] = med["numpy"][b] / t if t else None
        tt = f"{t:12.0f}" if t else f"{'-':>12}"
        rr = f"{ratios[b]:7.2f}" if t else f"{'-':>7}"
        print(f"{b:>6} {med['numpy'][b]:12.0f} {tt} {rr}")
    if ARGS.profile:
        profile(net, 32)
    whole = {} if ARGS.no_machine else machine(preset)
    if ARGS.json:
        print(json.dumps({
            **{k: whole.get(k) for k in ("core_scaling", "single_core_ratio", "whole_machine_ratio",
                                         "cpu_efficiency")},
            "batch32_machine": whole,
            "net": preset.name, "threads": ARGS.threads, "repeats": ARGS.repeats,
            "blas": blas.describe(),  # which kernels were measured: OPENBLAS_CORETYPE changes them
            "load_average": round(os.getloadavg()[0], 2),
            "images_per_s": {name: {str(b): round(v, 1) for b, v in per.items()}
                             for name, per in med.items()},
            "ratio_numpy_over_torch": {str(b): (round(v, 3) if v else None) for b, v in ratios.items()},
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
