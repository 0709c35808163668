"""Whole swarms in one process on a virtual clock: convergence, failure detection, loss, partitions."""

from __future__ import annotations

import math

import pytest

from gossipnet.gossip import GossipConfig
from gossipnet.membership import MembershipConfig, State, suspicion_timeout
from gossipnet.sim import Swarm

LAN = MembershipConfig.lan()


def test_fifty_nodes_converge_from_one_seed_within_datagram_budget():
    swarm = Swarm(50, seed=7)
    took = swarm.run_until_converged(limit=30.0)
    assert took is not None and took < 10.0
    swarm.run(40.0)  # through a full sync round as well
    assert swarm.converged()
    assert swarm.counters["oversize"] == 0 and swarm.max_body <= LAN.max_body_bytes
    assert not swarm.events("suspect")


def test_crashed_node_is_declared_dead_by_all_within_the_suspicion_bound():
    swarm = Swarm(50, seed=11, join="all")
    assert swarm.run_until_converged(limit=20.0) is not None
    swarm.crash("n017")
    crashed_at = swarm.now
    low = suspicion_timeout(LAN, 50)  # 4 * log10(50) = 6.8 s
    high = LAN.suspicion_max_timeout_mult * low  # 40.8 s
    # Someone probes it within a few rounds; rumours then reach everyone in ~1 s.
    detect, spread = 5.0, 5.0
    swarm.run(detect + high + spread)
    deaths = swarm.events("dead")
    assert {observer for observer, _ in deaths} == set(swarm.up_ids())
    assert {e.node_id for _, e in deaths} == {"n017"}
    delays = [e.at - crashed_at for _, e in deaths]
    assert low <= min(delays) and max(delays) <= detect + high + spread


@pytest.mark.parametrize("n", range(3, 11))
def test_no_healthy_node_is_declared_dead_under_twenty_percent_loss(n):
    for seed in (1, 2):
        swarm = Swarm(n, seed=seed * 100 + n, join="all")
        assert swarm.run_until_converged(limit=20.0) is not None
        swarm.net.loss = 0.2
        swarm.run(120.0)
        assert swarm.events("dead") == []
        assert swarm.counters["lost"] > 0
        assert all(s != State.DEAD for i in swarm.up_ids() for s in swarm.view(i).values())


def test_partition_heals_and_both_sides_converge():
    swarm = Swarm(10, seed=5, join="all")
    assert swarm.run_until_converged(limit=20.0) is not None
    left, right = set(swarm.up_ids()[:5]), set(swarm.up_ids()[5:])
    swarm.net.partition(left, right)
    swarm.run(60.0)
    assert swarm.view("n000")["n009"] == State.DEAD and swarm.view("n009")["n000"] == State.DEAD
    assert swarm.converged(sorted(left)) and swarm.converged(sorted(right))
    swarm.net.heal()
    took = swarm.run_until_converged(limit=3 * LAN.reconnect_interval)
    assert took is not None
    # 60 s apart is past the 30 s of gossip to the dead: Serf-style reconnects healed it.
    assert sum(n.membership.counters["reconnects"] for n in swarm.nodes.values()) > 0


def test_restarted_node_becomes_alive_again_everywhere():
    swarm = Swarm(8, seed=9, join="all")
    assert swarm.run_until_converged(limit=20.0) is not None
    swarm.crash("n004")
    swarm.run(40.0)
    assert all(swarm.view(i)["n004"] == State.DEAD for i in swarm.up_ids())
    swarm.restart("n004")
    assert swarm.run_until_converged(limit=10.0) is not None
    assert swarm.nodes["n004"].membership.incarnation >= 1
    recovered = {o for o, e in swarm.events("recovered") if e.node_id == "n004"}
    assert recovered == set(swarm.up_ids()) - {"n004"}


def test_graceful_leave_reaches_everyone_and_is_not_a_failure():
    swarm = Swarm(10, seed=4, join="all")
    assert swarm.run_until_converged(limit=20.0) is not None
    swarm.leave("n003")
    swarm.run(60.0)
    assert all(swarm.view(i)["n003"] == State.LEFT for i in swarm.up_ids())
    assert swarm.events("dead") == [] and swarm.events("suspect") == []


def test_broken_direct_link_is_bridged_by_indirect_probes():
    swarm = Swarm(6, seed=2, join="all")
    assert swarm.run_until_converged(limit=20.0) is not None
    swarm.net.set_link("n000", "n001", loss=1.0)
    swarm.net.set_link("n001", "n000", loss=1.0)
    swarm.run(120.0)
    assert swarm.events("dead") == []
    assert swarm.view("n000")["n001"] == State.ALIVE
    assert swarm.nodes["n000"].membership.counters["probes_acked_indirect"] > 0


def test_runs_are_deterministic_by_seed():
    def trace(seed):
        swarm = Swarm(12, seed=seed, loss=0.1)
        swarm.run(20.0)
        swarm.crash("n005")
        swarm.run(30.0)
        return [(o, e.kind, e.node_id, e.at) for o, n in swarm.nodes.items() for e in n.events]

    assert trace(3) == trace(3)
    assert trace(3) != trace(4)


def test_gossip_spreads_knowledge_with_bounded_pulls():
    config = GossipConfig.local()
    swarm = Swarm(8, seed=6, join="all", gossip_config=config)
    peak = 0
    for _ in range(60):
        swarm.run(0.5)
        peak = max(peak, max(len(n.gossip.in_flight()) for n in swarm.nodes.values()))
    assert 1 <= peak <= config.max_concurrent_pulls
    totals = sum((n.gossip.counters for n in swarm.nodes.values()), start=type(
        swarm.nodes["n000"].gossip.counters)())
    assert totals["announced"] > 0 and totals["absorbed"] > 0
    assert totals["skipped.not_newer"] + totals["skipped.at_capacity"] + \
        totals["skipped.already_pulling"] > 0
    ages = [n.age for n in swarm.nodes.values()]
    assert min(ages) >= max(ages) - 3.0 and not math.isnan(sum(ages))
