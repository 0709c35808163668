"""Nodes in one process over loopback: real sockets, signatures, pulls and merges.

These exercise the orchestrator end to end without namespaces: static seeds instead of
mDNS, the "local" timing preset, and tiny nets on a slice of the embedded data set.
"""

import asyncio
import time

import numpy as np
import pytest

from gossipnet import merge
from gossipnet.config import build_config
from gossipnet.data import load_dataset
from gossipnet.errors import UserError
from gossipnet.learners.base import Snapshot
from gossipnet.learners.convnet import ConvnetConfig, ConvnetLearner
from gossipnet.node import Node
from gossipnet.status.schema import validate_status
from gossipnet.trust.credentials import load_credentials
from gossipnet.trust.identity import load_or_create_identity
from tests.daemon_box import new_swarm_token

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def data():
    return load_dataset("embedded")


class PoisonLearner(ConvnetLearner):
    """A member gone bad: offers finite but absurd weights claiming enormous training age."""

    def snapshot(self) -> Snapshot:
        snap = super().snapshot()
        return Snapshot(snap.kind, snap.fingerprint, 1e12,
                        {k: v * 300.0 for k, v in snap.tensors.items()}, snap.meta)


def _node(tmp_path, name, learner, token, udp_config=None, **cfg):
    settings = {"state_dir": str(tmp_path / name), "host": "127.0.0.1", "interface": "127.0.0.1",
                "udp_port": 0, "http_port": 0, "mdns": False, "preset": "local",
                "announce_interval": 0.3, "eval_interval": 60.0, "train_chunk": 2, **cfg}
    config = build_config({}, settings)
    identity = load_or_create_identity(config.state_dir)
    creds = load_credentials(identity, int(time.time() * 1000), swarm_token=token)
    return Node(config, learner, identity, creds, incarnation=int(time.time() * 1000), udp_config=udp_config)


def _learner(data, cls=ConvnetLearner, net="tiny", **kw):
    return cls(data, np.arange(256), ConvnetConfig(net=net, **kw))


async def _run_until(nodes, predicate, timeout):
    tasks = [asyncio.create_task(n.run()) for n in nodes]
    try:
        for n in nodes:
            await asyncio.wait_for(n.ready.wait(), 20)
        for n in nodes[1:]:
            n.add_peer(("127.0.0.1", nodes[0].udp_port))
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "condition not reached in time"
            for t in tasks:
                if t.done():
                    t.result()  # surface a crashed node
            await asyncio.sleep(0.1)
    finally:
        for n in nodes:
            n.stop()
        await asyncio.gather(*tasks)


async def test_two_nodes_exchange_and_merge_signed_snapshots(tmp_path, data):
    token = new_swarm_token()
    # The plain average: this test is about the exchange and the checkpoint; the guarded
    # default (which loss-checks every merge of a 2-node swarm) has its own test below.
    a = _node(tmp_path, "a", _learner(data, seed=1, merge="average"), token)
    b = _node(tmp_path, "b", _learner(data, seed=2, merge="average"), token)
    await _run_until([a, b], lambda: a.core.exchange["absorbed"] >= 2 and b.core.exchange["absorbed"] >= 2, 60)
    for node, other in ((a, b), (b, a)):
        status = validate_status(node.status())
        peer = {p["node_id"]: p for p in status["peers"]}[other.node_id]
        assert peer["state"] == "alive" and peer["last_exchange"] is not None
        assert status["counters"]["exchange"]["absorbed"] >= 2
        assert status["last_merge"]["accepted"] is True
        assert node.learner.merges >= 2
    # Shutdown wrote a checkpoint that a new node resumes from.
    resumed = _node(tmp_path, "a", _learner(data, seed=1, merge="average"), token)
    await asyncio.get_running_loop().run_in_executor(None, resumed.host.restore)
    assert resumed.learner.step == a.learner.step > 0


