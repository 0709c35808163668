"""A bounded time series of a node's metrics and events, for the progress PNG.

A node runs for days; its history must not grow without bound, yet the page
should still show the whole run. So the most recent points stay at full
resolution and older ones are averaged into evenly sized buckets that double
in size whenever the older half fills: the last minutes stay sharp, the whole
run stays covered, and memory stays at ``max_points`` rows whatever the uptime.

The node appends from its event loop while the PNG is rendered in a worker
thread, so every access takes a lock and readers get copies (``to_arrays``).
``state_dict`` / ``load_state_dict`` use plain numeric numpy arrays (strings
as UTF-8 bytes plus offsets), so a checkpoint can hold them in safetensors and a
restarted node keeps its curves.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from gossipnet.errors import UserError

# Event kinds the node records; the plots mark the first two on the curves.
EVENT_KINDS = ("merge", "migrant", "peer_joined", "peer_dead", "restart", "rejected")

_MAX_NAME = 64  # a metric or event kind name longer than this is truncated
_MAX_DETAIL = 200  # an event's detail (often a peer id) longer than this is truncated


@dataclass(frozen=True)
class HistoryArrays:
    """A consistent copy of the history, safe to read from any thread."""

    t: np.ndarray  # (n,) float64, seconds (the node's clock)
    step: np.ndarray  # (n,) int64, the learner's step at that point
    peers_alive: np.ndarray  # (n,) float64 (a mean once points are merged)
    names: tuple[str, ...]  # metric names, one per column of ``values``
    values: np.ndarray  # (n, len(names)) float64, NaN where a metric was absent
    event_t: np.ndarray  # (e,) float64
    event_kind: tuple[str, ...]
    event_detail: tuple[str, ...]

    def series(self, name: str) -> np.ndarray | None:
        """The column for ``name``, or None if that metric was never recorded."""
        if name not in self.names:
            return None
        return self.values[:, self.names.index(name)]

    def events(self, kind: str) -> np.ndarray:
        """Times of the events of one kind."""
        return np.array([t for t, k in zip(self.event_t, self.event_kind) if k == kind], dtype=np.float64)


class MetricsHistory:
    """Metric points and events, bounded in memory, with a version that changes on every append.

    The newest ``max_points // 2`` points are kept as recorded. Older points are
    averaged in buckets of ``stride`` consecutive points; when the older half
    fills up, neighbouring buckets merge and the stride doubles, so the past stays
    evenly covered at a resolution that coarsens with the length of the run.
    """

    def __init__(self, max_points: int = 2048, max_events: int = 1024, max_metrics: int = 32) -> None:
        if max_points < 16 or max_events < 1 or max_metrics < 1:
            raise ValueError("MetricsHistory needs max_points >= 16, max_events >= 1, max_metrics >= 1")
        self.max_points = max_points
        self.max_events = max_events
        self.max_metrics = max_metrics
        self._recent_cap = max_points // 2
        self._older_cap = (max_points - self._recent_cap) & ~1  # even, so buckets merge in pairs
        self._lock = threading.Lock()
        self._names: list[str] = []
        # a point is [t, step, peers_alive, weight, values-per-name]; weight = original points averaged
        self._recent: deque[list] = deque()
        self._older: list[list] = []
        self._bucket: list | None = None  # older points being averaged into the next bucket
        self._stride = 1
        self._events: deque[tuple[float, str, str]] = deque(maxlen=max_events)
        self._version = 0

    @property
    def version(self) -> int:
        """Changes on every append or load; the PNG cache compares it."""
        return self._version

    def __len__(self) -> int:
        return len(self._older) + (self._bucket is not None) + len(self._recent)

    def record(self, now: float, step: int, values: dict[str, float], peers_alive: int) -> None:
        """Append one point; non-finite or non-numeric values are stored as missing.

        Metrics beyond ``max_metrics`` distinct names are dropped: the history is
        for a handful of curves, not an arbitrary key-value store.
        """
        with self._lock:
            clean = {str(k)[:_MAX_NAME]: _as_float(v) for k, v in values.items()}
            for name in clean:
                if name not in self._names and len(self._names) < self.max_metrics:
                    self._names.append(name)
                    for point in self._points():
                        point[4].append(math.nan)
            row = [clean.get(name, math.nan) for name in self._names]
            self._recent.append([float(now), int(step), float(peers_alive), 1, row])
            while len(self._recent) > self._recent_cap:
                self._age(self._recent.popleft())
            self._version += 1

    def event(self, now: float, kind: str, detail: str = "") -> None:
        """Note something that happened (a merge, a migrant, a peer joining or dying...)."""
        with self._lock:
            self._events.append((float(now), str(kind)[:_MAX_NAME], str(detail)[:_MAX_DETAIL]))
            self._version += 1

    def _points(self) -> list[list]:
        return self._older + ([self._bucket] if self._bucket is not None else []) + list(self._recent)

    def _age(self, point: list) -> None:
        """Move a point out of the recent window into the averaged past."""
        self._bucket = point if self._bucket is None else _merge(self._bucket, point)
        if self._bucket[3] >= self._stride:
            self._older.append(self._bucket)
            self._bucket = None
            if len(self._older) >= self._older_cap:
                self._older = [_merge(a, b) for a, b in zip(self._older[0::2], self._older[1::2])]
                self._stride *= 2

    def to_arrays(self) -> HistoryArrays:
        """A copy of everything, for plotting off the event loop."""
        with self._lock:
            points = self._points()
            events = list(self._events)
            return HistoryArrays(
                t=np.array([p[0] for p in points], dtype=np.float64),
                step=np.array([p[1] for p in points], dtype=np.int64),
                peers_alive=np.array([p[2] for p in points], dtype=np.float64),
                names=tuple(self._names),
                values=np.array([p[4] for p in points], dtype=np.float64).reshape(len(points), len(self._names)),
                event_t=np.array([e[0] for e in events], dtype=np.float64),
                event_kind=tuple(e[1] for e in events),
                event_detail=tuple(e[2] for e in events),
            )

    def state_dict(self) -> dict[str, np.ndarray]:
        """Named numeric arrays (no pickle, no object dtype) for a safetensors checkpoint."""
        with self._lock:
            points = self._points()
            n, m = len(points), len(self._names)
            events = list(self._events)
            names_data, names_off = _pack_strings(self._names)
            kind_data, kind_off = _pack_strings([e[1] for e in events])
            detail_data, detail_off = _pack_strings([e[2] for e in events])
            return {
                "t": np.array([p[0] for p in points], dtype=np.float64),
                "step": np.array([p[1] for p in points], dtype=np.int64),
                "peers_alive": np.array([p[2] for p in points], dtype=np.float64),
                "weight": np.array([p[3] for p in points], dtype=np.int64),
                "values": np.array([p[4] for p in points], dtype=np.float64).reshape(n, m),
                "names_data": names_data,
                "names_offsets": names_off,
                "event_t": np.array([e[0] for e in events], dtype=np.float64),
                "event_kind_data": kind_data,
                "event_kind_offsets": kind_off,
                "event_detail_data": detail_data,
                "event_detail_offsets": detail_off,
            }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore from ``state_dict()``; raise ``UserError`` naming the bad entry if it does not fit.

        The points are replayed through the same ageing as live ones, so a
        history saved with a larger ``max_points`` is folded down to fit.
        """
        try:
            t = _column(state, "t", np.float64)
            n = t.shape[0]
            step = _column(state, "step", np.int64, n)
            peers = _column(state, "peers_alive", np.float64, n)
            weight = _column(state, "weight", np.int64, n)
            names = _unpack_strings(state, "names")
            values = np.asarray(state["values"])
            if values.dtype != np.float64 or values.shape != (n, len(names)):
                raise ValueError(f"'values' must be float64 of shape {(n, len(names))}, "
                                 f"got {values.dtype} {values.shape}")
            event_t = _column(state, "event_t", np.float64)
            kinds = _unpack_strings(state, "event_kind")
            details = _unpack_strings(state, "event_detail")
            if not (len(kinds) == len(details) == event_t.shape[0]):
                raise ValueError("event arrays differ in length")
            if len(names) > self.max_metrics or (weight < 1).any():
                raise ValueError("more metrics than this history holds, or a weight below 1")
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            raise UserError(
                f"the checkpoint's metrics history is unreadable ({exc}); "
                "delete the checkpoint or start without it to begin a fresh history"
            ) from exc
        with self._lock:
            self._names = list(names)
            self._recent, self._older, self._bucket = deque(), [], None
            # the stride that the saved buckets were made with, so new buckets match them
            self._stride = int(weight.max()) if n else 1
            rows = values.tolist()
            for i in range(n):
                point = [float(t[i]), int(step[i]), float(peers[i]), int(weight[i]), rows[i]]
                if weight[i] > 1 or i < n - self._recent_cap:
                    self._older.append(point)
                    if len(self._older) >= self._older_cap:
                        self._older = [_merge(a, b) for a, b in zip(self._older[0::2], self._older[1::2])]
                        self._stride *= 2
                else:
                    self._recent.append(point)
            self._events = deque(zip(event_t.tolist(), kinds, details), maxlen=self.max_events)
            self._version += 1


