"""The layers of the numpy convnet: each a small class with ``forward`` and ``backward``.

Activations are float32 and channels-last (NHWC) inside the net: the im2col copy then
reads runs of ``size * channels`` contiguous floats and the convolution is one BLAS GEMM
with the batch folded into its rows (see docs/CONVNET.md for the measurements behind
this choice). ``Net`` converts its NCHW input once. Parameters use PyTorch's layouts
(conv ``(out, in, kh, kw)``, dense ``(out, in)`` over NCHW-ordered features) so a
checkpoint reads the same in either framework and filters plot directly.

A layer keeps what its backward pass needs from the last ``forward(x, train=True)``;
``backward(grad)`` fills ``grads`` (same names as ``params``) and returns the gradient
with respect to its input, or None when ``needs_input_grad`` is False (the first layers
of a net, whose input is data: skipping that GEMM saves a sixth of the work).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

F32 = np.float32
# Target size of one im2col chunk, so the copy and the GEMM that reads it meet in cache.
# Whole-batch im2col matrices (10-40 MB at batch 32-128) made throughput per image fall
# with batch size; 256 KB to 2 MB chunks measured within 3% of each other, 1 MB the best
# (docs/CONVNET.md).
CHUNK_BYTES = 1 << 20


class Layer:
    """Base class: no parameters, identity shapes."""

    kind = "layer"

    def __init__(self, name: str):
        self.name = name
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.needs_input_grad = True

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape (without batch) this layer produces from ``shape`` (NHWC or flat)."""
        return shape

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError


def he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """Kaiming/He normal init, std sqrt(2 / fan_in): keeps ReLU activations' variance
    constant through depth (He et al. 2015, "Delving Deep into Rectifiers")."""
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(F32)


