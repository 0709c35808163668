"""Net construction from specs: validation errors, names, fingerprints, presets, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from gossipnet.errors import UserError
from gossipnet.nn import PRESETS, Net, canonical_spec, fingerprint, get_preset

SMALL = [
    {"type": "conv", "filters": 4, "size": 3, "pad": 1},
    {"type": "relu"},
    {"type": "pool", "size": 2},
    {"type": "dropout", "rate": 0.3},
    {"type": "fc", "units": 8},
    {"type": "softmax", "classes": 3},
]


@pytest.mark.parametrize(
    "spec,needle",
    [
        ([], "non-empty list"),
        ("conv", "non-empty list"),
        ([{"filters": 3}], "'type'"),
        ([{"type": "lstm"}, {"type": "softmax", "classes": 2}], "unknown type 'lstm'"),
        ([{"type": "conv", "filters": -4, "size": 3}, {"type": "softmax", "classes": 2}], "'filters'"),
        ([{"type": "conv", "filters": 4, "size": 0}, {"type": "softmax", "classes": 2}], "'size'"),
        ([{"type": "conv", "filters": 4, "size": 3, "pad": -1}, {"type": "softmax", "classes": 2}],
         "'pad'"),
        ([{"type": "conv", "filters": 4}, {"type": "softmax", "classes": 2}], "missing required key 'size'"),
        ([{"type": "conv", "filters": 2.5, "size": 3}, {"type": "softmax", "classes": 2}], "integer"),
        ([{"type": "conv", "filters": True, "size": 3}, {"type": "softmax", "classes": 2}], "integer"),
        ([{"type": "dropout", "rate": 1.0}, {"type": "softmax", "classes": 2}], "'rate'"),
        ([{"type": "relu", "size": 3}, {"type": "softmax", "classes": 2}], "unknown keys"),
        ([{"type": "relu"}], "last layer must be"),
        ([{"type": "softmax", "classes": 2}, {"type": "relu"}], "softmax must be the last"),
        ([{"type": "softmax", "classes": 1}], "'classes'"),
    ],
)
def test_bad_spec_raises_user_error_naming_the_problem(spec, needle):
    with pytest.raises(UserError, match=needle):
        Net(spec, (1, 8, 8))


def test_shapes_that_do_not_fit_are_user_errors():
    too_big = [{"type": "conv", "filters": 2, "size": 9}, {"type": "softmax", "classes": 2}]
    with pytest.raises(UserError, match="does not fit the 8x8 input"):
        Net(too_big, (1, 8, 8))
    pooled_away = [{"type": "pool", "size": 2}] * 4 + [{"type": "softmax", "classes": 2}]
    with pytest.raises(UserError, match="does not fit"):
        Net(pooled_away, (1, 8, 8))
    conv_after_fc = [{"type": "fc", "units": 4}, {"type": "conv", "filters": 2, "size": 1},
                     {"type": "softmax", "classes": 2}]
    with pytest.raises(UserError, match="before fc layers"):
        Net(conv_after_fc, (1, 8, 8))
    with pytest.raises(UserError, match="input shape"):
        Net(SMALL, (8, 8))
    with pytest.raises(UserError, match="input shape"):
        Net(SMALL, (1, 0, 8))


def test_wrong_input_shape_at_forward_is_a_user_error():
    net = Net(SMALL, (2, 8, 8))
    with pytest.raises(UserError, match=r"\(N, 2, 8, 8\)"):
        net.forward(np.zeros((3, 8, 8, 2), np.float32))
    with pytest.raises(UserError, match="labels must lie in"):
        net.loss_and_grads(np.zeros((2, 2, 8, 8), np.float32), np.array([0, 5]))


def test_parameter_names_and_shapes_depend_only_on_the_spec():
    a, b = Net(SMALL, (2, 8, 8), seed=1), Net(SMALL, (2, 8, 8), seed=2)
    assert list(a.params()) == ["conv1.weight", "conv1.bias", "fc1.weight", "fc1.bias",
                                "softmax.weight", "softmax.bias"]
    assert {k: v.shape for k, v in a.params().items()} == {k: v.shape for k, v in b.params().items()}
    assert a.params()["conv1.weight"].shape == (4, 2, 3, 3)  # PyTorch layout (out, in, kh, kw)
    assert a.params()["fc1.weight"].shape == (8, 4 * 4 * 4)
    assert not np.array_equal(a.params()["conv1.weight"], b.params()["conv1.weight"])
    assert all(v.dtype == np.float32 for v in a.params().values())


def test_fingerprint_is_canonical_and_sensitive():
    explicit = [dict(d) for d in SMALL]
    explicit[0]["stride"] = 1  # a default spelled out
    explicit[2]["stride"] = 2
    assert Net(explicit, (2, 8, 8)).fingerprint == Net(SMALL, (2, 8, 8)).fingerprint
    assert fingerprint(SMALL, (2, 8, 8)) != fingerprint(SMALL, (2, 10, 8))
    wider = [dict(d) for d in SMALL]
    wider[4]["units"] = 9
    assert fingerprint(wider, (2, 8, 8)) != fingerprint(SMALL, (2, 8, 8))
    assert canonical_spec(SMALL)[2] == {"type": "pool", "size": 2, "stride": 2}


def test_same_seed_gives_identical_weights_and_outputs():
    x = np.random.default_rng(0).standard_normal((4, 2, 8, 8)).astype(np.float32)
    a, b = Net(SMALL, (2, 8, 8), seed=7), Net(SMALL, (2, 8, 8), seed=7)
    for k in a.params():
        np.testing.assert_array_equal(a.params()[k], b.params()[k])
    np.testing.assert_array_equal(a.forward(x), b.forward(x))


def test_he_init_keeps_activation_scale_through_relu_layers():
    net = get_preset("fashion")
    n = Net(net.spec, net.input_shape, seed=0)
    x = np.random.default_rng(1).standard_normal((64, 1, 28, 28)).astype(np.float32)
    logits = n.forward(x)
    assert 0.2 < logits.std() < 5  # neither vanishing nor exploding at initialisation


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_runs_a_training_step(name):
    p = PRESETS[name]
    net = Net(p.spec, p.input_shape)
    x = np.random.default_rng(0).standard_normal((2, *p.input_shape)).astype(np.float32)
    loss, logits = net.loss_and_grads(x, np.array([0, 1]))
    assert logits.shape == (2, 10) and np.isfinite(loss)
    assert all(np.all(np.isfinite(g)) for g in net.grads().values())


def test_convnetjs_cifar10_preset_matches_the_demo_architecture():
    net = Net(PRESETS["convnetjs-cifar10"].spec, (3, 32, 32))
    shapes = {k: v.shape for k, v in net.params().items()}
    assert shapes == {
        "conv1.weight": (16, 3, 5, 5), "conv1.bias": (16,),
        "conv2.weight": (20, 16, 5, 5), "conv2.bias": (20,),
        "conv3.weight": (20, 20, 5, 5), "conv3.bias": (20,),
        "softmax.weight": (10, 320), "softmax.bias": (10,),
    }


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(UserError, match="convnetjs-cifar10"):
        get_preset("resnet")
