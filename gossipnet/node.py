"""The orchestrator: one node's sockets, tasks and learner, wired to the sans-IO ``NodeCore``.

``Node.run()`` binds the UDP and HTTP sockets, resumes from the last checkpoint, and
runs every background task in one ``asyncio.TaskGroup`` (so a crash in any of them
surfaces instead of dying silently) until ``stop()``. Shutdown sends goodbyes, writes
the last checkpoint, then closes the sockets, in that order.

Everything the protocol decides happens in ``gossipnet.core.NodeCore``; this module only
awaits: datagrams in and out, blob pulls over HTTP, timers, and the worker thread. All
numpy work (training, opening blobs, merging, evaluating, publishing snapshots) happens
in that one worker thread, serialised there, so the learner needs no locks and the event
loop keeps answering probes, acks and status requests on time while the CPU trains.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

from gossipnet.checkpoint import CheckpointStore
from gossipnet.config import NodeConfig, parse_hostport
from gossipnet.core import NodeCore, Output
from gossipnet.errors import UserError
from gossipnet.gossip import GossipConfig, Pull
from gossipnet.learner_host import LearnerHost
from gossipnet.learners.base import AbsorbResult, Learner
from gossipnet.membership import MembershipConfig, State
from gossipnet.membership.types import Addr
from gossipnet.net.http import StatusServer
from gossipnet.net.volunteer_http import add_volunteer_routes
from gossipnet.net.pull import BlobPuller, PullError, PullLimits
from gossipnet.net.udp import UdpClosed, UdpConfig, UdpEndpoint
from gossipnet.rejections import Rejection
from gossipnet.status.history import MetricsHistory
from gossipnet.status.report import node_status
from gossipnet.trust.credentials import Credentials
from gossipnet.trust.identity import Identity, IncarnationRecord
from gossipnet.volunteers.hosting import volunteer_counters, volunteer_desk
from gossipnet.wire import BodyTooLarge, Receiver, ReceiverConfig, Rejected, Sealer

log = logging.getLogger(__name__)

# Advertised in mDNS TXT: nodes of another version are not contacted. 2: the MANIFEST
# body is exchange.Manifest (shape summary top-level, the learner's fingerprint).
# 3: wire envelope v2 (the recipient in the signed header).
PROTOCOL_VERSION = 3


class _Stopping(Exception):
    """Raised inside the task group to cancel every task on stop()."""


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    """The first exception of ``group`` that is not itself a group."""
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _wall() -> float:
    return time.time()


def _mono() -> float:
    return time.monotonic()


class Node:
    """A gossipnet node. ``await node.run()``; ``node.stop()`` from a signal handler or test."""

    def __init__(self, cfg: NodeConfig, learner: Learner, identity: Identity, credentials: Credentials,
                 *, incarnation: int, membership_config: MembershipConfig | None = None,
                 gossip_config: GossipConfig | None = None, udp_config: UdpConfig | None = None,
                 history: MetricsHistory | None = None) -> None:
        self.cfg = cfg
        self.learner = learner
        self.identity = identity
        self.credentials = credentials
        self.incarnation = incarnation
        self.membership_config = membership_config or cfg.membership_config()
        self.gossip_config = gossip_config or cfg.gossip_config()
        self.udp_config = udp_config or UdpConfig.lan()
        self.history = history or MetricsHistory()
        self.started_at = _wall()
        self.rng = random.Random(identity.node_id)
        self.core: NodeCore | None = None  # made in run(), once the sockets are bound
        self.volunteers = volunteer_desk(cfg, learner, self.rng)  # None: no browser volunteers here
        self.host = LearnerHost(learner, self.history, CheckpointStore(cfg.state_dir), train_chunk=cfg.train_chunk,
                                eval_interval=cfg.eval_interval, checkpoint_interval=cfg.checkpoint_interval,
                                publish_interval=self.gossip_config.announce_interval / 2, clock=_mono, wall=_wall,
                                volunteers=self.volunteers)
        self.bytes_http: Counter[str] = Counter()
        self.udp: UdpEndpoint | None = None
        self.http: StatusServer | None = None
        self.discovery = None
        self.sealer = Sealer(identity, credentials, incarnation)
        self.receiver = Receiver(credentials.policy, ReceiverConfig.udp(), node_id=identity.node_id)
        self._member_hosts: frozenset[str] = frozenset()  # alive members' IPs: their datagrams go first
        self._incarnation_record = IncarnationRecord(cfg.state_dir, saved=incarnation)
        self.puller = BlobPuller(PullLimits(max_bytes=self.gossip_config.max_blob_bytes,
                                            timeout_s=self.gossip_config.pull_timeout,
                                            max_concurrent=self.gossip_config.max_concurrent_pulls))
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gossipnet-learner")
        self._stop = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self.ready = asyncio.Event()  # set once sockets are bound and the node is announced

    async def _run_heavy(self, fn, *args):
        """Run CPU work (a volunteer update's checks) where training runs, off the loop."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    @property
    def kind(self) -> str:
        return self.learner.kind

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    @property
    def udp_port(self) -> int:
        assert self.udp is not None
        return int(self.udp.local_address[1])

    @property
    def http_port(self) -> int:
        assert self.http is not None and self.http.port is not None
        return self.http.port

    @property
    def status_url(self) -> str:
        host = self.cfg.advertised_host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.http_port}/"

    def make_core(self, addr: Addr, http_port: int, membership_rng: random.Random,
                  gossip_rng: random.Random) -> NodeCore:
        """This node's protocol core, as ``run()`` makes it (``sim.Swarm.make_core`` makes its own alike)."""
        return NodeCore.for_learner(self.node_id, addr, self.learner, http_port=http_port,
                                    membership_rng=membership_rng, gossip_rng=gossip_rng, incarnation=self.incarnation,
                                    membership_config=self.membership_config, gossip_config=self.gossip_config,
                                    signing_key=self.identity.private_key)  # signed alive records (issue 12)

    def add_peer(self, addr: tuple[str, int]) -> None:
        """Seed membership with a peer's UDP address (like --peer, after start)."""
        assert self.core is not None, "add_peer() needs a running node"
        self.core.add_seed(addr, _mono())

    def stop(self) -> None:
        """Ask the node to shut down (safe to call from a signal handler on the loop)."""
        self._stop.set()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Start, run until ``stop()``, shut down in order. Task crashes propagate."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._worker, self.host.restore)
        try:
            await self._start_sockets()
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._recv_loop(), name="recv")
                tg.create_task(self._protocol_loop(), name="protocol")
                tg.create_task(self._train_loop(), name="train")
                if self.discovery is not None:
                    tg.create_task(self._discovery_loop(), name="discovery")
                tg.create_task(self._wait_for_stop(), name="stop-watch")
                self.ready.set()
        except* _Stopping:
            pass
        except* UserError as group:
            # a setting the node cannot run with, found in a task (the first training chunk
            # starts the training workers): one line for the user, as at startup, not a
            # traceback of the task group
            raise _first_leaf(group) from None
        finally:
            await self._shutdown()

    async def _wait_for_stop(self) -> None:
        await self._stop.wait()
        raise _Stopping()

    async def _start_sockets(self) -> None:
        cfg = self.cfg
        self.udp = await UdpEndpoint.bind((cfg.host, cfg.udp_port), self.udp_config)
        self.udp.priority = lambda addr: addr[0] in self._member_hosts  # members never queue behind junk
        desk = self.volunteers
        routes = (lambda app: add_volunteer_routes(app, desk, self._run_heavy)) if desk else None
        self.http = StatusServer(self, volunteer_routes=routes)
        await self.http.start(cfg.host, cfg.http_port)
        self.core = self.make_core((cfg.advertised_host, self.udp_port), self.http_port,
                                   random.Random(self.rng.random()), random.Random(self.rng.random()))
        self.core.exchange.update(self.host.resumed_exchange)
        self._refresh_offer()
        for peer in cfg.peers:
            self.core.add_seed(parse_hostport(peer, what="--peer"), _mono())
        if cfg.mdns:
            from gossipnet.net.advert import Advertisement
            from gossipnet.net.discovery import start_discovery

            advert = Advertisement(self.credentials.swarm_id.hex(), self.node_id, self.udp_port,
                                   self.http_port, self.kind, PROTOCOL_VERSION)
            self.discovery = await start_discovery(advert, cfg.advertised_host)  # None: mDNS is off
        log.info("node %s up: udp %s:%d, status %s (%s)", self.node_id, cfg.advertised_host,
                 self.udp_port, self.status_url, self.credentials.summary)

    async def _shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        if self.core is not None and self.udp is not None and not self.udp.closed:
            try:
                await self._send_all(self.core.leave(_mono()))
                await asyncio.sleep(0.05)  # let the goodbyes leave the socket buffer
            except Exception:  # noqa: BLE001 - shutdown must go on
                log.exception("sending goodbyes failed")
        try:
            await loop.run_in_executor(self._worker, self.host.checkpoint, self._checkpoint_meta())
        except Exception:  # noqa: BLE001
            log.exception("final checkpoint failed")
        if self.discovery is not None:
            await self.discovery.stop()
        if self.http is not None:
            await self.http.stop()
        if self.udp is not None:
            await self.udp.close()
        await self.puller.close()
        self._worker.shutdown(wait=True)

    # ------------------------------------------------------------------ event loop tasks

    def _checkpoint_meta(self) -> dict[str, Any]:
        exchanged = dict(self.core.exchange) if self.core is not None else self.host.resumed_exchange
        return {"node_id": self.node_id, "incarnation": self.incarnation, "exchange": exchanged}

    async def _train_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            done = self.cfg.max_steps is not None and self.host.step >= self.cfg.max_steps
            out = await loop.run_in_executor(self._worker, self.host.work, not done, self._checkpoint_meta)
            core = self.core  # who could pull our next offer, and when the core announces it
            self.host.record(len(core.membership.alive_peers()) if core else 0,
                             core.gossip.next_announce if core else None)
            self._refresh_offer()
            if done:
                await asyncio.sleep(1.0)
            elif not out:
                await asyncio.sleep(0)

    def _refresh_offer(self) -> None:
        newest = self.host.shelf.newest()
        if self.core is not None and newest is not None:
            self.core.offer(newest.manifest)

    async def _recv_loop(self) -> None:
        assert self.udp and self.core
        while True:
            try:
                data, addr = await self.udp.recv()
            except UdpClosed:
                return
            res = self.receiver.open(data, (addr[0], addr[1]), int(_wall() * 1000))
            if isinstance(res, Rejected):
                self.core.reject(Rejection("wire", res.reason.value, res.detail))
                continue
            await self._act(self.core.on_message(res.node_id, (addr[0], addr[1]), res.msg_type, res.body, _mono()))

    async def _pull(self, pull: Pull) -> None:
        assert self.core is not None
        try:
            blob = await self.puller.fetch(pull.url, pull.manifest)
        except PullError as exc:
            log.debug("pull from %s failed: %s", pull.peer_id, exc)
            outcome: AbsorbResult | Rejection = Rejection("pull", exc.reason, str(exc))
        else:
            self.bytes_http["in"] += len(blob.data)
            outcome = await asyncio.get_running_loop().run_in_executor(
                self._worker, self.host.absorb, self.core.gate, blob, pull.peer_id)
        await self._act(self.core.pull_done(pull, outcome, _mono(), _wall()))

    async def _protocol_loop(self) -> None:
        assert self.core is not None
        while True:
            await self._act(self.core.tick(_mono()))
            self._incarnation_record.raise_to(self.core.membership.incarnation)  # a restart starts above it
            deadline = self.core.next_deadline()
            wait = (deadline - _mono()) if deadline is not None else 0.1
            await asyncio.sleep(min(0.1, max(0.005, wait)))

    async def _discovery_loop(self) -> None:
        assert self.discovery and self.core
        async for peer, on_our_subnet in self.discovery.arrivals():
            self.core.discovered(peer.node_id, peer.udp_addr, _mono(), preferred=on_our_subnet)

    async def _act(self, out: Output) -> None:
        """Do what the core asked: record what happened, start pulls, send datagrams."""
        if out.members and self.core is not None:
            self._member_hosts = frozenset(m.addr[0] for m in self.core.membership.alive_peers())
        self.host.note(out.events)
        for pull in out.pulls:
            if self._tg is not None:
                self._tg.create_task(self._pull(pull), name=f"pull {pull.peer_id}")
        await self._send_all(out.sends)

    async def _send_all(self, outs: list) -> None:
        assert self.udp is not None
        now_ms = int(_wall() * 1000)
        for out in outs:
            try:
                data = self.sealer.seal(out.msg_type, out.body, now_ms, to=out.to)
            except BodyTooLarge as exc:  # a bug in a body builder; never let it stop the node
                log.error("dropped an oversized %s body: %s", out.msg_type.name, exc)
                continue
            try:
                await self.udp.send(data, out.addr)
            except UdpClosed:
                return
            except ValueError as exc:  # a peer-supplied address we cannot send to
                log.debug("cannot send to %s: %s", out.addr, exc)

    # ------------------------------------------------------------------ StatusProvider

    def status(self) -> dict[str, Any]:
        addresses = {}
        if self.udp is not None:
            addresses["udp"] = f"{self.cfg.advertised_host}:{self.udp_port}"
        if self.http is not None and self.http.port is not None:
            addresses["http"] = self.status_url
        extra = {"checkpoint": dict(self.host.keeper.counters),
                 "http": dict(self.http.guard.counters) if self.http is not None else {}}
        if self.volunteers is not None:
            rejections = self.core.rejections if self.core is not None else None
            extra["volunteer"] = volunteer_counters(self.volunteers, rejections, _mono())
        return node_status(
            self.core, extra_counters=extra, node_id=self.node_id, swarm=self.credentials.swarm_id.hex(), kind=self.kind,
            fingerprint=self.learner.fingerprint, started_at=self.started_at, now=_wall(), step=self.host.step,
            metrics=self.host.metrics, incarnation=self.incarnation, addresses=addresses,
            udp_stats=self.udp.stats() if self.udp else None, http_bytes=self.bytes_http)

    def visuals(self) -> Mapping[str, Any]:
        return self.host.visuals

    def model(self):
        """The model as of the last publish (a copy, safe to use off the worker thread), or None."""
        return self.host.model

    def blob(self, sha256_hex: str) -> bytes | None:
        data = self.host.shelf.get(sha256_hex)
        if data is not None:
            self.bytes_http["out"] += len(data)
        return data

    def members_by_state(self) -> dict[str, list[str]]:
        """node ids grouped by membership state (tests and the CLI summary); none before run()."""
        return self.core.members_by_state() if self.core is not None else {s.label: [] for s in State}
