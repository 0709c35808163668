"""The attack harness's accounting (benchmarks/attacks.py), without a swarm: what a flooded
victim refused must include what it dropped unread (rejections.udp, the kernel's drops among
them), or a flood on a busy machine looks like envelopes accepted (the hardening test failed
so, once: 14 of 300 lost in the kernel)."""

from benchmarks.attacks import Outcome, _judge_wire


def _status(wire: dict, udp: dict | None = None) -> dict:
    return {"rejections": {"wire": wire, "udp": udp or {}}}


def _judge(after: dict) -> Outcome:
    out = Outcome({"sent": 300}, {}, True, "")
    before = _status({"not_admitted": 10}, {"queue_full": 2, "kernel": 5})
    _judge_wire("cert_flood_rotating_ports", out, before, after, seconds=2.0)
    return out


def test_envelopes_dropped_unread_count_as_refused_not_accepted():
    after = _status({"not_admitted": 10 + 250, "cert_budget": 10}, {"queue_full": 2 + 15, "kernel": 5 + 25})
    out = _judge(after)
    assert out.extra["accepted"] == 0 and out.held
    assert out.counted == {"not_admitted": 250, "cert_budget": 10, "udp_queue_full": 15, "udp_kernel": 25}


def test_envelopes_nobody_refused_are_still_accepted():
    after = _status({"not_admitted": 10 + 250, "cert_budget": 10})  # 40 of the 300 unaccounted for
    out = _judge(after)
    assert out.extra["accepted"] == 40 and not out.held
    assert "260 of 300 accounted for" in out.why
