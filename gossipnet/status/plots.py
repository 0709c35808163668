"""The progress PNG: curves from the metrics history, plus what the learner can show.

Drawn with matplotlib's object API (a ``Figure`` on its own Agg canvas) and
never pyplot, whose global state is not thread-safe: the server renders in a
worker thread while the node keeps running. Images (filters, test samples,
rollout frames) are tiled into one mosaic per panel, because one ``imshow`` is
far cheaper than one axes per tile.

A learner's visuals are drawn when their shapes make sense and replaced by a
short note when they do not: a bad array must never cost the node its page.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from gossipnet.status.history import HistoryArrays, MetricsHistory
from gossipnet.status.schema import WELL_KNOWN_METRICS

DPI = 100
WIDTH_IN = 10.0
CURVES_IN = 5.2  # height of the curve rows (title, two panels, peers strip)
VISUALS_IN = 3.6  # height added when the learner offers filters or samples
ROLLOUT_IN = 2.4  # height added for a rollout strip (one row of frames)
WAITING = "waiting for first step"
MAX_FILTERS = 64
MAX_SAMPLES = 16
MAX_FRAMES = 8
MAX_MARKS = 400  # event marks per panel; older ones are dropped to keep the plot legible

_GOOD, _BAD = "tab:green", "tab:red"


def figure_size(visuals: Mapping[str, Any] | None) -> tuple[int, int]:
    """Width and height in pixels of the PNG for these inputs (the tests check it)."""
    height = CURVES_IN + _visual_row_in(visuals or {})
    return int(round(WIDTH_IN * DPI)), int(round(height * DPI))


def render_progress_png(
    history: MetricsHistory | HistoryArrays,
    visuals: Mapping[str, Any] | None,
    kind: str,
    *,
    title: str = "",
) -> bytes:
    """Render the node's progress as PNG bytes; safe to call from any thread."""
    h = history.to_arrays() if isinstance(history, MetricsHistory) else history
    visuals = visuals or {}
    visual_in = _visual_row_in(visuals)
    w_px, h_px = figure_size(visuals)
    height_in = h_px / DPI
    fig = Figure(figsize=(w_px / DPI, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    ratios = [3.0, 1.5] + ([visual_in] if visual_in else [])
    # margins in inches, so the title never collides with the panels whatever the height
    grid = fig.add_gridspec(len(ratios), 2, height_ratios=ratios, hspace=0.55, wspace=0.22,
                            left=0.07, right=0.98, top=1 - 0.65 / height_in, bottom=0.45 / height_in)
    steps = int(h.step[-1]) if len(h.t) else 0
    fig.suptitle(f"{title or kind}   step {steps}", fontsize=12)

    evolution = kind == "evolution" or _has(h, "best_fitness")
    if evolution:
        _fitness_panel(fig.add_subplot(grid[0, :]), h)
    else:
        _loss_panel(fig.add_subplot(grid[0, 0]), h)
        _accuracy_panel(fig.add_subplot(grid[0, 1]), h)
    _peers_panel(fig.add_subplot(grid[1, :]), h, evolution)

    if visual_in:
        if "rollout" in visuals:
            _rollout_panel(fig.add_subplot(grid[2, :]), visuals["rollout"])
        else:
            _filters_panel(fig.add_subplot(grid[2, 0]), visuals.get("filters"))
            _samples_panel(fig.add_subplot(grid[2, 1]), visuals)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _visual_row_in(visuals: Mapping[str, Any]) -> float:
    if "rollout" in visuals:
        return ROLLOUT_IN
    return VISUALS_IN if ("filters" in visuals or "samples" in visuals) else 0.0


# ---- curves -----------------------------------------------------------------


def _has(h: HistoryArrays, name: str) -> bool:
    return any(alias in h.names for alias in WELL_KNOWN_METRICS[name])


def _series(h: HistoryArrays, name: str) -> np.ndarray | None:
    for alias in WELL_KNOWN_METRICS[name]:
        col = h.series(alias)
        if col is not None:
            return col
    return None


def _time_unit(h: HistoryArrays) -> tuple[float, str]:
    """Seconds, minutes or hours, whichever keeps the axis numbers readable for this span."""
    span = float(h.t[-1] - h.t[0]) if len(h.t) else 0.0
    if span < 120:
        return 1.0, "seconds"
    return (60.0, "minutes") if span < 3 * 3600 else (3600.0, "hours")


def _elapsed(h: HistoryArrays, t: np.ndarray) -> np.ndarray:
    """Elapsed time since the first point, in the unit ``_time_unit`` picks."""
    return (t - h.t[0]) / _time_unit(h)[0] if len(h.t) else t


def _waiting(ax) -> None:
    ax.text(0.5, 0.5, WAITING, transform=ax.transAxes, ha="center", va="center",
            fontsize=13, color="0.35")
    ax.set_xticks([])
    ax.set_yticks([])


def _plot_finite(ax, x: np.ndarray, y: np.ndarray | None, label: str, **kw) -> bool:
    if y is None:
        return False
    ok = np.isfinite(y)
    if not ok.any():
        return False
    marker = "o" if ok.sum() < 40 else None
    ax.plot(x[ok], y[ok], label=label, marker=marker, markersize=3, linewidth=1.4, **kw)
    return True


def _mark_events(ax, x: np.ndarray, label: str, color: str) -> None:
    """Small ticks along the bottom edge, one per event, so hundreds stay legible."""
    if x.size == 0:
        return
    x = x[-MAX_MARKS:]
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    ax.scatter(x, np.full(x.shape, 0.03), marker="|", s=60, color=color, transform=trans,
               label=f"{label} ({x.size})", zorder=3, clip_on=True)


def _loss_panel(ax, h: HistoryArrays) -> None:
    ax.set_title("training loss", fontsize=10)
    if not len(h.t):
        return _waiting(ax)
    x = _elapsed(h, h.t)
    if not _plot_finite(ax, x, _series(h, "loss"), "loss", color="tab:blue"):
        return _waiting(ax)
    _mark_events(ax, _elapsed(h, h.events("merge")), "merges", "tab:purple")
    ax.set_xlabel(_time_unit(h)[1], fontsize=8)
    ax.legend(fontsize=7, loc="upper right")
    ax.tick_params(labelsize=8)


def _accuracy_panel(ax, h: HistoryArrays) -> None:
    ax.set_title("accuracy", fontsize=10)
    if not len(h.t):
        return _waiting(ax)
    x = _elapsed(h, h.t)
    drew = _plot_finite(ax, x, _series(h, "train_accuracy"), "train", color="tab:orange")
    drew = _plot_finite(ax, x, _series(h, "test_accuracy"), "test", color="tab:green") or drew
    if not drew:
        return _waiting(ax)
    _mark_events(ax, _elapsed(h, h.events("merge")), "merges", "tab:purple")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel(_time_unit(h)[1], fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    ax.tick_params(labelsize=8)


def _fitness_panel(ax, h: HistoryArrays) -> None:
    ax.set_title("fitness per generation", fontsize=10)
    if not len(h.t):
        return _waiting(ax)
    x = h.step.astype(np.float64)
    # self-play islands: their "fitness" is a winning streak, relative to their own
    # opponents and on another scale; once measured, the fixed yardstick (the champion
    # against the baseline, -5..5) is the only curve drawn
    vs_baseline = h.series("score_vs_baseline")
    if vs_baseline is not None and np.isfinite(vs_baseline.astype(np.float64)).any():
        drew = _plot_finite(ax, x, vs_baseline, "champion vs baseline", color="tab:red")
    else:
        drew = _plot_finite(ax, x, _series(h, "best_fitness"), "best", color="tab:green")
        drew = _plot_finite(ax, x, _series(h, "mean_fitness"), "mean", color="tab:blue") or drew
    if not drew:
        return _waiting(ax)
    migrants = h.events("migrant")
    if migrants.size:
        _mark_events(ax, np.interp(migrants, h.t, x), "migrants", "tab:purple")
    ax.set_xlabel("generation", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    ax.tick_params(labelsize=8)


def _peers_panel(ax, h: HistoryArrays, evolution: bool) -> None:
    ax.set_title("peers alive", fontsize=10)
    if not len(h.t):
        return _waiting(ax)
    if evolution:
        x, unit = h.step.astype(np.float64), "generation"
        to_x = lambda t: np.interp(t, h.t, x)  # noqa: E731
    else:
        x, unit = _elapsed(h, h.t), _time_unit(h)[1]
        to_x = lambda t: _elapsed(h, t)  # noqa: E731
    ax.step(x, h.peers_alive, where="post", color="tab:gray", linewidth=1.4)
    ax.set_ylim(bottom=0, top=max(1.0, float(np.max(h.peers_alive))) * 1.25)
    ax.yaxis.get_major_locator().set_params(integer=True)
    _mark_events(ax, to_x(h.events("peer_joined")), "joined", _GOOD)
    _mark_events(ax, to_x(h.events("peer_dead")), "died", _BAD)
    if ax.collections:
        ax.legend(fontsize=7, loc="upper left", ncol=2)
    ax.set_xlabel(unit, fontsize=8)
    ax.tick_params(labelsize=8)


# ---- images -----------------------------------------------------------------


def _note(ax, title: str, text: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.35")
    ax.set_axis_off()


def _to_nhwc(arr: Any, limit: int) -> np.ndarray:
    """(n, c, h, w) or (n, h, w) numbers -> (n, h, w, 1 or 3) floats in [0, 1], each image scaled alone."""
    a = np.asarray(arr)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"numbers expected, got dtype {a.dtype}")
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[0] == 0 or min(a.shape[2:]) < 1 or max(a.shape[2:]) > 512:
        raise ValueError(f"shape (n, c, h, w) expected, got {a.shape}")
    a = a[:limit].astype(np.float64)
    if a.shape[1] != 3:
        a = a.mean(axis=1, keepdims=True)
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    lo = a.min(axis=(1, 2, 3), keepdims=True)
    hi = a.max(axis=(1, 2, 3), keepdims=True)
    a = (a - lo) / np.where(hi - lo > 0, hi - lo, 1.0)
    return a.transpose(0, 2, 3, 1)


def _tile(images: np.ndarray, cols: int, pad: int = 1) -> np.ndarray:
    """Lay (n, h, w, c) images out in a grid with white gutters."""
    n, hh, ww, c = images.shape
    rows = -(-n // cols)
    out = np.ones((rows * (hh + pad) + pad, cols * (ww + pad) + pad, c))
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = pad + r * (hh + pad), pad + q * (ww + pad)
        out[y:y + hh, x:x + ww] = images[i]
    return out


def _show(ax, mosaic: np.ndarray) -> None:
    if mosaic.shape[2] == 1:
        ax.imshow(mosaic[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _filters_panel(ax, filters: Any) -> None:
    title = "first-layer filters"
    if filters is None:
        return _note(ax, title, "no filters offered")
    try:
        imgs = _to_nhwc(filters, MAX_FILTERS)
    except ValueError as exc:
        return _note(ax, title, f"cannot draw: {exc}")
    ax.set_title(f"{title} ({imgs.shape[0]})", fontsize=10)
    _show(ax, _tile(imgs, cols=int(np.ceil(np.sqrt(imgs.shape[0])))))


def _samples_panel(ax, visuals: Mapping[str, Any]) -> None:
    title = "test images: predicted label"
    if visuals.get("samples") is None:
        return _note(ax, title, "no samples offered")
    try:
        imgs = _to_nhwc(visuals["samples"], MAX_SAMPLES)
        k = imgs.shape[0]
        preds = _labels(visuals.get("sample_preds"), k)
        truth = _labels(visuals.get("sample_labels"), k)
    except ValueError as exc:
        return _note(ax, title, f"cannot draw: {exc}")
    classes = [str(c)[:14] for c in (visuals.get("classes") or [])]
    cols = min(k, 8)
    pad = max(2, imgs.shape[1] // 2)  # room under each image for its label
    mosaic = _tile(imgs, cols=cols, pad=pad)
    _show(ax, mosaic)
    hh, ww = imgs.shape[1], imgs.shape[2]
    right = 0
    for i in range(k if preds is not None else 0):
        r, q = divmod(i, cols)
        p = int(preds[i])
        name = classes[p] if 0 <= p < len(classes) else str(p)
        color = "black" if truth is None else (_GOOD if int(truth[i]) == p else _BAD)
        right += truth is not None and int(truth[i]) == p
        ax.text(pad + q * (ww + pad) + ww / 2, pad + r * (hh + pad) + hh + pad * 0.1, name,
                ha="center", va="top", fontsize=6, color=color, clip_on=True)
    suffix = f" ({right}/{k} right)" if truth is not None and preds is not None else ""
    ax.set_title(title + suffix, fontsize=10)
    # leave the labels under the last row visible
    ax.set_ylim(mosaic.shape[0] + pad * 0.6, -0.5)


def _labels(arr: Any, k: int) -> np.ndarray | None:
    if arr is None:
        return None
    a = np.asarray(arr)
    if a.dtype.kind not in "iu" or a.ndim != 1 or a.shape[0] < k:
        raise ValueError(f"labels must be 1-d integers, one per sample; got {a.dtype} {a.shape}")
    return a[:k]


def _rollout_panel(ax, frames: Any) -> None:
    title = "rollout of the best policy"
    a = np.asarray(frames)
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3 or a.shape[0] == 0:
        return _note(ax, title, f"cannot draw: (t, h, w, 3) uint8 expected, got {a.dtype} {a.shape}")
    idx = np.unique(np.linspace(0, a.shape[0] - 1, min(MAX_FRAMES, a.shape[0])).round().astype(int))
    strip = _tile(a[idx].astype(np.float64) / 255.0, cols=len(idx), pad=4)
    ax.set_title(f"{title} (frames {', '.join(str(i) for i in idx)})", fontsize=10)
    _show(ax, strip)
