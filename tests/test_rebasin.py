"""Weight and activation matching, MergeMany and REPAIR on gossipnet's nets (gossipnet.rebasin)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipnet.nn import Net, get_preset
from gossipnet.rebasin import (
    activation_matching, apply_permutation, match_many, match_many_activations, merge_aligned,
    permutation_spec, repair, unit_statistics, weight_matching,
)
from gossipnet.rebasin.permutations import random_permutations

# Small nets covering every permutation rule: dense chains, conv chains, a strided conv,
# pooling, dropout, and a Dense after Flatten of a conv map (channel blocks of H*W columns).
SPECS = {
    "mlp": ([{"type": "fc", "units": 12}, {"type": "relu"}, {"type": "dropout", "rate": 0.5},
             {"type": "fc", "units": 9}, {"type": "relu"}, {"type": "softmax", "classes": 4}], (1, 6, 6)),
    "conv_fc": ([{"type": "conv", "filters": 5, "size": 3, "pad": 1}, {"type": "relu"},
                 {"type": "pool", "size": 2},
                 {"type": "conv", "filters": 7, "size": 3, "stride": 2, "pad": 1}, {"type": "relu"},
                 {"type": "fc", "units": 11}, {"type": "relu"}, {"type": "dropout", "rate": 0.25},
                 {"type": "softmax", "classes": 3}], (2, 8, 8)),
    "conv_softmax": ([{"type": "conv", "filters": 6, "size": 5, "pad": 2}, {"type": "relu"},
                      {"type": "pool", "size": 2}, {"type": "softmax", "classes": 5}], (3, 8, 8)),
}


def make(name: str, seed: int = 0) -> Net:
    spec, shape = SPECS[name]
    return Net(spec, shape, seed=seed)


def images(net: Net, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *net.input_shape)).astype(np.float32)


def outputs(net: Net, params, x) -> np.ndarray:
    net.load_state_dict(params)
    return net.forward(x)


def test_spec_orders_a_dense_after_flatten_by_channel_blocks():
    spec = permutation_spec(make("conv_fc"))
    assert spec.sizes == {"P_conv1": 5, "P_conv2": 7, "P_fc1": 11}
    # conv2's 7 channels on a 2x2 map, flattened NCHW: 7 blocks of 4 columns
    assert spec.views["fc1.weight"] == (11, 7, 4)
    assert spec.axes["fc1.weight"] == ("P_fc1", "P_conv2", None)
    assert spec.axes["softmax.weight"] == (None, "P_fc1", None)
    assert spec.axes["softmax.bias"] == (None,)


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(sorted(SPECS)), seed=st.integers(0, 2**16))
def test_permuting_hidden_units_leaves_the_function_unchanged(name, seed):
    net = make(name, seed)
    spec = permutation_spec(net)
    params = net.state_dict()
    x = images(net, 4, seed)
    before = net.forward(x)
    moved = apply_permutation(spec, random_permutations(spec, np.random.default_rng(seed)), params)
    assert any(not np.array_equal(moved[k], params[k]) for k in params)
    np.testing.assert_allclose(outputs(net, moved, x), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_weight_matching_recovers_a_hidden_permutation_exactly(name):
    net = make(name, 1)
    spec = permutation_spec(net)
    a = net.state_dict()
    b = apply_permutation(spec, random_permutations(spec, np.random.default_rng(7)), a)
    back = apply_permutation(spec, weight_matching(spec, a, b), b)
    for k in a:
        np.testing.assert_array_equal(back[k], a[k])


def test_weight_matching_recovers_the_presets_permutations():
    for preset in ("mlp", "tiny"):
        p = get_preset(preset)
        net = Net(p.spec, p.input_shape, seed=3)
        spec = permutation_spec(net)
        a = net.state_dict()
        b = apply_permutation(spec, random_permutations(spec, np.random.default_rng(1)), a)
        back = apply_permutation(spec, weight_matching(spec, a, b), b)
        assert all(np.array_equal(back[k], a[k]) for k in a), preset


@pytest.mark.parametrize("name", ["mlp", "conv_fc"])
def test_activation_matching_recovers_a_hidden_permutation(name):
    net = make(name, 2)
    spec = permutation_spec(net)
    a = net.state_dict()
    b = apply_permutation(spec, random_permutations(spec, np.random.default_rng(5)), a)
    back = apply_permutation(spec, activation_matching(net, spec, a, b, images(net, 64)), b)
    for k in a:
        np.testing.assert_array_equal(back[k], a[k])


@pytest.mark.parametrize("matcher", ["weights", "activations"])
def test_merging_permuted_noisy_copies_gives_back_the_original_function(matcher):
    net = make("conv_fc", 4)
    spec = permutation_spec(net)
    base = net.state_dict()
    rng = np.random.default_rng(0)
    copies = []
    for _ in range(4):
        noisy = {k: v + 0.01 * rng.standard_normal(v.shape).astype(v.dtype) for k, v in base.items()}
        copies.append(apply_permutation(spec, random_permutations(spec, rng), noisy))
    x = images(net, 32, 1)
    aligned = (match_many(spec, copies) if matcher == "weights"
               else match_many_activations(net, spec, copies, x))
    merged = merge_aligned(aligned)
    plain = merge_aligned(copies)
    want = outputs(net, base, x)
    err = np.abs(outputs(net, merged, x) - want).max()
    # averaging aligned copies averages their noise away: closer than any one copy
    assert err < min(np.abs(outputs(net, c, x) - want).max() for c in copies)
    assert np.abs(outputs(net, plain, x) - want).max() > 5 * err


def test_repair_gives_merged_units_their_parents_mean_statistics():
    net = make("conv_fc", 0)
    spec = permutation_spec(net)
    a, b = make("conv_fc", 1).state_dict(), make("conv_fc", 2).state_dict()
    x = images(net, 200)
    shares = [0.3, 0.7]
    merged = merge_aligned([a, b], shares)
    fixed = repair(net, merged, [a, b], x, spec, shares)
    got = unit_statistics(net, fixed, x, spec)
    sa, sb = unit_statistics(net, a, x, spec), unit_statistics(net, b, x, spec)
    before = unit_statistics(net, merged, x, spec)
    for layer in spec.units.values():
        goal_std = 0.3 * sa[layer][1] + 0.7 * sb[layer][1]
        goal_mean = 0.3 * sa[layer][0] + 0.7 * sb[layer][0]
        np.testing.assert_allclose(got[layer][1], goal_std, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(got[layer][0], goal_mean, rtol=1e-3, atol=1e-4)
        assert not np.allclose(before[layer][1], goal_std, rtol=1e-2)
    # the logits layer is not a unit layer and keeps its weights
    np.testing.assert_array_equal(fixed["softmax.weight"], merged["softmax.weight"])


def test_repair_of_identical_parents_changes_nothing():
    net = make("mlp", 3)
    spec = permutation_spec(net)
    a = net.state_dict()
    fixed = repair(net, a, [a, a], images(net, 50), spec)
    for k in a:
        np.testing.assert_allclose(fixed[k], a[k], rtol=1e-4, atol=1e-5)


def test_repair_refuses_an_empty_sample():
    net = make("mlp")
    spec = permutation_spec(net)
    a = net.state_dict()
    with pytest.raises(ValueError, match="at least one image"):
        repair(net, a, [a], images(net, 0), spec)