def _merge(a: list, b: list) -> list:
    """One point averaging two consecutive ones (weighted by how many originals each holds)."""
    wa, wb = a[3], b[3]
    w = wa + wb
    return [(a[0] * wa + b[0] * wb) / w, b[1], (a[2] * wa + b[2] * wb) / w, w,
            [_mean2(x, wa, y, wb) for x, y in zip(a[4], b[4])]]


def _as_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return math.nan
    f = float(value)
    return f if math.isfinite(f) else math.nan


def _mean2(a: float, wa: int, b: float, wb: int) -> float:
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return (a * wa + b * wb) / (wa + wb)


def _pack_strings(items: list[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [s.encode("utf-8") for s in items]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in encoded]) if encoded else []
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


def _unpack_strings(state: dict[str, np.ndarray], prefix: str) -> list[str]:
    data = np.asarray(state[f"{prefix}_data"])
    offsets = np.asarray(state[f"{prefix}_offsets"])
    if data.dtype != np.uint8 or data.ndim != 1 or offsets.dtype != np.int64 or offsets.ndim != 1:
        raise ValueError(f"'{prefix}_data' must be 1-d uint8 and '{prefix}_offsets' 1-d int64")
    if offsets.size == 0 or offsets[0] != 0 or offsets[-1] != data.size or (np.diff(offsets) < 0).any():
        raise ValueError(f"'{prefix}_offsets' do not index '{prefix}_data'")
    raw = data.tobytes()
    return [raw[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]


def _column(state: dict[str, np.ndarray], key: str, dtype: type, n: int | None = None) -> np.ndarray:
    arr = np.asarray(state[key])
    if arr.dtype != dtype or arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        want = f"1-d {np.dtype(dtype)}" + (f" of length {n}" if n is not None else "")
        raise ValueError(f"'{key}' must be {want}, got {arr.dtype} {arr.shape}")
    return arr
