"""The orchestrator: one node's sockets, tasks and learner, wired to the sans-IO core.

``Node.run()`` binds the UDP and HTTP sockets, resumes from the last checkpoint, and
runs every background task in one ``asyncio.TaskGroup`` (so a crash in any of them
surfaces instead of dying silently) until ``stop()``. Shutdown sends goodbyes, writes
the last checkpoint, then closes the sockets, in that order.

All numpy work (training, merging, evaluating, encoding snapshots) happens in one
worker thread, serialised there, so the learner needs no locks and the event loop
keeps answering probes, acks and status requests on time while the CPU trains.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np

from gossipnet import gossip as gsp
from gossipnet.checkpoint import Checkpoint, CheckpointStore
from gossipnet.config import NodeConfig, parse_hostport
from gossipnet.errors import UserError
from gossipnet.learners.base import Learner, Snapshot
from gossipnet.membership import EventKind, Membership, MembershipConfig, State
from gossipnet.membership import codec as membership_codec
from gossipnet.net.http import StatusServer
from gossipnet.net.pull import BlobPuller, PullError, PullLimits
from gossipnet.net.udp import UdpClosed, UdpConfig, UdpEndpoint
from gossipnet.status.history import MetricsHistory
from gossipnet.status.schema import build_status
from gossipnet.trust.credentials import Credentials
from gossipnet.trust.identity import Identity
from gossipnet.wire import BodyTooLarge, MsgType, Receiver, ReceiverConfig, Rejected, Sealer
from gossipnet.wire import blobs

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
BLOB_KIND = {"convnet": "weights", "evolution": "genome"}  # learner kind -> wire blob kind
KEEP_BLOBS = 3  # recent snapshots still served, so a pull started just before a refresh completes
DEFAULT_CHUNK = {"convnet": 20, "evolution": 1}  # batches or generations between merges


class _Stopping(Exception):
    """Raised inside the task group to cancel every task on stop()."""


@dataclass(frozen=True)
class Published:
    """The snapshot this node currently offers: blob bytes and what it announces."""

    sha_hex: str
    data: bytes
    blob: blobs.Manifest
    step: int
    meta: dict[str, Any]  # the learner's small claims (e.g. migrants' fitness), announced as hints


def _wall() -> float:
    return time.time()


def _mono() -> float:
    return time.monotonic()


class Node:
    """A gossipnet node. ``await node.run()``; ``node.stop()`` from a signal handler or test."""

    def __init__(self, cfg: NodeConfig, learner: Learner, identity: Identity, credentials: Credentials,
                 *, incarnation: int, membership_config: MembershipConfig | None = None,
                 gossip_config: gsp.GossipConfig | None = None, udp_config: UdpConfig | None = None,
                 blob_dtype: str | None = None, history: MetricsHistory | None = None) -> None:
        self.cfg = cfg
        self.learner = learner
        self.identity = identity
        self.credentials = credentials
        self.incarnation = incarnation
        local = cfg.preset == "local"
        self.membership_config = membership_config or (MembershipConfig.local() if local else MembershipConfig.lan())
        base_gossip = gossip_config or (gsp.GossipConfig.local() if local else gsp.GossipConfig.lan())
        self.gossip_config = replace(base_gossip, interval=cfg.gossip_interval) if gossip_config is None else base_gossip
        self.udp_config = udp_config or UdpConfig.lan()
        # Weights travel as float16 (half the bytes, no measurable loss after merging);
        # genomes are tiny and their claims are replayed exactly, so they stay float32.
        self.blob_dtype = blob_dtype or ("float32" if learner.kind == "evolution" else "float16")
        self.history = history or MetricsHistory()
        self.store = CheckpointStore(cfg.state_dir)
        self.started_at = _wall()
        self.rng = random.Random(identity.node_id)
        # Counters for the status page, grouped as docs/API.md describes.
        self.exchange: Counter[str] = Counter()
        self.absorb_rejected: Counter[str] = Counter()
        self.msgs_in: Counter[str] = Counter()
        self.msgs_out: Counter[str] = Counter()
        self.bytes_http: Counter[str] = Counter()
        self.blob_rejected: Counter[str] = Counter()  # pulled blobs refused before the learner saw them
        self.peer_exchange: dict[str, float] = {}
        self.last_merge: dict[str, Any] | None = None
        self.restored_from: str | None = None
        # Set up in run().
        self.udp: UdpEndpoint | None = None
        self.http: StatusServer | None = None
        self.discovery = None
        self.membership: Membership | None = None
        self.gossip: gsp.Gossip | None = None
        self.sealer: Sealer | None = None
        self.receiver: Receiver | None = None
        self.puller = BlobPuller(PullLimits(max_bytes=self.gossip_config.max_blob_bytes,
                                            timeout_s=self.gossip_config.pull_timeout,
                                            max_concurrent=self.gossip_config.max_concurrent_pulls))
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gossipnet-learner")
        self._published: OrderedDict[str, Published] = OrderedDict()
        self._manifest: gsp.Manifest | None = None
        self._gate: blobs.BlobGate | None = None
        self._metrics: dict[str, Any] = {}
        self._last_eval: dict[str, Any] = {}  # the newest evaluate(), shown until the next one
        self._visuals: Mapping[str, Any] = {}
        self._step = 0
        self._stop = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._next_eval = 0.0
        self._next_publish = 0.0
        self._next_checkpoint = 0.0
        self.ready = asyncio.Event()  # set once sockets are bound and the node is announced

    # ------------------------------------------------------------------ lifecycle

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
        return f"http://{self._url_host()}:{self.http_port}/"

    def _url_host(self) -> str:
        host = self.cfg.advertised_host
        return f"[{host}]" if ":" in host else host

    def add_peer(self, addr: tuple[str, int]) -> None:
        """Seed membership with a peer's UDP address (like --peer, after start)."""
        assert self.membership is not None, "add_peer() needs a running node"
        self.membership.add_seed(addr, _mono())

    def stop(self) -> None:
        """Ask the node to shut down (safe to call from a signal handler on the loop)."""
        self._stop.set()

    async def run(self) -> None:
        """Start, run until ``stop()``, shut down in order. Task crashes propagate."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._worker, self._restore)
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
        finally:
            await self._shutdown()

    async def _wait_for_stop(self) -> None:
        await self._stop.wait()
        raise _Stopping()

    async def _start_sockets(self) -> None:
        cfg = self.cfg
        self.udp = await UdpEndpoint.bind((cfg.host, cfg.udp_port), self.udp_config)
        self.http = StatusServer(self)
        await self.http.start(cfg.host, cfg.http_port)
        meta = {"http": self.http_port, "kind": self.kind}
        self.membership = Membership(self.node_id, (cfg.advertised_host, self.udp_port), meta,
                                     self.membership_config, random.Random(self.rng.random()),
                                     incarnation=self.incarnation)
        self.gossip = gsp.Gossip(BLOB_KIND.get(self.kind, self.kind), self.learner.fingerprint,
                                 self.gossip_config, random.Random(self.rng.random()))
        self.gossip.classes = self.learner.classes_digest
        self.sealer = Sealer(self.identity, self.credentials, self.incarnation)
        self.receiver = Receiver(self.credentials.policy, ReceiverConfig.udp())
        now = _mono()
        for peer in cfg.peers:
            self.membership.add_seed(parse_hostport(peer, what="--peer"), now)
        if cfg.mdns:
            from gossipnet.net.advert import Advertisement
            from gossipnet.net.discovery import Discovery

            advert = Advertisement(self.credentials.swarm_id.hex(), self.node_id, self.udp_port,
                                   self.http_port, self.kind, PROTOCOL_VERSION)
            discovery = Discovery(advert, cfg.advertised_host)
            try:
                await discovery.start()
                self.discovery = discovery
            except UserError as exc:
                # A node without mDNS still works through --peer seeds and membership gossip.
                log.warning("mDNS discovery is off: %s", exc)
        log.info("node %s up: udp %s:%d, status %s (%s)", self.node_id, cfg.advertised_host,
                 self.udp_port, self.status_url, self.credentials.summary)

    async def _shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        if self.membership is not None and self.udp is not None and not self.udp.closed:
            try:
                await self._send_all(self.membership.leave(_mono()))
                await asyncio.sleep(0.05)  # let the goodbyes leave the socket buffer
            except Exception:  # noqa: BLE001 - shutdown must go on
                log.exception("sending goodbyes failed")
        try:
            await loop.run_in_executor(self._worker, self._checkpoint)
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

    # ------------------------------------------------------------------ checkpoints (worker thread)

    def _restore(self) -> None:
        ckpt = self.store.load()
        if ckpt is None:
            self.history.event(_wall(), "start", "fresh state")
        else:
            learner_state = {k[8:]: v for k, v in ckpt.tensors.items() if k.startswith("learner/")}
            history_state = {k[8:]: v for k, v in ckpt.tensors.items() if k.startswith("history/")}
            self.learner.load_state_dict(learner_state)
            if history_state:
                self.history.load_state_dict(history_state)
            counters = ckpt.meta.get("exchange", {})
            if isinstance(counters, dict):
                self.exchange.update({str(k): int(v) for k, v in counters.items() if isinstance(v, int)})
            self.restored_from = str(ckpt.meta.get("recovered_from", self.store.current))
            self.history.event(_wall(), "restart", f"resumed at step {self.learner.step}")
            log.info("resumed from %s at step %d", self.restored_from, self.learner.step)
        self._step = self.learner.step
        self._metrics = dict(self.learner.metrics())
        self._publish()
        # The first evaluation waits one interval: at step 0 it would only measure chance.
        self._next_eval = _mono() + self.cfg.eval_interval

    def _checkpoint(self) -> None:
        tensors = {f"learner/{k}": v for k, v in self.learner.state_dict().items()}
        tensors.update({f"history/{k}": v for k, v in self.history.state_dict().items()})
        meta = {"node_id": self.node_id, "step": self.learner.step, "incarnation": self.incarnation,
                "exchange": dict(self.exchange), "saved_at": _wall()}
        size = self.store.save(Checkpoint(tensors, meta))
        log.debug("checkpoint: %d bytes at step %d", size, self.learner.step)

    # ------------------------------------------------------------------ learner work (worker thread)

    def _publish(self) -> None:
        """Encode the learner's current snapshot as the blob we announce."""
        self._visuals = self.learner.visuals()
        self._model = self.learner.model()  # what the status page offers for download
        snap = self.learner.snapshot()
        tensors = dict(snap.tensors)
        if not tensors or any(np.asarray(t).size == 0 for t in tensors.values()):
            return  # nothing to offer yet (an island before its first generation)
        data, manifest = blobs.encode_blob(tensors, kind=BLOB_KIND.get(snap.kind, "weights"),
                                           age=snap.age, dtype=self.blob_dtype)
        meta = dict(snap.meta)
        try:
            membership_codec.meta({**meta, "dtype": "", "tensors": 0, "params": 0})
        except membership_codec.BadBody as exc:
            log.warning("snapshot meta too large to announce, sent without it: %s", exc)
            meta = {}
        pub = Published(manifest.sha256.hex(), data, manifest, self.learner.step, meta)
        self._published[pub.sha_hex] = pub
        # An unchanged model (an island keeping its elite) hashes alike: it is still the newest.
        self._published.move_to_end(pub.sha_hex)
        while len(self._published) > KEEP_BLOBS:
            self._published.popitem(last=False)

    def _work_chunk(self, train: bool) -> dict[str, float]:
        """One unit of worker time: train a chunk, evaluate and publish when due."""
        out: dict[str, float] = {}
        if train:
            out = self.learner.train(self.cfg.train_chunk or DEFAULT_CHUNK.get(self.kind, 1))
        now = _mono()
        if now >= self._next_eval:
            self._last_eval = dict(self.learner.evaluate())
            out.update(self._last_eval)
            self._next_eval = now + self.cfg.eval_interval
        if now >= self._next_publish:
            self._publish()
            self._next_publish = now + self.gossip_config.interval / 2
        if now >= self._next_checkpoint:
            if self._next_checkpoint:
                self._checkpoint()
            self._next_checkpoint = now + self.cfg.checkpoint_interval
        self._step = self.learner.step
        self._metrics = {**self.learner.metrics(), **self._last_eval}
        return out

    def _absorb_blob(self, data: bytes, manifest: gsp.Manifest, peer: str) -> tuple[bool, str, str]:
        """Verify a pulled blob against the signed manifest and our model, then merge it."""
        if self._gate is None:  # peers' blobs must have the shapes we offer, fixed for life
            self._gate = blobs.BlobGate(self.learner.offer_shapes(),
                                        max_size=self.gossip_config.max_blob_bytes)
        try:
            bm = manifest.blob()
        except gsp.BadManifest as exc:
            return False, "malformed", str(exc)
        # The announced fp is the learner's architecture fingerprint (checked by gossip
        # before pulling); the blob gate checks names and shapes against our own model.
        bm = replace(bm, fingerprint=blobs.fingerprint(self._gate.spec))
        opened = self._gate.open(data, bm)
        if isinstance(opened, blobs.BlobRejected):
            self.blob_rejected[opened.reason.value] += 1
            return False, opened.reason.value, str(opened)
        snap = Snapshot(self.kind, manifest.fp, manifest.age, opened, dict(manifest.meta))
        result = self.learner.absorb(snap, peer)
        if result.accepted:
            self._metrics = {**self.learner.metrics(), **self._last_eval}
            self._next_publish = 0.0  # offer the merged model soon
        return result.accepted, result.reason, result.detail

    # ------------------------------------------------------------------ tasks

    async def _train_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            done = self.cfg.max_steps is not None and self._step >= self.cfg.max_steps
            out = await loop.run_in_executor(self._worker, self._work_chunk, not done)
            values = {k: float(v) for k, v in self._metrics.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)}
            peers = len(self.membership.alive_peers()) if self.membership else 0
            self.history.record(_wall(), self._step, values, peers)
            self._announce_refresh()
            if done:
                await asyncio.sleep(1.0)
            elif not out:
                await asyncio.sleep(0)

    def _announce_refresh(self) -> None:
        """Point the gossip manifest at the newest published blob."""
        if not self._published or self.http is None:
            return
        pub = next(reversed(self._published.values()))
        if self._manifest is not None and self._manifest.sha256 == pub.blob.sha256:
            return
        m = gsp.Manifest.from_blob(pub.blob, pub.step, self.http_port, f"/blob/{pub.sha_hex}")
        self._manifest = replace(m, fp=self.learner.fingerprint, meta={**pub.meta, **m.meta})

    async def _recv_loop(self) -> None:
        assert self.udp and self.receiver and self.membership and self.gossip
        while True:
            try:
                data, addr = await self.udp.recv()
            except UdpClosed:
                return
            res = self.receiver.open(data, (addr[0], addr[1]), int(_wall() * 1000))
            if isinstance(res, Rejected):
                log.debug("rejected datagram from %s: %s %s", addr, res.reason.value, res.detail)
                continue
            sender = res.node_id
            if sender == self.node_id:
                continue
            self.msgs_in[res.msg_type.name] += 1
            now = _mono()
            if res.msg_type == MsgType.MANIFEST:
                pull = self.gossip.on_manifest(sender, (addr[0], addr[1]), res.body, now)
                if pull is not None and self._tg is not None:
                    self._tg.create_task(self._pull(pull), name=f"pull {sender}")
            else:
                outs = self.membership.handle(sender, (addr[0], addr[1]), res.msg_type, res.body, now)
                await self._send_all(outs)

    async def _pull(self, pull: gsp.Pull) -> None:
        assert self.gossip is not None
        loop = asyncio.get_running_loop()
        try:
            data = await self.puller.fetch(pull.url, pull.manifest.sha256, pull.manifest.size)
        except PullError as exc:
            log.debug("pull from %s failed: %s", pull.peer_id, exc)
            self.gossip.pull_done(pull.peer_id, pull.manifest, False, exc.reason, _mono())
            self.absorb_rejected[f"pull_{exc.reason}"] += 1
            return
        self.exchange["pulled"] += 1
        self.bytes_http["in"] += len(data)
        ok, reason, detail = await loop.run_in_executor(
            self._worker, self._absorb_blob, data, pull.manifest, pull.peer_id)
        self.gossip.pull_done(pull.peer_id, pull.manifest, ok, None if ok else reason, _mono())
        wall = _wall()
        self.last_merge = {"at": wall, "peer": pull.peer_id, "accepted": ok, "reason": reason}
        if ok:
            self.exchange["absorbed"] += 1
            self.peer_exchange[pull.peer_id] = wall
            event = "migrant" if self.kind == "evolution" else "merge"  # how the PNG marks it
            self.history.event(wall, event, f"{pull.peer_id} step {pull.manifest.step}")
            log.debug("absorbed %s's snapshot at step %d (%s)", pull.peer_id, pull.manifest.step, detail)
        else:
            if reason not in self.blob_rejected:
                self.absorb_rejected[reason] += 1
            log.warning("rejected %s's snapshot: %s %s", pull.peer_id, reason, detail)

    async def _protocol_loop(self) -> None:
        assert self.membership and self.gossip
        while True:
            now = _mono()
            outs = self.membership.tick(now)
            self._member_events()
            outs += self.gossip.tick(now, self.membership.alive_peers(), self._manifest)
            await self._send_all(outs)
            deadlines = [d for d in (self.membership.next_deadline(), self.gossip.next_deadline()) if d is not None]
            wait = (min(deadlines) - _mono()) if deadlines else 0.1
            await asyncio.sleep(min(0.1, max(0.005, wait)))

    def _member_events(self) -> None:
        assert self.membership and self.gossip
        wall = _wall()
        for ev in self.membership.drain_events():
            if ev.kind in (EventKind.JOINED, EventKind.RECOVERED):
                self.gossip.forget(ev.node_id)  # a restarted peer's step counter may start over
                self.history.event(wall, "peer_joined", ev.node_id)
                log.info("peer %s %s", ev.node_id, ev.kind.value)
            elif ev.kind in (EventKind.DEAD, EventKind.LEFT):
                self.history.event(wall, "peer_dead" if ev.kind == EventKind.DEAD else "peer_left", ev.node_id)
                log.info("peer %s %s", ev.node_id, ev.kind.value)

    async def _discovery_loop(self) -> None:
        from gossipnet.net.discovery import EventKind as DiscoveryEvent

        assert self.discovery and self.membership
        async for ev in self.discovery.events():
            if ev.kind in (DiscoveryEvent.ADDED, DiscoveryEvent.UPDATED):
                self.membership.discovered(ev.peer.node_id, ev.peer.udp_addr, _mono())

    async def _send_all(self, outs: list) -> None:
        assert self.sealer and self.udp
        now_ms = int(_wall() * 1000)
        for out in outs:
            try:
                data = self.sealer.seal(out.msg_type, out.body, now_ms)
            except BodyTooLarge as exc:  # a bug in a body builder; never let it stop the node
                log.error("dropped an oversized %s body: %s", out.msg_type.name, exc)
                continue
            try:
                await self.udp.send(data, out.addr)
            except UdpClosed:
                return
            except ValueError as exc:  # a peer-supplied address we cannot send to
                log.debug("cannot send to %s: %s", out.addr, exc)
                continue
            self.msgs_out[out.msg_type.name] += 1
            if out.msg_type == MsgType.MANIFEST:
                self.exchange["sent"] += 1

    # ------------------------------------------------------------------ StatusProvider

    def status(self) -> dict[str, Any]:
        peers = []
        if self.membership is not None:
            for m in self.membership.members()[1:]:
                http = m.meta.get("http")
                peers.append({
                    "node_id": m.node_id, "address": f"{m.addr[0]}:{m.addr[1]}", "state": m.state.label,
                    "incarnation": m.incarnation, "last_exchange": self.peer_exchange.get(m.node_id),
                    "http_url": f"http://{m.addr[0]}:{http}/" if isinstance(http, int) else None,
                })
        udp = self.udp.stats() if self.udp else None
        wire = dict(self.receiver.counters) if self.receiver else {}
        wire.pop("accepted", None)
        wire.update(self.blob_rejected)
        counters = {
            "exchange": dict(self.exchange),
            "absorb_rejected": dict(self.absorb_rejected),
            "wire_rejected": {k: v for k, v in wire.items() if v},
            "messages_in": dict(self.msgs_in),
            "messages_out": dict(self.msgs_out),
            "bytes": {"in": (udp.bytes_in if udp else 0) + self.bytes_http["in"],
                      "out": (udp.bytes_out if udp else 0) + self.bytes_http["out"]},
        }
        if self.membership is not None:
            counters["membership"] = dict(self.membership.counters)
        if self.gossip is not None:
            counters["gossip"] = dict(self.gossip.counters)
        addresses = {}
        if self.udp is not None:
            addresses["udp"] = f"{self.cfg.advertised_host}:{self.udp_port}"
        if self.http is not None and self.http.port is not None:
            addresses["http"] = self.status_url
        epoch = self._metrics.get("epoch")
        return build_status(
            node_id=self.node_id, swarm=self.credentials.swarm_id.hex(), kind=self.kind,
            fingerprint=self.learner.fingerprint, started_at=self.started_at, now=_wall(),
            step=self._step, metrics=self._metrics, counters=counters, peers=peers,
            last_merge=self.last_merge, addresses=addresses,
            incarnation=self.membership.incarnation if self.membership else self.incarnation,
            epoch=epoch if isinstance(epoch, (int, float)) else None,
        )

    def visuals(self) -> Mapping[str, Any]:
        return self._visuals

    def model(self):
        """The model as of the last publish (a copy, safe to use off the worker thread), or None."""
        return getattr(self, "_model", None)

    def blob(self, sha256_hex: str) -> bytes | None:
        pub = self._published.get(sha256_hex)
        if pub is None:
            return None
        self.bytes_http["out"] += len(pub.data)
        return pub.data

    def members_by_state(self) -> dict[str, list[str]]:
        """node ids grouped by membership state (tests and the CLI summary)."""
        out: dict[str, list[str]] = {s.label: [] for s in State}
        if self.membership is not None:
            for m in self.membership.members()[1:]:
                out[m.state.label].append(m.node_id)
        return out

