"""A node that trained alone from its own init joins a swarm: realigned merges take it in.

In process, through the exchange path the daemon runs (``exchange.publish``, a float16
blob, ``Gate.check``, ``Download``, ``Gate.open``, ``absorb()``): three MLP nodes from the
swarm's init gossip while a fourth trains alone from another init; then it joins, and the
four gossip and train a little. With the lineage rule (realign by activations) the newcomer ends within a point
of the swarm and the swarm loses nothing; averaged as is, it does not.
"""

from __future__ import annotations

import numpy as np
import pytest

from gossipnet import exchange as exchange_path
from gossipnet.data import load_dataset, partition
from gossipnet.learners.base import Snapshot
from gossipnet.learners.convnet import ConvnetConfig, ConvnetLearner

SWARM_INIT, LONER_INIT = 0, 7


@pytest.fixture(scope="module")
def data():
    ds = load_dataset("embedded")
    return ds, partition(ds.y_train, 4, seed=0)


def learner(data, i: int, realign: str) -> ConvnetLearner:
    ds, parts = data
    init = LONER_INIT if i == 3 else SWARM_INIT
    return ConvnetLearner(ds, parts[i], ConvnetConfig(net="mlp", seed=i, init_seed=init, realign=realign))


def exchange(dst: ConvnetLearner, src: ConvnetLearner) -> None:
    """Publish ``src``'s snapshot and let ``dst`` check, download, open and absorb it, as Node does."""
    offer = exchange_path.publish(src.snapshot(), src.wire, src.step)
    gate = exchange_path.Gate(dst.kind, dst.offer_shapes())
    assert gate.check(offer.manifest) is None
    snapshot = gate.open(exchange_path.Download.whole(offer.manifest, offer.data))
    assert isinstance(snapshot, Snapshot), snapshot
    result = dst.absorb(snapshot, "peer")
    assert result.accepted, result


@pytest.fixture(scope="module")
def before_join(data):
    """States after the swarm gossiped and the loner trained alone, 120 steps each."""
    swarm = [learner(data, i, "activations") for i in range(3)]
    loner = learner(data, 3, "activations")
    for r in range(4):
        for node in swarm + [loner]:
            node.train(30)
        for i, node in enumerate(swarm):
            exchange(node, swarm[(i + 1 + r % 2) % 3])
    assert [n.lineage for n in swarm] == ["init-0"] * 3 and loner.lineage == "init-7"
    return [n.state_dict() for n in swarm + [loner]]


def join(data, states, realign: str) -> tuple[list[float], list[float], list[ConvnetLearner]]:
    nodes = [learner(data, i, realign) for i in range(4)]
    for node, state in zip(nodes, states):
        node.load_state_dict(state)
    before = [n.evaluate()["test_accuracy"] for n in nodes]
    for r in range(3):  # the loner pulls a swarm node, a swarm node pulls the loner, ...
        for dst, src in ((3, r % 3), ((r + 1) % 3, 3), ((r + 2) % 3, r % 3)):
            exchange(nodes[dst], nodes[src])
        for node in nodes:
            node.train(10)
    return before, [n.evaluate()["test_accuracy"] for n in nodes], nodes


def test_a_node_from_another_init_is_merged_in_after_realigning(data, before_join):
    before, after, nodes = join(data, before_join, "activations")
    swarm_before, swarm_after = np.mean(before[:3]), np.mean(after[:3])
    assert abs(after[3] - swarm_after) <= 0.01, (before, after)
    assert swarm_after >= swarm_before - 0.01, (before, after)
    # lineages converged on the smaller name, so later merges are plain averages again
    assert [n.lineage for n in nodes] == ["init-0"] * 4
    metrics = nodes[3].metrics()
    assert metrics["realigned_merges"] >= 1 and metrics["realign_seconds"] > 0


def test_averaged_without_realigning_the_newcomer_is_not_merged_in(data, before_join):
    before, after, nodes = join(data, before_join, "off")
    assert after[3] < np.mean(after[:3]) - 0.01, (before, after)
    assert nodes[3].lineage == "init-7"  # nothing realigned, nothing adopted
