"""Slime volleyball physics for a batch of games in lockstep (numpy, no gym, no drawing).

Written from the rules and constants of slimevolleygym (David Ha, 2020, Apache-2.0;
itself a port of otoro.net's 2015 Neural Slime Volleyball): two slimes, a ball and a
net; 30 steps per second; a point is scored when the ball touches the ground; 5 lives.
We keep our own engine rather than depend on the package because that needs the old
``gym`` (broken on numpy 2) and an undeclared ``cv2``, and because self-play needs
hundreds of thousands of games: here one numpy operation advances every game of a batch.

Faithfulness is bit-for-bit where it can be: every expression keeps the original's
order of float64 operations, the ball's "nudge out of a collision" loop runs as a masked
loop, and a scoring step leaves the observations as they were (the original returns
before updating them). ``scripts/record_slime_golden.py`` records the original's
trajectories and ``tests/test_slime_env.py`` replays them here.

A game's serves (the ball's random starting velocity, drawn at reset and after every
point) come from a table given at reset, so a game is a pure function of its serve table
and the actions: the batch it shares does not change it.
"""

from __future__ import annotations

import numpy as np

# --- the original's constants, spelled as it spells them (float expressions included) ---
REF_W = 24 * 2
REF_H = REF_W
REF_U = 1.5  # ground height
REF_WALL_WIDTH = 1.0
REF_WALL_HEIGHT = 3.5
PLAYER_SPEED_X = 10 * 1.75
PLAYER_SPEED_Y = 10 * 1.35
MAX_BALL_SPEED = 15 * 1.5
TIMESTEP = 1 / 30.0
NUDGE = 0.1
FRICTION = 1.0
INIT_DELAY_FRAMES = 30
GRAVITY = -9.8 * 2 * 1.5
MAXLIVES = 5
MAX_STEPS = 3000  # the gym wrapper's t_limit
AGENT_R = 1.5
BALL_R = 0.5
STUB_R = REF_WALL_WIDTH / 2  # the round cap on top of the net
OBS_SCALE = 10.0
SERVE_VX = (-20.0, 20.0)
SERVE_VY = (10.0, 25.0)
# Serves one game can need: one at reset, one after each of at most 2 * MAXLIVES - 1 points.
MAX_SERVES = 2 * MAXLIVES

# The original's six "atari" actions as (forward, backward, jump) buttons.
ACTION_TABLE = np.array(
    [[0, 0, 0], [1, 0, 0], [1, 0, 1], [0, 0, 1], [0, 1, 1], [0, 1, 0]], dtype=np.int8
)

# Rows of the state array. Side 0 is the left slime (dir -1), side 1 the right (dir +1).
(BX, BY, BVX, BVY, BPX, BPY,
 LX, LY, LVX, LVY, LDVX, LDVY,
 RX, RY, RVX, RVY, RDVX, RDVY,
 LLIFE, RLIFE, DELAY, SERVES, T) = range(23)
N_ROWS = 23
_AGENT_ROWS = ((LX, LY, LVX, LVY, LDVX, LDVY, -1.0), (RX, RY, RVX, RVY, RDVX, RDVY, 1.0))
# Observation rows per side (own x y vx vy, ball x y vx vy, opponent x y vx vy) and the
# sign each is multiplied by: the original's ``x * dir`` and ``opponent.x * -dir``.
_OBS_ROWS = (np.array([LX, LY, LVX, LVY, BX, BY, BVX, BVY, RX, RY, RVX, RVY]),
             np.array([RX, RY, RVX, RVY, BX, BY, BVX, BVY, LX, LY, LVX, LVY]))
_OBS_SIGN = (np.array([-1.0, 1, -1, 1, -1, 1, -1, 1, 1, 1, 1, 1]),
             np.array([1.0, 1, 1, 1, 1, 1, 1, 1, -1, 1, -1, 1]))


def draw_serves(seeds: np.ndarray) -> np.ndarray:
    """``(B, MAX_SERVES, 2)`` serve velocities, one independent stream per seed."""
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
    out = np.empty((seeds.size, MAX_SERVES, 2))
    for i, seed in enumerate(seeds):
        u = np.random.default_rng(int(seed)).random((MAX_SERVES, 2))
        out[i, :, 0] = SERVE_VX[0] + (SERVE_VX[1] - SERVE_VX[0]) * u[:, 0]
        out[i, :, 1] = SERVE_VY[0] + (SERVE_VY[1] - SERVE_VY[0]) * u[:, 1]
    return out


