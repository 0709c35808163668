"""Finite-difference gradient checks for every layer, the loss and a whole net (float64)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipnet.nn import layers as L
from gossipnet.nn.loss import log_softmax, softmax_cross_entropy
from gossipnet.nn.net import Net


def to_f64(layer: L.Layer) -> L.Layer:
    """Switch a layer's parameters to float64 so central differences are exact to ~1e-8."""
    for k in list(layer.params):
        layer.params[k] = layer.params[k].astype(np.float64)
        layer.grads[k] = np.zeros_like(layer.params[k])
    return layer


def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        fp = f()
        x[i] = old - eps
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def check_layer(layer: L.Layer, x: np.ndarray, seed: int = 0) -> None:
    """Compare backward() with central differences of sum(forward(x) * r) for input and params."""
    rng = np.random.default_rng(seed)
    out = layer.forward(x, train=True)
    r = rng.standard_normal(out.shape)

    def f():
        return float(np.sum(layer.forward(x, train=True) * r))

    layer.forward(x, train=True)
    dx = layer.backward(r)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    np.testing.assert_allclose(dx, numeric_grad(f, x), rtol=1e-5, atol=1e-7)
    for k, p in layer.params.items():
        np.testing.assert_allclose(grads[k], numeric_grad(f, p), rtol=1e-5, atol=1e-7,
                                   err_msg=f"gradient of {k}")


@pytest.mark.parametrize(
    "size,stride,pad,hw",
    [(3, 1, 1, (6, 6)), (5, 1, 2, (5, 7)), (3, 2, 1, (7, 6)), (2, 2, 0, (6, 6)), (1, 1, 0, (3, 4)),
     (3, 3, 0, (7, 8)), (4, 1, 3, (3, 3)), (1, 1, 1, (3, 3)), (2, 1, 0, (4, 5))],
)
def test_conv_gradients_match_finite_differences(size, stride, pad, hw):
    rng = np.random.default_rng(1)
    layer = to_f64(L.Conv2D("c", 3, 4, size, stride, pad, rng))
    layer.params["bias"][:] = rng.standard_normal(4)
    x = rng.standard_normal((2, *hw, 3))
    check_layer(layer, x)


def test_conv_matches_direct_convolution():
    rng = np.random.default_rng(2)
    layer = to_f64(L.Conv2D("c", 2, 3, 3, 2, 1, rng))
    x = rng.standard_normal((2, 5, 6, 2))
    out = layer.forward(x, train=False)
    w, b = layer.params["weight"], layer.params["bias"]
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.zeros_like(out)
    for n in range(2):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                patch = xp[n, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3, :]  # (kh, kw, C)
                ref[n, i, j] = np.einsum("hwc,fchw->f", patch, w) + b
    np.testing.assert_allclose(out, ref, rtol=1e-10)


