"""MetricsHistory: bounded, versioned, and restorable from named arrays."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load, save

from gossipnet.errors import UserError
from gossipnet.status.history import MetricsHistory


def test_every_append_changes_the_version():
    h = MetricsHistory()
    versions = {h.version}
    h.record(1.0, 1, {"loss": 2.0}, peers_alive=0)
    versions.add(h.version)
    h.event(1.5, "merge", "peer-a")
    versions.add(h.version)
    h.record(2.0, 2, {"loss": 1.5}, peers_alive=1)
    versions.add(h.version)
    assert len(versions) == 4


def test_metrics_appearing_later_are_missing_earlier():
    h = MetricsHistory()
    h.record(1.0, 1, {"loss": 2.0}, 0)
    h.record(2.0, 2, {"loss": 1.0, "test_accuracy": 0.5}, 0)
    a = h.to_arrays()
    assert a.names == ("loss", "test_accuracy")
    assert a.series("loss").tolist() == [2.0, 1.0]
    assert math.isnan(a.series("test_accuracy")[0]) and a.series("test_accuracy")[1] == 0.5
    assert a.series("absent") is None


def test_non_numeric_and_non_finite_values_are_stored_as_missing():
    h = MetricsHistory()
    h.record(1.0, 1, {"loss": float("inf"), "note": "text", "flag": True, "acc": np.float32(0.25)}, 0)
    a = h.to_arrays()
    assert math.isnan(a.series("loss")[0]) and math.isnan(a.series("note")[0]) and math.isnan(a.series("flag")[0])
    assert a.series("acc")[0] == 0.25


def test_memory_stays_bounded_and_recent_points_keep_full_resolution():
    h = MetricsHistory(max_points=64, max_events=10)
    for i in range(10_000):
        h.record(float(i), i, {"loss": float(i)}, peers_alive=i % 3)
        h.event(float(i), "merge")
    a = h.to_arrays()
    assert len(h) <= 64 and a.event_t.size == 10
    # the newest points are exactly as recorded, one second apart
    assert a.t[-16:].tolist() == [float(i) for i in range(10_000 - 16, 10_000)]
    # the whole run is still covered, evenly: older points average equal-sized buckets
    assert a.t[0] < 10_000 / 16 and a.step[-1] == 9999
    weight = h.state_dict()["weight"]
    assert weight.sum() == 10_000
    buckets = weight[weight > 1]
    assert len(set(buckets[:-1].tolist())) == 1 and buckets[-1] <= buckets[0]
    assert np.all(np.diff(a.t) > 0)
    # merged points are means: the loss (= time here) stays on the line
    np.testing.assert_allclose(a.series("loss"), a.t)


def test_too_many_metric_names_are_dropped_not_grown():
    h = MetricsHistory(max_metrics=3)
    h.record(0.0, 0, {f"m{i}": 1.0 for i in range(10)}, 0)
    assert len(h.to_arrays().names) == 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e6), st.dictionaries(st.sampled_from(["loss", "acc", "x"]),
                                                              st.floats(allow_nan=True, allow_infinity=True))),
                max_size=200))
def test_any_sequence_of_records_keeps_the_invariants(points):
    h = MetricsHistory(max_points=32)
    t = 0.0
    for i, (dt, values) in enumerate(points):
        t += dt
        h.record(t, i, values, peers_alive=i % 5)
    a = h.to_arrays()
    assert len(h) == a.t.size <= 32
    assert a.values.shape == (a.t.size, len(a.names))
    assert np.all(np.diff(a.t) >= 0) and np.all(np.diff(a.step) >= 0)
    if points:
        assert a.step[-1] == len(points) - 1 and a.t[-1] == t


def test_state_dict_round_trips_through_safetensors_and_keeps_growing():
    h = MetricsHistory(max_points=32)
    for i in range(100):
        h.record(float(i), i, {"loss": 1.0 / (i + 1), "acc": i / 100}, peers_alive=2)
    h.event(50.0, "merge", "peer-ä")
    h.event(60.0, "restart", "")
    restored = MetricsHistory(max_points=32)
    restored.load_state_dict(load(save(h.state_dict())))
    a, b = h.to_arrays(), restored.to_arrays()
    assert a.names == b.names and a.event_kind == b.event_kind and a.event_detail == b.event_detail
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.t, b.t)
    version = restored.version
    for i in range(100, 200):  # compaction keeps working on restored weights
        restored.record(float(i), i, {"loss": 0.0}, 3)
    assert restored.version > version and len(restored) <= 32 and restored.to_arrays().step[-1] == 199


def test_empty_history_round_trips():
    restored = MetricsHistory()
    restored.load_state_dict(load(save(MetricsHistory().state_dict())))
    assert len(restored) == 0 and restored.to_arrays().values.shape == (0, 0)


@pytest.mark.parametrize("corrupt", [
    lambda s: s.pop("t"),
    lambda s: s.__setitem__("step", s["step"][:-1]),
    lambda s: s.__setitem__("values", s["values"].astype(np.float32)),
    lambda s: s.__setitem__("names_offsets", s["names_offsets"] + 1),
    lambda s: s.__setitem__("names_data", np.array([0xFF, 0xFE], dtype=np.uint8)),
    lambda s: s.__setitem__("weight", np.zeros_like(s["weight"])),
])
def test_a_corrupt_state_dict_raises_a_user_error_and_changes_nothing(corrupt):
    h = MetricsHistory()
    for i in range(5):
        h.record(float(i), i, {"loss": 1.0}, 0)
    state = h.state_dict()
    corrupt(state)
    target = MetricsHistory()
    target.record(0.0, 0, {"kept": 1.0}, 0)
    with pytest.raises(UserError, match="history"):
        target.load_state_dict(state)
    assert target.to_arrays().names == ("kept",)
