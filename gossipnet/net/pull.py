"""Pulling a peer's snapshot blob over HTTP, bounded in size, time and concurrency.

Bulk payloads never travel in UDP (DESIGN.md section 3): a signed manifest names the
blob's sha256 and size, and the receiver fetches it from the announcing node's HTTP
server. Every limit is enforced while streaming, before the bytes are trusted: the
declared size is checked against our cap before the request, the body is read in
chunks into an ``exchange.Download`` that abandons it the moment it exceeds the
declared size, and the hash is checked before anyone parses a byte. Redirects are never
followed: the manifest's signer names the server, and a redirect would let it (or a
replayed manifest) make us GET any URL.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from gossipnet.exchange import Blob, Download, Manifest, Refused


class PullError(Exception):
    """A pull failed; ``reason`` is a short counter name, the message says more."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PullLimits:
    max_bytes: int = 64 * 1024 * 1024  # a 10 MB model in float32 with ample margin
    timeout_s: float = 30.0
    max_concurrent: int = 2
    chunk_bytes: int = 256 * 1024


class BlobPuller:
    """Fetches blobs with one shared aiohttp session and a concurrency cap."""

    def __init__(self, limits: PullLimits | None = None):
        self.limits = limits or PullLimits()
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(self.limits.max_concurrent)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.limits.timeout_s),
                auto_decompress=False,  # never let a peer's gzip inflate past our caps
            )
        return self._session

    async def fetch(self, url: str, manifest: Manifest) -> Blob:
        """The blob at ``url``, checked against ``manifest`` (size, then sha256) as it streams."""
        try:
            download = Download(manifest, self.limits.max_bytes)  # the declared size, before any request
        except Refused as exc:
            raise PullError(exc.rejection.reason, f"{url}: {exc.rejection.detail}") from None
        async with self._slots:
            try:
                return await asyncio.wait_for(self._fetch(url, download), timeout=self.limits.timeout_s)
            except Refused as exc:
                raise PullError(exc.rejection.reason, f"{url}: {exc.rejection.detail}") from None
            except asyncio.TimeoutError:
                raise PullError("timeout", f"{url} took over {self.limits.timeout_s} s") from None
            except aiohttp.ClientError as exc:
                raise PullError("unreachable", f"{url}: {exc}") from None
            except OSError as exc:
                raise PullError("unreachable", f"{url}: {exc}") from None

    async def _fetch(self, url: str, download: Download) -> Blob:
        size = download.manifest.size
        async with self._client().get(url, allow_redirects=False) as resp:
            if 300 <= resp.status < 400:
                raise PullError("redirect", f"{url}: HTTP {resp.status} redirect refused")
            if resp.status == 404:
                raise PullError("gone", f"{url}: the peer no longer offers this snapshot")
            if resp.status != 200:
                raise PullError("http_error", f"{url}: HTTP {resp.status}")
            if resp.content_length is not None and resp.content_length != size:
                raise PullError(
                    "size_mismatch", f"{url}: {resp.content_length} bytes offered, {size} announced"
                )
            async for chunk in resp.content.iter_chunked(self.limits.chunk_bytes):
                download.feed(chunk)
            return download.finish()
