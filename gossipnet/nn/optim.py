"""SGD with momentum and Adam, updating a net's parameters in place, with resumable state.

Both apply L2 decay by adding ``weight_decay * w`` to the gradient (classic L2, as
PyTorch's ``weight_decay``), to weights only: biases are not decayed. Their state dicts
hold float32 moment arrays under ``<kind>.<moment>.<param>`` plus a step counter, so a
checkpoint restores the exact update a run would have made.
"""

from __future__ import annotations

import math

import numpy as np

from gossipnet.errors import UserError


class Optimizer:
    kind = "optimizer"
    _moments: tuple[str, ...] = ()

    def __init__(self, params: dict[str, np.ndarray], lr: float, weight_decay: float):
        if not (weight_decay >= 0 and math.isfinite(weight_decay)):
            raise UserError(f"weight decay must be >= 0, got {weight_decay!r}")
        self.params = params
        self.lr = lr
        self.weight_decay = float(weight_decay)
        self.t = 0
        self.state = {m: {k: np.zeros_like(v) for k, v in params.items()} for m in self._moments}
        self._scratch: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        """Checked on every change, not only at construction: a schedule sets the rate
        before each step, and a rate of 0 or below would train nothing or climb the loss
        without a word, on one core as on several (whose workers get it from here)."""
        if not (value > 0 and math.isfinite(value)):
            raise UserError(f"learning rate must be a positive number, got {value!r}")
        self._lr = float(value)

    def _tmp(self, name: str, like: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Two scratch arrays shaped like ``like``, kept per parameter: an update then
        allocates nothing (on a 400k-parameter net, Adam's temporaries cost a third of
        its time), with the same arithmetic in the same order as the plain expressions."""
        pair = self._scratch.get(name)
        if pair is None or pair[0].shape != like.shape or pair[0].dtype != like.dtype:
            pair = self._scratch[name] = (np.empty_like(like), np.empty_like(like))
        return pair

    def hyperparams(self) -> dict:
        """Everything but the parameters and state: ``from_hyperparams`` builds the same
        update elsewhere (a data-parallel worker updating its slice of the parameters)."""
        return {"kind": self.kind, "lr": self.lr, "weight_decay": self.weight_decay}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """One update of every parameter from ``grads`` (same names as the parameters)."""
        self.t += 1
        for name, p in self.params.items():
            self.update(p, grads[name], {m: self.state[m][name] for m in self._moments},
                        decays(name), self._tmp(name, p))

    def update(self, p: np.ndarray, g: np.ndarray, moments: dict[str, np.ndarray], decay: bool,
               tmp: tuple[np.ndarray, np.ndarray]) -> None:
        """Update ``p`` in place at step ``self.t``: elementwise, so any slice of a
        parameter, with the same slices of its gradient, moments and two scratch arrays,
        gets exactly the values the whole parameter would. ``decay``: apply weight decay."""
        raise NotImplementedError

    def _decayed(self, p: np.ndarray, g: np.ndarray, decay: bool) -> np.ndarray:
        if self.weight_decay and decay:
            return g + self.weight_decay * p
        return g

    def add_decay(self, p: np.ndarray, g: np.ndarray, tmp: np.ndarray) -> None:
        """``g += weight_decay * p`` in place, the values of ``_decayed``: for a caller that
        decays parts of a flat slice, then updates it whole with ``decay=False``."""
        if self.weight_decay:
            np.multiply(p, self.weight_decay, out=tmp)
            g += tmp

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {f"{self.kind}.{m}.{k}": v.copy() for m, d in self.state.items() for k, v in d.items()}
        out[f"{self.kind}.t"] = np.array(self.t, np.int64)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore moments and step; UserError if they belong to another optimizer or net."""
        want = set(self.state_dict())
        have = {k for k in state if k.startswith(f"{self.kind}.")}
        if want != have:
            raise UserError(f"optimizer state does not fit this {self.kind} optimizer and net: "
                            f"missing {sorted(want - have)[:3]}, unexpected {sorted(have - want)[:3]}")
        for m, d in self.state.items():
            for k, v in d.items():
                s = np.asarray(state[f"{self.kind}.{m}.{k}"])
                if s.shape != v.shape or not np.all(np.isfinite(s)):
                    raise UserError(f"optimizer state {self.kind}.{m}.{k} has shape {s.shape} "
                                    f"(need {v.shape}) or non-finite values")
        for m, d in self.state.items():
            for k, v in d.items():
                v[...] = state[f"{self.kind}.{m}.{k}"]
        self.t = int(state[f"{self.kind}.t"])


class SGD(Optimizer):
    """SGD with (heavy-ball) momentum: v = mu v + g; w -= lr v (PyTorch's convention)."""

    kind = "sgd"
    _moments = ("velocity",)

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0):
        super().__init__(params, lr, weight_decay)
        if not 0 <= momentum < 1:
            raise UserError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)

    def hyperparams(self) -> dict:
        return {**super().hyperparams(), "momentum": self.momentum}

    def update(self, p, g, moments, decay, tmp):
        v = moments["velocity"]
        v *= self.momentum
        v += self._decayed(p, g, decay)
        np.multiply(v, self.lr, out=tmp[0])  # p -= lr * v
        p -= tmp[0]


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction; defaults are the paper's."""

    kind = "adam"
    _moments = ("m", "v")

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr, weight_decay)
        if not all(0 <= b < 1 for b in betas):
            raise UserError(f"Adam betas must be in [0, 1), got {betas!r}")
        self.b1, self.b2 = betas
        self.eps = eps

    def hyperparams(self) -> dict:
        return {**super().hyperparams(), "betas": (self.b1, self.b2), "eps": self.eps}

    def update(self, p, g, moments, decay, tmp):
        # fold both bias corrections into the step size (the paper's section 2 variant)
        a = self.lr * math.sqrt(1 - self.b2**self.t) / (1 - self.b1**self.t)
        g = self._decayed(p, g, decay)
        m, v = moments["m"], moments["v"]
        t1, t2 = tmp
        m *= self.b1
        np.multiply(g, 1 - self.b1, out=t1)  # m += (1 - b1) g
        m += t1
        v *= self.b2
        np.square(g, out=t1)  # v += (1 - b2) g^2
        t1 *= 1 - self.b2
        v += t1
        np.multiply(m, a, out=t1)  # p -= a m / (sqrt(v) + eps)
        np.sqrt(v, out=t2)
        t2 += self.eps
        t1 /= t2
        p -= t1


