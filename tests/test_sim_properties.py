"""Hypothesis drives a small swarm through crashes, restarts, loss and partitions.

Safety is checked after every step; liveness at the end: once the faults stop and the
crashed nodes come back, everyone converges within the protocol's bounds.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gossipnet.membership import MembershipConfig, State
from gossipnet.sim import Swarm

LAN = MembershipConfig.lan()


class SwarmMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.swarm = Swarm(5, seed=0, join="all")
        self.swarm.run(3.0)
        self.incarnations = {i: 0 for i in self.swarm.nodes}

    @rule(seconds=st.floats(0.1, 20.0))
    def run(self, seconds):
        self.swarm.run(seconds)

    @precondition(lambda self: len(self.swarm.up_ids()) > 2)
    @rule(index=st.integers(0, 4))
    def crash(self, index):
        self.swarm.crash(f"n{index:03d}")

    @rule(index=st.integers(0, 4))
    def restart(self, index):
        node_id = f"n{index:03d}"
        if not self.swarm.nodes[node_id].up:
            seed = next(i for i in self.swarm.up_ids())
            self.swarm.restart(node_id, seed_with=seed)

    @rule(loss=st.sampled_from([0.0, 0.1, 0.3, 1.0]), a=st.integers(0, 4), b=st.integers(0, 4))
    def link(self, loss, a, b):
        self.swarm.net.set_link(f"n{a:03d}", f"n{b:03d}", loss=loss)

    @rule(cut=st.sets(st.integers(0, 4), min_size=1, max_size=4))
    def partition(self, cut):
        side = {f"n{i:03d}" for i in cut}
        self.swarm.net.partition(side, set(self.swarm.nodes) - side)

    @rule()
    def heal(self):
        self.swarm.net.heal()

    @invariant()
    def incarnations_never_decrease_and_self_is_alive(self):
        for node_id in self.swarm.up_ids():
            m = self.swarm.nodes[node_id].membership
            assert m.incarnation >= self.incarnations[node_id]
            self.incarnations[node_id] = m.incarnation
            assert m.member(node_id).state == State.ALIVE

    @invariant()
    def bodies_fit_the_budget(self):
        assert self.swarm.counters["oversize"] == 0
        assert self.swarm.max_body <= LAN.max_body_bytes

    def teardown(self):
        swarm = self.swarm
        swarm.net.heal()
        swarm.net.links.clear()
        for node_id, node in swarm.nodes.items():
            if not node.up:
                swarm.restart(node_id, seed_with=swarm.up_ids()[0])
        # Worst case: a stale dead view waits for a reconnect or push-pull round.
        took = swarm.run_until_converged(limit=3 * LAN.push_pull_interval)
        assert took is not None, {i: swarm.view(i) for i in swarm.up_ids()}


SwarmMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=15, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_swarm_survives_arbitrary_faults_and_converges_after = SwarmMachine.TestCase