async def test_clipped_merge_bounds_how_far_a_poisoned_peer_moves_a_node(tmp_path, data):
    token = new_swarm_token()
    radius = 0.5
    victim_learner = _learner(data, merge="clipped", clip_radius=radius)
    before = {k: v.copy() for k, v in victim_learner.net.params().items()}
    victim = _node(tmp_path, "victim", victim_learner, token, max_steps=0)
    poison = _node(tmp_path, "poison", _learner(data, cls=PoisonLearner, seed=9), token)
    await _run_until([victim, poison], lambda: victim.core.exchange["absorbed"] >= 2, 60)
    moved = merge.difference_norm(before, victim_learner.net.params())
    assert 0 < moved <= radius * victim_learner.merges + 1e-3
    assert np.all(np.isfinite(np.concatenate([v.ravel() for v in victim_learner.net.params().values()])))


async def test_average_merge_is_dragged_by_the_same_poison(tmp_path, data):
    """The control for the test above: without clipping the poison wins."""
    token = new_swarm_token()
    victim_learner = _learner(data, merge="average")
    before = {k: v.copy() for k, v in victim_learner.net.params().items()}
    victim = _node(tmp_path, "victim", victim_learner, token, max_steps=0)
    poison = _node(tmp_path, "poison", _learner(data, cls=PoisonLearner, seed=9), token)
    await _run_until([victim, poison], lambda: victim.core.exchange["absorbed"] >= 1, 60)
    assert merge.difference_norm(before, victim_learner.net.params()) > 50


async def test_default_merge_refuses_the_same_poison_and_is_not_moved(tmp_path, data):
    token = new_swarm_token()
    victim_learner = _learner(data)
    assert victim_learner.config.merge == "guarded"
    before = {k: v.copy() for k, v in victim_learner.net.params().items()}
    victim = _node(tmp_path, "victim", victim_learner, token, max_steps=0)
    poison = _node(tmp_path, "poison", _learner(data, cls=PoisonLearner, seed=9), token)
    await _run_until([victim, poison], lambda: victim.core.rejections.get("learner", "bad_norm") >= 1, 60)
    assert victim.core.exchange["absorbed"] == 0 and victim_learner.age == 0
    assert merge.difference_norm(before, victim_learner.net.params()) == 0


async def test_peer_with_another_architecture_is_never_pulled(tmp_path, data):
    token = new_swarm_token()
    a = _node(tmp_path, "a", _learner(data, net="tiny"), token)
    b = _node(tmp_path, "b", _learner(data, net="fashion"), token, max_steps=0)
    await _run_until([a, b], lambda: a.core.gossip.counters["skipped.other_fingerprint"] >= 2, 60)
    assert a.core.exchange["absorbed"] == 0 and a.learner.merges == 0


async def test_node_from_another_swarm_is_rejected_at_the_wire(tmp_path, data):
    a = _node(tmp_path, "a", _learner(data), new_swarm_token(), max_steps=0)
    b = _node(tmp_path, "b", _learner(data), new_swarm_token(), max_steps=0)
    await _run_until([a, b], lambda: a.core.rejections.get("wire", "wrong_swarm") >= 3, 60)
    assert a.members_by_state()["alive"] == [] and b.members_by_state()["alive"] == []


async def test_island_takes_migrants_before_its_first_generation(tmp_path):
    """The blob gate comes from the learner's declared offer shapes, not from its first
    snapshot: an island that has not finished a generation (here: never trains) already
    absorbs a peer's migrants."""
    from gossipnet.learners.evolution import EvolutionConfig, EvolutionLearner

    token = new_swarm_token()
    idle = EvolutionLearner(EvolutionConfig.for_task("cartpole", "ga", seed=1))
    busy = EvolutionLearner(EvolutionConfig.for_task("cartpole", "ga", seed=2))
    assert idle.offer_shapes() == {"genomes": (idle.config.migrants_per_offer, idle.task.layout.size)}
    a = _node(tmp_path, "a", idle, token, max_steps=0)
    b = _node(tmp_path, "b", busy, token)
    await _run_until([a, b], lambda: idle.migrants_accepted >= 1, 60)
    assert idle.step == 0
    assert busy.offer_shapes() == {k: v.shape for k, v in busy.snapshot().tensors.items()}


