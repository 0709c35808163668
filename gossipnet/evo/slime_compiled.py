"""Slime volleyball games between evolved policies, compiled (numba): one game at a time,
to the end, no numpy call per step.

Self-play needs hundreds of thousands of games. The numpy engine (``slime_physics``)
advances a batch in lockstep, but a step costs ~100 numpy calls whatever the batch
size, and a batch waits for its longest game (3,000 steps) while the average lasts ~600:
measured here, ~300 games/s at best. The same rules written as scalar code and compiled
play a game in well under a millisecond, so tournament selection can use every result
at once. Each expression keeps the numpy engine's (and so the original's) order of
float64 operations: ``tests/test_slime_golden.py`` replays the original's recorded
trajectories through ``step`` here too, and they match exactly.

The policies are the same 12-H-6 tanh MLPs (``slime_players.slime_layout``), computed in
float64 from the float32 genome, and the baseline RNN; a game is a pure function of the
two players and the serve table, so a claim measured by one node replays exactly on another.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from gossipnet.evo.policy import Layout
from gossipnet.evo.slime_players import baseline_weights
from gossipnet.evo.slime_physics import (
    ACTION_TABLE, AGENT_R, BALL_R, BPX, BPY, BVX, BVY, BX, BY, DELAY, FRICTION, GRAVITY,
    INIT_DELAY_FRAMES, LDVX, LDVY, LLIFE, LVX, LVY, LX, LY, MAX_BALL_SPEED, MAX_STEPS, MAXLIVES,
    N_ROWS, NUDGE, OBS_SCALE, PLAYER_SPEED_X, PLAYER_SPEED_Y, RDVX, RDVY, REF_H, REF_U, REF_W,
    REF_WALL_HEIGHT, REF_WALL_WIDTH, RLIFE, RVX, RVY, RX, RY, SERVES, STUB_R, T, TIMESTEP, draw_serves,
)

_ACTIONS = ACTION_TABLE.astype(np.int64)
_OBS_ROWS = np.array([[LX, LY, LVX, LVY, BX, BY, BVX, BVY, RX, RY, RVX, RVY],
                      [RX, RY, RVX, RVY, BX, BY, BVX, BVY, LX, LY, LVX, LVY]], np.int64)
_OBS_SIGN = np.array([[-1.0, 1, -1, 1, -1, 1, -1, 1, 1, 1, 1, 1],
                      [1.0, 1, 1, 1, 1, 1, 1, 1, -1, 1, -1, 1]])
_JIT = dict(cache=True, error_model="numpy")  # numpy's float semantics: x / 0 is inf, not an error


@njit(**_JIT)
def _update_obs(s, obs):
    for side in range(2):
        for k in range(12):
            obs[side, k] = (s[_OBS_ROWS[side, k]] * _OBS_SIGN[side, k]) / OBS_SCALE


@njit(**_JIT)
def reset(s, serves, obs):
    """A new game in state vector ``s`` (``N_ROWS``) with serve table ``serves`` ``(S, 2)``."""
    s[:] = 0.0
    s[BY] = REF_W / 4
    s[BPY] = REF_W / 4
    s[BVX] = serves[0, 0]
    s[BVY] = serves[0, 1]
    s[SERVES] = 1
    s[LX] = -REF_W / 4
    s[RX] = REF_W / 4
    s[LY] = 1.5
    s[RY] = 1.5
    s[LLIFE] = MAXLIVES
    s[RLIFE] = MAXLIVES
    s[DELAY] = INIT_DELAY_FRAMES
    _update_obs(s, obs)


@njit(**_JIT)
def _agent(s, x, y, vx, vy, dvx, dvy, direction, fwd, back, jump):
    if fwd and not back:
        s[dvx] = -PLAYER_SPEED_X
    elif back and not fwd:
        s[dvx] = PLAYER_SPEED_X
    else:
        s[dvx] = 0.0
    s[dvy] = PLAYER_SPEED_Y if jump else 0.0
    if s[y] <= REF_U + NUDGE * TIMESTEP:
        new_vy = s[dvy]
    else:
        new_vy = s[vy] + GRAVITY * TIMESTEP
    s[vx] = s[dvx] * direction
    s[x] += s[vx] * TIMESTEP
    s[y] += new_vy * TIMESTEP
    landed = s[y] <= REF_U
    s[y] = max(s[y], REF_U)
    s[vy] = 0.0 if landed else new_vy
    lo, hi = REF_WALL_WIDTH / 2 + AGENT_R, REF_W / 2 - AGENT_R
    if direction > 0:
        s[x] = min(max(s[x], lo), hi)
        stopped = s[x] <= lo or s[x] >= hi
    else:
        s[x] = min(max(s[x], -hi), -lo)
        stopped = s[x] >= -lo or s[x] <= -hi
    if stopped:
        s[vx] = 0.0


@njit(**_JIT)
def _bounce(s, px, py, pvx, pvy, radius):
    r2 = (BALL_R + radius) * (BALL_R + radius)
    dx, dy = px - s[BX], py - s[BY]
    if not r2 > dx * dx + dy * dy:
        return
    bx, by = s[BX], s[BY]
    abx, aby = bx - px, by - py
    abd = np.sqrt(abx * abx + aby * aby)
    nx, ny = abx / abd, aby / abd
    stepx, stepy = nx * NUDGE, ny * NUDGE
    for _ in range(10_000):  # the original loops until out; a guard against NaN
        ddx, ddy = px - bx, py - by
        if not r2 > ddx * ddx + ddy * ddy:
            break
        bx = bx + stepx
        by = by + stepy
    ux, uy = s[BVX] - pvx, s[BVY] - pvy
    un = ux * nx + uy * ny
    ux = ux - nx * (un * 2.0)
    uy = uy - ny * (un * 2.0)
    s[BX], s[BY] = bx, by
    s[BVX], s[BVY] = ux + pvx, uy + pvy


@njit(**_JIT)
def _check_edges(s):
    result = 0
    if s[BX] <= (BALL_R - REF_W / 2):
        s[BVX] *= -FRICTION
        s[BX] = BALL_R - REF_W / 2 + NUDGE * TIMESTEP
    if s[BX] >= (REF_W / 2 - BALL_R):
        s[BVX] *= -FRICTION
        s[BX] = REF_W / 2 - BALL_R - NUDGE * TIMESTEP
    ground = s[BY] <= (BALL_R + REF_U)
    if ground:
        s[BVY] *= -FRICTION
        s[BY] = BALL_R + REF_U + NUDGE * TIMESTEP
        result = -1 if s[BX] <= 0 else 1
    else:
        if s[BY] >= (REF_H - BALL_R):
            s[BVY] *= -FRICTION
            s[BY] = REF_H - BALL_R - NUDGE * TIMESTEP
        edge = REF_WALL_WIDTH / 2 + BALL_R
        if s[BY] <= REF_WALL_HEIGHT:
            if s[BX] <= edge and s[BPX] > edge:
                s[BVX] *= -FRICTION
                s[BX] = edge + NUDGE * TIMESTEP
            if s[BX] >= (-REF_WALL_WIDTH / 2 - BALL_R) and s[BPX] < (-REF_WALL_WIDTH / 2 - BALL_R):
                s[BVX] *= -FRICTION
                s[BX] = -REF_WALL_WIDTH / 2 - BALL_R - NUDGE * TIMESTEP
    return result


@njit(**_JIT)
def step(s, serves, obs, left, right):
    """One step of one game; ``left``/``right`` are (forward, backward, jump) buttons,
    pressed when > 0. Returns ``(reward, done)`` as ``SlimeBatch.step`` does."""
    _agent(s, LX, LY, LVX, LVY, LDVX, LDVY, -1.0, left[0] > 0, left[1] > 0, left[2] > 0)
    _agent(s, RX, RY, RVX, RVY, RDVX, RDVY, 1.0, right[0] > 0, right[1] > 0, right[2] > 0)
    if s[DELAY] == 0:
        vx, vy = s[BVX], s[BVY] + GRAVITY * TIMESTEP
        mag2 = vx * vx + vy * vy
        if mag2 > (MAX_BALL_SPEED * MAX_BALL_SPEED):
            mag = np.sqrt(mag2)
            vx = vx / mag * MAX_BALL_SPEED
            vy = vy / mag * MAX_BALL_SPEED
        s[BVX], s[BVY] = vx, vy
        s[BPX], s[BPY] = s[BX], s[BY]
        s[BX] += vx * TIMESTEP
        s[BY] += vy * TIMESTEP
    else:
        s[DELAY] = s[DELAY] - 1
    _bounce(s, s[LX], s[LY], s[LVX], s[LVY], AGENT_R)
    _bounce(s, s[RX], s[RY], s[RVX], s[RVY], AGENT_R)
    r = BALL_R + STUB_R
    dx, dy = 0.0 - s[BX], REF_WALL_HEIGHT - s[BY]
    if r * r > dx * dx + dy * dy:
        _bounce(s, 0.0, REF_WALL_HEIGHT, 0.0, 0.0, STUB_R)
    reward = -_check_edges(s)
    if reward != 0:
        if reward > 0:
            s[LLIFE] -= 1
        else:
            s[RLIFE] -= 1
        k = min(int(s[SERVES]), serves.shape[0] - 1)  # a table too short repeats its last serve
        s[BX], s[BY] = 0.0, REF_W / 4
        s[BPX], s[BPY] = 0.0, REF_W / 4
        s[BVX] = serves[k, 0]
        s[BVY] = serves[k, 1]
        s[SERVES] += 1
        s[DELAY] = INIT_DELAY_FRAMES
    else:
        _update_obs(s, obs)
    s[T] += 1
    done = s[T] >= MAX_STEPS or s[LLIFE] <= 0 or s[RLIFE] <= 0
    return reward, done


@njit(**_JIT)
def _act(obs, w1, b1, w2, b2, h):
    """Index of the largest output of a 12-H-6 tanh MLP (first on ties, like argmax);
    ``h`` is scratch space for the hidden layer."""
    hidden = w1.shape[1]
    for j in range(hidden):
        acc = 0.0
        for o in range(obs.shape[0]):
            acc += obs[o] * w1[o, j]
        h[j] = np.tanh(acc + b1[j])
    best, best_y = 0, -np.inf
    for a in range(w2.shape[1]):
        acc = 0.0
        for j in range(hidden):
            acc += h[j] * w2[j, a]
        y = acc + b2[a]
        if y > best_y:
            best, best_y = a, y
    return best


@njit(**_JIT)
def baseline_act(obs, out, weight, bias, x):
    """The baseline RNN's step: 8 game inputs and its own previous 7 outputs (``out``,
    updated in place), tanh; returns its buttons (output > 0.75). ``x`` is scratch."""
    for k in range(8):
        x[k] = obs[k]
    for k in range(7):
        x[8 + k] = out[k]
    for i in range(7):
        acc = 0.0
        for j in range(15):
            acc += weight[i, j] * x[j]
        out[i] = np.tanh(acc + bias[i])
    buttons = np.zeros(3, np.int64)
    for k in range(3):
        buttons[k] = 1 if out[k] > 0.75 else 0
    return buttons


@njit(**_JIT)
def _play(w1, b1, w2, b2, right, left, serves, score, length, base_w, base_b, baseline_left):
    """Games ``g``: genome ``right[g]`` against genome ``left[g]``, or, with
    ``baseline_left``, against the baseline (its recurrent state zero at each start)."""
    s = np.zeros(N_ROWS)
    obs = np.zeros((2, 12))
    h = np.zeros(w1.shape[2])
    base_out, base_x = np.zeros(7), np.zeros(15)
    for g in range(right.size):
        r, lf = right[g], left[g]
        reset(s, serves[g], obs)
        base_out[:] = 0.0
        total = 0.0
        while True:
            if baseline_left:
                a_left = baseline_act(obs[0], base_out, base_w, base_b, base_x)
            else:
                a_left = _ACTIONS[_act(obs[0], w1[lf], b1[lf], w2[lf], b2[lf], h)]
            a_right = _ACTIONS[_act(obs[1], w1[r], b1[r], w2[r], b2[r], h)]
            reward, done = step(s, serves[g], obs, a_left, a_right)
            total += reward
            if done:
                break
        score[g] = total
        length[g] = int(s[T])


def _run(layout: Layout, genomes: np.ndarray, right, left, seeds, baseline_left: bool):
    p = layout.unpack(np.asarray(genomes, dtype=np.float32))
    # contiguous int64 always: another array layout would compile another specialisation
    right, left = np.ascontiguousarray(right, np.int64), np.ascontiguousarray(left, np.int64)
    n = right.size
    score, length = np.zeros(n), np.zeros(n, np.int64)
    if n:
        base_w, base_b = baseline_weights()
        _play(*(np.ascontiguousarray(p[k], dtype=np.float64) for k in ("w1", "b1", "w2", "b2")),
              right, left, draw_serves(seeds), score, length, base_w, base_b, baseline_left)
    return score, length


def play_genome_games(layout: Layout, genomes: np.ndarray, right: np.ndarray, left: np.ndarray,
                      seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Game i: ``genomes[right[i]]`` (right) against ``genomes[left[i]]`` with serves from
    ``seeds[i]``. Returns the right player's scores and the games' lengths."""
    return _run(layout, genomes, right, left, seeds, False)


def play_against_baseline(layout: Layout, genomes: np.ndarray, who: np.ndarray,
                          seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Game i: ``genomes[who[i]]`` (right) against the baseline (left), serves from ``seeds[i]``."""
    return _run(layout, genomes, who, np.zeros_like(np.asarray(who, np.int64)), seeds, True)
