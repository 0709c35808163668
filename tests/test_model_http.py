"""The status page offers the current model (ONNX, safetensors) and classifies uploaded pictures."""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass

import aiohttp
import numpy as np
import pytest
from PIL import Image

from gossipnet.data import load_dataset
from gossipnet.learners.convnet import ConvnetConfig, ConvnetLearner
from gossipnet.model import TrainedModel
from gossipnet.net import model_http
from gossipnet.net.http import StatusServer
from gossipnet.net.http_guard import HttpLimits
from gossipnet.status.demo import DemoProvider
from tests.image_folders import CLASSES, write_folder

pytestmark = pytest.mark.timeout(60)


@dataclass
class ModelProvider(DemoProvider):
    current: TrainedModel | None = None

    def model(self) -> TrainedModel | None:
        return self.current


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    root = write_folder(tmp_path_factory.mktemp("pics"), n=12, seed=4)
    data = load_dataset("folder", root, image_size=16, color_mode="grayscale")
    learner = ConvnetLearner(data, config=ConvnetConfig(net="tiny"))
    for _ in range(4):
        learner.train(10)
    return root, learner.model()


async def serve(model, limits=None):
    server = StatusServer(ModelProvider(node_id="model-node", current=model), limits=limits)
    await server.start("127.0.0.1", 0)
    return server


def png_bytes(path) -> bytes:
    out = io.BytesIO()
    Image.open(path).save(out, format="PNG")
    return out.getvalue()


async def test_page_offers_downloads_and_a_form_and_the_downloads_are_the_model(learned, tmp_path):
    root, model = learned
    server = await serve(model)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(server.url) as r:
                page = await r.text()
            assert 'href="/model.onnx"' in page and 'href="/model.safetensors"' in page
            assert 'action="/classify"' in page and 'name="image"' in page and "multipart/form-data" in page
            async with s.get(server.url + "model.safetensors") as r:
                assert r.status == 200
                (tmp_path / "m.safetensors").write_bytes(await r.read())
            async with s.get(server.url + "model.onnx") as r:
                assert r.status == 200
                onnx_bytes = await r.read()
    finally:
        await server.stop()
    from gossipnet.model import load_model

    got = load_model(tmp_path / "m.safetensors")
    assert got.card == model.card
    ort = pytest.importorskip("onnxruntime")
    x = np.stack([model.decode(p) for p in sorted((root / "left").iterdir())[:4]])
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(["probabilities"], {"image": x.astype(np.float32)})[0],
                               model.probabilities(x), atol=1e-4)


async def test_an_uploaded_picture_is_classified_as_a_form_and_as_a_raw_body(learned):
    root, model = learned
    picture = sorted((root / "top").iterdir())[1]
    expected = model.top_k(model.probabilities(model.decode(picture)[None])[0], 3)
    server = await serve(model)
    try:
        async with aiohttp.ClientSession() as s:
            form = aiohttp.FormData()
            form.add_field("image", picture.read_bytes(), filename="holiday.jpg",
                           content_type="image/jpeg")
            async with s.post(server.url + "classify", data=form) as r:
                html = await r.text()
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/html"), html
            assert f"<td>{expected[0]['label']}</td>" in html and "<h1>holiday.jpg</h1>" in html
            async with s.post(server.url + "classify", data=picture.read_bytes(),
                              headers={"Content-Type": "image/jpeg"}) as r:
                doc = json.loads(await r.text())
            assert [p["label"] for p in doc["predictions"][:3]] == [p["label"] for p in expected]
            assert doc["predictions"][0]["probability"] == pytest.approx(expected[0]["probability"], abs=1e-6)
    finally:
        await server.stop()


async def test_bad_uploads_get_4xx_with_a_reason(learned, monkeypatch):
    root, model = learned
    monkeypatch.setattr(model_http, "MAX_UPLOAD_BYTES", 50_000)
    server = await serve(model)
    bomb = io.BytesIO()
    Image.new("L", (8000, 6000)).save(bomb, format="PNG")  # 48 Mpx canvas in a few kB
    try:
        async with aiohttp.ClientSession() as s:
            async def post(data, ctype="image/png"):
                async with s.post(server.url + "classify", data=data, headers={"Content-Type": ctype}) as r:
                    return r.status, await r.text()

            assert (await post(b"not a picture at all"))[0] == 400
            status, text = await post(bomb.getvalue())
            assert status == 400 and "pixels is more than" in text
            assert (await post(bytes(60_000)))[0] == 413
            assert (await post(png_bytes(sorted((root / "left").iterdir())[0]), "text/plain"))[0] == 415
            form = aiohttp.FormData()
            form.add_field("other", b"x", filename="x.png")
            async with s.post(server.url + "classify", data=form) as r:
                assert r.status == 400 and "no 'image'" in await r.text()
            status, text = await post(b"junk", "multipart/form-data")  # no boundary
            assert status == 400 and "malformed form upload" in text
            async def chunked():
                yield b"GIF89a"
            async with s.post(server.url + "classify", data=chunked(), headers={"Content-Type": "image/gif"}) as r:
                assert r.status == 411  # no Content-Length: the size cap is checked before reading
            async with s.put(server.url + "classify", data=b"x") as r:
                assert r.status == 405
            async with s.post(server.url + "api/status", data=b"x") as r:
                assert r.status == 405  # POST is for the classifier only
            assert server.models.refused.get("bad_image") == 2
    finally:
        await server.stop()


async def test_one_address_looping_on_classify_gets_429_after_its_burst_and_is_counted(learned):
    root, model = learned
    picture = sorted((root / "top").iterdir())[0].read_bytes()
    limits = HttpLimits(model_per_ip_per_s=0.001, model_burst=3, exempt_loopback=False)
    server = await serve(model, limits)
    try:
        async with aiohttp.ClientSession() as s:
            codes = []
            for _ in range(5):
                async with s.post(server.url + "classify", data=picture,
                                  headers={"Content-Type": "image/jpeg"}) as r:
                    codes.append(r.status)
                    text = await r.text()
            assert codes == [200, 200, 200, 429, 429]
            assert "try again" in text and r.headers["Retry-After"] == "2"
            async with s.get(server.url + "healthz") as r:
                assert r.status == 200  # the cheap routes stay open to that address
        assert server.guard.counters["model_rate_limited"] == 2
        assert server.models.refused["rate_limited"] == 2 and server.models.classified == 3
    finally:
        await server.stop()


async def test_no_model_yet_is_404_and_no_onnx_package_is_501_naming_the_pip_command(learned, monkeypatch):
    server = await serve(None)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(server.url + "model.safetensors") as r:
                assert r.status == 404 and "no model" in await r.text()
    finally:
        await server.stop()
    server = await serve(learned[1])
    monkeypatch.setitem(sys.modules, "onnx", None)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(server.url + "model.onnx") as r:
                assert r.status == 501 and "pip install 'gossipnet[onnx]'" in await r.text()
    finally:
        await server.stop()


def test_island_pages_offer_no_model_and_uploaded_names_are_escaped():
    from gossipnet.status.page import render_classification, render_page

    assert "/classify" not in render_page(DemoProvider(kind="evolution").status())
    html = render_classification("<script>x</script>.png", [{"label": "<b>" + CLASSES[0], "probability": 1.0}])
    assert "<script>" not in html and "&lt;b&gt;centre" in html