class SlimeBatch:
    """``B`` games in lockstep. State is one ``(N_ROWS, B)`` float64 array, so dropping
    finished games (``keep``) is a single gather."""

    def __init__(self, serves: np.ndarray) -> None:
        serves = np.asarray(serves, dtype=np.float64)
        if serves.ndim != 3 or serves.shape[2] != 2 or serves.shape[1] < 1:
            raise ValueError(f"serves must have shape (B, S, 2), got {serves.shape}")
        self.serves = serves
        b = serves.shape[0]
        s = self.s = np.zeros((N_ROWS, b))
        s[BY] = s[BPY] = REF_W / 4
        s[BVX], s[BVY] = serves[:, 0, 0], serves[:, 0, 1]
        s[SERVES] = 1
        s[LX], s[RX] = -REF_W / 4, REF_W / 4
        s[LY] = s[RY] = 1.5
        s[LLIFE] = s[RLIFE] = MAXLIVES
        s[DELAY] = INIT_DELAY_FRAMES
        self.obs = np.zeros((2, 12, b))  # [side, feature, game], as each slime sees the game
        self._update_obs()

    @property
    def size(self) -> int:
        return self.s.shape[1]

    def keep(self, rows: np.ndarray) -> None:
        """Drop every game but ``rows`` (finished games leave the batch)."""
        self.s = self.s[:, rows]
        self.obs = self.obs[:, :, rows]
        self.serves = self.serves[rows]

    def step(self, buttons_left: np.ndarray, buttons_right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance every game one step. Buttons are ``(3, B)`` (forward, backward, jump),
        pressed when > 0. Returns ``(reward, done)``: reward +1 when the right slime wins
        the point, -1 when the left one does (the original's sign)."""
        s = self.s
        for (x, y, vx, vy, dvx, dvy, direction), buttons in zip(
                _AGENT_ROWS, (buttons_left, buttons_right)):
            pressed = np.asarray(buttons) > 0
            fwd, back, jump = pressed[0], pressed[1], pressed[2]
            s[dvx] = np.where(fwd & ~back, -PLAYER_SPEED_X, np.where(back & ~fwd, PLAYER_SPEED_X, 0.0))
            s[dvy] = np.where(jump, PLAYER_SPEED_Y, 0.0)
            self._agent_update(x, y, vx, vy, dvx, dvy, direction)

        moving = s[DELAY] == 0
        s[DELAY] = np.where(moving, 0.0, s[DELAY] - 1)
        if moving.any():
            self._ball_move(moving)

        for x, y, vx, vy in ((LX, LY, LVX, LVY), (RX, RY, RVX, RVY)):
            self._bounce(s[x], s[y], s[vx], s[vy], AGENT_R)
        self._bounce_stub()

        reward = -self._check_edges()
        point = reward != 0
        if point.any():
            rows = np.flatnonzero(point)
            s[LLIFE, rows] -= reward[rows] > 0
            s[RLIFE, rows] -= reward[rows] < 0
            k = s[SERVES, rows].astype(np.int64)
            k = np.minimum(k, self.serves.shape[1] - 1)  # a table too short repeats its last serve
            s[BX, rows], s[BY, rows] = 0.0, REF_W / 4
            s[BPX, rows], s[BPY, rows] = 0.0, REF_W / 4
            s[BVX, rows] = self.serves[rows, k, 0]
            s[BVY, rows] = self.serves[rows, k, 1]
            s[SERVES, rows] += 1
            s[DELAY, rows] = INIT_DELAY_FRAMES
        if not point.any():
            self._update_obs()
        elif not point.all():
            self._update_obs(np.flatnonzero(~point))
        s[T] += 1
        done = (s[T] >= MAX_STEPS) | (s[LLIFE] <= 0) | (s[RLIFE] <= 0)
        return reward, done

    # --- the original's update rules, vectorised ---------------------------

    def _agent_update(self, x: int, y: int, vx: int, vy: int, dvx: int, dvy: int,
                      direction: float) -> None:
        s = self.s
        new_vy = np.where(s[y] <= REF_U + NUDGE * TIMESTEP, s[dvy], s[vy] + GRAVITY * TIMESTEP)
        np.multiply(s[dvx], direction, out=s[vx])
        s[x] += s[vx] * TIMESTEP
        s[y] += new_vy * TIMESTEP
        landed = s[y] <= REF_U
        np.maximum(s[y], REF_U, out=s[y])  # == where(landed, REF_U, y)
        s[vy] = np.where(landed, 0.0, new_vy)
        # stay in one's own half: x * dir within [net + r, wall - r], exactly as the original's
        # two "if"s (negating x is exact, so the clip is the same comparison mirrored)
        lo, hi = REF_WALL_WIDTH / 2 + AGENT_R, REF_W / 2 - AGENT_R
        if direction > 0:
            np.clip(s[x], lo, hi, out=s[x])
            stopped = (s[x] <= lo) | (s[x] >= hi)
        else:
            np.clip(s[x], -hi, -lo, out=s[x])
            stopped = (s[x] >= -lo) | (s[x] <= -hi)
        s[vx, stopped] = 0.0

    def _ball_move(self, moving: np.ndarray) -> None:
        """Gravity, the speed limit, then move (``moving``: games whose serve delay is over)."""
        s = self.s
        if moving.all():
            cols = slice(None)
        else:
            cols = np.flatnonzero(moving)
        vx, vy = s[BVX, cols], s[BVY, cols] + GRAVITY * TIMESTEP  # applyAcceleration(0, GRAVITY)
        mag2 = vx * vx + vy * vy
        fast = mag2 > (MAX_BALL_SPEED * MAX_BALL_SPEED)
        if fast.any():
            mag = np.sqrt(mag2[fast])
            vx[fast] = vx[fast] / mag * MAX_BALL_SPEED
            vy[fast] = vy[fast] / mag * MAX_BALL_SPEED
        s[BVX, cols], s[BVY, cols] = vx, vy
        s[BPX, cols], s[BPY, cols] = s[BX, cols], s[BY, cols]
        s[BX, cols] += vx * TIMESTEP
        s[BY, cols] += vy * TIMESTEP

    def _bounce(self, px: np.ndarray, py: np.ndarray, pvx: np.ndarray, pvy: np.ndarray,
                radius: float) -> None:
        """Ball against a circle (a slime, or the net's cap): push the ball out along the
        line of centres in NUDGE steps, then reflect the relative velocity."""
        s = self.s
        r2 = (BALL_R + radius) * (BALL_R + radius)
        dx, dy = px - s[BX], py - s[BY]
        hit = np.flatnonzero(r2 > dx * dx + dy * dy)
        if hit.size == 0:
            return
        px, py, pvx, pvy = px[hit], py[hit], pvx[hit], pvy[hit]
        bx, by = s[BX, hit], s[BY, hit]
        abx, aby = bx - px, by - py
        with np.errstate(divide="ignore", invalid="ignore"):
            abd = np.sqrt(abx * abx + aby * aby)
            nx, ny = abx / abd, aby / abd
        stepx, stepy = nx * NUDGE, ny * NUDGE
        inside = np.ones(hit.size, dtype=bool)
        for _ in range(10_000):  # the original loops until out; a guard against NaN
            ddx, ddy = px - bx, py - by
            inside = r2 > ddx * ddx + ddy * ddy
            if not inside.any():
                break
            bx = np.where(inside, bx + stepx, bx)
            by = np.where(inside, by + stepy, by)
        ux, uy = s[BVX, hit] - pvx, s[BVY, hit] - pvy
        un = ux * nx + uy * ny
        ux = ux - nx * (un * 2.0)
        uy = uy - ny * (un * 2.0)
        s[BX, hit], s[BY, hit] = bx, by
        s[BVX, hit], s[BVY, hit] = ux + pvx, uy + pvy

    def _bounce_stub(self) -> None:
        """The net's round cap: a fixed circle, so test distance before building arrays."""
        s = self.s
        r = BALL_R + STUB_R
        dx, dy = 0.0 - s[BX], REF_WALL_HEIGHT - s[BY]
        if (r * r > dx * dx + dy * dy).any():
            zero = np.zeros(self.size)
            self._bounce(zero, np.full(self.size, REF_WALL_HEIGHT), zero, zero, STUB_R)

    def _check_edges(self) -> np.ndarray:
        """Walls, ceiling, net; returns -1/+1 where the ball touched the left/right ground.
        Each rule runs only if some game needs it: most steps, no ball is near anything."""
        s = self.s
        x, y, prev_x = s[BX], s[BY], s[BPX]
        result = np.zeros(self.size, dtype=np.int64)
        left = x <= (BALL_R - REF_W / 2)
        if left.any():
            s[BVX, left] *= -FRICTION
            x[left] = BALL_R - REF_W / 2 + NUDGE * TIMESTEP
        right = x >= (REF_W / 2 - BALL_R)
        if right.any():
            s[BVX, right] *= -FRICTION
            x[right] = REF_W / 2 - BALL_R - NUDGE * TIMESTEP
        ground = y <= (BALL_R + REF_U)
        if ground.any():
            s[BVY, ground] *= -FRICTION
            y[ground] = BALL_R + REF_U + NUDGE * TIMESTEP
            result[ground] = np.where(x[ground] <= 0, -1, 1)
        air = ~ground
        ceiling = air & (y >= (REF_H - BALL_R))
        if ceiling.any():
            s[BVY, ceiling] *= -FRICTION
            y[ceiling] = REF_H - BALL_R - NUDGE * TIMESTEP
        edge = REF_WALL_WIDTH / 2 + BALL_R
        low = air & (y <= REF_WALL_HEIGHT)
        if low.any():
            net_r = low & (x <= edge) & (prev_x > edge)
            s[BVX, net_r] *= -FRICTION
            x[net_r] = edge + NUDGE * TIMESTEP
            net_l = low & (x >= (-REF_WALL_WIDTH / 2 - BALL_R)) & (prev_x < (-REF_WALL_WIDTH / 2 - BALL_R))
            s[BVX, net_l] *= -FRICTION
            x[net_l] = -REF_WALL_WIDTH / 2 - BALL_R - NUDGE * TIMESTEP
        return result

    def _update_obs(self, rows: np.ndarray | None = None) -> None:
        """What each slime sees, from its own side (x mirrored for the left one), / 10.
        ``obs`` is feature-major, ``(side, 12, B)``, so this is one gather per side."""
        for side in (0, 1):
            feats = np.multiply(self.s[_OBS_ROWS[side]], _OBS_SIGN[side][:, None])
            feats /= OBS_SCALE
            if rows is None:
                self.obs[side] = feats
            else:
                self.obs[side][:, rows] = feats[:, rows]
