"""``gossipnet train --task slimevolley``: one self-play island alone, judged by the baseline.

The island never plays the baseline while it trains; at the end its champion plays it on
1,000 fixed seeds (the published yardstick: random play scores -4.87, GA self-play 0.35).
Progress goes to stderr, one line per generation (a round: every member plays one game;
"best"/"mean" are winning streaks); ``--json`` prints one final line with
``score_vs_baseline``, ``games`` and ``generations``.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from gossipnet.commands.train_evo import train_generations
from gossipnet.evo.selfplay import score_vs_baseline
from gossipnet.learners.selfplay import SelfPlayConfig, SelfPlayLearner

FINAL_EPISODES = 1000


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {"seed": int(args.seed), "algo": args.algo or "ga"}
    if args.population is not None:
        overrides["population"] = int(args.population)
    config = SelfPlayConfig(**overrides)
    config.check()
    learner = SelfPlayLearner(config)
    elapsed = train_generations(learner, args, lambda m: f"games {m['games']:,}  hall {m['hall_size']}")
    mean, res = score_vs_baseline(learner.layout, learner.best_genome()[None], FINAL_EPISODES)
    score, std = float(mean[0]), float(res.score.std())
    m = learner.metrics()
    summary = {
        "task": config.task, "algo": config.algo, "population": config.population, "seed": config.seed,
        "score_vs_baseline": score, "score_vs_baseline_std": std, "eval_episodes": FINAL_EPISODES,
        "games": m["games"], "generations": m["generation"], "env_steps": m["env_steps"],
        "best_fitness": m["best_fitness"], "mean_fitness": m["mean_fitness"],
        "hall_size": m["hall_size"], "champions": m["champions"], "seconds": round(elapsed, 2),
    }
    if not getattr(args, "quiet", False):
        print(f"slimevolley: champion scores {score:.2f} +/- {std:.2f} against the baseline over "
              f"{FINAL_EPISODES} episodes after {m['games']:,} games", file=sys.stderr)
    if args.json:
        clean = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in summary.items()}
        print(json.dumps(clean, allow_nan=False))
    return 0
