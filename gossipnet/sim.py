"""An in-process swarm: many nodes, a virtual clock, a virtual network.

Each ``SimNode`` runs the very ``NodeCore`` the daemon runs (membership, gossip, the
exchange gate and its counters); the ``Swarm`` replaces asyncio and sockets with a
priority queue of timed events, the LAN with a ``Network`` that loses, delays and
partitions datagrams, and HTTP pulls with a lookup in the publisher's ``Shelf`` after
``pull_time``. Snapshots are real blobs (``exchange.publish`` of a ``SimLearner``) and
go through ``Download`` and ``Gate.open`` as a daemon's do. Everything draws from one
seed, so a run repeats exactly. Bodies cross the virtual wire through msgpack, as they
would on a real one, so a body that cannot be encoded or is too large shows up here.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgpack

from gossipnet import exchange
from gossipnet.core import NodeCore, Output
from gossipnet.gossip import GossipConfig, Pull
from gossipnet.learners.base import AbsorbResult, Learner
from gossipnet.learners.stand_in import SimLearner
from gossipnet.membership import Membership, MembershipConfig, MemberEvent, Outgoing, State
from gossipnet.membership.types import Addr
from gossipnet.rejections import Rejection
from gossipnet.wire.types import MsgType

PORT = 7946  # memberlist's default port; every simulated host has its own address
HTTP_PORT = 8000


@dataclass
class Network:
    """Per-link faults: ``loss`` probability, one-way ``delay`` plus uniform ``jitter``."""

    rng: random.Random
    loss: float = 0.0
    delay: float = 0.001
    jitter: float = 0.001
    links: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    groups: list[set[str]] | None = None

    def set_link(self, src: str, dst: str, loss: float | None = None,
                 delay: float | None = None) -> None:
        """Faults on one direction of one link (defaults to the network-wide values)."""
        self.links[(src, dst)] = (self.loss if loss is None else loss,
                                  self.delay if delay is None else delay)

    def partition(self, *groups: set[str]) -> None:
        """Only nodes in the same group can talk; nodes in no group talk to nobody."""
        self.groups = [set(g) for g in groups]

    def heal(self) -> None:
        self.groups = None

    def connected(self, src: str, dst: str) -> bool:
        return self.groups is None or any(src in g and dst in g for g in self.groups)

    def transit(self, src: str, dst: str) -> float | None:
        """Delay of one datagram, or None if it is lost."""
        if not self.connected(src, dst):
            return None
        loss, delay = self.links.get((src, dst), (self.loss, self.delay))
        if self.rng.random() < loss:
            return None
        return delay + self.rng.uniform(0, self.jitter)


@dataclass
class SimNode:
    node_id: str
    addr: Addr
    core: NodeCore
    learner: SimLearner | None = None  # None: a membership-only swarm
    shelf: exchange.Shelf = field(default_factory=exchange.Shelf)
    up: bool = True
    boots: int = 1
    trained_until: float = 0.0  # the learner trains one step per simulated second of uptime
    events: list[MemberEvent] = field(default_factory=list)

    @property
    def membership(self) -> Membership:
        return self.core.membership

    @property
    def gossip(self):
        return self.core.gossip if self.learner is not None else None

    @property
    def age(self) -> float:
        return self.learner.age if self.learner is not None else 0.0


class Swarm:
    """N simulated nodes and the event loop that drives them."""

    def __init__(self, n: int, seed: int = 0, config: MembershipConfig | None = None,
                 gossip_config: GossipConfig | None = None, loss: float = 0.0,
                 delay: float = 0.001, jitter: float = 0.001, join: str = "seed",
                 pull_time: float = 0.5) -> None:
        """``join``: "seed" (everyone knows node 0's address), "all" (everyone knows
        everyone, as mDNS would give), or "none" (call ``add_seed`` yourself).
        ``gossip_config``: None runs membership only; given, every node trains a
        ``SimLearner`` and gossips its snapshots.
        ``pull_time``: how long a simulated HTTP pull of a snapshot takes."""
        self.pull_time = pull_time
        self.seed = seed
        self.rng = random.Random(seed)
        self.config = config or MembershipConfig.lan()
        self.gossip_config = gossip_config
        self.net = Network(random.Random(self.rng.random()), loss, delay, jitter)
        self.now = 0.0
        self.nodes: dict[str, SimNode] = {}
        # node id -> identity key, for nodes whose id is a key hash: they sign their alive
        # records as daemons do (the others, named "n001" ..., are unsigned and trusted)
        self.signing_keys: dict[str, Any] = {}
        self.by_addr: dict[Addr, str] = {}
        self.counters: Counter[str] = Counter()
        self.max_body = 0
        self.trace: dict[str, list[tuple[float, str, Any]]] | None = None  # node -> (time, input, output)
        self._queue: list[tuple[float, int, str, Any]] = []
        self._tie = itertools.count()
        self._wake: dict[str, float] = {}
        for i in range(n):
            self.add_node(f"n{i:03d}")
        ids = list(self.nodes)
        for node_id in ids:
            if join == "seed" and node_id != ids[0]:
                self.nodes[node_id].core.add_seed(self.nodes[ids[0]].addr, self.now)
            elif join == "all":
                for other in ids:
                    if other != node_id:
                        self.nodes[node_id].core.add_seed(self.nodes[other].addr, self.now)

    # ------------------------------------------------------------ nodes

    def make_core(self, node_id: str, addr: Addr, incarnation: int, learner: Learner) -> NodeCore:
        """A node's core, built from its learner's declarations as ``Node.make_core`` does."""
        return NodeCore.for_learner(node_id, addr, learner, http_port=HTTP_PORT,
                                    membership_rng=random.Random(f"{self.seed}:{node_id}:{incarnation}"),
                                    gossip_rng=random.Random(f"{self.seed}:{node_id}:gossip:{incarnation}"),
                                    incarnation=incarnation, membership_config=self.config,
                                    gossip_config=self.gossip_config, signing_key=self.signing_keys.get(node_id))

    def add_node(self, node_id: str) -> SimNode:
        index = len(self.nodes) + 1
        addr = (f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}", PORT)
        learner = SimLearner() if self.gossip_config is not None else None
        node = SimNode(node_id, addr, self.make_core(node_id, addr, 0, learner or SimLearner()), learner,
                       trained_until=self.now)
        self.nodes[node_id] = node
        self.by_addr[addr] = node_id
        self._schedule(node_id, self.now)
        return node

    def crash(self, node_id: str) -> None:
        """The process dies: no goodbye, its datagrams and timers vanish."""
        self.nodes[node_id].up = False

    def restart(self, node_id: str, seed_with: str | None = None, lose_state: bool = False) -> None:
        """A fresh process with the persisted incarnation + 1 (memberlist's rejoin); the
        learner's state survives, as a checkpoint's would, unless ``lose_state``."""
        node = self.nodes[node_id]
        incarnation = node.membership.incarnation + 1
        if lose_state and node.learner is not None:
            node.learner = SimLearner()
        node.trained_until = self.now
        node.core = self.make_core(node_id, node.addr, incarnation, node.learner or SimLearner())
        node.shelf = exchange.Shelf()
        node.boots += 1
        node.up = True
        seed = seed_with or next(i for i in self.nodes if i != node_id)
        node.core.add_seed(self.nodes[seed].addr, self.now)
        self._schedule(node_id, self.now)

    def leave(self, node_id: str) -> None:
        node = self.nodes[node_id]
        self._send(node, node.core.leave(self.now))
        node.up = False

    # ------------------------------------------------------------ loop

    def _schedule(self, node_id: str, at: float) -> None:
        if at < self._wake.get(node_id, float("inf")) or self._wake.get(node_id, -1.0) < self.now:
            self._wake[node_id] = at
            heapq.heappush(self._queue, (at, next(self._tie), "wake", node_id))

    def _reschedule(self, node: SimNode) -> None:
        times = [node.core.next_deadline()]
        if node.learner is not None:
            times.append(self.now + 1.0)  # training progress
        times = [t for t in times if t is not None]
        if times:
            self._schedule(node.node_id, max(min(times), self.now))

    def _act(self, node: SimNode, what: str, out: Output) -> None:
        """Do what a node's core asked, as ``Node._act`` does with sockets and HTTP."""
        if self.trace is not None:
            self.trace.setdefault(node.node_id, []).append((self.now, what, out))
        node.events += out.members
        self._send(node, out.sends)
        for pull in out.pulls:
            src = self.by_addr.get((pull.host, PORT))
            transit = self.net.transit(node.node_id, src) if src is not None else None
            at = self.now + self.pull_time + (transit or 0.0)
            heapq.heappush(self._queue, (at, next(self._tie), "pulled",
                                         (node.node_id, src, pull, transit is not None)))

    def _send(self, node: SimNode, out: list[Outgoing]) -> None:
        for msg in out:
            data = msgpack.packb(msg.body, use_bin_type=True)
            self.max_body = max(self.max_body, len(data))
            self.counters[f"sent.{msg.msg_type.name.lower()}"] += 1
            dst = self.by_addr.get(msg.addr)
            if dst is None:
                self.counters["no_route"] += 1
                continue
            if len(data) > node.membership.config.max_body_bytes:
                self.counters["oversize"] += 1
            transit = self.net.transit(node.node_id, dst)
            if transit is None:
                self.counters["lost"] += 1
                continue
            heapq.heappush(self._queue, (self.now + transit, next(self._tie), "deliver",
                                         (node.node_id, node.addr, dst, msg.msg_type, data)))

    def _wake_node(self, node: SimNode) -> None:
        steps = int(self.now - node.trained_until)
        if node.learner is not None and steps >= 1:
            node.learner.train(steps)
            node.trained_until += steps
            offer = exchange.publish(node.learner.snapshot(), node.learner.wire, node.learner.step)
            if offer is not None:
                node.shelf.put(offer)
                node.core.offer(offer.manifest)
        self._act(node, "tick", node.core.tick(self.now))

    def _deliver(self, src: str, src_addr: Addr, dst: str, msg_type: MsgType,
                 data: bytes) -> None:
        node = self.nodes[dst]
        if not node.up or not self.nodes[src].up and msg_type != MsgType.LEAVE:
            self.counters["to_down_node"] += 1
            return
        body = msgpack.unpackb(data, raw=False)
        self._act(node, f"message {msg_type.name} from {src}",
                  node.core.on_message(src, src_addr, msg_type, body, self.now))

    def _pulled(self, dst: str, src: str | None, pull: Pull, reachable: bool) -> None:
        """A pull ends: the publisher's shelf stands in for its HTTP server."""
        node = self.nodes[dst]
        if not node.up or node.learner is None:
            return
        outcome: AbsorbResult | Rejection
        data = self.nodes[src].shelf.get(pull.manifest.sha_hex) if src is not None else None
        if not reachable or src is None or not self.nodes[src].up:
            outcome = Rejection("pull", "unreachable")
        elif data is None:
            outcome = Rejection("pull", "gone")
        else:
            try:
                blob = exchange.Download.whole(pull.manifest, data)
            except exchange.Refused as exc:
                outcome = exc.rejection
            else:
                snapshot = node.core.gate.open(blob)
                outcome = snapshot if isinstance(snapshot, Rejection) else node.learner.absorb(snapshot, src)
        self._act(node, f"pulled from {src}", node.core.pull_done(pull, outcome, self.now, self.now))

    def run_until(self, t: float) -> None:
        """Process every event up to virtual time ``t``."""
        while self._queue and self._queue[0][0] <= t:
            at, _, kind, payload = heapq.heappop(self._queue)
            self.now = at
            if kind == "wake":
                if self._wake.get(payload) != at:
                    continue
                del self._wake[payload]
                node = self.nodes[payload]
                if not node.up:
                    continue
                self._wake_node(node)
                self._reschedule(node)
            elif kind == "deliver":
                self._deliver(*payload)
                if self.nodes[payload[2]].up:
                    self._reschedule(self.nodes[payload[2]])
            else:
                self._pulled(*payload)
        self.now = t

    def run(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    # ------------------------------------------------------------ observing

    def up_ids(self) -> list[str]:
        return [i for i, n in self.nodes.items() if n.up]

    def view(self, observer: str) -> dict[str, State]:
        return {m.node_id: m.state for m in self.nodes[observer].membership.members()
                if m.node_id != observer}

    def converged(self, among: list[str] | None = None) -> bool:
        """Every node in ``among`` (default: all up) sees all the others alive."""
        among = among if among is not None else self.up_ids()
        for a in among:
            view = self.view(a)
            if any(view.get(b) != State.ALIVE for b in among if b != a):
                return False
        return True

    def run_until_converged(self, limit: float, step: float = 0.5,
                            among: list[str] | None = None) -> float | None:
        """Run until converged; the virtual time it took, or None if ``limit`` passed."""
        start = self.now
        while self.now - start < limit:
            if self.converged(among):
                return self.now - start
            self.run(step)
        return self.now - start if self.converged(among) else None

    def events(self, kind: str) -> list[tuple[str, MemberEvent]]:
        return [(n.node_id, e) for n in self.nodes.values() for e in n.events
                if e.kind.value == kind]


def scenario(n: int, seed: int, loss: float, seconds: float, crash: bool) -> dict[str, Any]:
    """Join n nodes (as mDNS would: everyone knows everyone), optionally crash one,
    run with ``loss``; the figures quoted in docs/MEMBERSHIP.md."""
    swarm = Swarm(n, seed=seed, join="all")
    converged = swarm.run_until_converged(limit=60.0)
    swarm.net.loss = loss
    start = swarm.now
    victim = "n001"
    if crash:
        swarm.crash(victim)
    swarm.run(seconds)
    dead = [e for _, e in swarm.events("dead")]
    healthy_dead = [e for e in dead if e.node_id != victim or not crash]
    detect = [e.at - start for e in dead if crash and e.node_id == victim]
    sent = sum(v for k, v in swarm.counters.items() if k.startswith("sent."))
    return {
        "nodes": n, "seed": seed, "loss": loss, "converged_s": converged,
        "false_dead": len(healthy_dead),
        "suspect_events": len(swarm.events("suspect")),
        "victim_dead_first_s": min(detect) if detect else None,
        "victim_dead_all_s": max(detect) if len(detect) == n - 1 else None,
        "datagrams_per_node_s": sent / n / (swarm.now or 1.0),
        "max_body_bytes": swarm.max_body,
    }


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Run a simulated swarm and print its figures.")
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--crash", action="store_true", help="crash one node at the start")
    args = parser.parse_args()
    for s in range(args.seeds):
        print(json.dumps(scenario(args.nodes, s, args.loss, args.seconds, args.crash)))
