"""Save and load named arrays as safetensors files: atomic writes, clear errors.

The byte format is the node checkpoint's (``gossipnet.checkpoint``: safetensors with a
JSON metadata map and a sha256 over everything), so a file written by ``gossipnet train``
is readable by a node and the other way round. Whether the arrays *fit* a net is checked
by ``Net.load_state_dict`` / ``Optimizer.load_state_dict``, which name the mismatch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gossipnet.checkpoint import Checkpoint, CorruptCheckpoint, decode, encode
from gossipnet.errors import UserError
from gossipnet.fsutil import atomic_write_bytes


def save_state(path: str | os.PathLike, tensors: dict[str, np.ndarray],
               meta: dict[str, object] | None = None) -> int:
    """Write ``tensors`` (+ JSON-able ``meta``) to ``path`` atomically; returns bytes written."""
    data = encode(Checkpoint(tensors=dict(tensors), meta=dict(meta or {})))
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}; check the directory "
                        "exists and is writable") from None
    return len(data)


def read_checkpoint(path: str | os.PathLike, what: str = "state file") -> Checkpoint:
    """Read and decode one gossipnet file; a UserError naming ``what`` it was meant to be otherwise."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{what} {p} does not exist") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    try:
        return decode(data)
    except CorruptCheckpoint as exc:
        raise UserError(f"{what} {p} is corrupt or not a readable gossipnet checkpoint: {exc}") from None


def load_state(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Read a file written by ``save_state``; UserError saying what is wrong with it otherwise."""
    ckpt = read_checkpoint(path)
    return ckpt.tensors, ckpt.meta


def with_prefix(prefix: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{"w": a}`` -> ``{"<prefix>w": a}``: several state dicts in one file."""
    return {prefix + k: v for k, v in tensors.items()}


def strip_prefix(prefix: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The entries of ``tensors`` that start with ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
