"""``gossipnet train --task NAME``: evolve one island alone and report the best policy.

Progress goes to stderr, one line per generation; ``--json`` adds one final
line of JSON on stdout. ``--checkpoint`` writes the whole search state as a
safetensors file (and resumes from it if it already exists).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

import numpy as np
from safetensors.numpy import load_file, save_file

from gossipnet.errors import UserError
from gossipnet.evo.tasks import TASKS
from gossipnet.learners.evolution import EvolutionConfig, EvolutionLearner

DEFAULT_GENERATIONS = 30


def _config(args: argparse.Namespace) -> EvolutionConfig:
    task = str(args.task).strip().lower()
    if task not in TASKS:
        raise UserError(f"unknown task {args.task!r}; choose one of: {', '.join(TASKS)}")
    overrides: dict[str, object] = {"seed": int(args.seed), "workers": -1}
    if args.population is not None:
        overrides["population"] = int(args.population)
    config = EvolutionConfig.for_task(task, args.algo or "cmaes", **overrides)
    config.check()
    return config


def save_checkpoint(path: str, learner: EvolutionLearner) -> None:
    """Write atomically: a crash mid-write must not destroy the previous checkpoint."""
    tmp = f"{path}.tmp"
    save_file({k: np.ascontiguousarray(v) for k, v in learner.state_dict().items()}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str, learner: EvolutionLearner) -> None:
    try:
        state = load_file(path)
    except Exception as exc:
        raise UserError(
            f"cannot read checkpoint {path} ({exc}); delete it or choose another --checkpoint"
        ) from exc
    learner.load_state_dict(state)


def train_generations(learner, args: argparse.Namespace, progress: Callable[[dict], str]) -> float:
    """Resume from ``--checkpoint`` if it exists, train ``--generations`` generations one
    at a time (a line on stderr and a checkpoint after each), return the seconds spent.
    ``progress`` adds the learner's own figures to the line."""
    generations = DEFAULT_GENERATIONS if args.generations is None else int(args.generations)
    if generations < 0:
        raise UserError(f"--generations must be >= 0, got {generations}")
    quiet = bool(getattr(args, "quiet", False))
    if args.checkpoint and os.path.exists(args.checkpoint):
        load_checkpoint(args.checkpoint, learner)
        if not quiet:
            print(f"resumed {args.checkpoint} at generation {learner.step}", file=sys.stderr)
    start = time.monotonic()
    target = learner.step + generations
    while learner.step < target:
        learner.train(1)
        if not quiet:
            m = learner.metrics()
            print(f"gen {m['generation']:4d}  best {m['best_fitness']:9.2f}  mean {m['mean_fitness']:9.2f}  "
                  f"{progress(m)}", file=sys.stderr)
        if args.checkpoint:
            save_checkpoint(args.checkpoint, learner)
    return time.monotonic() - start


def run(args: argparse.Namespace) -> int:
    if str(args.task).strip().lower() == "slimevolley":  # two-player: self-play, its own report
        from gossipnet.commands import train_selfplay

        return train_selfplay.run(args)
    config = _config(args)
    learner = EvolutionLearner(config)
    try:
        elapsed = train_generations(learner, args, lambda m: f"steps {m['env_steps']:,}")
        result = learner.evaluate()
        m = learner.metrics()
    finally:
        learner.close()
    summary = {
        "task": config.task,
        "algo": config.algo,
        "population": config.population,
        "seed": config.seed,
        "best_fitness": m["best_fitness"],
        "mean_fitness": m["mean_fitness"],
        "generations": m["generation"],
        "env_steps": m["env_steps"],
        "eval_mean": result["eval_mean"],
        "eval_episodes": int(result["eval_episodes"]),
        "solved": bool(result["solved"]),
        "solved_at": TASKS[config.task].solved_at,
        "seconds": round(elapsed, 2),
    }
    if not getattr(args, "quiet", False):
        print(
            f"{config.task}/{config.algo}: eval mean {summary['eval_mean']:.2f} over "
            f"{summary['eval_episodes']} episodes ({'solved' if summary['solved'] else 'not solved'})",
            file=sys.stderr,
        )
    if args.json:
        # JSON has no NaN: a run of 0 generations has no fitness yet
        clean = {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in summary.items()
        }
        print(json.dumps(clean, allow_nan=False))
    return 0
