"""Real daemons in a LAN in a box against outsiders: a port-rotating certificate flood (rate
limit by IP and the verification budget), a cross-receiver replay, and idle connections.

The attacks are ``benchmarks/attacks.py``'s, run at a small scale; each must hold every
promise: stopped where it should be, no honest node dead, merging on, no crash, status up.
"""

import tempfile
from pathlib import Path

import pytest

from benchmarks.attacks import ATTACKS, run_one, start_swarm
from tests.conftest import skip_or_fail
from tests.daemon_box import new_swarm_token
from tests.lanbox import LanBox, lanbox_available

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def swarm():
    ok, reason = lanbox_available()
    if not ok:
        skip_or_fail(reason)
    with tempfile.TemporaryDirectory(prefix="hardening-") as tmp, LanBox(hosts=4) as lan:
        yield start_swarm(lan, Path(tmp), new_swarm_token())


@pytest.mark.parametrize("name, scale", [
    ("cert_flood_rotating_ports", 0.1),  # 300 self-made certificates from ~300 source ports
    ("cross_receiver_replay", 0.1),
    ("idle_http_connections", 0.2),  # 30 idle + 30 half-sent connections from one host
])
def test_attack_is_stopped_and_the_swarm_carries_on(swarm, name, scale):
    result = run_one(swarm, next(a for a in ATTACKS if a.name == name), scale)
    failed = [check for check, ok in result["checks"].items() if not ok]  # first: pytest cuts the dict short
    assert result["held"], f"failed checks: {failed}; {result}"
