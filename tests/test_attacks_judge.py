"""The attack harness's accounting (benchmarks/attacks.py), without a swarm: what a flooded
victim refused must include what it dropped unread, or a flood on a busy machine looks like
envelopes accepted (the hardening test failed so, once: 14 of 300 lost in the kernel)."""

from benchmarks.attacks import Outcome, _judge_wire


def _status(wire: dict, udp: dict | None = None) -> dict:
    return {"rejections": {"wire": wire, "udp": udp or {}}}


def _judge(after: dict, kernel_dropped: int = 0) -> Outcome:
    out = Outcome({"sent": 300}, {}, True, "")
    before = _status({"not_admitted": 10}, {"queue_full": 2})
    _judge_wire("cert_flood_rotating_ports", out, before, after, seconds=2.0, kernel_dropped=kernel_dropped)
    return out


def test_envelopes_dropped_unread_count_as_refused_not_accepted():
    after = _status({"not_admitted": 10 + 250, "cert_budget": 10}, {"queue_full": 2 + 15})
    out = _judge(after, kernel_dropped=25)
    assert out.extra["accepted"] == 0 and out.held
    assert out.counted == {"not_admitted": 250, "cert_budget": 10, "udp_queue_full": 15, "kernel_rcvbuf": 25}


def test_envelopes_nobody_refused_are_still_accepted():
    after = _status({"not_admitted": 10 + 250, "cert_budget": 10})  # 40 of the 300 unaccounted for
    out = _judge(after, kernel_dropped=0)
    assert out.extra["accepted"] == 40 and not out.held
    assert "260 of 300 accounted for" in out.why