def decays(name: str) -> bool:
    """Whether weight decay applies to the parameter ``name``: weights yes, biases no."""
    return name.endswith(".weight")


def from_hyperparams(hyper: dict, params: dict[str, np.ndarray]) -> Optimizer:
    """An optimizer of ``hyper`` (``Optimizer.hyperparams()``) over ``params``."""
    kw = dict(hyper)
    cls = {"sgd": SGD, "adam": Adam}.get(kw.pop("kind"))
    if cls is None:
        raise UserError(f"unknown optimizer {hyper['kind']!r}; choose 'sgd' or 'adam'")
    return cls(params, **kw)


def make_optimizer(kind: str, params: dict[str, np.ndarray], lr: float,
                   weight_decay: float = 0.0, momentum: float = 0.9) -> Optimizer:
    """An optimizer by name ("sgd" or "adam")."""
    if kind == "sgd":
        return SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if kind == "adam":
        return Adam(params, lr=lr, weight_decay=weight_decay)
    raise UserError(f"unknown optimizer {kind!r}; choose 'sgd' or 'adam'")


def cosine_lr(base: float, step: int, total: int, warmup: int = 0) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to zero at ``total``
    (Loshchilov & Hutter, SGDR, without restarts). Past ``total`` it stays at 0.5% of base."""
    if step < warmup:
        return base * (step + 1) / warmup
    if total <= warmup:
        return base
    frac = min(1.0, (step - warmup) / (total - warmup))
    return base * max(0.005, 0.5 * (1 + math.cos(math.pi * frac)))
