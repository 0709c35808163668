"""The status page's model routes: download the current model, classify an uploaded picture.

- ``GET /model.safetensors``: the node's current weights with the model description in the
  file's metadata (``gossipnet predict`` and ``gossipnet export`` read it).
- ``GET /model.onnx``: the same model as an ONNX graph (``gossipnet.onnx_export``), 501 with
  the pip command when the ``onnx`` package is not installed.
- ``POST /classify``: a picture in, the top labels out. A form upload (``multipart/form-data``,
  field ``image``, what the page's "try an image" box sends) gets an HTML page; a raw body
  (``curl --data-binary @cat.jpg -H 'Content-Type: image/jpeg'``) gets JSON.

Uploads are untrusted: a Content-Length is required and capped (413 beyond it), the bytes are
counted as they arrive, the picture is decoded by ``decode_image`` (allowed formats only, a
pixel cap checked from the header before decoding, Pillow's decompression-bomb check) in a
worker thread, one at a time, and a queue longer than ``MAX_WAITING`` is refused with 503.
Classifications and ONNX exports also spend a per-IP token (``ConnectionGuard.model_allowed``):
one host looping on them gets 429 instead of the node's CPU.
Every refusal is a 4xx/5xx whose text says what was wrong.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from aiohttp import web

from gossipnet.data.images import BadImage
from gossipnet.errors import UserError
from gossipnet.status.page import CONTENT_SECURITY_POLICY, render_classification

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 8 << 20  # a phone photo is 2-6 MB
MAX_UPLOAD_PIXELS = 40_000_000  # 40 megapixels: any camera's picture, not a bomb's canvas
MAX_WAITING = 4  # classifications queued behind the one running; more get 503
TOP_K = 5
POST_PATHS = frozenset({"/classify"})  # the only non-GET routes (net/http.py's middleware allows them)


class ModelService:
    """Model downloads and classification for one provider, on their own worker thread.

    The provider's ``model()`` returns a ``TrainedModel`` copy (or None), refreshed when the
    node publishes; ONNX bytes are cached per copy, so repeated downloads cost one export.
    """

    def __init__(self, provider: Any, guard: Any = None) -> None:
        self._provider = provider
        self._guard = guard  # a net.http_guard.ConnectionGuard, or None (no per-IP budget)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gossipnet-model")
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._onnx: tuple[object, bytes] | None = None
        self.classified = 0
        self.refused: dict[str, int] = {}

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _model(self):
        model = self._provider.model()
        if model is None:
            raise web.HTTPNotFound(text="this node has no model to offer yet (it publishes one after its "
                                        "first training chunk; islands of policies have none)\n")
        return model

    async def _run(self, fn, *args):
        if self._waiting >= MAX_WAITING:
            self._refuse("busy")
            raise web.HTTPServiceUnavailable(text="busy with other pictures; try again in a moment\n",
                                             headers={"Retry-After": "2"})
        self._waiting += 1
        try:
            async with self._lock:
                return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self._waiting -= 1

    def _spend_token(self, request: web.Request) -> None:
        if self._guard is not None and not self._guard.model_allowed(request.remote or "",
                                                                     int(time.time() * 1000)):
            self._refuse("rate_limited")
            raise web.HTTPTooManyRequests(text="too many pictures or exports from your address; "
                                               "wait a few seconds and try again\n",
                                          headers={"Retry-After": "2"})

    def _refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    async def safetensors(self, request: web.Request) -> web.Response:
        model = self._model()
        body = await self._run(model.to_bytes)
        return web.Response(body=body, content_type="application/octet-stream",
                            headers={"Content-Disposition": 'attachment; filename="model.safetensors"'})

    async def onnx(self, request: web.Request) -> web.Response:
        from gossipnet.onnx_export import INSTALL_HINT, export_onnx, onnx_available

        if not onnx_available():
            raise web.HTTPNotImplemented(text=f"this node cannot write ONNX: {INSTALL_HINT} on it, or "
                                              "download model.safetensors and run gossipnet export\n")
        model = self._model()
        cached = self._onnx
        if cached is None or cached[0] is not model:
            self._spend_token(request)  # a cached export costs nothing
            cached = self._onnx = (model, await self._run(export_onnx, model))
        return web.Response(body=cached[1], content_type="application/octet-stream",
                            headers={"Content-Disposition": 'attachment; filename="model.onnx"'})

    async def classify(self, request: web.Request) -> web.Response:
        model = self._model()
        self._spend_token(request)
        wants_html = request.content_type == "multipart/form-data"
        try:
            data, filename = await self._upload(request)
        except web.HTTPException as exc:
            self._refuse(f"http_{exc.status}")
            raise
        try:
            preds = await self._run(self._predict, model, data)
        except BadImage as exc:
            self._refuse("bad_image")
            raise web.HTTPBadRequest(text=f"cannot classify this upload: {exc}\n") from None
        except UserError as exc:
            self._refuse("model")
            raise web.HTTPUnprocessableEntity(text=f"{exc}\n") from None
        self.classified += 1
        if wants_html:
            return web.Response(text=render_classification(filename, preds), content_type="text/html",
                                headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})
        return web.Response(text=json.dumps({"image": filename, "predictions": preds}),
                            content_type="application/json")

    @staticmethod
    def _predict(model, data: bytes) -> list[dict]:
        x = model.decode(data, max_bytes=MAX_UPLOAD_BYTES, max_pixels=MAX_UPLOAD_PIXELS)
        probs = model.probabilities(np.asarray(x)[None])[0]
        return model.top_k(probs, min(TOP_K, len(model.card.classes)))

    async def _upload(self, request: web.Request) -> tuple[bytes, str]:
        """The picture's bytes and name, read within the size cap."""
        if request.content_length is None:
            raise web.HTTPLengthRequired(text="send a Content-Length (chunked uploads are not accepted)\n")
        if request.content_length > MAX_UPLOAD_BYTES + 64 * 1024:  # room for the form's own headers
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_UPLOAD_BYTES, actual_size=request.content_length,
                                                text=f"pictures up to {MAX_UPLOAD_BYTES >> 20} MB only\n")
        if request.content_type == "multipart/form-data":
            try:
                reader = await request.multipart()
                async for part in reader:
                    if getattr(part, "name", None) == "image":
                        data = await _read_capped(part.read_chunk)
                        return data, str(part.filename or "upload")
            except (ValueError, RuntimeError) as exc:  # what aiohttp raises for a malformed multipart body
                raise web.HTTPBadRequest(text=f"malformed form upload ({exc})\n") from None
            raise web.HTTPBadRequest(text="the form has no 'image' file field\n")
        if request.content_type.startswith("image/") or request.content_type == "application/octet-stream":
            return await _read_capped(request.content.read), "upload"
        raise web.HTTPUnsupportedMediaType(text="send a picture as multipart/form-data (field 'image') or as "
                                                "the raw body with Content-Type image/...\n")


async def _read_capped(read) -> bytes:
    chunks, size = [], 0
    while chunk := await read(64 * 1024):
        size += len(chunk)
        if size > MAX_UPLOAD_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_UPLOAD_BYTES, actual_size=size,
                                                text=f"pictures up to {MAX_UPLOAD_BYTES >> 20} MB only\n")
        chunks.append(chunk)
    if not size:
        raise web.HTTPBadRequest(text="the upload is empty\n")
    return b"".join(chunks)


def add_model_routes(app: web.Application, service: ModelService) -> None:
    app.router.add_get("/model.safetensors", service.safetensors)
    app.router.add_get("/model.onnx", service.onnx)
    app.router.add_post("/classify", service.classify)
