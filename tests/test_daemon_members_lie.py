"""A member with valid credentials lies to real daemons in a LAN in a box (issue 12, items 6-7):
"Y is dead at incarnation 2**53", "Y is alive at my address", 4,672 invented members.
The attacks themselves live in benchmarks/attacks_members.py, which prints the figures."""

import pytest

from benchmarks.attacks_members import ATTACKS, run
from tests.conftest import skip_or_fail
from tests.lanbox import lanbox_available

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def test_a_lying_member_cannot_kill_hijack_or_fill_the_table_of_real_daemons():
    ok, reason = lanbox_available()
    if not ok:
        skip_or_fail(reason)
    results = run(ATTACKS, log=lambda msg: None)
    overflow, hijack, filling = (results[a] for a in ATTACKS)
    assert overflow["victim_sees_y"]["state"] == "alive" and overflow["victim_counted"] > 0, overflow
    assert overflow["y_incarnation"] < 2**53, overflow
    assert hijack["y_after"] == hijack["y_before"] and hijack["victim_counted"] > 0, hijack
    assert filling["invented_rows"] == 0, filling
    assert filling["victim_counted"]["rejected.unsigned_record"] >= 65 * 64, filling
    assert filling["late_node_alive_after_s"] is not None, filling  # a real node still joins
    assert all(r["held"] for r in results.values()), results
