"""Crash-safe file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o644,
                       dir_mode: int = 0o755) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync, and rename.

    The temporary file is created in the target directory (rename is atomic only
    within one file system) with ``mode`` already set, so a secret is never
    briefly readable by others. The directory is fsynced so the rename survives
    a power cut. Missing parent directories are created with ``dir_mode``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