class ShapeLiar(ConvnetLearner):
    """Claims our architecture (same fingerprint) but offers one tensor too many."""

    def snapshot(self) -> Snapshot:
        snap = super().snapshot()
        return Snapshot(snap.kind, snap.fingerprint, snap.age,
                        {**snap.tensors, "extra": np.zeros(3, np.float32)}, snap.meta)


async def test_manifest_whose_shapes_do_not_fit_is_refused_without_an_http_request(tmp_path, data):
    token = new_swarm_token()
    honest = _node(tmp_path, "honest", _learner(data, seed=1), token, max_steps=0)
    liar_learner = _learner(data, cls=ShapeLiar, seed=2)
    liar = _node(tmp_path, "liar", liar_learner, token, max_steps=0)
    assert liar_learner.fingerprint == honest.learner.fingerprint
    served = []
    serve = liar.blob
    liar.blob = lambda sha: served.append(sha) or serve(sha)  # every GET /blob/... lands here
    await _run_until([honest, liar], lambda: honest.core.rejections.get("gate", "bad_shape") >= 3, 60)
    assert served == [] and honest.core.exchange["pulled"] == 0
    assert honest.core.gossip.counters["pulls_started"] == 0
    assert validate_status(honest.status())["rejections"]["gate"]["bad_shape"] >= 3


async def test_queue_full_udp_drops_reach_the_status_json_and_metrics(tmp_path, data):
    """Each datagram arrives twice at once (the fault layer duplicates it) into a receive
    queue of one, so at least one copy in two is dropped as queue_full; every copy must
    show up for the operator, as a drop or as a wire rejection."""
    import socket

    import aiohttp

    from gossipnet.net.faults import FaultConfig
    from gossipnet.net.udp import UdpConfig

    flood = UdpConfig(queue_size=1, recv_faults=FaultConfig(duplicate=1.0, seed=1))
    node = _node(tmp_path, "n", _learner(data), new_swarm_token(), udp_config=flood, max_steps=0)
    task = asyncio.create_task(node.run())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 25

    def seen():
        r = node.status()["rejections"]
        return r["udp"]["queue_full"] + r["wire"]["bad_magic"]

    try:
        await asyncio.wait_for(node.ready.wait(), 20)
        for _ in range(sent):
            sock.sendto(b"junk" * 10, ("127.0.0.1", node.udp_port))
        deadline = time.monotonic() + 20
        while seen() < 2 * sent:
            assert time.monotonic() < deadline and not task.done(), f"{seen()} of {2 * sent} copies counted"
            await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as session:
            async with session.get(node.status_url + "api/status") as r:
                status = validate_status(await r.json())
            async with session.get(node.status_url + "metrics") as r:
                metrics = await r.text()
    finally:
        sock.close()
        node.stop()
        await task
    drops = status["rejections"]["udp"]["queue_full"]
    assert drops >= sent and drops + status["rejections"]["wire"]["bad_magic"] == 2 * sent
    line = next(x for x in metrics.splitlines()
                if x.startswith("gossipnet_rejections_total{") and 'stage="udp"' in x and 'reason="queue_full"' in x)
    assert float(line.split()[-1]) == drops


class UnrunnableLearner(ConvnetLearner):
    """A learner whose first chunk finds a setting it cannot train with (as DataParallel does
    when /dev/shm has no room for its workers)."""

    def train(self, budget):
        raise UserError("training on 2 cores needs 9 MB of shared memory (/dev/shm)")


async def test_a_setting_found_unrunnable_by_a_task_ends_the_node_with_that_error(tmp_path, data):
    """The user sees the one-line error the CLI prints for a UserError, not an ExceptionGroup
    traceback, and the node still shuts down in order: its final checkpoint is written."""
    node = _node(tmp_path, "a", _learner(data, cls=UnrunnableLearner), new_swarm_token())
    with pytest.raises(UserError, match="shared memory"):
        await asyncio.wait_for(node.run(), 60)
    assert (tmp_path / "a" / "checkpoint.safetensors").exists()
