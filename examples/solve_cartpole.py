"""Solve CartPole-v1 with GA, OpenAI-ES and CMA-ES on one island each, and print a table.

"Solved" is gymnasium's criterion: the best policy's mean return over 100
evaluation episodes is at least 475. Each algorithm gets at most 30
generations; after any generation whose best training score reaches 475 the
best policy is evaluated, and the run stops once it passes.

    python examples/solve_cartpole.py [--seeds 3] [--workers -1] [--algos ga,es,cmaes]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from gossipnet.learners.evolution import EvolutionConfig, EvolutionLearner

MAX_GENERATIONS = 30


def solve(algo: str, seed: int, workers: int) -> dict[str, float]:
    learner = EvolutionLearner(EvolutionConfig.for_task("cartpole", algo, seed=seed, workers=workers))
    start = time.monotonic()
    result = {"eval_mean": float("nan"), "solved": 0.0}
    try:
        while learner.step < MAX_GENERATIONS:
            learner.train(1)
            if learner.metrics()["best_fitness"] >= 475:
                result = learner.evaluate()
                if result["solved"]:
                    break
        if not result["solved"]:
            result = learner.evaluate()
    finally:
        learner.close()
    return {
        "generations": learner.step,
        "env_steps": learner.env_steps,
        "eval_mean": result["eval_mean"],
        "solved": result["solved"],
        "seconds": time.monotonic() - start,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workers", type=int, default=0, help="rollout processes (0: inline, -1: every core)")
    p.add_argument("--algos", default="ga,es,cmaes", help="comma-separated (a quick check: --algos ga)")
    args = p.parse_args()
    print(f"{'algo':6} {'pop':>4} {'solved':>7} {'median gens':>12} {'median steps':>13} {'eval means':>24}")
    all_solved = True
    for algo in args.algos.split(","):
        runs = [solve(algo, seed, args.workers) for seed in range(args.seeds)]
        solved = sum(r["solved"] == 1.0 for r in runs)
        all_solved &= solved == len(runs)
        pop = EvolutionConfig.for_task("cartpole", algo).population
        means = " ".join(f"{r['eval_mean']:.0f}" for r in runs)
        print(
            f"{algo:6} {pop:>4} {solved:>3}/{len(runs):<3} "
            f"{statistics.median(r['generations'] for r in runs):>12.0f} "
            f"{statistics.median(r['env_steps'] for r in runs):>13,.0f} {means:>24}"
        )
        sys.stdout.flush()
    return 0 if all_solved else 1


if __name__ == "__main__":
    sys.exit(main())
