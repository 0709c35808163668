"""``gossipnet demo --nodes N``: a swarm of N nodes on this machine, over loopback.

Loopback has no multicast on most machines, so the demo nodes find each other through
static seeds (every node seeds from the first one) instead of mDNS. They share one
fresh swarm token, train on disjoint shards of the data, and gossip exactly as nodes
on a LAN do. The status URLs are printed one per line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

from gossipnet.config import build_config
from gossipnet.errors import UserError

log = logging.getLogger("gossipnet")
_LOCKS: list = []  # the nodes' state-directory locks, released when the process ends


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="start N local nodes that gossip over loopback and print their status URLs",
        description="A whole swarm on this machine: N nodes on 127.0.0.1, each training on its own "
        "shard, gossiping signed snapshots. Runs until Ctrl-C; state is kept in --dir.",
    )
    p.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    p.add_argument("--dir", default="~/.gossipnet/demo", help="state directories of the nodes")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to use (default 127.0.0.1)")
    p.add_argument("--dataset", choices=["embedded", "fashion-mnist", "mnist", "cifar10"], default="embedded")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--net", default=None)
    p.add_argument("--task", default=None, help="run neuroevolution islands on this task instead")
    p.add_argument("--alpha", type=float, default=None, help="non-IID shards (Dirichlet alpha)")
    p.add_argument("--merge", choices=["guarded", "average", "clipped"], default="guarded")
    p.add_argument("--announce-interval", "--gossip-interval", dest="announce_interval", type=float, default=3.0,
                   help="seconds between snapshot announcements (default 3)")
    p.add_argument("--eval-interval", type=float, default=20.0)
    p.add_argument("--max-steps", type=int, default=None, help="stop training after N steps (keep serving)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--cores", type=int, default=None, metavar="N",
                   help="cores for the whole demo, divided among its nodes (default: every core available)")
    p.add_argument("--json", action="store_true", help="at the end, print each node's results as JSON")


def cores_per_node(cores: int | None, nodes: int) -> int:
    """The machine's cores (or ``cores``) shared out among the demo's nodes, at least one each."""
    from gossipnet.nn.parallel import available_cores, check_cores

    available = available_cores()
    total = available if cores is None else check_cores(cores)
    per_node = max(1, total // nodes)
    # a node given more workers than cores warns of its own (DataParallel): say it once
    if total > available and per_node <= available:
        log.warning("--cores %d: this process may run on only %d cores, so the nodes' training "
                    "workers will take turns on them and train slower than on --cores %d",
                    total, available, available)
    return per_node


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 16:
        raise UserError(f"--nodes {args.nodes}: give 1 to 16 (each node trains on this machine's CPU)")
    if args.verbose == 0:
        logging.getLogger("gossipnet").setLevel(logging.INFO)
    return asyncio.run(_demo(args))


def _build_nodes(args: argparse.Namespace) -> list:
    from gossipnet.commands.learner_factory import build_learner
    from gossipnet.node import Node
    from gossipnet.trust.credentials import load_credentials
    from gossipnet.trust.identity import claim_state_dir, load_or_create_identity, next_incarnation
    from gossipnet.trust.swarm import Swarm, create_swarm, load_swarm

    root = Path(args.dir).expanduser()
    now_ms = int(time.time() * 1000)
    swarm_dir = root / "swarm"
    swarm: Swarm = load_swarm(swarm_dir) if (swarm_dir / "swarm.key").exists() else create_swarm(
        swarm_dir, "demo", now_ms)
    evolution = args.task is not None
    per_node = cores_per_node(args.cores, args.nodes)
    data = None
    if not evolution:
        from gossipnet.data import load_dataset

        data = load_dataset(args.dataset, args.data_dir)
    nodes = []
    for i in range(args.nodes):
        cfg = build_config({}, {
            # islands keep their own directories: a convnet checkpoint cannot resume an island
            "state_dir": str(root / (f"{args.task}-node{i}" if evolution else f"node{i}")),
            "host": args.host, "interface": args.host,
            "udp_port": 0, "http_port": 0, "mdns": False, "preset": "local",
            "learner": "evolution" if evolution else "convnet", "task": args.task or "cartpole",
            "dataset": args.dataset, "net": args.net, "shards": args.nodes, "shard": i,
            "alpha": args.alpha, "merge": args.merge, "announce_interval": args.announce_interval,
            "eval_interval": args.eval_interval, "max_steps": args.max_steps, "cores": per_node,
        })
        _LOCKS.append(claim_state_dir(cfg.state_dir))  # held while this process runs
        identity = load_or_create_identity(cfg.state_dir)
        creds = load_credentials(identity, now_ms, swarm_token=swarm.token)
        learner = build_learner(cfg, identity.node_id, data)
        nodes.append(Node(cfg, learner, identity, creds,
                          incarnation=next_incarnation(cfg.state_dir, now_ms)))
    return nodes


async def _demo(args: argparse.Namespace) -> int:
    nodes = _build_nodes(args)
    from gossipnet.nn import blas

    blas.use_one_thread()
    log.info("BLAS: %s", blas.describe())
    loop = asyncio.get_running_loop()

    def stop_all() -> None:
        for n in nodes:
            n.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_all)
    runners = [asyncio.create_task(n.run(), name=f"node {i}") for i, n in enumerate(nodes)]
    for n, r in zip(nodes, runners):
        ready = asyncio.create_task(n.ready.wait())
        await asyncio.wait({r, ready}, return_when=asyncio.FIRST_COMPLETED)
        if r.done():  # a node failed to start: stop the others and report why
            stop_all()
            await asyncio.gather(*runners, return_exceptions=True)
            r.result()
    seed = (args.host, nodes[0].udp_port)
    for n in nodes[1:]:
        n.add_peer(seed)
    for n in nodes:
        print(n.status_url, flush=True)
    print(f"{len(nodes)} nodes gossiping on {args.host}; Ctrl-C stops them", file=sys.stderr, flush=True)
    if args.duration is not None:
        loop.call_later(args.duration, stop_all)
    results = await asyncio.gather(*runners, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    for e in errors:
        log.error("node failed: %r", e)
    _summary(nodes, args.json)
    return 1 if errors else 0


def _summary(nodes: list, as_json: bool) -> None:
    """Every node's final held-out score (evaluated now: the workers have stopped)."""
    import json

    rows = []
    for n in nodes:
        final = n.learner.evaluate()
        score_key = "test_accuracy" if "test_accuracy" in final else "eval_mean"
        rows.append({"node": n.node_id, "step": n.learner.step, score_key: final.get(score_key),
                     "absorbed": n.core.exchange["absorbed"] if n.core else 0, "url": n.status_url})
    if as_json:
        print(json.dumps({"nodes": rows}), flush=True)
        return
    print("node              step    score    merges", file=sys.stderr)
    for r in rows:
        score = r.get("test_accuracy", r.get("eval_mean"))
        text = f"{score:8.4f}" if isinstance(score, float) else "       -"
        print(f"{r['node']:<16} {r['step']:>6} {text} {r['absorbed']:>8}", file=sys.stderr)