def direct_conv(x, w, b, stride, pad):
    """Reference: the textbook loops over images, output pixels and filters."""
    n, h, wd, c = x.shape
    f, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n, oh, ow, f))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
            out[:, i, j] = np.einsum("nhwc,fchw->nf", patch, w) + b
    return out


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 4), stride=st.integers(1, 3), pad=st.integers(0, 3),
    h=st.integers(1, 7), w=st.integers(1, 7), c=st.integers(1, 3), f=st.integers(1, 3),
    n=st.integers(1, 3), seed=st.integers(0, 2**16),
)
def test_conv_forward_and_input_gradient_match_loops_for_any_fitting_geometry(
        size, stride, pad, h, w, c, f, n, seed):
    if size > h + 2 * pad or size > w + 2 * pad:
        return  # Net rejects these with a UserError (tested in test_nn_net.py)
    rng = np.random.default_rng(seed)
    layer = to_f64(L.Conv2D("c", c, f, size, stride, pad, rng))
    layer.params["bias"][:] = rng.standard_normal(f)
    x = rng.standard_normal((n, h, w, c))
    out = layer.forward(x, train=True)
    np.testing.assert_allclose(out, direct_conv(x, layer.params["weight"], layer.params["bias"],
                                                stride, pad), rtol=1e-9, atol=1e-12)
    # input gradient = adjoint of the forward map, checked through <dy, conv(x)> linearity
    dy = rng.standard_normal(out.shape)
    dx = layer.backward(dy)
    x2 = rng.standard_normal(x.shape)
    zero_bias = direct_conv(x2, layer.params["weight"], 0 * layer.params["bias"], stride, pad)
    np.testing.assert_allclose(np.sum(dx * x2), np.sum(dy * zero_bias), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("size,stride,hw", [(2, 2, (6, 8)), (2, 2, (5, 7)), (3, 2, (7, 7)),
                                            (3, 3, (6, 6)), (2, 1, (4, 5))])
def test_maxpool_gradients_match_finite_differences(size, stride, hw):
    x = np.random.default_rng(3).standard_normal((2, *hw, 3))
    check_layer(L.MaxPool2D("p", size, stride), x)


@pytest.mark.parametrize("size,stride", [(2, 2), (3, 2)])
def test_maxpool_routes_tied_gradient_to_exactly_one_input(size, stride):
    layer = L.MaxPool2D("p", size, stride)
    x = np.zeros((1, 6, 6, 2), np.float32)  # all ties, as on a blank image background
    out = layer.forward(x, train=True)
    dx = layer.backward(np.ones_like(out))
    assert dx.sum() == out.size  # each output's gradient counted once, not once per tie


def test_maxpool_2x2_matches_reshape_max_and_routes_each_gradient_once():
    x = np.random.default_rng(4).standard_normal((3, 8, 6, 5)).astype(np.float32)
    fast = L.MaxPool2D("p", 2, 2)
    out = fast.forward(x, train=True)
    ref = np.max(x.reshape(3, 4, 2, 3, 2, 5), axis=(2, 4))
    np.testing.assert_array_equal(out, ref)
    g = np.random.default_rng(5).standard_normal(out.shape).astype(np.float32)
    dx = fast.backward(g)
    assert np.count_nonzero(dx) == g.size
    np.testing.assert_allclose(dx.reshape(3, 4, 2, 3, 2, 5).sum(axis=(2, 4)), g)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3), h=st.integers(2, 7), w=st.integers(2, 7), c=st.integers(1, 5),
       levels=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_maxpool_2x2_routes_to_the_first_maximum_in_reading_order(n, h, w, c, levels, seed):
    """Forward and backward equal a plain argmax over each window (first maximum in
    row-major order, as PyTorch picks), exactly, with many ties and odd sizes."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, levels, (n, h, w, c)).astype(np.float32)  # few levels: ties everywhere
    layer = L.MaxPool2D("p", 2, 2)
    out = layer.forward(x, train=True)
    g = rng.standard_normal(out.shape).astype(np.float32)
    dx = layer.backward(g)
    oh, ow = h // 2, w // 2
    win = x[:, : 2 * oh, : 2 * ow].reshape(n, oh, 2, ow, 2, c).transpose(0, 1, 3, 2, 4, 5)
    win = win.reshape(n, oh, ow, 4, c)
    first = win.argmax(axis=3)  # argmax returns the first of equal maxima
    np.testing.assert_array_equal(out, np.take_along_axis(win, first[:, :, :, None], 3)[:, :, :, 0])
    ref = np.zeros((n, oh, ow, 4, c), np.float32)
    np.put_along_axis(ref, first[:, :, :, None], g[:, :, :, None], 3)
    ref = ref.reshape(n, oh, ow, 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * oh, 2 * ow, c)
    expected = np.zeros_like(x)
    expected[:, : 2 * oh, : 2 * ow] = ref
    np.testing.assert_array_equal(dx, expected)


def test_relu_dense_flatten_gradients_match_finite_differences():
    rng = np.random.default_rng(6)
    check_layer(L.ReLU("r"), rng.standard_normal((3, 4, 5, 2)))
    check_layer(to_f64(L.Dense("d", 7, 4, rng)), rng.standard_normal((5, 7)))
    check_layer(L.Flatten("f"), rng.standard_normal((2, 3, 4, 5)))


def test_flatten_orders_features_like_pytorch_nchw():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # NCHW
    out = L.Flatten("f").forward(x.transpose(0, 2, 3, 1), train=False)
    np.testing.assert_array_equal(out, x.reshape(2, -1))


def test_dropout_is_inverted_and_identity_in_eval():
    layer = L.Dropout("d", 0.25)
    layer.rng = np.random.default_rng(7)
    x = np.ones((200, 500), np.float32)
    y = layer.forward(x, train=True)
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.01  # expectation preserved
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), y)
    np.testing.assert_array_equal(layer.forward(x, train=False), x)


def test_softmax_cross_entropy_gradient_and_extreme_logits():
    rng = np.random.default_rng(8)
    z = rng.standard_normal((4, 5))
    y = np.array([0, 3, 4, 1])
    _, g = softmax_cross_entropy(z, y)
    np.testing.assert_allclose(g, numeric_grad(lambda: softmax_cross_entropy(z, y)[0], z),
                               rtol=1e-6, atol=1e-9)
    huge = np.array([[1e4, -1e4, 0.0], [-3e38, 3e38, 0.0]], np.float32)
    loss, g = softmax_cross_entropy(huge, np.array([0, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(g))
    assert np.all(np.isfinite(log_softmax(huge)))


def test_whole_net_gradient_matches_finite_differences():
    spec = [
        {"type": "conv", "filters": 3, "size": 3, "pad": 1},
        {"type": "relu"},
        {"type": "pool", "size": 2},
        {"type": "conv", "filters": 4, "size": 3, "stride": 2, "pad": 1},
        {"type": "relu"},
        {"type": "fc", "units": 5},
        {"type": "relu"},
        {"type": "softmax", "classes": 3},
    ]
    net = Net(spec, (2, 8, 8), seed=1)
    net.dtype = np.float64
    for layer in net.layers:
        to_f64(layer)
    net._params = {f"{l.name}.{k}": v for l in net.layers for k, v in l.params.items()}
    net._grads = {f"{l.name}.{k}": v for l in net.layers for k, v in l.grads.items()}
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 2, 8, 8))
    y = np.array([0, 2, 1])

    def f():
        return softmax_cross_entropy(net.forward(x, train=True), y)[0]

    net.loss_and_grads(x, y)
    grads = {k: v.copy() for k, v in net.grads().items()}
    for name, p in net.params().items():
        np.testing.assert_allclose(grads[name], numeric_grad(f, p), rtol=1e-4, atol=1e-8,
                                   err_msg=name)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_results_do_not_depend_on_chunk_size(monkeypatch, stride):
    """Cache-sized chunking (one image per GEMM here) must not change any result."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((5, 7, 6, 3))
    g = rng.standard_normal((5, (7 + 2 - 3) // stride + 1, (6 + 2 - 3) // stride + 1, 4))
    results = []
    for chunk in (1 << 30, 1):
        monkeypatch.setattr(L, "CHUNK_BYTES", chunk)
        layer = to_f64(L.Conv2D("c", 3, 4, 3, stride, 1, np.random.default_rng(11)))
        out = layer.forward(x, train=True)
        dx = layer.backward(g)
        results.append((out, dx, layer.grads["weight"].copy(), layer.grads["bias"].copy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
