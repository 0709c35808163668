"""Control tasks from gymnasium, by short name, with a fingerprint islands can compare.

Islands only need to share a fitness function to cooperate; the fingerprint
says which one: the environment id (its ``-vN`` suffix is gymnasium's version
of the dynamics), the episode cap, the observation and action spaces, and the
policy layout. A migrant from an island with any other fingerprint is useless
here, and is rejected before it costs an evaluation.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from gossipnet.errors import UserError
from gossipnet.evo.policy import DEFAULT_HIDDEN, ActionSpace, Layout


@dataclass(frozen=True)
class TaskInfo:
    """A task's name and the constants gymnasium does not provide."""

    name: str
    env_id: str
    # gymnasium's reward_threshold where it has one; Pendulum has none: -200 is
    # the usual "swings up and holds" mark in the RL literature.
    solved_at: float
    # Width of the plausible return range; a fitness claim above the re-measured
    # value by more than a fraction of this is counted as forged.
    return_scale: float


TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in (
        TaskInfo("cartpole", "CartPole-v1", 475.0, 500.0),
        TaskInfo("acrobot", "Acrobot-v1", -100.0, 500.0),
        TaskInfo("pendulum", "Pendulum-v1", -200.0, 1600.0),
        TaskInfo("lunarlander", "LunarLander-v3", 200.0, 500.0),
        TaskInfo("bipedalwalker", "BipedalWalker-v3", 300.0, 400.0),
        # two-player: self-play islands (learners/selfplay.py); "solved" = beats the baseline
        TaskInfo("slimevolley", "gossipnet/SlimeVolley-v0", 0.0, 10.0),
    )
}


def make_env(env_id: str) -> gym.Env:
    """One environment; the passive checker is off because it costs ~10% per step."""
    return gym.make(env_id, disable_env_checker=True)


@dataclass(frozen=True)
class Task:
    """A task resolved against gymnasium: spaces, episode cap and the policy layout."""

    info: TaskInfo
    obs_dim: int
    action: ActionSpace
    max_episode_steps: int
    layout: Layout
    spaces: str

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def env_id(self) -> str:
        return self.info.env_id

    @property
    def fingerprint(self) -> str:
        text = "|".join(
            (self.env_id, str(self.max_episode_steps), self.spaces, self.layout.describe())
        )
        return f"{self.name}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


@functools.lru_cache(maxsize=32)
def get_task(name: str, hidden: int = DEFAULT_HIDDEN) -> Task:
    """Resolve a short task name (``cartpole``) or raise a ``UserError`` listing the tasks."""
    info = TASKS.get(name.strip().lower()) if isinstance(name, str) else None
    if info is None:
        raise UserError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    if not 1 <= hidden <= 1024:
        raise UserError(f"hidden units must be between 1 and 1024, got {hidden}")
    if info.name == "slimevolley":  # our own two-player engine, not a gymnasium single-agent task
        from gossipnet.evo.selfplay import slime_task

        return slime_task(hidden)
    try:
        env = make_env(info.env_id)
    except Exception as exc:  # Box2D tasks need the box2d extra
        raise UserError(
            f"cannot create {info.env_id} ({exc}); install gymnasium[box2d] for Box2D tasks"
        ) from exc
    try:
        obs_space, act_space = env.observation_space, env.action_space
        max_steps = int(env.spec.max_episode_steps)
    finally:
        env.close()
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise UserError(f"{info.env_id}: only flat Box observations are supported")
    if isinstance(act_space, gym.spaces.Discrete):
        action = ActionSpace(discrete=True, dim=int(act_space.n))
    elif isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1:
        action = ActionSpace(
            discrete=False,
            dim=int(act_space.shape[0]),
            low=tuple(float(v) for v in np.asarray(act_space.low)),
            high=tuple(float(v) for v in np.asarray(act_space.high)),
        )
    else:
        raise UserError(f"{info.env_id}: action space {act_space} is not supported")
    obs_dim = int(obs_space.shape[0])
    layout = Layout(obs_dim=obs_dim, hidden=hidden, act_dim=action.dim, discrete=action.discrete)
    return Task(
        info=info,
        obs_dim=obs_dim,
        action=action,
        max_episode_steps=max_steps,
        layout=layout,
        spaces=f"{obs_space!r}->{act_space!r}",
    )
