"""``Net``: a sequence of layers built from a declarative spec, with named parameters.

Parameter names depend only on the spec (``conv1.weight``, ``fc1.bias``, ``softmax.weight``),
and their initial values only on the spec and the seed, so two nodes built from one spec
hold arrays that line up one to one and can be averaged.
"""

from __future__ import annotations

import functools

import numpy as np

from gossipnet.errors import UserError
from gossipnet.nn import layers as L
from gossipnet.nn.loss import softmax_cross_entropy
from gossipnet.nn.masks import keep_mask
from gossipnet.nn.spec import canonical_spec, check_input_shape, fingerprint


class Net:
    """A feed-forward convnet. ``forward`` takes NCHW float32 images and returns logits."""

    def __init__(self, spec: list[dict] | tuple[dict, ...], input_shape: tuple[int, int, int],
                 seed: int = 0):
        self.spec = canonical_spec(spec)
        self.input_shape = check_input_shape(input_shape)
        self.fingerprint = fingerprint(self.spec, self.input_shape)
        self.seed = seed
        self.dtype = np.float32  # gradient checks switch a net to float64
        rng = np.random.default_rng(seed)
        self.layers: list[L.Layer] = []
        self.shapes: list[tuple[int, ...]] = []  # output shape of each layer, without batch
        c, h, w = self.input_shape
        shape: tuple[int, ...] = (h, w, c)
        counts: dict[str, int] = {}
        for no, d in enumerate(self.spec, start=1):
            kind = d["type"]
            counts[kind] = counts.get(kind, 0) + 1
            name = kind if kind == "softmax" else f"{kind}{counts[kind]}"
            if kind in ("fc", "softmax") and len(shape) == 3:
                self._add(L.Flatten(f"flatten_before_{name}"), shape)
                shape = self.shapes[-1]
            layer = self._make(no, name, d, shape, rng)
            shape = self._add(layer, shape)
        self.num_classes = self.spec[-1]["classes"]
        first_param = next(i for i, layer in enumerate(self.layers) if layer.params)
        for i, layer in enumerate(self.layers):
            layer.needs_input_grad = i > first_param
        self._params = {f"{l.name}.{k}": v for l in self.layers for k, v in l.params.items()}
        self._grads = {f"{l.name}.{k}": v for l in self.layers for k, v in l.grads.items()}

    def _add(self, layer: L.Layer, shape: tuple[int, ...]) -> tuple[int, ...]:
        out = layer.output_shape(shape)
        if isinstance(layer, L.MaxPool2D) and self.layers and isinstance(self.layers[-1], L.ReLU):
            # max(relu(x)) == relu(max(x)), gradients included: pooling first runs the
            # ReLU on a quarter of the values. Execution order only; names are unchanged.
            relu = self.layers.pop()
            self.shapes.pop()
            self.layers += [layer, relu]
            self.shapes += [out, out]
        else:
            self.layers.append(layer)
            self.shapes.append(out)
        return out

    @staticmethod
    def _make(no: int, name: str, d: dict, shape: tuple[int, ...], rng) -> L.Layer:
        kind = d["type"]
        where = f"layer {no} ({kind})"
        if kind in ("conv", "pool"):
            if len(shape) != 3:
                raise UserError(f"{where} needs an image-shaped input but gets flat features {shape}; "
                                "put conv and pool layers before fc layers")
            h, w, c = shape
            size, stride = d["size"], d["stride"]
            pad = d.get("pad", 0)
            if size > h + 2 * pad or size > w + 2 * pad:
                raise UserError(f"{where}: window {size}x{size} does not fit the {h}x{w} input "
                                f"(padding {pad}); use a smaller size or fewer pooling layers")
            if kind == "conv":
                return L.Conv2D(name, c, d["filters"], size, stride, pad, rng)
            return L.MaxPool2D(name, size, stride)
        if kind == "relu":
            return L.ReLU(name)
        if kind == "dropout":
            return L.Dropout(name, d["rate"])
        if kind == "flatten":
            return L.Flatten(name)
        (features,) = shape if len(shape) == 1 else (int(np.prod(shape)),)
        if kind == "fc":
            return L.Dense(name, features, d["units"], rng)
        return L.Dense(name, features, d["classes"], rng, gain=1.0)  # softmax: logits layer

    # ---- parameters -------------------------------------------------------------------------

    def params(self) -> dict[str, np.ndarray]:
        """Live parameter arrays by name (an optimizer updates these in place)."""
        return self._params

    def grads(self) -> dict[str, np.ndarray]:
        """Gradient arrays by name, filled by ``backward``."""
        return self._grads

    @property
    def num_params(self) -> int:
        return sum(v.size for v in self._params.values())

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter, by name."""
        return {k: v.copy() for k, v in self._params.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy ``state`` into the parameters; UserError naming the first mismatch.

        Checks names, shapes and finiteness before touching anything, so a bad file
        leaves the net as it was.
        """
        missing = sorted(set(self._params) - set(state))
        extra = sorted(set(state) - set(self._params))
        if missing or extra:
            raise UserError(f"weights do not fit this net (fingerprint {self.fingerprint}): "
                            f"missing {missing[:5]}, unexpected {extra[:5]}; was it saved from "
                            "a different network spec?")
        for name, p in self._params.items():
            v = np.asarray(state[name])
            if v.shape != p.shape:
                raise UserError(f"weights {name!r} have shape {v.shape}, this net needs {p.shape}")
            if v.dtype.kind != "f":
                raise UserError(f"weights {name!r} have dtype {v.dtype}, expected floating point")
            if not np.all(np.isfinite(v)):
                raise UserError(f"weights {name!r} contain NaN or infinity")
        for name, p in self._params.items():
            p[...] = state[name]

    def set_rng(self, seed: int, step: int, rows: tuple[int, int, int] | None = None) -> None:
        """Seed every dropout layer from (``seed``, ``step``, layer index): masks are a pure
        function of the step, so resumed training draws what uninterrupted training would.
        ``rows`` = (start, stop, n): the next batch is rows start:stop of a batch of n
        (a data-parallel worker's part), and gets those rows of the whole batch's masks."""
        for i, layer in enumerate(self.layers):
            if isinstance(layer, L.Dropout):
                layer.rng = np.random.default_rng((seed, step, i))
                layer.rows = rows
                layer.mask_source = None

    def set_hash_masks(self, seed: int, step: int) -> None:
        """Draw dropout masks from ``gossipnet.nn.masks`` for (``seed``, ``step``, layer
        index): the masks ``gossipnet/web`` draws, so a browser's step can be recomputed."""
        for i, layer in enumerate(self.layers):
            if isinstance(layer, L.Dropout):
                layer.mask_source = functools.partial(keep_mask, seed, step, i, rate=layer.rate)
                layer.rows = None

    # ---- computation ------------------------------------------------------------------------

    def check_input(self, x: np.ndarray) -> None:
        if not isinstance(x, np.ndarray) or x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            got = getattr(x, "shape", type(x).__name__)
            c, h, w = self.input_shape
            raise UserError(f"this net takes images of shape (N, {c}, {h}, {w}) (NCHW), got {got}")

    def check_batch(self, x: np.ndarray) -> None:
        """``check_input``, and at least one image: what a training step needs (one core's
        here, or the workers' before the batch is sent to them)."""
        self.check_input(x)
        if len(x) == 0:
            raise UserError("an empty batch: a training step needs at least one image")

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Logits (N, classes) for NCHW images; ``train`` keeps what backward needs."""
        self.check_input(x)
        a = x.astype(self.dtype, copy=False).transpose(0, 2, 3, 1)  # NHWC view, no copy
        for layer in self.layers:
            a = layer.forward(a, train)
        return a

    def backward(self, dlogits: np.ndarray) -> None:
        """Fill ``grads()`` from the gradient of the loss with respect to the logits."""
        g = dlogits
        for layer in reversed(self.layers):
            g = layer.backward(g)
            if g is None:
                break

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """One training forward + backward: the mean loss and the logits."""
        self.check_batch(x)
        logits = self.forward(x, train=True)
        loss, dlogits = softmax_cross_entropy(logits, y)
        self.backward(dlogits)
        return loss, logits

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class indices (int64) for NCHW images, in evaluation mode."""
        return np.argmax(self.forward(x, train=False), axis=1)

    def describe(self) -> list[str]:
        """One line per layer: name, output shape (C, H, W or features), parameter count."""
        lines = [f"input      {self.input_shape}"]
        for layer, shape in zip(self.layers, self.shapes):
            shown = (shape[2], shape[0], shape[1]) if len(shape) == 3 else shape
            n = sum(v.size for v in layer.params.values())
            lines.append(f"{layer.name:<10} {shown}" + (f"  {n:,} params" if n else ""))
        return lines
