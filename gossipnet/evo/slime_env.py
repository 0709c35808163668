"""Slime volleyball as a gymnasium environment (one game; ``slime_match`` plays many).

The agent is the right slime; by default the left one is the original's baseline policy,
as in slimevolleygym's ``SlimeVolley-v0``. Observations are the 12 numbers the right slime
sees; actions are the original's three buttons (``MultiBinary(3)``), or one of its six
"atari" actions as an int. A step's reward is +1 when the left slime loses a life, -1 when
the right one does; the episode terminates when either has lost 5 and is truncated at
3,000 steps. ``info["otherObs"]`` is the left slime's view, and ``step(action,
other_action)`` overrides the left slime for self-play, as the original allows.

One difference, on purpose: the original's built-in baseline keeps its recurrent state
across ``reset()``; here each episode starts it from zero, so an episode depends only on
its seed and the actions.

``render()`` draws the court with numpy (``rgb_array``), in the original's night colours;
``rollout_frames`` draws a strip of one game for the status page.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from gossipnet.evo import slime_physics as sp
from gossipnet.evo.policy import Layout
from gossipnet.evo.slime_players import BaselinePlayers, GenomePlayers

# The original's night colours.
BACKGROUND = (11, 16, 19)
FENCE = (102, 56, 35)
GROUND = (116, 114, 117)
BALL = (217, 79, 0)
LEFT = (35, 93, 188)
RIGHT = (255, 236, 0)


class SlimeVolleyEnv(gym.Env):
    """One slime volleyball game, the right slime's point of view."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, render_mode: str | None = None, width: int = 600) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.width = int(width)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(12,), dtype=np.float64)
        self.action_space = gym.spaces.MultiBinary(3)
        self.game: sp.SlimeBatch | None = None
        self.baseline = BaselinePlayers(1)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        serve_seed = int(self.np_random.integers(0, 2**63 - 1))
        self.game = sp.SlimeBatch(sp.draw_serves(np.array([serve_seed])))
        self.baseline = BaselinePlayers(1)
        return self.game.obs[1, :, 0].copy(), self._info()

    def step(self, action, other_action=None):
        if self.game is None:
            raise RuntimeError("call reset() before step()")
        if other_action is None:
            left = self.baseline.act(self.game.obs[0])
        else:
            left = _buttons(other_action)
        reward, done = self.game.step(left, _buttons(action))
        s = self.game.s[:, 0]
        terminated = bool(s[sp.LLIFE] <= 0 or s[sp.RLIFE] <= 0)
        truncated = bool(done[0]) and not terminated
        return self.game.obs[1, :, 0].copy(), float(reward[0]), terminated, truncated, self._info()

    def _info(self) -> dict:
        s = self.game.s[:, 0]
        return {"ale.lives": int(s[sp.RLIFE]), "ale.otherLives": int(s[sp.LLIFE]),
                "otherObs": self.game.obs[0, :, 0].copy()}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self.game is None:
            return None
        return draw(self.game.s[:, 0], self.width)


ENV_ID = "gossipnet/SlimeVolley-v0"
if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="gossipnet.evo.slime_env:SlimeVolleyEnv")


def _buttons(action) -> np.ndarray:
    """Three buttons as a (3, 1) column, from buttons or an atari action index."""
    a = np.asarray(action)
    if a.shape == ():
        if not 0 <= int(a) < len(sp.ACTION_TABLE) or int(a) != a:
            raise ValueError(f"an action index must be 0..{len(sp.ACTION_TABLE) - 1}, got {action!r}")
        return sp.ACTION_TABLE[int(a)][:, None]
    if a.shape != (3,):
        raise ValueError(f"an action is 3 buttons (forward, backward, jump), got shape {a.shape}")
    return a.reshape(3, 1)


def draw(state: np.ndarray, width: int = 600) -> np.ndarray:
    """An ``(h, w, 3)`` uint8 picture of one game's state (a column of ``SlimeBatch.s``)."""
    height = int(round(width * 500 / 1200))
    scale = width / sp.REF_W
    img = np.empty((height, width, 3), np.uint8)
    img[:] = BACKGROUND
    px = (np.arange(width) + 0.5) / scale - sp.REF_W / 2  # world x of each pixel column
    py = (height - np.arange(height) - 0.5) / scale  # world y of each pixel row
    wx, wy = np.meshgrid(px, py)

    def disc(cx: float, cy: float, r: float, color, upper_half: bool = False) -> None:
        inside = (wx - cx) ** 2 + (wy - cy) ** 2 <= r * r
        if upper_half:
            inside &= wy >= cy
        img[inside] = color

    img[(np.abs(wx) <= sp.REF_WALL_WIDTH / 2) & (wy <= sp.REF_WALL_HEIGHT)] = FENCE
    disc(0.0, sp.REF_WALL_HEIGHT, sp.STUB_R, FENCE)
    bx, by = state[sp.BX], state[sp.BY]
    for x, y, color, direction in ((state[sp.LX], state[sp.LY], LEFT, -1),
                                   (state[sp.RX], state[sp.RY], RIGHT, 1)):
        disc(x, y, sp.AGENT_R, color, upper_half=True)
        angle = np.pi * (120 if direction == 1 else 60) / 180  # the eye looks towards the net
        ex, ey = x + 0.6 * sp.AGENT_R * np.cos(angle), y + 0.6 * sp.AGENT_R * np.sin(angle)
        d = max(np.hypot(bx - ex, by - ey), 1e-9)
        disc(ex, ey, 0.3 * sp.AGENT_R, (255, 255, 255))
        disc(ex + (bx - ex) / d * 0.15 * sp.AGENT_R, ey + (by - ey) / d * 0.15 * sp.AGENT_R,
             0.1 * sp.AGENT_R, (0, 0, 0))
    disc(bx, by, sp.BALL_R, BALL)
    img[wy <= sp.REF_U] = GROUND
    for side, lives in ((-1, state[sp.LLIFE]), (1, state[sp.RLIFE])):  # lives left as coins
        for i in range(1, int(lives)):
            disc(side * (sp.REF_W / 2 + 0.5 - i * 2.0), sp.REF_H * 500 / 1200 - 1.5, 0.5, FENCE)
    return img


def rollout_frames(layout: Layout, genome: np.ndarray, seed: int = 2**31, frames: int = 8,
                   every: int = 15, width: int = 320) -> np.ndarray:
    """Frames of one game, ``genome`` (right) against the baseline: ``(t, h, w, 3)`` uint8."""
    games = sp.SlimeBatch(sp.draw_serves(np.array([seed])))
    left, right = BaselinePlayers(1), GenomePlayers(layout, np.asarray(genome, np.float32)[None],
                                                    np.zeros(1, np.int64))
    shots = [draw(games.s[:, 0], width)]
    for t in range(1, sp.MAX_STEPS + 1):
        _, done = games.step(left.act(games.obs[0]), right.act(games.obs[1]))
        if t % every == 0 or done[0]:
            shots.append(draw(games.s[:, 0], width))
        if done[0]:
            break
    keep = np.unique(np.linspace(0, len(shots) - 1, min(frames, len(shots))).round().astype(int))
    return np.stack([shots[i] for i in keep])
