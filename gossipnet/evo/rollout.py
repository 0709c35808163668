"""Episode rollouts: seeded, reproducible, and spread over a process pool.

Every episode is fully determined by (genome, episode seed): the environment is
reset with that seed and the policy is deterministic. So the result does not
depend on how many workers share the work or in which order they finish.

Workers come from the ``forkserver`` (or ``spawn``) context, never ``fork``:
the daemon runs threads (event loop, zeroconf), and forking a threaded process
can deadlock the child on a lock some other thread held.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from gossipnet.evo.policy import act
from gossipnet.evo.tasks import get_task, make_env

# environments are reused across calls within one process (a worker, or the
# caller when evaluating inline): making a Box2D world costs more than a step.
# Environments are reused between calls (making one costs more than an episode), but
# never shared between threads: two islands in one process (the demo, tests) evaluating
# at once on one env list corrupted each other's episodes.
_LOCAL = threading.local()
# pygame keeps global state and imports its surfarray lazily: islands of one process (the
# demo) drawing at once saw "pygame.surfarray has no attribute pixels3d". One at a time.
_RENDER_LOCK = threading.Lock()


def _envs(env_id: str, count: int) -> list:
    cache = getattr(_LOCAL, "envs", None)
    if cache is None:
        cache = _LOCAL.envs = {}
    envs = cache.setdefault(env_id, [])
    while len(envs) < count:
        envs.append(make_env(env_id))
    return envs[:count]


def run_episodes(
    task_name: str, hidden: int, genomes: np.ndarray, seeds: np.ndarray
) -> tuple[np.ndarray, int]:
    """Run one episode per (genome, seed) pair in lockstep.

    Returns ``(returns, steps)``: ``returns[i, j]`` is genome i's return on the
    episode seeded ``seeds[j]``; ``steps`` counts environment steps taken.
    """
    task = get_task(task_name, hidden)
    genomes = np.asarray(genomes, dtype=np.float32)
    seeds = np.asarray(seeds, dtype=np.int64)
    n_genomes, n_seeds = genomes.shape[0], seeds.shape[0]
    rows = n_genomes * n_seeds
    if rows == 0:
        return np.zeros((n_genomes, n_seeds)), 0
    owner = np.repeat(np.arange(n_genomes), n_seeds)
    row_seed = np.tile(seeds, n_genomes)
    envs = _envs(task.env_id, rows)
    obs = np.stack(
        [np.asarray(env.reset(seed=int(s))[0], dtype=np.float32) for env, s in zip(envs, row_seed)]
    )
    returns = np.zeros(rows)
    active = np.ones(rows, dtype=bool)
    steps = 0
    # TimeLimit truncates every episode at max_episode_steps; the bound is a guard.
    for _ in range(task.max_episode_steps + 1):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        actions = act(task.layout, task.action, genomes[owner[idx]], obs[idx])
        for k, i in enumerate(idx):
            a = int(actions[k]) if task.action.discrete else actions[k]
            o, r, terminated, truncated, _ = envs[i].step(a)
            obs[i] = o
            returns[i] += float(r)
            steps += 1
            if terminated or truncated:
                active[i] = False
    return returns.reshape(n_genomes, n_seeds), steps


def _pool_context() -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    # the fork server imports gymnasium and numpy once; every worker forked from it
    # (the server is single-threaded, so forking it is safe) starts with them loaded
    ctx.set_forkserver_preload(["gossipnet.evo.rollout"])
    return ctx


@dataclass
class Evaluator:
    """Scores genomes on a task, inline (``workers=0``) or across a process pool.

    The pool is started lazily and shared by whoever holds this evaluator (the
    islands benchmark gives one pool to every in-process island). Call
    ``close()`` when done; it is also a context manager.
    """

    task_name: str
    hidden: int
    workers: int = 0
    _pool: Executor | None = None

    def __post_init__(self) -> None:
        get_task(self.task_name, self.hidden)  # fail early on a bad task name
        if self.workers < 0:
            self.workers = os.cpu_count() or 1

    def evaluate(self, genomes: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, int]:
        """``(returns (P, E), env_steps)`` for every genome on every seeded episode."""
        genomes = np.ascontiguousarray(genomes, dtype=np.float32)
        seeds = np.asarray(seeds, dtype=np.int64)
        n = genomes.shape[0]
        if self.workers <= 1 or n < 2:
            return run_episodes(self.task_name, self.hidden, genomes, seeds)
        try:
            return self._pooled(genomes, seeds)
        except BrokenProcessPool:
            # a worker died (OOM killer, a stray signal): start a fresh pool and retry once;
            # the episodes are seeded, so the retry gives the same answer
            self.close()
            return self._pooled(genomes, seeds)

    def _pooled(self, genomes: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, int]:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=_pool_context())
        n = genomes.shape[0]
        chunks = np.array_split(np.arange(n), min(n, self.workers * 2))
        futures = [
            self._pool.submit(run_episodes, self.task_name, self.hidden, genomes[c], seeds)
            for c in chunks
            if c.size
        ]
        results = [f.result() for f in futures]
        returns = np.concatenate([r for r, _ in results], axis=0)
        return returns, sum(s for _, s in results)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def render_episode(task_name: str, hidden: int, genome: np.ndarray, seed: int,
                   max_frames: int = 8, every: int = 10) -> np.ndarray:
    """A strip of frames from one episode of ``genome``: (t, h, w, 3) uint8, for the status page.

    Renders only every ``every``-th step (gymnasium's ``rgb_array`` drawing costs more than
    the physics) and keeps at most ``max_frames``, evenly spread, downscaled by 2.
    """
    with _RENDER_LOCK:
        task = get_task(task_name, hidden)
        # Offscreen drawing: pygame must neither look for a display nor open an audio device.
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
        env = gym.make(task.env_id, render_mode="rgb_array", disable_env_checker=True)
        frames = []
        try:
            obs, _ = env.reset(seed=int(seed))
            g = np.asarray(genome, dtype=np.float32).reshape(1, -1)
            for t in range(task.max_episode_steps):
                if t % every == 0:
                    frames.append(np.asarray(env.render(), dtype=np.uint8)[::2, ::2])
                action = act(task.layout, task.action, g, np.asarray(obs, dtype=np.float32)[None])
                a = int(action[0]) if task.action.discrete else action[0]
                obs, _, terminated, truncated, _ = env.step(a)
                if terminated or truncated:
                    frames.append(np.asarray(env.render(), dtype=np.uint8)[::2, ::2])
                    break
        finally:
            env.close()
        keep = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
        return np.stack([frames[i] for i in keep])
