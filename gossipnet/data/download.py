"""Download a file into a cache directory, checked by sha256, atomically.

The file is streamed to a temporary name beside its destination, hashed as it
arrives, and renamed into place only when size and hash match, so a cut
connection or a tampered mirror never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from gossipnet.errors import UserError

CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/gossipnet``, or ``~/.cache/gossipnet`` (XDG Base Directory spec)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gossipnet"


def download(
    url: str,
    dest: Path,
    *,
    sha256: str,
    max_bytes: int,
    timeout: float = 30.0,
    deadline: float = 3600.0,
    manual_hint: str = "",
) -> Path:
    """Fetch ``url`` into ``dest`` unless it is there already; return ``dest``.

    Raises ``UserError`` when offline, on an HTTP error, when the body exceeds
    ``max_bytes``, when the whole transfer takes longer than ``deadline``
    seconds (``timeout`` bounds each socket wait; a server that trickles bytes
    would otherwise never be given up on), or when its sha256 differs from ``sha256``. ``manual_hint``
    is appended to errors to say how to get the file by hand.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    hint = f"; {manual_hint}" if manual_hint else ""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create cache directory {dest.parent} ({exc.strerror or exc}){hint}") from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest, size = _fetch(url, out, max_bytes, timeout, deadline, hint)
        if digest != sha256.lower():
            raise UserError(
                f"download of {url} failed its checksum: sha256 {digest}, expected {sha256.lower()} "
                f"({size:,} bytes); the file was discarded, try again later{hint}"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _fetch(url: str, out, max_bytes: int, timeout: float, deadline: float, hint: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    give_up = time.monotonic() + deadline
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise UserError(
                    f"{url} offers {int(declared):,} bytes, more than the {max_bytes:,} expected; "
                    f"refusing to download{hint}"
                )
            # read1: whatever has arrived, so the deadline is checked even when bytes trickle
            while chunk := response.read1(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise UserError(
                        f"{url} sent more than the {max_bytes:,} bytes expected; download discarded{hint}"
                    )
                if time.monotonic() > give_up:
                    raise UserError(
                        f"download of {url} took longer than {deadline:g} s ({size:,} bytes so far); "
                        f"try again later{hint}"
                    )
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise UserError(f"cannot download {url}: HTTP {exc.code} {exc.reason}{hint}") from None
    except urllib.error.URLError as exc:
        raise UserError(
            f"cannot download {url} ({exc.reason}); this machine may be offline{hint}"
        ) from None
    except (http.client.HTTPException, OSError) as exc:
        # Timeouts, resets, a short body (IncompleteRead), a full disk.
        raise UserError(f"download of {url} failed ({exc or type(exc).__name__}){hint}") from None
    return digest.hexdigest(), size
