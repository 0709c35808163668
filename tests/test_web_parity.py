"""The browser engine (gossipnet/web, in headless Chromium) computes what numpy computes.

For every preset (and one net with strided convolutions and overlapping pools, to cover
the general code paths), from the same weights and batch: logits to 1e-4, every
gradient to 1e-3 relative, and the weights after two SGD steps and two Adam steps,
dropout masks included (both engines draw them from gossipnet.nn.masks' hash).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as stn
from aiohttp import web

from gossipnet.nn import Net, make_optimizer
from gossipnet.nn.masks import keep_mask
from gossipnet.nn.spec import PRESETS
from gossipnet.nn.train import train_sequence
from tests.chromium import run_page

pytestmark = pytest.mark.timeout(240)

WEB = Path(__file__).parent.parent / "gossipnet" / "web"
PAGES = Path(__file__).parent / "web"
STRIDED = {
    "input_shape": (2, 15, 13),
    "spec": (
        {"type": "conv", "filters": 6, "size": 3, "stride": 2, "pad": 1}, {"type": "relu"},
        {"type": "pool", "size": 3, "stride": 2},
        {"type": "conv", "filters": 5, "size": 2, "stride": 1, "pad": 0}, {"type": "relu"},
        {"type": "fc", "units": 12}, {"type": "relu"}, {"type": "dropout", "rate": 0.5},
        {"type": "softmax", "classes": 4},
    ),
}
SEED, BATCH, STEPS = 1234567, 4, 2
ADAM_LR = 1e-3


def _cases() -> dict[str, dict]:
    cases = {name: {"input_shape": p.input_shape, "spec": p.spec, "weight_decay": p.weight_decay}
             for name, p in PRESETS.items()}
    cases["strided"] = dict(STRIDED, weight_decay=1e-3)
    return cases


def _numpy_side(case: dict, rng: np.random.Generator) -> tuple[bytes, dict[str, np.ndarray]]:
    """The fixture the browser gets and what numpy computes from it."""
    net = Net(case["spec"], case["input_shape"], seed=int(rng.integers(1000)))
    weights = net.state_dict()
    # biases are zero at init: give them values so their gradients and steps are checked
    for k in weights:
        if k.endswith(".bias"):
            weights[k] = rng.normal(0, 0.1, weights[k].shape).astype(np.float32)
    net.load_state_dict(weights)
    n = BATCH * STEPS
    x = rng.normal(0, 1, (n, *case["input_shape"])).astype(np.float32)
    y = rng.integers(0, net.num_classes, n)
    cfg = {"spec": list(case["spec"]), "input_shape": list(case["input_shape"]), "seed": SEED,
           "lr": {"sgd": 0.05, "adam": ADAM_LR}, "weight_decay": case["weight_decay"], "momentum": 0.9,
           "batch_size": BATCH}
    want = {"logits": net.forward(x, train=False), "fingerprint": net.fingerprint}
    net.set_hash_masks(SEED, 0)
    loss, _ = net.loss_and_grads(x, y)
    want["loss"] = np.float32(loss)
    want.update({f"grad.{k}": g.copy() for k, g in net.grads().items()})
    for opt in ("sgd", "adam"):
        net.load_state_dict(weights)
        o = make_optimizer(opt, net.params(), cfg["lr"][opt], cfg["weight_decay"], cfg["momentum"])
        train_sequence(net, o, x, y, BATCH, SEED)
        want.update({f"{opt}.{k}": p.copy() for k, p in net.params().items()})
    tensors = {f"w.{k}": v for k, v in weights.items()}
    tensors.update(x=x, y=y.astype(np.int32))
    return stn.save(tensors, metadata={"config": json.dumps(cfg)}), want


async def _run_in_chromium(fixtures: dict[str, bytes], tmp_path) -> dict[tuple[str, str], dict]:
    results: dict[str, dict] = {}
    done: asyncio.Future = asyncio.get_running_loop().create_future()

    async def fixture_list(request):
        return web.json_response(list(fixtures))

    async def fixture(request):
        return web.Response(body=fixtures[request.match_info["name"]])

    async def result(request):
        results[request.match_info["kernel"], request.match_info["name"]] = stn.load(await request.read())
        return web.Response(text="ok")

    async def finish(request):
        if not done.done():
            done.set_result(None)
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 << 20)
    app.router.add_get("/fixtures", fixture_list)
    app.router.add_get("/fixture/{name}", fixture)
    app.router.add_post("/result/{kernel}/{name}", result)
    app.router.add_post("/done", finish)
    app.router.add_static("/web", WEB)
    app.router.add_static("/test", PAGES)
    await run_page(app, "/test/parity.html", done, timeout=180, log_path=str(tmp_path / "chromium.log"))
    return results


def _close(got: np.ndarray, want: np.ndarray, rtol: float, what: str) -> None:
    """Equal to ``rtol`` relative to the array's scale (elements near zero compared absolutely)."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = float(np.abs(want).max()) or 1.0
    err = float(np.abs(got.astype(np.float64) - want).max()) / scale
    assert err <= rtol, f"{what}: max error {err:.2e} of scale {scale:.3g} exceeds {rtol:.0e}"


