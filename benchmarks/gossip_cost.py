"""What gossip costs a real daemon: the share of its CPU spent on anything but training.

Starts ``python daemon.py`` processes in a LAN in a box (network namespaces, needs root;
docs/TESTING.md), first one node alone, then ``--nodes`` nodes that find each other by
mDNS and gossip with the daemon's defaults. For every node it measures, over a window
after warm-up:

- the CPU seconds of the daemon (``process_cpu_s``: every thread of the process plus its
  data-parallel training workers),
- the CPU seconds spent training and evaluating (``train_cpu_s``, ``eval_cpu_s``: thread
  CPU time around ``Trainer.train`` and ``evaluate``, plus the workers' CPU),
- images trained (the learner's ``images``), all four as of the end of the same chunk
  (``/api/status``, polled once a second near the window's edges only),

and reports ``other_share = 1 - (train + eval) / total``: pulls, signature checks,
decoding, absorbing, snapshots, membership, mDNS, HTTP and checkpoints. CPU time, not
wall time, so other load on the machine changes it little; images per wall second alone
and in the swarm are printed beside it (those depend on how many cores each node got).

    sudo python benchmarks/gossip_cost.py --seconds 60 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.daemon_box import HTTP_PORT, new_swarm_token, start_daemon, statuses, wait_until  # noqa: E402
from tests.lanbox import LanBox, lanbox_available  # noqa: E402



# Runs inside a box host (the status page is reachable only there). The learner reports its
# training and evaluation CPU and the whole process's CPU (all threads plus training
# workers) as of the end of its last chunk, so differences between two samples are exact
# whatever the polling delay. Near each edge of the window (argv: its start and end, in
# time.monotonic(), the same clock in every network namespace) it polls /api/status once a
# second from LEAD seconds before, and prints the first poll at or after the edge whose step
# differs from the poll before: a chunk end. Polling only there, not all along, keeps the
# measurement's own requests out of the node's CPU: ~6 per window instead of ~75.
POLLER = r"""
import json, sys, time, urllib.request
url, edges, LEAD = sys.argv[1], [float(a) for a in sys.argv[2:]], 2.5
for edge in edges:
    time.sleep(max(0.0, edge - LEAD - time.monotonic()))
    last = None
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                s = json.load(r)
            m, step = s["learner"]["metrics"], s["learner"]["step"]
        except Exception:
            time.sleep(1)
            continue
        t = time.monotonic()
        if last is not None and step != last and t >= edge and "process_cpu_s" in m:
            print(json.dumps({"t": t, "step": step, "cpu": m["process_cpu_s"], "train": m["train_cpu_s"],
                              "eval": m["eval_cpu_s"], "images": m["images"],
                              "merges": m.get("merges", 0)}), flush=True)
            break
        last = step
        time.sleep(1)
