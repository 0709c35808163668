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


TEMP_GLOB = ".*.tmp"  # what atomic_write_bytes names its temporary files
LOCK_FILE = "lock"


def remove_stale_temp_files(directory: str | os.PathLike) -> int:
    """Delete temporary files a crash left mid-write in ``directory``; returns how many.

    Call only while holding the directory's lock (``lock_directory``): then no writer
    of ours is in the middle of one.
    """
    removed = 0
    for path in Path(directory).glob(TEMP_GLOB):
        try:
            path.unlink()
            removed += 1
        except OSError:
            pass
    return removed


class DirectoryLocked(Exception):
    """Another process holds the directory; ``pid`` is its process id (or None if unknown)."""

    def __init__(self, directory: Path, pid: int | None) -> None:
        super().__init__(f"{directory} is locked by process {pid if pid is not None else '(unknown)'}")
        self.directory = directory
        self.pid = pid


class DirectoryLock:
    """An exclusive advisory lock (flock) on ``directory/lock``, holding our pid.

    The kernel releases it when the process ends, however it ends, so a crash never
    leaves a stale lock behind. Keep the object alive as long as the lock is needed.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        import fcntl

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.directory / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                pid = int(text) if text.isdigit() else None
            finally:
                os.close(fd)
            raise DirectoryLocked(self.directory, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> DirectoryLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
