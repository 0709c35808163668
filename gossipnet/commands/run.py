"""``gossipnet run`` (and ``python daemon.py``): one node, until SIGTERM or Ctrl-C.

With no swarm credentials the node makes a swarm of its own (kept in its state
directory, so a restart rejoins the same swarm) and prints the one line another
machine needs to join it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from typing import TYPE_CHECKING

from gossipnet.config import NodeConfig, build_config, load_toml
from gossipnet.trust.credentials import TOKEN_ENV, credentials_from_args, load_credentials
from gossipnet.trust.identity import claim_state_dir, load_or_create_identity, next_incarnation
from gossipnet.trust.swarm import create_swarm, load_swarm

if TYPE_CHECKING:  # the node pulls in aiohttp and matplotlib: import it only to run one
    from gossipnet.node import Node

log = logging.getLogger("gossipnet")

_FLAG_FIELDS = (
    "state_dir", "host", "interface", "udp_port", "http_port", "preset", "learner", "dataset",
    "data_dir", "net", "shards", "shard", "alpha", "task", "algo", "seed", "trust", "merge", "clip_radius",
    "train_chunk", "announce_interval", "checkpoint_interval", "eval_interval", "max_steps",
    "volunteer_steps", "volunteer_spot_check_rate", "volunteer_max_share", "volunteer_leases_per_minute",
    "population", "cores", "start_from", "lr_schedule", "lr_half_life", "lr",
    "image_size", "color_mode",
)


def detect_interface() -> str | None:
    """This host's LAN address: the source address the kernel would use for mDNS.

    A connected UDP socket only looks the route up; nothing is sent.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("224.0.0.251", 5353))
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("0.") else addr


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    file_values = load_toml(args.config) if args.config else {}
    flags = {name: getattr(args, name, None) for name in _FLAG_FIELDS}
    if args.peer:
        flags["peers"] = tuple(args.peer)
    if args.no_mdns:
        flags["mdns"] = False
    if getattr(args, "volunteers", None):
        flags["volunteers"] = args.volunteers == "on"
    if args.task and not flags.get("learner") and file_values.get("learner") is None:
        flags["learner"] = "evolution"
    for name in ("swarm_token", "cert", "insecure_open"):
        value = getattr(args, name, None)
        if value:
            flags[name] = value
    if args.allow:
        flags["allow"] = (args.allow,)
    cfg = build_config(file_values, flags)
    if cfg.interface is None and cfg.host in ("0.0.0.0", "::", ""):
        found = detect_interface()
        if found is None:
            log.warning("no LAN address found (no route for multicast): advertising 127.0.0.1, so only "
                        "this machine can reach the node; pass --interface ADDR to use a LAN address")
            found = "127.0.0.1"
        cfg = build_config(file_values, {**flags, "interface": found})
    return cfg


def _credentials(cfg: NodeConfig, args: argparse.Namespace, identity, now_ms: int):
    """(credentials, join line or None): the given ones, or a swarm of this node's own."""
    given = cfg.swarm_token or cfg.cert or cfg.allow or cfg.insecure_open or os.environ.get(TOKEN_ENV)
    if given:
        ns = argparse.Namespace(swarm_token=cfg.swarm_token, cert=cfg.cert,
                                allow=",".join(cfg.allow) if cfg.allow else None,
                                insecure_open=cfg.insecure_open, swarm_name=args.swarm_name)
        creds = credentials_from_args(ns, identity, now_ms)
        return creds, None
    swarm_dir = Path(cfg.state_dir) / "swarm"
    swarm = load_swarm(swarm_dir) if (swarm_dir / "swarm.key").exists() else create_swarm(
        swarm_dir, args.swarm_name or "gossipnet", now_ms)
    creds = load_credentials(identity, now_ms, swarm_token=swarm.token)
    return creds, f"gossipnet run --swarm-token {swarm.token}"


def run(args: argparse.Namespace) -> int:
    if args.verbose == 0:
        logging.getLogger("gossipnet").setLevel(logging.INFO)
    cfg = config_from_args(args)
    now_ms = int(time.time() * 1000)
    lock = claim_state_dir(cfg.state_dir)  # held until this process ends  # noqa: F841
    identity = load_or_create_identity(cfg.state_dir)
    credentials, join_line = _credentials(cfg, args, identity, now_ms)
    incarnation = next_incarnation(cfg.state_dir, now_ms)
    from gossipnet.commands.learner_factory import build_learner
    from gossipnet.node import Node

    from gossipnet.nn import blas

    blas.use_one_thread()
    log.info("BLAS: %s", blas.describe())
    from gossipnet.net.http_guard import raise_open_file_limit

    raise_open_file_limit()  # sockets, HTTP connections and checkpoints share one budget
    learner = build_learner(cfg, identity.node_id)
    _start_from(learner, cfg)
    node = Node(cfg, learner, identity, credentials, incarnation=incarnation)
    return asyncio.run(_serve(node, join_line))