def _windows(xp: np.ndarray, size: int, stride: int, out_h: int, out_w: int) -> np.ndarray:
    """A read-only (N, out_h, out_w, size, size, C) view of every receptive field of NHWC ``xp``."""
    n, _, _, c = xp.shape
    sn, sh, sw, sc = xp.strides
    return as_strided(
        xp,
        shape=(n, out_h, out_w, size, size, c),
        strides=(sn, sh * stride, sw * stride, sh, sw, sc),
        writeable=False,
    )


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as every framework) with stride and zero padding.

    Forward: one copy into an im2col matrix (rows: output pixels of the whole batch;
    columns: kh, kw, C, with kw*C contiguous in NHWC) and one GEMM. Backward: one GEMM
    for the weights; for the input, at stride 1 a second im2col + GEMM (a transposed
    convolution), otherwise a GEMM then col2im as a loop over the size*size kernel
    offsets, each a strided add over the whole batch. No np.add.at, no Python loop over
    pixels or images.
    """

    kind = "conv"

    def __init__(self, name: str, in_channels: int, filters: int, size: int, stride: int,
                 pad: int, rng: np.random.Generator):
        super().__init__(name)
        self.in_channels, self.filters = in_channels, filters
        self.size, self.stride, self.pad = size, stride, pad
        fan_in = in_channels * size * size
        self.params = {
            "weight": he_normal(rng, (filters, in_channels, size, size), fan_in),
            "bias": np.zeros(filters, F32),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._buffers: dict[str, np.ndarray] = {}  # padded input / gradient, reused

    def output_shape(self, shape):
        h, w, _ = shape
        return (self._out(h), self._out(w), self.filters)

    def _out(self, n: int) -> int:
        return (n + 2 * self.pad - self.size) // self.stride + 1

    def _pad(self, x: np.ndarray, p: int, slot: str) -> np.ndarray:
        """``x`` zero-padded by ``p``, in a buffer kept per slot whose border stays zero."""
        if p == 0:
            return x
        n, h, w, c = x.shape
        shape = (n, h + 2 * p, w + 2 * p, c)
        buf = self._buffers.get(slot)
        if buf is None or buf.shape != shape or buf.dtype != x.dtype:
            buf = self._buffers[slot] = np.zeros(shape, x.dtype)
        buf[:, p : p + h, p : p + w, :] = x
        return buf

    def _wmat(self) -> np.ndarray:
        """Weights as the (kh*kw*C, F) GEMM operand matching the im2col column order."""
        w = self.params["weight"]
        return w.transpose(2, 3, 1, 0).reshape(-1, self.filters)

    def _per_chunk(self, rows_per_image: int, cols: int) -> int:
        """Images per GEMM so that one chunk's im2col matrix stays near ``CHUNK_BYTES``."""
        return max(1, CHUNK_BYTES // (rows_per_image * cols * 4))

    def forward(self, x, train):
        n, h, w, _ = x.shape
        oh, ow, f = self._out(h), self._out(w), self.filters
        xp = self._pad(x, self.pad, "train" if train else "eval")
        win = _windows(xp, self.size, self.stride, oh, ow)
        wmat = self._wmat()
        kcols = wmat.shape[0]
        out = np.empty((n, oh, ow, f), np.result_type(x.dtype, wmat.dtype))
        per = self._per_chunk(oh * ow, kcols)
        for a in range(0, n, per):
            cols = win[a : a + per].reshape(-1, kcols)  # the one im2col copy, cache-sized
            np.matmul(cols, wmat, out=out[a : a + per].reshape(-1, f))
        out += self.params["bias"]
        if train:
            self._xp, self._in_shape = xp, x.shape
        return out

    def backward(self, grad):
        n, oh, ow, f = grad.shape
        k, c = self.size, self.in_channels
        win = _windows(self._xp, k, self.stride, oh, ow)
        kcols = k * k * c
        dw = np.zeros((kcols, f), grad.dtype)
        per = self._per_chunk(oh * ow, kcols)
        for a in range(0, n, per):
            # im2col again instead of keeping it: re-copying a cache-sized chunk is cheaper
            # than streaming a whole-batch matrix back from memory (docs/CONVNET.md)
            dw += win[a : a + per].reshape(-1, kcols).T @ grad[a : a + per].reshape(-1, f)
        self.grads["weight"][...] = dw.reshape(k, k, c, f).transpose(3, 2, 0, 1)
        np.sum(grad.reshape(-1, f), axis=0, out=self.grads["bias"])
        self._xp = None
        if not self.needs_input_grad:
            return None
        _, h, w, _ = self._in_shape
        p, s = self.pad, self.stride
        if s == 1 and p <= k - 1:
            # dx is the full correlation of the gradient with the flipped kernel: an
            # im2col of the padded gradient and a GEMM, no scatter (the fastest of three
            # variants measured, docs/CONVNET.md).
            gp = self._pad(grad, k - 1 - p, "grad")
            gwin = _windows(gp, k, 1, h, w)
            wflip = self.params["weight"][:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(-1, c)
            dx = np.empty((n, h, w, c), np.result_type(grad.dtype, wflip.dtype))
            per = self._per_chunk(h * w, k * k * f)
            for a in range(0, n, per):
                np.matmul(gwin[a : a + per].reshape(-1, k * k * f), wflip,
                          out=dx[a : a + per].reshape(-1, c))
            return dx
        g = grad.reshape(-1, f)
        # general stride: scatter the columns back, one strided whole-batch add per offset
        dcols = (g @ self._wmat().T).reshape(n, oh, ow, k, k, c)
        dxp = np.zeros((n, h + 2 * p, w + 2 * p, c), grad.dtype)
        for i in range(k):
            for j in range(k):
                dxp[:, i : i + s * oh : s, j : j + s * ow : s, :] += dcols[:, :, :, i, j, :]
        return dxp[:, p : p + h, p : p + w, :] if p else dxp


class MaxPool2D(Layer):
    """Max pooling over size x size windows with a stride (convnet.js: size 2, stride 2).

    A loop over the size*size window offsets, each a strided whole-batch comparison;
    ties go to the first offset so the gradient is routed to exactly one input.
    """

    kind = "pool"

    def __init__(self, name: str, size: int, stride: int):
        super().__init__(name)
        self.size, self.stride = size, stride

    def output_shape(self, shape):
        h, w, c = shape
        return ((h - self.size) // self.stride + 1, (w - self.size) // self.stride + 1, c)

    def _slices(self, oh: int, ow: int):
        s = self.stride
        for i in range(self.size):
            for j in range(self.size):
                yield (slice(None), slice(i, i + s * oh, s), slice(j, j + s * ow, s), slice(None))

    def forward(self, x, train):
        n, h, w, c = x.shape
        oh, ow, _ = self.output_shape((h, w, c))
        self._in_shape = x.shape
        if self.size == 2 and self.stride == 2:
            return self._forward_2x2(x, oh, ow, train)
        slices = list(self._slices(oh, ow))
        out = x[slices[0]].copy()
        arg = np.zeros(out.shape, np.uint8) if train else None
        for o, sl in enumerate(slices[1:], start=1):
            v = x[sl]
            if train:
                better = v > out
                np.copyto(out, v, where=better)
                np.copyto(arg, o, where=better)
            else:
                np.maximum(out, v, out=out)
        self._arg = arg
        return out

    def _forward_2x2(self, x, oh, ow, train):
        """The common case as two pairwise maxima (along W, then H) over a 6-D view.

        Training keeps which input won each pairwise maximum: ``_right`` (N, Ho, 2, Wo, C),
        the right one in each row of a window, and ``_down`` (N, Ho, Wo, C), the bottom row.
        Ties go left, then up, so exactly one input gets the gradient (flat image
        backgrounds tie). Both are contiguous comparisons of values the maxima read
        anyway; the 6-D mask this replaced cost 3.5x the forward pass in bool
        broadcasting over runs of C (docs/CONVNET.md).
        """
        n, h, w, c = x.shape
        if (h, w) != (2 * oh, 2 * ow):
            x = np.ascontiguousarray(x[:, : 2 * oh, : 2 * ow, :])
        x6 = x.reshape(n, oh, 2, ow, 2, c)
        left, right = x6[:, :, :, :, 0], x6[:, :, :, :, 1]
        rows = np.maximum(left, right)
        top, bottom = rows[:, :, 0], rows[:, :, 1]
        out = np.maximum(top, bottom)
        if train:
            self._right = np.greater(right, left)
            self._down = np.greater(bottom, top)
        return out

    def _backward_2x2(self, grad):
        """Route each window's gradient to its winner: to the bottom or top row (``_down``),
        then within the row to the right or left input (``_right``). ``g * won`` and
        ``g - g * won`` are exactly g and 0 in some order, so no value is changed."""
        n, oh, ow, c = grad.shape
        rows = np.empty((n, oh, 2, ow, c), grad.dtype)
        np.multiply(grad, self._down, out=rows[:, :, 1], dtype=grad.dtype)
        np.subtract(grad, rows[:, :, 1], out=rows[:, :, 0])
        dx6 = np.empty((n, oh, 2, ow, 2, c), grad.dtype)
        np.multiply(rows, self._right, out=dx6[:, :, :, :, 1], dtype=grad.dtype)
        np.subtract(rows, dx6[:, :, :, :, 1], out=dx6[:, :, :, :, 0])
        self._right = self._down = None
        return dx6

    def backward(self, grad):
        zero = grad.dtype.type(0)
        n, oh, ow, c = grad.shape
        if self.size == 2 and self.stride == 2:
            dx = self._backward_2x2(grad).reshape(n, 2 * oh, 2 * ow, c)
            if dx.shape == self._in_shape:
                return dx
            padded = np.zeros(self._in_shape, grad.dtype)
            padded[:, : 2 * oh, : 2 * ow, :] = dx
            return padded
        dx = np.zeros(self._in_shape, grad.dtype)
        overlapping = self.stride < self.size
        for o, sl in enumerate(self._slices(oh, ow)):
            routed = np.where(self._arg == o, grad, zero)
            if overlapping:
                dx[sl] += routed
            else:
                dx[sl] = routed
        self._arg = None
        return dx


class ReLU(Layer):
    kind = "relu"

    def forward(self, x, train):
        y = np.maximum(x, 0)
        if train:
            self._y = y
        return y

    def backward(self, grad):
        dx = np.multiply(grad, self._y > 0, dtype=grad.dtype)
        self._y = None
        return dx


class Dropout(Layer):
    """Inverted dropout: scale kept units by 1/(1-rate) in training so evaluation is identity.

    The net hands it a fresh ``rng`` before each training forward pass, derived from
    (seed, step), so a resumed run draws the same masks as an uninterrupted one.
    ``mask_source`` (shape -> bool keep mask), when set, replaces the generator: the
    browser volunteers' hash masks (``gossipnet.nn.masks``), which JavaScript reproduces.
    """

    kind = "dropout"

    def __init__(self, name: str, rate: float):
        super().__init__(name)
        self.rate = rate
        self.rng = np.random.default_rng(0)
        self.mask_source = None
        # (start, stop, n): x holds rows start:stop of a batch of n, as on one of several
        # data-parallel workers; the mask is drawn for all n rows and sliced, so it is the
        # one a single process would draw for those rows. None: x is the whole batch.
        self.rows: tuple[int, int, int] | None = None

    def forward(self, x, train):
        if not train or self.rate == 0.0:
            self._mask = None
            return x
        shape = x.shape if self.rows is None else (self.rows[2], *x.shape[1:])
        if self.mask_source is not None:
            keep = self.mask_source(shape)
        else:
            keep = self.rng.random(shape, dtype=F32) >= self.rate
        if self.rows is not None:
            keep = keep[self.rows[0] : self.rows[1]]
        self._mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.rate))
        return x * self._mask

    def backward(self, grad):
        if self._mask is None:
            return grad
        dx = grad * self._mask
        self._mask = None
        return dx


class Flatten(Layer):
    """NHWC activations to (N, C*H*W) features in NCHW order (PyTorch's, for portable weights)."""

    kind = "flatten"

    def output_shape(self, shape):
        return (int(np.prod(shape)),)

    def forward(self, x, train):
        self._in_shape = x.shape
        if x.ndim == 2:
            return x
        return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)

    def backward(self, grad):
        if len(self._in_shape) == 2:
            return grad
        n, h, w, c = self._in_shape
        return grad.reshape(n, c, h, w).transpose(0, 2, 3, 1)


class Dense(Layer):
    """Fully connected layer ``y = x W^T + b`` with W of shape (out, in)."""

    kind = "fc"

    def __init__(self, name: str, in_features: int, units: int, rng: np.random.Generator,
                 gain: float = 2.0):
        super().__init__(name)
        self.in_features, self.units = in_features, units
        # He init for layers feeding a ReLU; gain 1 (LeCun/Xavier-like) for the logits
        std = math.sqrt(gain / in_features)
        self.params = {
            "weight": (rng.standard_normal((units, in_features)) * std).astype(F32),
            "bias": np.zeros(units, F32),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def output_shape(self, shape):
        return (self.units,)

    def forward(self, x, train):
        y = x @ self.params["weight"].T
        y += self.params["bias"]
        if train:
            self._x = x
        return y

    def backward(self, grad):
        np.matmul(grad.T, self._x, out=self.grads["weight"])
        np.sum(grad, axis=0, out=self.grads["bias"])
        self._x = None
        if not self.needs_input_grad:
            return None
        return grad @ self.params["weight"]
