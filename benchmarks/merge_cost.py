"""What one exchange costs, stage by stage: the CPU behind ``benchmarks/gossip_cost.py``'s figure.

Three ``ConvnetLearner`` s (the daemon's defaults: ``--net fashion`` on the embedded set,
guarded merge, Adam's v shared) train on overlapping shards; after every chunk of
``--chunk`` batches two of them publish and the third absorbs both, through what the daemon
runs (``gossipnet.exchange``): ``publish`` (snapshot, float16 encode, sha256), ``Download``
(size and sha256 of the bytes), ``Gate.open`` (header, float16 decode, finiteness) and
``ConvnetLearner.absorb`` (the guard's checks and the merge of weights and moments). Each
stage is timed with ``time.thread_time`` in one worker thread with one BLAS thread, as in
the daemon; absorbs are split into those inside the guard's outlier radius and those the
held-out forward pass had to check. CPU time, so the machine's load changes it little.

    python benchmarks/merge_cost.py --rounds 15 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gossipnet import exchange  # noqa: E402
from gossipnet.data import load_dataset  # noqa: E402
from gossipnet.learners.convnet import ConvnetConfig, ConvnetLearner  # noqa: E402
from gossipnet.nn import blas  # noqa: E402

STAGES = ("publish", "download", "open", "absorb")


def measure(rounds: int, chunk: int, net: str) -> dict:
    data = load_dataset("embedded")
    n = len(data.y_train)
    own, *peers = (ConvnetLearner(data, np.arange(lo, hi), ConvnetConfig(net=net, seed=seed))
                   for seed, (lo, hi) in enumerate([(0, n // 2), (n // 2, n), (n // 3, n)], 1))
    for learner in (own, *peers):
        learner.train(chunk)
    gate = exchange.Gate(own.kind, {k: v.shape for k, v in own.snapshot().tensors.items()})
    ms: dict[str, list[float]] = {s: [] for s in STAGES}
    by_reason: dict[str, list[float]] = {}
    for _ in range(rounds):
        for i, peer in enumerate(peers):
            peer.train(chunk)
            t = [time.thread_time()]
            offer = exchange.publish(peer.snapshot(), peer.wire, peer.step)
            t.append(time.thread_time())
            blob = exchange.Download.whole(offer.manifest, offer.data)
            t.append(time.thread_time())
            snapshot = gate.open(blob)
            t.append(time.thread_time())
            result = own.absorb(snapshot, f"peer{i}")
            t.append(time.thread_time())
            for stage, a, b in zip(STAGES, t, t[1:]):
                ms[stage].append(1000 * (b - a))
            by_reason.setdefault(result.reason, []).append(ms["absorb"][-1])
        own.train(chunk)
    out = {f"{s}_ms": round(statistics.median(v), 2) for s, v in ms.items()}
    out["absorb_ms_by_reason"] = {r: round(statistics.median(v), 2) for r, v in by_reason.items()}
    out["absorbs_by_reason"] = {r: len(v) for r, v in by_reason.items()}
    out["receive_ms"] = round(out["download_ms"] + out["open_ms"] + out["absorb_ms"], 2)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=15, help="rounds of two absorbs each")
    p.add_argument("--chunk", type=int, default=20, help="batches trained between rounds (the daemon's chunk)")
    p.add_argument("--net", default="fashion")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    blas.set_threads(1)  # as the daemon runs (commands/run.py)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(measure(args.rounds, args.chunk, args.net)))
    worker.start()  # thread_time per stage, in a worker thread as the node's learner runs
    worker.join()
    print(f"median CPU per stage (ms), --net {args.net}, {2 * args.rounds} absorbs:")
    for stage in STAGES:
        print(f"  {stage:<9}{result[f'{stage}_ms']:>8.2f}")
    print(f"  absorb by guard verdict: {result['absorb_ms_by_reason']} (count {result['absorbs_by_reason']})")
    print(f"  receiving one snapshot (download + open + absorb): {result['receive_ms']:.2f} ms")
    if args.json:
        print(json.dumps({"args": vars(args), **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