async def test_browser_engine_matches_numpy_for_every_preset(tmp_path):
    """Both GEMM kernels (WebAssembly SIMD and the JavaScript fallback), one page load."""
    rng = np.random.default_rng(20261129)
    fixtures, wants, weights = {}, {}, {}
    for name, case in _cases().items():
        fixtures[name], wants[name] = _numpy_side(case, rng)
        weights[name] = {k[2:]: v for k, v in stn.load(fixtures[name]).items() if k.startswith("w.")}
    results = await _run_in_chromium(fixtures, tmp_path)
    assert set(results) == {(k, n) for k in ("wasm", "js") for n in wants}, "the page did not report every net"
    for (kernel, name), got in sorted(results.items()):
        want = dict(wants[name])
        label = f"{name} ({kernel} GEMM)"
        # the browser's own SHA-256 (no crypto.subtle on plain-HTTP LAN pages) and spec fingerprint
        assert bytes(got.pop("fixture_sha256")).decode() == hashlib.sha256(fixtures[name]).hexdigest()
        assert bytes(got.pop("fingerprint")).decode() == want.pop("fingerprint")
        assert set(got) == set(want), f"{label}: the browser returned {sorted(set(got) ^ set(want))} differently"
        _close(got["logits"], want["logits"], 1e-4, f"{label} logits")
        assert abs(float(got["loss"]) - float(want["loss"])) <= 1e-4 * abs(float(want["loss"]))
        for key in want:
            if key.startswith("grad."):
                _close(got[key], want[key], 1e-3, f"{label} {key}")
            elif key.startswith("sgd."):
                # the same update from (float32-rounding-)equal gradients
                _close(got[key], want[key], 1e-5, f"{label} {key} after {STEPS} SGD steps")
            elif key.startswith("adam."):
                # Adam divides by sqrt(v): where a gradient is ~0, rounding-level differences
                # move m / sqrt(v) by a visible fraction of a step, so compare the update as a
                # whole, relative to its norm
                start = weights[name][key[len("adam."):]]
                diff = float(np.linalg.norm(got[key].astype(np.float64) - want[key]))
                step = float(np.linalg.norm(want[key].astype(np.float64) - start))
                assert diff <= 1e-3 * step, f"{label} {key}: off by {diff / step:.1e} of the {STEPS}-step Adam update"


def test_hash_masks_keep_the_requested_fraction_and_differ_by_step_and_layer():
    a = keep_mask(1, 0, 3, (200, 100), 0.25)
    assert abs(a.mean() - 0.75) < 0.01
    assert (a != keep_mask(1, 1, 3, (200, 100), 0.25)).mean() > 0.3
    assert (a != keep_mask(1, 0, 4, (200, 100), 0.25)).mean() > 0.3
    assert keep_mask(1, 0, 3, (10,), 0.0).all()
