"""Two neuroevolution daemons in a LAN in a box: islands trading signed migrants on CartPole."""

import pytest

from tests.conftest import skip_or_fail
from tests.daemon_box import new_swarm_token, node_ids, start_daemon, statuses, stderr_on_timeout, wait_until
from tests.lanbox import LanBox, lanbox_available

pytestmark = [pytest.mark.netns, pytest.mark.slow]
HOSTS = [0, 1]


def test_two_island_daemons_exchange_migrants_and_both_solve_cartpole(tmp_path):
    ok, reason = lanbox_available()
    if not ok:
        skip_or_fail(reason)
    token = new_swarm_token()
    with LanBox(hosts=2) as lan:
        procs = [start_daemon(lan, i, tmp_path / f"island{i}", token, "--task", "cartpole",
                              "--announce-interval", "1", "--eval-interval", "5") for i in HOSTS]
        with stderr_on_timeout(procs):
            ids = node_ids(lan, HOSTS)

            def both_solved_with_migrants():
                got = statuses(lan, 0, HOSTS)
                for h in HOSTS:
                    m = got[h]["learner"]["metrics"]
                    if not (m.get("migrants_accepted", 0) > 0 and (m.get("eval_mean") or 0) >= 475):
                        return None
                return got

            got, _ = wait_until("both islands to take migrants and solve CartPole",
                                both_solved_with_migrants, timeout=180, interval=2)
        for h in HOSTS:
            assert got[h]["learner"]["kind"] == "evolution"
            other = ids[1 - h]
            exchanged = {p["node_id"] for p in got[h]["peers"] if p["last_exchange"] is not None}
            assert other in exchanged  # migrants came from the other island, over the wire
            assert got[h]["learner"]["metrics"]["eval_episodes"] == 100
