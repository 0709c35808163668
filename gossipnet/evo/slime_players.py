"""Who presses the buttons in a batch of slime volleyball games.

A player object acts for one side of every game in a batch at once: ``act(obs)`` takes
``(12, B)`` observations (as that slime sees the game, feature-major like the engine's
state) and returns ``(3, B)`` buttons;
``keep(rows)`` follows the batch when finished games leave it (recurrent state too).

- ``GenomePlayers``: evolved MLPs (``gossipnet.evo.policy``) choosing one of the six
  "atari" actions by argmax; game i is played by genome ``index[i]``.
- ``BaselinePlayers``: the original's fixed 120-parameter recurrent policy, the yardstick.
- ``RandomPlayers``: three fair coin flips per step, like ``MultiBinary(3).sample()``.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import numpy as np

from gossipnet.evo.policy import ActionSpace, Layout, act
from gossipnet.evo.slime_physics import ACTION_TABLE

OBS_DIM = 12
N_ACTIONS = len(ACTION_TABLE)
ACTION_TABLE_T = np.ascontiguousarray(ACTION_TABLE.T)
SLIME_ACTIONS = ActionSpace(discrete=True, dim=N_ACTIONS)


@functools.lru_cache(maxsize=1)
def baseline_weights() -> tuple[np.ndarray, np.ndarray]:
    """The baseline's ``(7, 15)`` weight and ``(7,)`` bias (slime_data/baseline_policy.json)."""
    text = resources.files("gossipnet.evo").joinpath("slime_data/baseline_policy.json").read_text()
    doc = json.loads(text)
    weight = np.asarray(doc["weight"], dtype=np.float64).reshape(doc["weight_shape"])
    return weight, np.asarray(doc["bias"], dtype=np.float64)


class BaselinePlayers:
    """The baseline RNN: 8 game inputs plus its own previous 7 outputs, tanh; a button is
    pressed when its output exceeds 0.75. The recurrent state starts at zero per game."""

    def __init__(self, size: int) -> None:
        self.weight = baseline_weights()[0]
        self.bias = baseline_weights()[1][:, None]
        self.out = np.zeros((7, size))

    def act(self, obs: np.ndarray) -> np.ndarray:
        x = np.concatenate([obs[:8], self.out], axis=0)
        self.out = np.tanh(self.weight @ x + self.bias)
        return (self.out[:3] > 0.75).astype(np.int8)

    def keep(self, rows: np.ndarray) -> None:
        self.out = self.out[:, rows]


class RandomPlayers:
    """Uniformly random buttons from the given generator."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.rng.integers(0, 2, size=(3, obs.shape[1]), dtype=np.int8)

    def keep(self, rows: np.ndarray) -> None:
        pass


def slime_layout(hidden: int) -> Layout:
    """An MLP from the 12 observations to the six actions (argmax)."""
    return Layout(obs_dim=OBS_DIM, hidden=hidden, act_dim=N_ACTIONS, discrete=True)


class GenomePlayers:
    """Evolved policies: game i is played by ``genomes[index[i]]``."""

    def __init__(self, layout: Layout, genomes: np.ndarray, index: np.ndarray) -> None:
        self.layout = layout
        params = layout.unpack(np.asarray(genomes, dtype=np.float32))
        # per-game weight views are gathered once per batch, not per step
        self.index = np.asarray(index, dtype=np.int64)
        self.params = params
        self._w1 = self._b1 = self._w2 = self._b2 = None
        self._gather()

    def _gather(self) -> None:
        # game-minor copies, (in, out, B): einsum then walks each game's weights in the
        # innermost loop, ~6x faster here than a stack of (1, 12) @ (12, H) matmuls
        p, i = self.params, self.index
        self._w1 = np.ascontiguousarray(p["w1"][i].transpose(1, 2, 0))
        self._w2 = np.ascontiguousarray(p["w2"][i].transpose(1, 2, 0))
        self._b1, self._b2 = np.ascontiguousarray(p["b1"][i].T), np.ascontiguousarray(p["b2"][i].T)

    def act(self, obs: np.ndarray) -> np.ndarray:
        x = obs.astype(np.float32)
        h = np.tanh(np.einsum("ob,ohb->hb", x, self._w1) + self._b1)
        y = np.einsum("hb,hab->ab", h, self._w2) + self._b2
        return ACTION_TABLE_T[:, np.argmax(y, axis=0)]

    def keep(self, rows: np.ndarray) -> None:
        self.index = self.index[rows]
        self._w1, self._w2 = self._w1[:, :, rows], self._w2[:, :, rows]
        self._b1, self._b2 = self._b1[:, rows], self._b2[:, rows]


def genome_actions(layout: Layout, genomes: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Action indices (0-5) of one genome per observation row (the gym env's helper)."""
    return act(layout, SLIME_ACTIONS, genomes, obs)
