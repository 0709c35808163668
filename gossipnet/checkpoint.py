"""Node checkpoints: one safetensors file of named arrays plus a small JSON metadata map.

A node writes ``checkpoint.safetensors`` on an interval and at shutdown. Before a new
checkpoint replaces the current one, the current one becomes ``checkpoint.prev.safetensors``,
so a file corrupted on disk (or by a crash in a file system that lies about fsync) still
leaves the previous good state to resume from. Loading reports what was wrong with a
corrupt file and falls back; it never starts silently from scratch when a checkpoint
exists but cannot be read at all: that is an error the user must see.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors.numpy as stn

from gossipnet.errors import UserError
from gossipnet.fsutil import atomic_write_bytes

log = logging.getLogger(__name__)

FORMAT = "gossipnet-checkpoint/1"
_MAX_HEADER = 16 * 1024 * 1024  # a header bigger than this is corrupt, not a checkpoint


class CorruptCheckpoint(Exception):
    """The file exists but is not a readable checkpoint; the message says why."""


@dataclass
class Checkpoint:
    tensors: dict[str, np.ndarray]
    meta: dict[str, object] = field(default_factory=dict)


def encode(ckpt: Checkpoint) -> bytes:
    """Serialise to safetensors bytes; ``meta`` travels as JSON in the header."""
    # ascontiguousarray would turn 0-d scalars into 1-d: keep the shape.
    tensors = {k: np.ascontiguousarray(v).reshape(np.shape(v)) for k, v in ckpt.tensors.items()}
    meta_json = json.dumps(ckpt.meta, sort_keys=True)
    header = {"format": FORMAT, "meta": meta_json, "sha256": _digest(tensors, meta_json)}
    return stn.save(tensors, metadata=header)


def _digest(tensors: dict[str, np.ndarray], meta_json: str) -> str:
    """sha256 over names, dtypes, shapes, bytes and metadata: catches silent bit rot."""
    h = hashlib.sha256(meta_json.encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"\0{name}\0{t.dtype.str}\0{t.shape}\0".encode())
        h.update(np.ascontiguousarray(t).tobytes())
    return h.hexdigest()


def decode(data: bytes) -> Checkpoint:
    """Parse checkpoint bytes, raising ``CorruptCheckpoint`` with the reason on any defect."""
    if len(data) < 8:
        raise CorruptCheckpoint(f"file is {len(data)} bytes, too short for a safetensors header")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(_MAX_HEADER, len(data) - 8):
        raise CorruptCheckpoint(f"header length {header_len} does not fit a {len(data)}-byte file")
    try:
        header = json.loads(data[8 : 8 + header_len])
        file_meta = header.get("__metadata__") or {}
    except (ValueError, AttributeError) as exc:
        raise CorruptCheckpoint(f"header is not valid JSON: {exc}") from None
    if file_meta.get("format") != FORMAT:
        raise CorruptCheckpoint(f"not a gossipnet checkpoint (format {file_meta.get('format')!r})")
    try:
        tensors = stn.load(data)
        meta = json.loads(file_meta.get("meta", "{}"))
    except Exception as exc:  # safetensors raises its own error types for truncation etc.
        raise CorruptCheckpoint(f"tensor data unreadable: {exc}") from None
    if not isinstance(meta, dict):
        raise CorruptCheckpoint("metadata is not a JSON object")
    if file_meta.get("sha256") != _digest(tensors, file_meta.get("meta", "{}")):
        raise CorruptCheckpoint("checksum mismatch: the file was altered or damaged after it was written")
    return Checkpoint(tensors=tensors, meta=meta)


class CheckpointStore:
    """The current and previous checkpoint of one node, in its state directory."""

    def __init__(self, state_dir: str | os.PathLike, name: str = "checkpoint"):
        self.dir = Path(state_dir)
        self.current = self.dir / f"{name}.safetensors"
        self.previous = self.dir / f"{name}.prev.safetensors"

    def save(self, ckpt: Checkpoint) -> int:
        """Write atomically, keeping the last good file as ``previous``; returns bytes written."""
        data = encode(ckpt)
        if self.current.exists():
            os.replace(self.current, self.previous)
        atomic_write_bytes(self.current, data, mode=0o600)
        return len(data)

    def candidates(self):
        """(path, checkpoint or None, problem) for the current then the previous file, if present."""
        for path in (self.current, self.previous):
            if not path.exists():
                continue
            try:
                yield path, decode(path.read_bytes()), ""
            except (CorruptCheckpoint, OSError) as exc:
                log.warning("checkpoint %s is corrupt (%s); trying the previous one", path, exc)
                yield path, None, str(exc)

    def load(self) -> Checkpoint | None:
        """The newest readable checkpoint, or None when there is none at all.

        A corrupt current file is logged as a warning and the previous one used.
        If files exist but none is readable, raise ``UserError``: resuming from
        scratch silently would throw away a node's training.
        """
        problems = []
        for path in (self.current, self.previous):
            if not path.exists():
                continue
            try:
                ckpt = decode(path.read_bytes())
            except (CorruptCheckpoint, OSError) as exc:
                log.warning("checkpoint %s is corrupt (%s); trying the previous one", path, exc)
                problems.append(f"{path}: {exc}")
                continue
            if problems:
                ckpt.meta["recovered_from"] = str(path)
                ckpt.meta["recovery_problems"] = problems
            return ckpt
        if problems:
            raise UserError(
                "no readable checkpoint: " + "; ".join(problems) + ". Move the state directory's "
                "checkpoint files aside to start this node from scratch."
            )
        return None
