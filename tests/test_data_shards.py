"""Sharding: every node computes the same disjoint, complete, non-empty split."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipnet.data import partition, shard
from gossipnet.errors import UserError

ALPHAS = st.one_of(st.none(), st.floats(min_value=1e-6, max_value=1e6), st.sampled_from([1e-300, 1e300]))


@st.composite
def labelled(draw):
    """Labels (possibly tiny, one class, gaps in class ids) and a shard count that fits."""
    n = draw(st.integers(min_value=1, max_value=300))
    classes = draw(st.integers(min_value=1, max_value=12))
    y = np.asarray(draw(st.lists(st.integers(0, classes - 1), min_size=n, max_size=n)), dtype=np.int64)
    y = y * draw(st.sampled_from([1, 7]))  # class ids need not be contiguous
    k = draw(st.integers(min_value=1, max_value=n))
    return y, k


@settings(max_examples=150, deadline=None)
@given(data=labelled(), alpha=ALPHAS, seed=st.integers(0, 2**32))
def test_shards_are_disjoint_complete_and_non_empty(data, alpha, seed):
    y, k = data
    parts = partition(y, k, alpha=alpha, seed=seed)
    assert len(parts) == k
    assert all(len(p) > 0 for p in parts)
    everything = np.concatenate(parts)
    assert len(everything) == len(y)  # no item in two shards ...
    assert np.array_equal(np.sort(everything), np.arange(len(y)))  # ... and none left out
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)


@settings(max_examples=50, deadline=None)
@given(data=labelled(), alpha=ALPHAS, seed=st.integers(0, 2**32))
def test_same_seed_gives_the_same_shards_on_every_node(data, alpha, seed):
    y, k = data
    first = partition(y, k, alpha=alpha, seed=seed)
    again = partition(y.copy(), k, alpha=alpha, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    for i in {0, k // 2, k - 1}:  # what one node computes for itself is its part of the whole
        assert np.array_equal(shard(y, k, i, alpha=alpha, seed=seed), first[i])


def test_different_seeds_give_different_shards():
    y = np.repeat(np.arange(10), 50)
    assert not np.array_equal(shard(y, 4, 0, seed=1), shard(y, 4, 0, seed=2))
    assert not np.array_equal(shard(y, 4, 0, alpha=0.5, seed=1), shard(y, 4, 0, alpha=0.5, seed=2))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 500), k=st.integers(1, 50))
def test_iid_shard_sizes_differ_by_at_most_one(n, k):
    k = min(k, n)
    sizes = [len(p) for p in partition(np.zeros(n, dtype=np.int64), k)]
    assert max(sizes) - min(sizes) <= 1


def dominant_share(y, parts):
    """Mean over shards of the fraction of the shard's most common label."""
    return float(np.mean([np.bincount(y[p]).max() / len(p) for p in parts]))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_small_alpha_skews_labels_and_large_alpha_approaches_iid(seed):
    y = np.repeat(np.arange(10), 200)
    skewed = dominant_share(y, partition(y, 10, alpha=0.05, seed=seed))
    iid = dominant_share(y, partition(y, 10, alpha=None, seed=seed))
    flat = dominant_share(y, partition(y, 10, alpha=1000.0, seed=seed))
    # Balanced classes: an IID shard of 200 has its top label at ~0.10-0.17.
    assert iid < 0.2 and flat < 0.2
    assert skewed > 0.5


def test_extreme_alpha_on_tiny_data_still_fills_every_shard():
    y = np.array([0, 0, 0, 0, 1])
    for alpha in (1e-300, 1e-9, 1e300):
        parts = partition(y, 5, alpha=alpha, seed=0)
        assert sorted(len(p) for p in parts) == [1, 1, 1, 1, 1]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda y: shard(y, 0, 0), "num_shards must be at least 1"),
        (lambda y: shard(y, 3, 3), "shard index 3 is out of range for 3 shards"),
        (lambda y: shard(y, 3, -1), "index must be at least 0"),
        (lambda y: shard(y, 2.0, 0), "num_shards must be an integer"),
        (lambda y: shard(y, True, 0), "num_shards must be an integer"),
        (lambda y: shard(y, 11, 0), "cannot split 10 items into 11 non-empty shards"),
        (lambda y: shard(y, 2, 0, alpha=0), "alpha must be a positive finite number"),
        (lambda y: shard(y, 2, 0, alpha=float("nan")), "alpha must be a positive finite number"),
        (lambda y: shard(y, 2, 0, alpha=float("inf")), "alpha must be a positive finite number"),
        (lambda y: shard(y, 2, 0, alpha="0.1"), "alpha must be a positive finite number"),
        (lambda y: shard(y, 2, 0, seed=-1), "seed must be at least 0"),
        (lambda y: shard(y.astype(float), 2, 0), "labels must be integers"),
        (lambda y: shard(y.reshape(2, 5), 2, 0), "labels must be a 1-D array"),
        (lambda y: shard(y[:0], 1, 0), "cannot shard an empty data set"),
    ],
)
def test_bad_arguments_are_user_errors(call, message):
    with pytest.raises(UserError, match=message):
        call(np.arange(10) % 3)
