"""Real daemons in a LAN in a box: discovery by mDNS, membership, gossip, crash and resume.

Three ``python daemon.py`` processes run in three network namespaces on one bridge, with
no seeds: they must find each other by mDNS alone. Everything is checked through what a
user sees, each node's /api/status.
"""

import signal

import pytest

from gossipnet.checkpoint import decode

from tests.conftest import skip_or_fail
from tests.daemon_box import (FAST_LEARNING, new_swarm_token, node_ids, peer_states, start_daemon,
                              statuses, stderr_on_timeout, wait_until)
from tests.lanbox import LanBox, lanbox_available

pytestmark = [pytest.mark.netns, pytest.mark.slow]
HOSTS = [0, 1, 2]


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    ok, reason = lanbox_available()
    if not ok:
        skip_or_fail(reason)
    token = new_swarm_token()
    root = tmp_path_factory.mktemp("daemons")
    with LanBox(hosts=3) as lan:
        procs = {i: start_daemon(lan, i, root / f"node{i}", token, *FAST_LEARNING) for i in HOSTS}
        with stderr_on_timeout(procs):
            ids = node_ids(lan, HOSTS)
        yield {"lan": lan, "token": token, "root": root, "procs": procs, "ids": ids}


def _everyone_sees_everyone_alive(lan, ids, hosts):
    got = statuses(lan, hosts[0], hosts)
    for h in hosts:
        others = {ids[o] for o in hosts if o != h}
        states = peer_states(got[h])
        if not all(states.get(n) == "alive" for n in others):
            return None
    return got


def test_three_daemons_discover_each_other_by_mdns_alone_within_10s(swarm):
    lan, ids = swarm["lan"], swarm["ids"]
    # Timed from the moment every status page answered: the daemons were started with
    # no --peer seeds, so only mDNS can have introduced them.
    _, took = wait_until("every node to list the other two as alive",
                         lambda: _everyone_sees_everyone_alive(lan, ids, HOSTS), timeout=10)
    assert took <= 10


def test_each_node_absorbs_signed_snapshots_from_both_others(swarm):
    lan, ids = swarm["lan"], swarm["ids"]

    def absorbed_from_both():
        got = statuses(lan, 0, HOSTS)
        for h in HOSTS:
            exchanged = {p["node_id"] for p in got[h]["peers"] if p["last_exchange"] is not None}
            if exchanged != {ids[o] for o in HOSTS if o != h}:
                return None
        return got

    got, _ = wait_until("every node to absorb a snapshot from both others", absorbed_from_both, timeout=120)
    for h in HOSTS:
        counters, rejections = got[h]["counters"], got[h]["rejections"]
        assert counters["exchange"]["absorbed"] >= 2
        assert rejections["wire"]["bad_signature"] == 0 and rejections["gate"]["bad_shape"] == 0
        assert got[h]["learner"]["step"] > 0


def test_killed_node_is_declared_dead_then_resumes_from_its_checkpoint(swarm):
    lan, ids, procs = swarm["lan"], swarm["ids"], swarm["procs"]
    survivors = [0, 1]
    ckpt_file = swarm["root"] / "node2" / "checkpoint.safetensors"

    def trained_checkpoint():
        try:
            return decode(ckpt_file.read_bytes()).meta["step"] > 0
        except FileNotFoundError:  # between the rotation and the rename of a save
            return False

    wait_until("a checkpoint with training in it", trained_checkpoint, timeout=60)
    procs[2].kill(signal.SIGKILL)
    procs[2].wait(10)
    # The dead write nothing more. A kill between the rotation and the rename of a save
    # leaves only the previous file, which is what the node then resumes from.
    newest = ckpt_file if ckpt_file.exists() else ckpt_file.with_name("checkpoint.prev.safetensors")
    saved = decode(newest.read_bytes()).meta["step"]

    def both_declare_dead():
        got = statuses(lan, 0, survivors)
        return all(peer_states(got[h]).get(ids[2]) == "dead" for h in survivors)

    _, took = wait_until("both survivors to mark the killed node dead", both_declare_dead, timeout=24)
    assert took <= 24

    procs[2] = start_daemon(lan, 2, swarm["root"] / "node2", swarm["token"], *FAST_LEARNING)
    wait_until("the restarted node's status page", lambda: "node" in statuses(lan, 2, [2])[2], timeout=60)
    restarted = statuses(lan, 2, [2])[2]
    assert restarted["node"]["id"] == ids[2]
    # SIGKILL gives no chance to save: the node resumes from its last periodic checkpoint.
    assert restarted["learner"]["step"] >= saved
    assert restarted["learner"]["step"] > 0

    def alive_again_everywhere():
        got = statuses(lan, 0, HOSTS)
        return all(peer_states(got[h]).get(ids[2]) == "alive" for h in survivors)

    _, took = wait_until("everyone to see the restarted node alive", alive_again_everywhere, timeout=10)
    assert took <= 10
