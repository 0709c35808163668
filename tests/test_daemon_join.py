"""The README's promise: `python daemon.py` alone starts a swarm and prints the line that joins it."""

import re
import signal
import sys

import pytest

from tests.conftest import skip_or_fail
from tests.daemon_box import REPO, peer_states, statuses, wait_until
from tests.lanbox import LanBox, lanbox_available

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def test_daemon_with_no_arguments_prints_a_join_line_that_another_machine_can_use(tmp_path):
    ok, reason = lanbox_available()
    if not ok:
        skip_or_fail(reason)
    env = {"OPENBLAS_NUM_THREADS": "1"}
    with LanBox(hosts=2) as lan:
        first = lan.spawn(0, [sys.executable, str(REPO / "daemon.py")], env={**env, "HOME": str(tmp_path / "a")})
        banner = first.wait_for_output("--swarm-token", timeout=60)
        join = re.search(r"gossipnet run (--swarm-token \S+)", banner)
        assert join, banner
        assert f"status page: http://{lan.address(0)}:8080/" in banner  # found its LAN address itself
        second = lan.spawn(1, [sys.executable, str(REPO / "daemon.py"), *join.group(1).split()],
                           env={**env, "HOME": str(tmp_path / "b")})
        second.wait_for_output("is up", timeout=60)
        assert "To join another machine" not in second.stdout()  # it joined, it made no swarm

        def introduced():
            got = statuses(lan, 0, [0, 1])
            if not all("node" in s for s in got.values()):
                return None
            ids = {h: s["node"]["id"] for h, s in got.items()}
            return (peer_states(got[0]).get(ids[1]) == "alive" and peer_states(got[1]).get(ids[0]) == "alive"
                    and got[0]["node"]["swarm"] == got[1]["node"]["swarm"])

        wait_until("the two machines to see each other alive in one swarm", introduced, timeout=20)
        first.kill(signal.SIGINT)
        assert first.wait(30) == 0
        assert "stopped at step" in first.stdout()
