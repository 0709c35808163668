"""Replay windows and token buckets against simple reference models."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipnet.wire.guards import ReplayWindows, TokenBuckets

WINDOW = 16


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 60)), max_size=120))
def test_replay_window_matches_a_model_that_remembers_everything(events):
    """Each (incarnation, seq) is accepted at most once; older incarnations never; a seq
    more than WINDOW below the highest is refused (it cannot be told from a replay)."""
    windows = ReplayWindows(WINDOW, capacity=8)
    seen: set[tuple[int, int]] = set()
    current_inc, top = -1, -1
    for inc, seq in events:
        verdict = windows.check(b"k", inc, seq)
        if inc < current_inc:
            expected = ReplayWindows.STALE
        elif inc > current_inc or seq > top:
            expected = ReplayWindows.OK
        elif (inc, seq) in seen or top - seq >= WINDOW:
            expected = ReplayWindows.REPLAYED
        else:
            expected = ReplayWindows.OK
        assert verdict == expected, (inc, seq, current_inc, top)
        if verdict == ReplayWindows.OK:
            windows.accept(b"k", inc, seq)
            if inc > current_inc:
                current_inc, top = inc, seq
            top = max(top, seq)
            seen.add((inc, seq))


def test_replay_windows_evict_the_least_recently_used_sender():
    windows = ReplayWindows(WINDOW, capacity=2)
    for key in (b"a", b"b"):
        windows.accept(key, 1, 1)
    assert windows.check(b"a", 1, 1) == ReplayWindows.REPLAYED
    windows.accept(b"a", 1, 2)  # a is now the most recent
    windows.accept(b"c", 1, 1)  # evicts b
    assert len(windows) == 2
    assert windows.check(b"b", 1, 1) == ReplayWindows.OK
    assert windows.check(b"a", 1, 1) == ReplayWindows.REPLAYED


def test_a_big_sequence_jump_clears_the_window():
    windows = ReplayWindows(WINDOW, capacity=2)
    windows.accept(b"k", 1, 5)
    windows.accept(b"k", 1, 5 + 10 * WINDOW)
    assert windows.check(b"k", 1, 5 + 10 * WINDOW - 1) == ReplayWindows.OK
    assert windows.check(b"k", 1, 5) == ReplayWindows.REPLAYED


def test_token_bucket_allows_the_burst_then_the_rate():
    buckets = TokenBuckets(rate=10, burst=3, capacity=4)
    assert [buckets.allow("s", 0) for _ in range(4)] == [True, True, True, False]
    assert buckets.allow("s", 50) is False  # half a token
    assert buckets.allow("s", 100) is True
    assert [buckets.allow("s", 10_000) for _ in range(4)] == [True, True, True, False]  # capped at burst


def test_token_bucket_ignores_a_clock_stepping_back():
    buckets = TokenBuckets(rate=10, burst=1, capacity=4)
    assert buckets.allow("s", 1000)
    assert not buckets.allow("s", 0)
    assert not buckets.allow("s", 1050)
    assert buckets.allow("s", 1100)


def test_token_bucket_table_is_bounded():
    buckets = TokenBuckets(rate=1, burst=1, capacity=8)
    for i in range(1000):
        buckets.allow(("10.0.0.1", i), 0)
    assert len(buckets) == 8
