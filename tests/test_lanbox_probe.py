"""lanbox_available: a probe lost to a loaded machine is tried again before every test in
the box is failed for it; a machine that lacks something is answered at once."""

import os

import pytest

from tests import lanbox


@pytest.fixture
def probes(monkeypatch):
    """Replace the real probe with scripted answers; the cached answer is cleared around the test."""
    answers: list[str | None] = []
    calls: list[bool] = []

    def probe(need_nft):
        calls.append(need_nft)
        return answers.pop(0)

    lanbox.lanbox_available.cache_clear()
    monkeypatch.setattr(lanbox, "_missing_requirement", lambda need_nft: None)
    monkeypatch.setattr(lanbox, "_probe", probe)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    yield answers, calls
    lanbox.lanbox_available.cache_clear()


def test_a_probe_that_fails_once_is_tried_again(probes):
    answers, calls = probes
    answers += ["'READY' not printed within 10 s", None]
    assert lanbox.lanbox_available() == (True, "")
    assert len(calls) == 2


def test_only_failures_in_a_row_make_the_box_unavailable(probes):
    answers, calls = probes
    answers += [f"failure {i}" for i in range(lanbox.PROBE_ATTEMPTS)]
    ok, reason = lanbox.lanbox_available(need_nft=True)
    assert not ok
    assert len(calls) == lanbox.PROBE_ATTEMPTS and all(calls)
    assert all(f"failure {i}" in reason for i in range(lanbox.PROBE_ATTEMPTS))


def test_without_root_the_first_failure_is_the_answer(probes, monkeypatch):
    answers, calls = probes
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    answers += ["ip netns add failed (1): Operation not permitted"]
    ok, reason = lanbox.lanbox_available()
    assert not ok and len(calls) == 1
    assert "needs root" in reason and "uid 1000" in reason


def test_a_missing_tool_is_answered_without_a_probe(probes, monkeypatch):
    answers, calls = probes
    monkeypatch.setattr(lanbox, "_missing_requirement", lambda need_nft: "`nft` is not installed")
    assert lanbox.lanbox_available(need_nft=True) == (False, "`nft` is not installed")
    assert calls == []
