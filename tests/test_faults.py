"""The seeded fault layer's decisions, without sockets: shares, delays, seeds, config checks."""

import statistics

import pytest

from gossipnet.errors import UserError
from gossipnet.net.faults import FaultConfig, FaultPlan


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"drop": 1.5}, "drop probability"),
        ({"duplicate": -0.1}, "duplicate probability"),
        ({"delay_min": 0.2, "delay_max": 0.1}, "swap them"),
        ({"reorder_delay": -1}, "cannot be negative"),
    ],
)
def test_bad_fault_config_is_a_user_error(kwargs, fragment):
    with pytest.raises(UserError, match=fragment):
        FaultConfig(**kwargs)


N = 20_000


def fates(config, n=N):
    plan = FaultPlan(config)
    return [plan.fate() for _ in range(n)]


def test_fault_plan_drops_the_configured_share():
    outcomes = fates(FaultConfig(drop=0.2, seed=1))
    share = sum(1 for f in outcomes if not f) / N
    assert 0.18 < share < 0.22  # 5 sigma of a binomial(20000, 0.2) is about 0.014


def test_fault_plan_duplicates_the_configured_share():
    outcomes = fates(FaultConfig(duplicate=0.1, seed=2))
    assert all(len(f) in (1, 2) for f in outcomes)
    share = sum(1 for f in outcomes if len(f) == 2) / N
    assert 0.09 < share < 0.11


def test_fault_plan_delays_are_uniform_in_range():
    delays = [d for f in fates(FaultConfig(delay_min=0.01, delay_max=0.03, seed=3)) for d in f]
    assert min(delays) >= 0.01 and max(delays) <= 0.03
    assert abs(statistics.fmean(delays) - 0.02) < 0.0005
    assert abs(statistics.pstdev(delays) - 0.02 / 12**0.5) < 0.0005  # uniform's sd = width/sqrt(12)


def test_fault_plan_holds_back_the_reordered_share():
    delays = [f[0] for f in fates(FaultConfig(reorder=0.25, reorder_delay=0.05, seed=4))]
    share = sum(1 for d in delays if d == 0.05) / N
    assert set(delays) == {0.0, 0.05}
    assert 0.23 < share < 0.27


def test_fault_plan_is_reproducible_from_its_seed():
    config = FaultConfig.flaky_lan(seed=7)
    assert fates(config, 500) == fates(config, 500)
    assert fates(config, 500) != fates(FaultConfig.flaky_lan(seed=8), 500)


def test_no_faults_means_every_datagram_is_delivered_at_once():
    assert all(f == [0.0] for f in fates(FaultConfig(seed=5), 1000))
