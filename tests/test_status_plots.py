"""The progress PNG: decodes, has the promised size, shows something, follows the history."""

import io
import threading

import numpy as np
import pytest
from PIL import Image

from gossipnet.status.demo import DemoProvider
from gossipnet.status.history import MetricsHistory
from gossipnet.status.plots import figure_size, render_progress_png

CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]


def decode(png: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG"
    return np.asarray(img.convert("RGB")).astype(np.int16)


def convnet_visuals(rng):
    return {"filters": rng.normal(size=(8, 1, 5, 5)), "samples": rng.random((12, 1, 28, 28)),
            "sample_labels": np.arange(12) % 10, "sample_preds": (np.arange(12) % 10) * (np.arange(12) % 3 > 0),
            "classes": CLASSES}


def trained_history(points=40):
    p = DemoProvider()
    for i in range(points):
        p.advance(now=1000.0 + 5 * i)
        if i % 7 == 3:
            p.history.event(1000.0 + 5 * i, "merge", "peer")
    return p.history


def test_the_png_decodes_at_the_promised_size_and_is_not_blank():
    rng = np.random.default_rng(0)
    vis = convnet_visuals(rng)
    img = decode(render_progress_png(trained_history(), vis, "convnet", title="node-a"))
    assert img.shape[1::-1] == figure_size(vis)
    assert img.std() > 10  # mostly white with curves, text and images: far from uniform
    curves_only = decode(render_progress_png(trained_history(), {}, "convnet"))
    assert curves_only.shape[1::-1] == figure_size({}) and figure_size({})[1] < figure_size(vis)[1]


def test_an_empty_history_renders_the_waiting_state_not_a_blank_image():
    img = decode(render_progress_png(MetricsHistory(), {}, "convnet"))
    # the loss panel's interior holds the "waiting for first step" text
    w, h = figure_size({})
    panel = img[int(0.2 * h):int(0.45 * h), int(0.1 * w):int(0.45 * w)]
    assert (panel < 128).any() and panel.std() > 5


def test_the_png_changes_as_the_history_advances():
    p = DemoProvider()
    p.advance(5)
    before = render_progress_png(p.history, {}, "convnet")
    assert render_progress_png(p.history, {}, "convnet") == before  # deterministic
    p.advance(20)
    p.history.event(p.history.to_arrays().t[-1], "merge", "peer")
    after = render_progress_png(p.history, {}, "convnet")
    assert after != before
    assert np.abs(decode(after) - decode(before)).sum() > 1000


def test_predicted_labels_are_green_when_right_and_red_when_wrong():
    rng = np.random.default_rng(1)
    vis = convnet_visuals(rng)
    vis["sample_preds"] = vis["sample_labels"].copy()
    right = decode(render_progress_png(trained_history(), vis, "convnet"))
    vis["sample_preds"] = (vis["sample_labels"] + 1) % 10
    wrong = decode(render_progress_png(trained_history(), vis, "convnet"))
    h = right.shape[0]
    band_r, band_w = right[h // 2:, right.shape[1] // 2:], wrong[h // 2:, wrong.shape[1] // 2:]

    def count(img, rgb):  # tab:green (44,160,44), tab:red (214,39,40), anti-aliased
        return int((np.abs(img - np.array(rgb)).sum(axis=2) < 60).sum())

    assert count(band_r, (44, 160, 44)) > 50 and count(band_r, (214, 39, 40)) == 0
    assert count(band_w, (214, 39, 40)) > 50 and count(band_w, (44, 160, 44)) == 0


def test_an_island_shows_fitness_migrants_and_a_rollout_strip():
    p = DemoProvider(kind="evolution")
    for g in range(30):
        p.advance(now=float(g))
        if g % 5 == 0:
            p.history.event(float(g), "migrant", "peer")
    frames = np.zeros((20, 40, 60, 3), dtype=np.uint8)
    frames[:, 10:30, 20:40] = (200, 50, 50)
    vis = {"rollout": frames}
    img = decode(render_progress_png(p.history, vis, "evolution"))
    assert img.shape[1::-1] == figure_size(vis)
    strip = img[-int(0.8 * 240):]
    assert (np.abs(strip - np.array([200, 50, 50])).sum(axis=2) < 30).sum() > 500


@pytest.mark.parametrize("bad", [
    {"filters": np.zeros((0, 1, 5, 5))},
    {"filters": np.array(["a", "b"])},
    {"filters": np.full((4, 3, 5, 5), np.nan)},
    {"samples": np.zeros((4, 1, 8, 8)), "sample_preds": np.array([1.5, 2.5])},
    {"samples": np.zeros((2, 1, 8, 8)), "sample_preds": np.array([99, -3]), "classes": ["a"]},
    {"rollout": np.zeros((3, 10, 10), dtype=np.uint8)},
    {"rollout": np.zeros((3, 10, 10, 3), dtype=np.float32)},
])
def test_malformed_visuals_are_noted_on_the_image_instead_of_failing(bad):
    img = decode(render_progress_png(trained_history(10), bad, "convnet"))
    assert img.shape[1::-1] == figure_size(bad)


def test_rendering_from_several_threads_at_once_gives_the_same_image():
    rng = np.random.default_rng(2)
    vis, hist = convnet_visuals(rng), trained_history()
    expected = render_progress_png(hist, vis, "convnet")
    results, errors = [], []

    def work():
        try:
            results.append(render_progress_png(hist, vis, "convnet"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and results == [expected] * 3


def test_a_real_tiny_convnets_filters_and_predictions_are_drawn():
    nn = pytest.importorskip("gossipnet.nn.net")
    from gossipnet.data.loaders import load_dataset
    from gossipnet.nn.optim import make_optimizer
    from gossipnet.nn.spec import get_preset
    from gossipnet.nn.train import Trainer

    data = load_dataset("embedded")
    preset = get_preset("tiny")
    net = nn.Net(preset.spec, preset.input_shape, seed=0)
    trainer = Trainer(net, make_optimizer(preset.optimizer, net.params(), preset.lr), preset.batch_size)
    history = MetricsHistory()

    def visuals():  # what ConvnetLearner.visuals() offers: first-layer kernels and a few test images
        samples = data.x_test[:12]
        return {"filters": net.params()["conv1.weight"].copy(), "samples": samples,
                "sample_labels": data.y_test[:12], "sample_preds": np.asarray(net.predict(samples)),
                "classes": list(data.classes)}

    before = visuals()
    for chunk in range(4):
        metrics = trainer.train(data.x_train[:2000], data.y_train[:2000], steps=10)
        history.record(float(chunk), trainer.step,
                       {"loss": metrics["loss"], "train_accuracy": metrics["accuracy"]}, peers_alive=0)
    after = visuals()
    assert after["filters"].shape[:2] == (8, 1)
    png_before = decode(render_progress_png(history, before, "convnet"))
    png_after = decode(render_progress_png(history, after, "convnet"))
    assert png_after.shape[1::-1] == figure_size(after)
    w, h = figure_size(after)
    filters_region = (slice(int(0.62 * h), h), slice(0, w // 2))
    assert png_after[filters_region].std() > 10
    # training moved the first-layer kernels, and the picture shows it
    assert np.abs(png_after[filters_region] - png_before[filters_region]).sum() > 1000