"""


def _samples(poller) -> list[dict]:
    return [json.loads(line) for line in poller.stdout().splitlines() if line.startswith("{")]


def _training(lan: LanBox, hosts: list[int]) -> bool:
    got = statuses(lan, hosts[0], hosts).values()
    return all((s.get("learner") or {}).get("metrics", {}).get("images") for s in got)


def window(lan: LanBox, hosts: list[int], warmup: float, seconds: float) -> dict[int, dict]:
    """Per-node figures between the first chunk end after ``warmup`` and the first after
    ``warmup + seconds`` (counting from when every node has finished a chunk)."""
    wait_until("training", lambda: _training(lan, hosts), 180, interval=1.0)
    t0 = time.monotonic() + warmup
    pollers = {h: lan.spawn_python(h, POLLER, f"http://{lan.address(h)}:{HTTP_PORT}/api/status",
                                   str(t0), str(t0 + seconds))
               for h in hosts}
    time.sleep(warmup + seconds)
    wait_until("a chunk end after the window", lambda: all(
        len(_samples(p)) == 2 for p in pollers.values()), 120, interval=0.5)
    out = {}
    for h, p in pollers.items():
        a, b = _samples(p)
        p.kill()
        d = {k: b[k] - a[k] for k in ("t", "cpu", "train", "eval", "images", "merges")}
        other = d["cpu"] - d["train"] - d["eval"]
        out[h] = {"seconds": round(d["t"], 1), "cpu_s": round(d["cpu"], 2), "train_cpu_s": round(d["train"], 2),
                  "eval_cpu_s": round(d["eval"], 2), "other_cpu_s": round(other, 2),
                  "other_share": round(other / d["cpu"], 4) if d["cpu"] > 0 else None,
                  # cores busy with anything but training: the overhead a node pays per second
                  # whatever CPU it gets; as a share of a node training on one full core:
                  "other_cores": round(other / d["t"], 4),
                  "images_per_s": round(d["images"] / d["t"], 1),
                  "merges_per_s": round(d["merges"] / d["t"], 3),
                  "images_per_train_cpu_s": round(d["images"] / d["train"], 1) if d["train"] else None}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--seconds", type=float, default=60.0, help="measurement window")
    p.add_argument("--warmup", type=float, default=15.0, help="seconds after training starts")
    p.add_argument("--cores", type=int, default=1, help="--cores of each daemon")
    p.add_argument("--net", default="fashion", help="the daemons' --net (the default for the embedded set)")
    p.add_argument("--daemon-args", default="", help="more daemon flags, e.g. '--merge average'")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    ok, reason = lanbox_available()
    if not ok:
        print(f"cannot build a LAN in a box here: {reason}", file=sys.stderr)
        return 2
    extra = ["--net", args.net, "--cores", str(args.cores), *shlex.split(args.daemon_args)]
    hosts = list(range(args.nodes))
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, LanBox(hosts=args.nodes) as lan:
        root = Path(tmp)
        procs = {0: start_daemon(lan, 0, root / "alone", new_swarm_token(), *extra)}
        alone = window(lan, [0], args.warmup, args.seconds)[0]
        procs[0].kill()
        procs[0].wait(30)
        token = new_swarm_token()
        procs = {h: start_daemon(lan, h, root / f"n{h}", token, *extra) for h in hosts}
        swarm = window(lan, hosts, args.warmup, args.seconds)
        absorbed = {h: s.get("counters", {}).get("exchange", {}).get("absorbed")
                    for h, s in statuses(lan, 0, hosts).items()}
    shares = [s["other_share"] for s in swarm.values()]
    print(f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f}; {args.seconds:.0f} s windows, "
          f"--net {args.net} --cores {args.cores} {args.daemon_args}, daemon defaults otherwise")
    print(f"{'node':<8}{'CPU s':>8}{'train':>8}{'eval':>7}{'other':>7}{'other %':>9}{'other cores':>12}"
          f"{'img/s':>8}{'img/train-CPU-s':>17}{'merges/s':>10}")
    for name, r in [("alone", alone)] + [(f"swarm {h}", swarm[h]) for h in hosts]:
        print(f"{name:<8}{r['cpu_s']:>8.1f}{r['train_cpu_s']:>8.1f}{r['eval_cpu_s']:>7.1f}"
              f"{r['other_cpu_s']:>7.2f}{100 * r['other_share']:>8.2f}%{r['other_cores']:>12.4f}"
              f"{r['images_per_s']:>8.0f}{r['images_per_train_cpu_s'] or 0:>17.0f}{r['merges_per_s']:>10.2f}")
    print(f"merges absorbed at the end: {absorbed}")
    summary = {"alone_other_share": alone["other_share"], "swarm_other_share_median": statistics.median(shares),
               "swarm_other_share_max": max(shares),
               "swarm_other_cores_median": statistics.median(s["other_cores"] for s in swarm.values()),
               "alone_other_cores": alone["other_cores"],
               "alone_images_per_s": alone["images_per_s"],
               "swarm_images_per_s_median": statistics.median(s["images_per_s"] for s in swarm.values())}
    print(f"gossip overhead (median node): {100 * summary['swarm_other_share_median']:.2f}% of its CPU "
          f"(alone {100 * alone['other_share']:.2f}%); {summary['swarm_other_cores_median']:.4f} cores, i.e. "
          f"{100 * summary['swarm_other_cores_median']:.2f}% of a node training on one full core; target <= 2%")
    if args.json:
        print(json.dumps({"args": vars(args), "load_average": [load0, os.getloadavg()[0]], "alone": alone,
                          "swarm": swarm, "absorbed": absorbed, **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
