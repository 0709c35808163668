"""Declarative network specs (convnet.js style), their validation, fingerprint and presets.

A spec is a list of layer dicts, e.g. ``{"type": "conv", "filters": 16, "size": 5,
"stride": 1, "pad": 2}``, as convnet.js's ``makeLayers`` takes. ``canonical_spec`` fills
in defaults so two specs that build the same net compare and hash equal; the
fingerprint (sha256 of canonical spec + input shape) is what peers compare before they
average weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from gossipnet.errors import UserError

# type -> {key: default}; None marks a required key
_KEYS: dict[str, dict[str, object]] = {
    "conv": {"filters": None, "size": None, "stride": 1, "pad": 0},
    "pool": {"size": 2, "stride": None},  # stride defaults to size (convnet.js: sx 2, stride 2)
    "relu": {},
    "dropout": {"rate": 0.5},
    "flatten": {},
    "fc": {"units": None},
    "softmax": {"classes": None},
}
_ALIASES = {"dense": "fc", "maxpool": "pool"}


def _positive_int(layer_no: int, kind: str, key: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(
            f"layer {layer_no} ({kind}): {key!r} must be an integer >= {minimum}, got {value!r}"
        )
    return value


def canonical_spec(spec: object) -> list[dict]:
    """Validate the spec's syntax and return it with every default filled in.

    Shapes are checked separately by ``Net`` (they depend on the input shape).
    """
    if not isinstance(spec, (list, tuple)) or not spec:
        raise UserError("a network spec must be a non-empty list of layer dicts")
    out = []
    for no, layer in enumerate(spec, start=1):
        if not isinstance(layer, dict) or "type" not in layer:
            raise UserError(f"layer {no}: expected a dict with a 'type' key, got {layer!r}")
        kind = _ALIASES.get(layer["type"], layer["type"])
        if kind not in _KEYS:
            raise UserError(
                f"layer {no}: unknown type {layer['type']!r}; known types: {', '.join(sorted(_KEYS))}"
            )
        unknown = set(layer) - {"type"} - set(_KEYS[kind])
        if unknown:
            raise UserError(f"layer {no} ({kind}): unknown keys {sorted(unknown)}")
        c: dict[str, object] = {"type": kind}
        for key, default in _KEYS[kind].items():
            value = layer.get(key, default)
            if value is None and not (kind == "pool" and key == "stride"):
                raise UserError(f"layer {no} ({kind}): missing required key {key!r}")
            c[key] = value
        if kind == "conv":
            for key in ("filters", "size", "stride"):
                _positive_int(no, kind, key, c[key])
            _positive_int(no, kind, "pad", c["pad"], minimum=0)
        elif kind == "pool":
            _positive_int(no, kind, "size", c["size"])
            if c["stride"] is None:
                c["stride"] = c["size"]
            _positive_int(no, kind, "stride", c["stride"])
        elif kind == "dropout":
            rate = c["rate"]
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
                raise UserError(f"layer {no} (dropout): 'rate' must be in [0, 1), got {rate!r}")
            c["rate"] = float(rate)
        elif kind == "fc":
            _positive_int(no, kind, "units", c["units"])
        elif kind == "softmax":
            _positive_int(no, kind, "classes", c["classes"], minimum=2)
            if no != len(spec):
                raise UserError(f"layer {no}: softmax must be the last layer")
        out.append(c)
    if out[-1]["type"] != "softmax":
        raise UserError("the last layer must be {'type': 'softmax', 'classes': N}")
    return out


def check_input_shape(input_shape: object) -> tuple[int, int, int]:
    """An input shape is (channels, height, width) of positive integers."""
    if (
        not isinstance(input_shape, (list, tuple))
        or len(input_shape) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_shape)
    ):
        raise UserError(f"input shape must be (channels, height, width) > 0, got {input_shape!r}")
    return tuple(input_shape)  # type: ignore[return-value]


def fingerprint(spec: list[dict], input_shape: tuple[int, int, int]) -> str:
    """sha256 (hex, first 16 bytes) of the canonical spec and input shape."""
    doc = {"input": list(check_input_shape(input_shape)), "layers": canonical_spec(spec)}
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


@dataclass(frozen=True)
class NetPreset:
    """A named architecture with the training settings it was tuned with."""

    name: str
    summary: str
    input_shape: tuple[int, int, int]
    spec: tuple[dict, ...]
    optimizer: str  # "adam" or "sgd"
    lr: float
    batch_size: int
    weight_decay: float = 0.0
    momentum: float = 0.9


def _conv(filters: int, size: int, pad: int) -> dict:
    return {"type": "conv", "filters": filters, "size": size, "stride": 1, "pad": pad}


_POOL = {"type": "pool", "size": 2, "stride": 2}
_RELU = {"type": "relu"}

PRESETS: dict[str, NetPreset] = {
    p.name: p
    for p in (
        NetPreset(
            name="convnetjs-cifar10",
            summary="convnet.js's CIFAR-10 demo: 3 x (conv 5x5 pad 2, relu, pool 2), softmax 10",
            input_shape=(3, 32, 32),
            spec=(
                _conv(16, 5, 2), _RELU, _POOL,
                _conv(20, 5, 2), _RELU, _POOL,
                _conv(20, 5, 2), _RELU, _POOL,
                {"type": "softmax", "classes": 10},
            ),
            # convnet.js used adadelta, batch 4, l2 1e-4; SGD+momentum is the standard swap
            optimizer="sgd",
            lr=0.01,
            batch_size=32,
            weight_decay=1e-4,
        ),
        NetPreset(
            name="fashion",
            summary="default for 28x28 grey images: conv 3x3x32, conv 3x3x64 (each relu, pool 2), "
            "fc 128, dropout 0.25, softmax 10",
            input_shape=(1, 28, 28),
            spec=(
                _conv(32, 3, 1), _RELU, _POOL,
                _conv(64, 3, 1), _RELU, _POOL,
                {"type": "fc", "units": 128}, _RELU,
                # 0.5 / batch 64 underfit in 5 epochs (90.7% on Fashion-MNIST); 0.25 / batch 32
                # reached 90.6% after 2 of 5 epochs (docs/CONVNET.md)
                {"type": "dropout", "rate": 0.25},
                {"type": "softmax", "classes": 10},
            ),
            optimizer="adam",
            lr=1e-3,
            batch_size=32,
        ),
        NetPreset(
            name="mlp",
            summary="a multilayer perceptron for 28x28 grey images: fc 256, fc 256 (each relu), "
            "softmax 10; 1 MB of weights (recombination experiments, docs/RECOMBINATION.md)",
            input_shape=(1, 28, 28),
            spec=(
                {"type": "fc", "units": 256}, _RELU,
                {"type": "fc", "units": 256}, _RELU,
                {"type": "softmax", "classes": 10},
            ),
            optimizer="adam",
            lr=1e-3,
            batch_size=64,
        ),
        NetPreset(
            name="tiny",
            summary="small and fast for 28x28 grey images (tests, simulations): "
            "conv 5x5x8, pool 2, conv 5x5x16, pool 2, softmax 10",
            input_shape=(1, 28, 28),
            spec=(
                _conv(8, 5, 2), _RELU, _POOL,
                _conv(16, 5, 2), _RELU, _POOL,
                {"type": "softmax", "classes": 10},
            ),
            optimizer="adam",
            lr=2e-3,
            batch_size=32,
        ),
    )
}


def get_preset(name: str) -> NetPreset:
    """The preset called ``name``, or a UserError listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(
            f"unknown network preset {name!r}; choose one of: {', '.join(sorted(PRESETS))} "
            "(gossipnet train --list-nets)"
        ) from None


def fit_preset(preset: NetPreset, input_shape: tuple[int, int, int], num_classes: int,
               data_name: str = "the data") -> list[dict]:
    """The preset's layers for a data set: its softmax sized to ``num_classes``.

    A preset fixes the number of input channels; the image side and the class count come
    from the data (an image folder may hold 64x64 pictures of 3 classes). Whether the
    layers fit that side is checked by ``Net``, which names the layer that does not.
    """
    channels = check_input_shape(input_shape)[0]
    if channels != preset.input_shape[0]:
        fits = [p.name for p in PRESETS.values() if p.input_shape[0] == channels]
        raise UserError(f"net {preset.name!r} takes {preset.input_shape} images but {data_name} has "
                        f"{tuple(input_shape)}; use --net with one of: {', '.join(fits) or 'none'}")
    spec = [dict(layer) for layer in preset.spec]
    spec[-1]["classes"] = int(num_classes)
    return spec
