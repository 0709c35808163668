"""Parse and check what a browser posts back, cheapest checks first, without pickle.

An update is a safetensors file: one float32 tensor ``delta.<param>`` per parameter of
the node's net, and string metadata ``lease``, ``base_version``, ``loss`` and
``images``. The header is read by hand first (length bounded, JSON bounded) so a hostile
body is refused before safetensors allocates anything; then every tensor's name, dtype
and shape must be exactly the net's, and every value finite.
"""

from __future__ import annotations

import json
import math
import struct
import numpy as np
import safetensors.numpy as stn

MAX_HEADER = 64 * 1024


class BadUpdate(Exception):
    """The body is not an acceptable update; ``reason`` is a Reason value."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def update_header(body: bytes) -> dict:
    """The JSON header of a safetensors body, or BadUpdate("malformed")."""
    if len(body) < 8:
        raise BadUpdate("malformed", f"{len(body)} bytes is too short for a safetensors update")
    (n,) = struct.unpack("<Q", body[:8])
    if n > min(MAX_HEADER, len(body) - 8):
        raise BadUpdate("malformed", f"header length {n} does not fit a {len(body)}-byte body")
    try:
        header = json.loads(body[8 : 8 + n])
    except ValueError as exc:
        raise BadUpdate("malformed", f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise BadUpdate("malformed", "header is not a JSON object")
    return header


def update_meta(body: bytes) -> tuple[dict, str, int, float, int]:
    """(tensor header, lease token, base version, loss, images) of an update body, or
    BadUpdate: everything the lease checks need, before any tensor is decoded."""
    header = update_header(body)
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict):
        raise BadUpdate("malformed", "no __metadata__ with the lease, base_version, loss and images")
    try:
        token = str(meta["lease"])
        base = int(meta["base_version"])
        loss = float(meta["loss"])
        images = int(meta["images"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadUpdate("malformed", f"metadata needs lease, base_version, loss, images: {exc}") from None
    return header, token, base, loss, images


def update_delta(body: bytes, header: dict, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The delta tensors, checked against the net's ``shapes`` (names, F32, shapes) before
    decoding and for finiteness after; BadUpdate on any defect."""
    want = {f"delta.{k}" for k in shapes}
    if set(header) != want:
        missing, extra = sorted(want - set(header)), sorted(set(header) - want)
        raise BadUpdate("wrong_shape", f"tensors do not match the net: missing {missing[:3]}, unexpected {extra[:3]}")
    for name, info in header.items():
        if not isinstance(info, dict) or info.get("dtype") != "F32":
            got = info.get("dtype") if isinstance(info, dict) else info
            raise BadUpdate("wrong_dtype", f"{name} must be F32, got {got!r}")
        need = list(shapes[name[len("delta."):]])
        if list(info.get("shape", ())) != need:
            raise BadUpdate("wrong_shape", f"{name} has shape {info.get('shape')}, the net needs {need}")
    try:
        tensors = stn.load(body)
    except Exception as exc:  # safetensors' own error types: truncation, overlapping offsets
        raise BadUpdate("malformed", f"tensor data unreadable: {exc}") from None
    delta = {name[len("delta."):]: arr for name, arr in tensors.items()}
    for name, arr in delta.items():
        if not np.all(np.isfinite(arr)):
            raise BadUpdate("not_finite", f"delta {name} holds NaN or infinity")
    return delta


def norm(delta: dict[str, np.ndarray]) -> float:
    """Euclidean norm over every tensor of a delta (float64 accumulation)."""
    return math.sqrt(sum(float(np.dot(a.ravel().astype(np.float64), a.ravel())) for a in delta.values()))


def relative_mismatch(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    """||got - want|| / ||want||: 0 for the same update, ~1 or more for a made-up one."""
    diff = math.sqrt(sum(float(np.sum(np.square(got[k].astype(np.float64) - want[k]))) for k in want))
    return diff / max(norm(want), 1e-30)
