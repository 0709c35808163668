"""Browser volunteers, measured: engine speed, validation throughput, hostile clients.

    python benchmarks/volunteer.py speed        # browser (JS, WASM SIMD, convnet.js) vs numpy, one run
    python benchmarks/volunteer.py throughput   # updates/s one node validates and merges (scripted client)
    python benchmarks/volunteer.py hostile      # attackers vs honest volunteers: refusals, accuracy
    python benchmarks/volunteer.py swarm        # a node alone vs with 1 and 2 headless browsers
    python benchmarks/volunteer.py merge        # the merge rule alone: a stale volunteer, equal node steps
    python benchmarks/volunteer.py all --json   # everything; last line JSON

speed: trains the same net on the same batch size in headless Chromium (gossipnet/web
with its JavaScript GEMM, then with its WebAssembly SIMD GEMM, then convnet.js 0.3.0's
own CIFAR-10 demo when --convnetjs points at its build directory, e.g. after
`npm install --prefix /tmp/cjs convnetjs@0.3.0`) and then in numpy on one BLAS thread,
and prints medians and ratios. The machine may be shared: only ratios from one run mean
anything, and the browser and numpy phases run one after the other, not side by side.

swarm: a live node (this process, pinned to core 0, one BLAS thread) trains for
--horizon seconds of its own CPU time alone, then again with 1 and with 2 headless
Chromiums on its /volunteer page (pinned together to core 1); it reports the node-alone
accuracy at the horizon (mean of the last 3 evaluations) and the node CPU seconds each
run took to reach it. CPU seconds, not wall seconds: on a shared machine the node's
share of its core swings between runs, while its CPU time is what a core of its own
would take in wall time (the browsers get the other core either way).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from gossipnet.nn import Net, blas, get_preset, make_optimizer  # noqa: E402
from tests.chromium import browser, run_page  # noqa: E402

CONVNETJS_PAPER = 21.0  # images/s, convnet.js CIFAR-10 demo in Chromium here (issue 13)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=["speed", "throughput", "hostile", "swarm", "merge", "all"])
    p.add_argument("--nets", default="convnetjs-cifar10,fashion,tiny")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=4, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=5, help="rounds; medians reported")
    p.add_argument("--convnetjs", default="/tmp/cjs/node_modules/convnetjs/build",
                   help="directory holding convnet.js (npm convnetjs@0.3.0); skipped when absent")
    p.add_argument("--updates", type=int, default=40, help="throughput: updates timed")
    p.add_argument("--node-rounds", type=int, default=40, help="hostile: node rounds of 20 steps")
    p.add_argument("--honest", type=int, default=8, help="hostile: honest volunteers, one lease each per round")
    p.add_argument("--json", action="store_true")
    p.add_argument("--horizon", type=float, default=45.0, help="swarm: node CPU seconds per run")
    p.add_argument("--swarm-net", default="fashion", help="swarm: the node's net")
    p.add_argument("--swarm-data", default=str(ROOT.parent / "shared" / "datasets" / "fashion-mnist"),
                   help="swarm: Fashion-MNIST IDX directory, or embedded for the packaged subset")
    p.add_argument("--browsers", default="0,1,2", help="swarm: runs, by number of headless volunteers")
    p.add_argument("--lease-steps", type=int, default=32, help="swarm: the node's --volunteer-steps")
    p.add_argument("--seeds", default="1,2", help="merge: seeds")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- speed

async def browser_speed(preset, args) -> dict:
    cfg = {"net": preset.name, "spec": list(preset.spec), "input_shape": list(preset.input_shape),
           "classes": preset.spec[-1]["classes"], "optimizer": preset.optimizer, "lr": preset.lr,
           "weight_decay": preset.weight_decay, "batch": args.batch, "steps": args.steps, "rounds": args.rounds}
    done: asyncio.Future = asyncio.get_running_loop().create_future()

    async def config(request):
        return web.json_response(cfg)

    async def result(request):
        if not done.done():
            done.set_result(json.loads(await request.read()))
        return web.Response(text="ok")

    async def no_convnetjs(request):
        return web.Response(text="// convnet.js not installed\n", content_type="text/javascript")

    app = web.Application(client_max_size=1 << 20)
    app.router.add_get("/config", config)
    app.router.add_post("/result", result)
    app.router.add_static("/web", ROOT / "gossipnet" / "web")
    app.router.add_static("/bench", ROOT / "benchmarks" / "web")
    if Path(args.convnetjs, "convnet.js").exists():
        app.router.add_static("/convnetjs", args.convnetjs)
    else:
        app.router.add_get("/convnetjs/convnet.js", no_convnetjs)
    return await run_page(app, "/bench/bench.html", done, timeout=900)


def numpy_speed(preset, args) -> float:
    net = Net(preset.spec, preset.input_shape, seed=1)
    opt = make_optimizer(preset.optimizer, net.params(), preset.lr, preset.weight_decay)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (args.batch, *preset.input_shape)).astype(np.float32)
    y = rng.integers(0, preset.spec[-1]["classes"], args.batch)
    net.loss_and_grads(x, y)
    rates = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for s in range(args.steps):
            net.set_hash_masks(0, s)
            net.loss_and_grads(x, y)
            opt.step(net.grads())
        rates.append(args.batch * args.steps / (time.perf_counter() - t0))
    return statistics.median(rates)


def speed(args) -> list[dict]:
    rows = []
    for name in args.nets.split(","):
        preset = get_preset(name)
        b = asyncio.run(browser_speed(preset, args))
        n = numpy_speed(preset, args)
        row = {"net": name, "batch": args.batch, "numpy_1core": n, "browser_js": b["js"], "browser_wasm": b["wasm"],
               "convnetjs": b.get("convnetjs"), "wasm_over_numpy": b["wasm"] / n,
               "wasm_over_js": b["wasm"] / b["js"]}
        if b.get("convnetjs"):
            row["wasm_over_convnetjs"] = b["wasm"] / b["convnetjs"]
        rows.append(row)
        cj = f"{b['convnetjs']:7.1f}" if b.get("convnetjs") else "      -"
        print(f"{name:<18} numpy {n:7.1f}  browser js {b['js']:7.1f}  wasm {b['wasm']:7.1f}  convnet.js {cj}  "
              f"wasm/numpy {row['wasm_over_numpy']:.2f}x  wasm/js {row['wasm_over_js']:.1f}x"
              + (f"  wasm/convnet.js {row['wasm_over_convnetjs']:.1f}x" if b.get("convnetjs") else "")
              + f"  wasm/{CONVNETJS_PAPER:.0f} {b['wasm'] / CONVNETJS_PAPER:.1f}x", flush=True)
    return rows


# ---------------------------------------------------------------------------- throughput

def _node_learner(net: str, images: int, seed: int = 1):
    from gossipnet.data.loaders import load_dataset
    from gossipnet.learners.convnet import ConvnetConfig, ConvnetLearner
    return ConvnetLearner(load_dataset("embedded"), np.arange(images), ConvnetConfig(net=net, seed=seed))


def throughput(args) -> list[dict]:
    """Updates per second one node validates and merges, by spot-check rate (scripted client)."""
    from gossipnet.volunteers import Refusal, TrainingSetup, VolunteerConfig, VolunteerDesk
    from gossipnet.volunteers.scripted import honest_update, update_body

    rows = []
    for net in ("tiny", "fashion"):
        learner = _node_learner(net, 4000)
        learner.train(20)
        for rate in (0.0, 0.1, 1.0):
            desk = VolunteerDesk(VolunteerConfig(spot_check_rate=rate, reference_leases=0, burst=10_000,
                                                 max_open_per_client=10_000, max_open=10_000),
                                 TrainingSetup.of(learner), seed=2)
            desk.offer_version(learner.net.params(), learner.optimizer.state_dict(), 10**9, 0.0)
            bodies = []
            for i in range(args.updates):
                ip = f"10.0.{i // 250}.{i % 250}"
                doc = desk.lease(ip, 1.0)
                delta, loss = honest_update(doc, desk.weights(doc["base_version"]), desk.images(ip, doc["lease"], 1.0))
                bodies.append((ip, update_body(doc, delta, loss)))
            t0 = time.perf_counter()
            accepted = 0
            for ip, body in bodies:
                pending = desk.check(ip, body, 2.0)
                out = pending if isinstance(pending, Refusal) else desk.finish(pending, 2.0)
                accepted += not isinstance(out, Refusal)
            # merged once, as the node merges between training chunks: the updates share a
            # base and no node images passed, so merged one by one each would be a full step
            for d, images in desk.take_accepted():
                learner.add_delta(d, images)
            secs = time.perf_counter() - t0
            # the held-out gradient is computed once per version (every version_interval while
            # leased), inside the first update's time above: timed on its own too
            t1 = time.perf_counter()
            desk.holdout.gradients(desk.versions[desk.version].weights)
            per_version = time.perf_counter() - t1
            row = {"net": net, "spot_check_rate": rate, "updates": len(bodies), "accepted": accepted,
                   "updates_per_s": len(bodies) / secs, "images_per_s": len(bodies) * 256 / secs,
                   "holdout_gradient_s": per_version}
            rows.append(row)
            print(f"{net:<8} spot checks {rate:4.0%}: {row['updates_per_s']:6.1f} updates/s validated+merged "
                  f"({row['images_per_s']:7.0f} volunteer images/s), {accepted}/{len(bodies)} accepted "
                  f"{dict(desk.refused) or ''}; "
                  f"held-out gradient {1000 * per_version:.0f} ms per version", flush=True)
    return rows


# ---------------------------------------------------------------------------- hostile

ATTACKS = ("sign_flipped", "x100", "nan", "zero", "stale_base", "replayed", "wrong_shape", "forged_lease", "lazy")


def _attack(kind, desk, ip, now, rng, honest_update, update_body, Refusal):
    """One attempt of ``kind`` from ``ip``: the refusal reason, or 'accepted'."""
    if kind == "forged_lease":
        fake = {"lease": "A" * 32, "base_version": desk.version, "steps": 8, "batch_size": 32}
        zero = {k: np.zeros_like(v) for k, v in desk.versions[desk.version].weights.items()}
        out = desk.check(ip, update_body(fake, zero, 1.0), now)
        return out.reason if isinstance(out, Refusal) else "accepted"
    doc = desk.lease(ip, now)
    if isinstance(doc, Refusal):
        return doc.reason
    delta, loss = honest_update(doc, desk.weights(doc["base_version"]), desk.images(ip, doc["lease"], now))
    base = None
    if kind == "sign_flipped":
        delta = {k: -v for k, v in delta.items()}
    elif kind == "x100":
        delta = {k: v * 100 for k, v in delta.items()}
    elif kind == "nan":
        delta = {k: np.full_like(v, np.nan) for k, v in delta.items()}
    elif kind == "zero":
        delta = {k: np.zeros_like(v) for k, v in delta.items()}
    elif kind == "wrong_shape":
        delta = {k: v.reshape(-1)[:-1] for k, v in delta.items()}
    elif kind == "stale_base":
        base = doc["base_version"] - 1
    elif kind == "lazy":
        ref = float(np.median(desk.references)) if desk.references else 1.0
        noise = {k: rng.normal(0, 1, v.shape).astype(np.float32) for k, v in delta.items()}
        scale = 0.7 * ref / np.sqrt(sum(float(np.sum(v * v)) for v in noise.values()))
        delta = {k: (v * scale).astype(np.float32) for k, v in noise.items()}
    body = update_body(doc, delta, loss, base_version=base)
    if kind == "replayed":  # post an honest update, then the same body again: only the replay counts
        first = desk.check(ip, body, now)
        if not isinstance(first, Refusal):
            desk.finish(first, now)
    out = desk.check(ip, body, now)
    if not isinstance(out, Refusal):
        out = desk.finish(out, now)
    return out.reason if isinstance(out, Refusal) else "accepted"


def hostile(args) -> dict:
    """The same node and honest volunteers, with and without every kind of attacker."""
    from gossipnet.volunteers import Refusal, TrainingSetup, VolunteerConfig, VolunteerDesk
    from gossipnet.volunteers.scripted import honest_update, update_body

    runs = {}
    for with_attackers in (False, True):
        learner = _node_learner("tiny", 8000)
        # max_share 0.9 (default 0.5): at 0.5 the honest volunteers fill the share and
        # most attackers only ever get "busy", which defends but measures nothing
        desk = VolunteerDesk(VolunteerConfig(burst=10_000, max_open_per_client=50, leases_per_minute=10_000,
                                             version_interval=1.0, max_share=0.9), TrainingSetup.of(learner),
                             seed=5)
        rng = np.random.default_rng(7)
        honest = {"attempts": 0, "accepted": 0, "refused": {}, "slope_t": []}
        attacks = {k: {"attempts": 0, "outcomes": {}, "caught_after": None} for k in ATTACKS}
        for r in range(args.node_rounds):
            now = 10.0 * (r + 1)
            learner.train(20)
            for d, images in desk.take_accepted():
                learner.add_delta(d, images)
            desk.offer_version(learner.net.params(), learner.optimizer.state_dict(), learner.trainer.images, now)
            for h in range(args.honest):
                ip = f"10.1.0.{h + 1}"
                doc = desk.lease(ip, now)
                if isinstance(doc, Refusal):
                    continue  # the share is full this round: the page waits and asks again
                delta, loss = honest_update(doc, desk.weights(doc["base_version"]), desk.images(ip, doc["lease"], now))
                pending = desk.check(ip, update_body(doc, delta, loss), now)
                out = pending if isinstance(pending, Refusal) else desk.finish(pending, now)
                honest["attempts"] += 1
                if isinstance(out, Refusal):
                    honest["refused"][out.reason] = honest["refused"].get(out.reason, 0) + 1
                else:
                    honest["accepted"] += 1
                    honest["slope_t"].append(out["holdout_slope"] / max(out["holdout_slope_se"], 1e-30))
            if with_attackers and r >= 2:  # after the reference leases, as a real attacker would
                for i, kind in enumerate(ATTACKS):
                    a = attacks[kind]
                    outcome = _attack(kind, desk, f"10.66.0.{i + 1}", now + 1, rng, honest_update, update_body, Refusal)
                    if outcome == "busy":
                        continue
                    a["attempts"] += 1
                    a["outcomes"][outcome] = a["outcomes"].get(outcome, 0) + 1
                    if outcome == "spot_check_mismatch" and a["caught_after"] is None:
                        a["caught_after"] = a["attempts"]
        for d, images in desk.take_accepted():
            learner.add_delta(d, images)
        acc = learner.evaluate()["test_accuracy"]
        runs["with" if with_attackers else "without"] = {"accuracy": acc, "honest": honest, "attacks": attacks,
                                                        "refused": dict(desk.refused)}
        t = np.array(honest["slope_t"])
        print(f"{'with' if with_attackers else 'without'} attackers: node accuracy {acc:.4f}, honest updates "
              f"accepted {honest['accepted']}/{honest['attempts']} {honest['refused'] or ''}; accepted honest "
              f"held-out slopes in standard errors: median {np.median(t):+.1f}, 99th percentile "
              f"{np.percentile(t, 99):+.1f}, max {t.max():+.1f}", flush=True)
        honest["slope_t"] = {"median": float(np.median(t)), "p99": float(np.percentile(t, 99)), "max": float(t.max())}
    for kind, a in runs["with"]["attacks"].items():
        print(f"  {kind:<13} attempts {a['attempts']:3d}  outcomes {a['outcomes']}"
              + (f"  caught by a spot check at attempt {a['caught_after']}" if a["caught_after"] else ""), flush=True)
    print(f"accuracy with attackers - without: {100 * (runs['with']['accuracy'] - runs['without']['accuracy']):+.2f} "
          f"points; refusals {runs['with']['refused']}")
    return runs


# ---------------------------------------------------------------------------- merge

MERGE_RULES = {"flat_half": (0.5, 0.0), "full": (1.0, 0.0), "staleness": (1.0, 0.5)}  # (merge_weight, exponent)


def _merge_run(rule: str | None, seed: int, rounds: int = 60, node_steps: int = 20, lease_steps: int = 8,
               rate: float = 0.8) -> float:
    """The node's final test accuracy (tiny net, 8,000 images) when one volunteer delivers a
    lease of ``lease_steps`` every 1/``rate`` rounds of ``node_steps``, started from the
    weights of when it leased; ``rule`` (a MERGE_RULES key) weighs it, None: no volunteer.
    Sans validation: this measures the merge rule alone, at equal node steps."""
    from gossipnet.volunteers import TrainingSetup, VolunteerConfig, VolunteerDesk
    from gossipnet.volunteers.scripted import honest_update

    learner = _node_learner("tiny", 8000, seed=seed)
    desk = VolunteerDesk(VolunteerConfig(burst=10**6, max_open_per_client=10**6, max_open=10**6,
                                         leases_per_minute=1e6, version_interval=0.5, max_share=0.999,
                                         spot_check_rate=0.0, steps=lease_steps),
                         TrainingSetup.of(learner), seed=seed)
    lease_images = lease_steps * desk.setup.batch_size
    active = None  # (ip, lease, node steps at lease, images trained so far)
    done_steps = 0
    for r in range(rounds):
        now = float(r + 1)
        learner.train(node_steps)
        done_steps += node_steps
        desk.offer_version(learner.net.params(), learner.optimizer.state_dict(), learner.trainer.images, now)
        if rule is None:
            continue
        if active is None:
            active = ["10.0.0.1", desk.lease("10.0.0.1", now), done_steps, 0.0]
        active[3] += rate * node_steps * desk.setup.batch_size
        if active[3] >= lease_images:
            ip, doc, base_steps, _ = active
            delta, _ = honest_update(doc, desk.weights(doc["base_version"]), desk.images(ip, doc["lease"], now))
            weight, exponent = MERGE_RULES[rule]
            tau = (done_steps - base_steps) / lease_steps  # as take_accepted: node images since / lease images
            w = np.float32(weight * (1 + tau) ** -exponent)
            learner.add_delta({k: d * w for k, d in delta.items()}, lease_images)
            active = None
    return learner.evaluate()["test_accuracy"]


def merge(args) -> dict:
    """Final accuracy by merge rule at equal node steps, one volunteer, per seed."""
    out: dict = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        row = {"alone": _merge_run(None, seed)}
        row.update({rule: _merge_run(rule, seed) for rule in MERGE_RULES})
        out[seed] = row
        print(f"seed {seed}: " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
    return out


# ---------------------------------------------------------------------------- swarm

def _swarm_node(args, volunteers: bool, state_dir: str):
    import dataclasses

    from gossipnet.config import build_config
    from gossipnet.data.loaders import load_dataset
    from gossipnet.learners.convnet import ConvnetConfig, ConvnetLearner
    from gossipnet.node import Node
    from gossipnet.trust.credentials import load_credentials
    from gossipnet.trust.identity import load_or_create_identity
    from tests.daemon_box import new_swarm_token

    data = (load_dataset("embedded") if args.swarm_data == "embedded"
            else load_dataset("fashion-mnist", args.swarm_data))
    # 2,000 test images: an evaluation then costs the node the same small slice in every run
    data = dataclasses.replace(data, x_test=data.x_test[:2000], y_test=data.y_test[:2000])
    shard = np.arange(min(len(data.y_train), 30_000))
    learner = ConvnetLearner(data, shard, ConvnetConfig(net=args.swarm_net, seed=1))
    config = build_config({}, {"state_dir": state_dir, "host": "127.0.0.1", "interface": "127.0.0.1",
                               "udp_port": 0, "http_port": 0, "mdns": False, "preset": "local",
                               "eval_interval": 5.0, "volunteers": volunteers,
                               "volunteer_leases_per_minute": 600.0, "volunteer_steps": args.lease_steps})
    identity = load_or_create_identity(config.state_dir)
    creds = load_credentials(identity, int(time.time() * 1000), swarm_token=new_swarm_token())
    return Node(config, learner, identity, creds, incarnation=int(time.time() * 1000))


async def _swarm_run(args, n_browsers: int, state_dir: str) -> dict:
    """One run: the node's test accuracy against the node's CPU seconds (this process's:
    the node alone, pinned to its core; the browsers are other processes on the other
    core) outside evaluations (they come every few wall seconds, so a slower run would
    pay for more of them), until --horizon such seconds or 3x that in wall time."""
    import contextlib

    node = _swarm_node(args, n_browsers > 0, state_dir)
    task = asyncio.create_task(node.run())
    samples: list[tuple[float, float, float, int]] = []  # (node CPU s, wall s, test accuracy, own images)
    try:
        await asyncio.wait_for(node.ready.wait(), 60)
        url = f"http://127.0.0.1:{node.http_port}/volunteer?autostart=1"
        async with contextlib.AsyncExitStack() as stack:
            for i in range(n_browsers):
                await stack.enter_async_context(browser(url, cpus="1", log_path=f"{state_dir}/chromium-{i}.log"))
            cpu = lambda: time.process_time() - node.learner.cpu["eval_cpu_s"]  # noqa: E731
            t0, c0, threads0 = time.monotonic(), cpu(), _thread_cpu()
            last = None
            while cpu() - c0 < args.horizon and time.monotonic() - t0 < 3 * args.horizon:
                assert not task.done(), task.result()
                m = node.host.metrics
                acc = m.get("test_accuracy")
                if isinstance(acc, float) and m.get("eval_seconds") != last:
                    last = m.get("eval_seconds")
                    samples.append((cpu() - c0, time.monotonic() - t0, acc, int(m.get("images", 0))))
                await asyncio.sleep(0.1)
            wall = time.monotonic() - t0
            threads = {k: v - threads0.get(k, 0.0) for k, v in _thread_cpu().items()}
    finally:
        node.stop()
        await task
    desk = node.volunteers
    out = {"browsers": n_browsers, "samples": samples, "own_images": node.learner.trainer.images,
           "age": node.learner.age, "wall_s": wall, "thread_cpu_s": threads}
    if desk is not None:
        out.update(accepted=desk.counters["accepted"], spot_checks=desk.counters["spot_checks"],
                   merged_images=desk.merged_images, refused=dict(desk.refused), desk_cpu_s=dict(desk.cpu))
    return out


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's Python threads so far, by name (Linux /proc): where
    the node's time goes (event loop, training thread, executors)."""
    import threading

    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for t in threading.enumerate():
        try:
            fields = Path(f"/proc/self/task/{t.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = t.name.rsplit("_", 1)[0] if t.name.startswith("gossipnet") else t.name.split("-")[0]
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


def _smoothed(samples, k: int = 3) -> list[tuple[float, float]]:
    """(node CPU seconds, mean test accuracy of this evaluation and the k-1 before it)."""
    return [(samples[i][0], statistics.mean(s[2] for s in samples[max(0, i - k + 1): i + 1]))
            for i in range(len(samples))]


def swarm(args) -> dict:
    """Node CPU seconds to the node-alone accuracy at the horizon, with 0, 1, 2 browsers."""
    import tempfile

    os.sched_setaffinity(0, {0})  # this thread and every thread it starts: the node's core
    runs = []
    for n in [int(b) for b in args.browsers.split(",")]:
        with tempfile.TemporaryDirectory(prefix="gossipnet-swarm-") as tmp:
            run = asyncio.run(_swarm_run(args, n, tmp))
        runs.append(run)
        sm = _smoothed(run["samples"])
        print(f"{n} browsers: {sm[-1][0] if sm else 0:.0f} node CPU s in {run['wall_s']:.0f} s wall, final accuracy "
              f"{sm[-1][1] if sm else float('nan'):.4f} (mean of 3 evaluations), own images {run['own_images']}, "
              f"volunteer images merged {run.get('merged_images', 0)}, accepted {run.get('accepted', 0)}, "
              f"spot checks {run.get('spot_checks', 0)}, refused {run.get('refused', {})}, node CPU s on "
              f"volunteers {({k: round(v, 1) for k, v in run.get('desk_cpu_s', {}).items()})}, CPU s by thread "
              f"{({k: round(v, 1) for k, v in run['thread_cpu_s'].items()})}", flush=True)
    alone = next((r for r in runs if r["browsers"] == 0), None)
    if alone is None or not alone["samples"]:
        return {"runs": runs}
    horizon, target = _smoothed(alone["samples"])[-1]
    out = {"runs": runs, "target_accuracy": target, "horizon_cpu_s": horizon}
    for run in runs:
        hit = next((t for t, a in _smoothed(run["samples"]) if a >= target), None)
        run["cpu_s_to_target"] = hit
        print(f"{run['browsers']} browsers: node-alone accuracy {target:.4f} (at {horizon:.0f} node CPU s) reached at "
              + (f"{hit:5.1f} node CPU s ({hit / horizon:.2f}x)" if hit is not None else "never within the run"),
              flush=True)
    return out


def main() -> None:
    args = parse_args()
    if not blas.user_chose_threads():
        blas.set_threads(1)  # as `gossipnet run` does
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    out: dict = {}
    if args.part in ("speed", "all"):
        out["speed"] = speed(args)
    if args.part in ("throughput", "all"):
        out["throughput"] = throughput(args)
    if args.part in ("hostile", "all"):
        out["hostile"] = hostile(args)
    if args.part in ("swarm", "all"):
        out["swarm"] = swarm(args)
    if args.part in ("merge", "all"):
        out["merge"] = merge(args)
    if args.json:
        print(json.dumps(out, default=float))


if __name__ == "__main__":
    main()