def _start_from(learner, cfg: NodeConfig) -> None:
    """--start-from: a fresh node begins from the model; a node with its own checkpoint resumes."""
    if not cfg.start_from:
        return
    from gossipnet.checkpoint import CheckpointStore
    from gossipnet.model import load_model

    store = CheckpointStore(cfg.state_dir)
    if store.current.exists() or store.previous.exists():
        log.warning("--start-from %s ignored: %s holds this node's own checkpoint, which it resumes "
                    "(use a fresh --state-dir to start over from the model)", cfg.start_from, cfg.state_dir)
        return
    model = load_model(cfg.start_from)
    learner.start_from(model)
    log.info("starting from %s (%.0f images of training)", cfg.start_from, model.images)


async def _serve(node: Node, join_line: str | None) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.stop)
    runner = asyncio.create_task(node.run())
    ready = asyncio.create_task(node.ready.wait())
    await asyncio.wait({runner, ready}, return_when=asyncio.FIRST_COMPLETED)
    if node.ready.is_set():
        _banner(node, join_line)
    await runner
    print(f"node {node.node_id} stopped at step {node.learner.step}; state in {node.cfg.state_dir}",
          flush=True)
    return 0


def _banner(node: Node, join_line: str | None) -> None:
    cfg = node.cfg
    lines = [
        f"gossipnet node {node.node_id} is up (step {node.learner.step})",
        f"  status page: {node.status_url}",
        f"  volunteers:  {node.status_url + 'volunteer' if node.volunteers else 'off'}",
        f"  gossip:      {cfg.advertised_host}:{node.udp_port}/udp, {node.credentials.summary}",
        f"  discovery:   {'mDNS on ' + cfg.advertised_host if cfg.mdns else 'off'}"
        + (f", seeds {', '.join(cfg.peers)}" if cfg.peers else ""),
        f"  learning:    {node.learner.kind} {node.learner.fingerprint}, state in {cfg.state_dir}",
    ]
    if join_line:
        lines += ["To join another machine to this swarm, run there:", f"  {join_line}"]
    print("\n".join(lines), flush=True)
    sys.stdout.flush()


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a node: train, find peers by mDNS, gossip signed snapshots, serve a status page",
        description="Run one gossipnet node until SIGTERM or Ctrl-C. Settings come from defaults, "
        "then --config FILE (TOML, keys named like the flags), then flags.",
    )
    p.add_argument("--config", default=None, metavar="FILE", help="TOML file of settings")
    p.add_argument("--state-dir", default=None, metavar="DIR",
                   help="keys, checkpoints and swarm of this node (default ~/.gossipnet/node)")
    net = p.add_argument_group("network")
    net.add_argument("--host", default=None, help="address to bind (default 0.0.0.0)")
    net.add_argument("--interface", default=None, metavar="ADDR",
                     help="this host's LAN address: mDNS runs there and peers are told it "
                     "(default: the address of the route to the mDNS group)")
    net.add_argument("--udp-port", type=int, default=None, help="gossip port (default 7946; 0 = any free)")
    net.add_argument("--http-port", type=int, default=None, help="status page port (default 8080; 0 = any free)")
    net.add_argument("--peer", action="append", default=[], metavar="HOST:UDP_PORT",
                     help="a static seed for where mDNS cannot reach (repeatable)")
    net.add_argument("--no-mdns", action="store_true", help="no mDNS: find peers only through --peer")
    net.add_argument("--preset", choices=["lan", "local"], default=None,
                     help="protocol timings: lan (memberlist's LAN defaults) or local (fast, for loopback)")
    swarm = p.add_argument_group("swarm credentials (default: a new swarm of this node's own)")
    swarm.add_argument("--swarm-token", default=None, metavar="TOKEN|FILE",
                       help=f"join with the token `gossipnet swarm init` printed (or ${TOKEN_ENV})")
    swarm.add_argument("--cert", default=None, metavar="CERT|FILE",
                       help="join with a certificate from `gossipnet swarm admit`")
    swarm.add_argument("--allow", default=None, metavar="KEYS|FILE",
                       help="accept only these public keys (comma-separated, or a file, one per line)")
    swarm.add_argument("--insecure-open", action="store_true",
                       help="accept any key (messages are still signed): throw-away swarms only")
    swarm.add_argument("--swarm-name", default=None, help="name for a new own swarm or an open swarm")
    learn = p.add_argument_group("learning")
    learn.add_argument("--learner", choices=["convnet", "evolution"], default=None)
    learn.add_argument("--dataset", choices=["embedded", "fashion-mnist", "mnist", "cifar10", "folder"],
                       default=None, help="folder: your own pictures, --data-dir DIR/<class>/*.jpg")
    learn.add_argument("--data-dir", default=None, metavar="DIR")
    learn.add_argument("--image-size", type=int, default=None, metavar="PIXELS",
                       help="folder: resize pictures to PIXELS x PIXELS (default: the net's, or 28 grey / 32 colour)")
    learn.add_argument("--color-mode", choices=["auto", "grayscale", "rgb"], default=None,
                       help="folder: grey or colour input (default auto: the net's, or colour if any picture is)")
    learn.add_argument("--net", default=None, help="network preset (gossipnet train --list-nets)")
    learn.add_argument("--shards", type=int, default=None, help="split the training set into N shards")
    learn.add_argument("--shard", type=int, default=None, help="which shard this node trains on")
    learn.add_argument("--alpha", type=float, default=None,
                       help="non-IID shards: Dirichlet label skew (smaller = more skewed)")
    learn.add_argument("--task", default=None, help="neuroevolution control task (implies --learner evolution)")
    learn.add_argument("--algo", choices=["ga", "es", "cmaes"], default=None)
    learn.add_argument("--seed", type=int, default=None, help="default: derived from the node id")
    learn.add_argument("--population", type=int, default=None, help="members per island (evolution)")
    learn.add_argument("--trust", choices=["verify", "members"], default=None,
                       help="verify (default): check every member's snapshot (claimed age, weight "
                            "norm and direction, held-out loss of outliers); members: believe admitted "
                            "members (plain averaging; only for machines you control). docs/SECURITY.md")
    learn.add_argument("--merge", choices=["guarded", "average", "clipped"], default=None,
                       help="guarded (default: age-weighted, a member's lies bounded), plain "
                            "age-weighted averaging (trusts every member), or ClippedGossip")
    learn.add_argument("--clip-radius", type=float, default=None, help="ClippedGossip's L2 radius")
    learn.add_argument("--max-steps", type=int, default=None, help="stop training after N steps (keep serving)")
    learn.add_argument("--start-from", default=None, metavar="MODEL",
                       help="begin from a trained model (gossipnet train --checkpoint file, model.safetensors "
                            "or a node's state dir) when --state-dir has no checkpoint yet")
    learn.add_argument("--cores", type=int, default=None, metavar="N",
                       help="train on N cores, one worker process each (default: every core available)")
    learn.add_argument("--lr", type=float, default=None,
                       help="convnet base learning rate (default: the net preset's; a swarm of K nodes: "
                            "about sqrt(K) x that, docs/RESULTS.md)")
    learn.add_argument("--lr-schedule", choices=["constant", "age"], default=None,
                       help="convnet learning rate: constant (default) or decaying with the model's age")
    learn.add_argument("--lr-half-life", type=float, default=None, metavar="IMAGES",
                       help="with --lr-schedule age: the age at which the rate is half (default 30000)")
    cad = p.add_argument_group("cadence (seconds)")
    cad.add_argument("--train-chunk", type=int, default=None, help="steps between merges (default 20)")
    cad.add_argument("--announce-interval", "--gossip-interval", dest="announce_interval", type=float, default=None,
                     help="seconds between snapshot announcements (default: the preset's, lan 5, local 0.5)")
    cad.add_argument("--checkpoint-interval", type=float, default=None, help="default 60")
    cad.add_argument("--eval-interval", type=float, default=None, help="default 30")
    vol = p.add_argument_group("browser volunteers (docs/VOLUNTEERS.md)")
    vol.add_argument("--volunteers", choices=["on", "off"], default=None,
                     help="serve /volunteer so browsers on the LAN train for this node (default on)")
    vol.add_argument("--volunteer-steps", type=int, default=None, help="optimizer steps per lease (default 8)")
    vol.add_argument("--volunteer-spot-check-rate", type=float, default=None,
                     help="fraction of leases the node recomputes (default 0.1)")
    vol.add_argument("--volunteer-max-share", type=float, default=None,
                     help="volunteers' most share of the images the model learns from (default 0.5)")
    vol.add_argument("--volunteer-leases-per-minute", type=float, default=None,
                     help="leases per address per minute (default 30)")
