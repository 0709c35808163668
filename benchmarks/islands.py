"""Islands versus one big population, on the same environment-step budget.

One run per seed of each: a single CMA-ES population of 64, and 4 islands of 16
that pass their best genomes around a ring (or to random islands) every K
generations through ``snapshot()`` / ``absorb()``: exactly what the node does,
minus the network. Both stop at the first generation whose best policy scores
at least the target on 10 fresh evaluation episodes (``confirmed``); the first
generation whose best training score reached the target is reported too
(``raw``, a single lucky episode can do it).

    python benchmarks/islands.py --seeds 5 --max-generations 300 --json
    python benchmarks/islands.py --seeds 10 --workers 1 --setups islands --algo ga --interval 10

Runs are deterministic per seed (whatever the number of workers), so a variant of the
islands (``--setups islands`` with ``--interval``, ``--topology``, ``--migrants``,
``--shared-init``, ``--algo``) can be set against one earlier run of the single population.
Results and every variant measured: docs/EVOLUTION.md.

DESIGN reference (CMA-ES, 16-unit MLP, LunarLander-v3): one population of 64
reached 200 in 115 generations / 3.9 M steps; 4 islands of 16 migrating every 5
in 105 generations / 2.7 M steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's gossipnet

from gossipnet.config import NodeConfig  # noqa: E402
from gossipnet.evo.rollout import Evaluator  # noqa: E402
from gossipnet.learners.evolution import EvolutionConfig, EvolutionLearner  # noqa: E402

CONFIRM_EPISODES = 10


def _confirmed(learner: EvolutionLearner, target: float) -> bool:
    result = learner.evaluate()
    return result["eval_mean"] >= target


def run_setup(
    args: argparse.Namespace, seed: int, islands: int, population: int, evaluator: Evaluator
) -> dict[str, object]:
    """Evolve ``islands`` islands of ``population`` until one is confirmed at the target."""
    learners = [
        EvolutionLearner(
            EvolutionConfig.for_task(
                args.task,
                args.algo,
                population=population,
                seed=seed * 1000 + i,
                eval_episodes=CONFIRM_EPISODES,
                init_seed=seed if args.shared_init else None,
                **({"migration_rate": args.migrants / population} if args.migrants else {}),
            ),
            evaluator=evaluator,
        )
        for i in range(islands)
    ]
    rng = np.random.default_rng(seed)
    raw = confirmed = None
    start = time.monotonic()
    for gen in range(1, args.max_generations + 1):
        for learner in learners:
            learner.train(1)
        if islands > 1 and gen % args.interval == 0:  # this benchmark migrates by generation;
            # the daemon migrates by the wall clock (every announce interval)
            offers = [learner.snapshot() for learner in learners]
            for i, snap in enumerate(offers):
                if args.topology == "ring":
                    dest = (i + 1) % islands
                else:
                    dest = int(rng.choice([j for j in range(islands) if j != i]))
                learners[dest].absorb(snap, peer=f"island-{i}")
        best = max(learner.metrics()["best_fitness"] for learner in learners)
        if raw is None and best >= args.target:
            raw = gen
        candidates = [x for x in learners if x.metrics()["best_fitness"] >= args.target]
        if any(_confirmed(x, args.target) for x in candidates):
            confirmed = gen
            break
        if not args.quiet and gen % 10 == 0:
            steps = sum(learner.env_steps for learner in learners)
            print(f"  seed {seed} {islands}x{population} gen {gen} best {best:.1f} steps {steps:,}",
                  file=sys.stderr)
    return {
        "seed": seed,
        "islands": islands,
        "population": population,
        "raw_generations": raw,
        "confirmed_generations": confirmed,
        "generations": gen,
        "env_steps": sum(learner.env_steps for learner in learners),
        "migrants_accepted": sum(learner.migrants_accepted for learner in learners),
        "seconds": round(time.monotonic() - start, 1),
    }


def _median(values: list[int | None], cap: int) -> float:
    """Median, unfinished runs counted at the cap (so then the median is an under-estimate)."""
    return float(statistics.median(cap if v is None else v for v in values))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="lunarlander")
    p.add_argument("--algo", default=NodeConfig.algo, choices=["ga", "es", "cmaes"],
                   help="evolution algorithm (default: the daemon's, as islands run it)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--max-generations", type=int, default=300)
    p.add_argument("--target", type=float, default=200.0)
    p.add_argument("--islands", type=int, default=4)
    p.add_argument("--island-population", type=int, default=16)
    p.add_argument("--single-population", type=int, default=64)
    p.add_argument("--interval", type=int, default=5, help="generations between migrations")
    p.add_argument("--topology", choices=["ring", "random"], default="ring")
    p.add_argument("--workers", type=int, default=-1, help="rollout processes (-1: every core)")
    p.add_argument("--migrants", type=int, default=0,
                   help="genomes per offer (0: the learner's default, migration_rate x population)")
    p.add_argument("--setups", nargs="+", choices=["single", "islands"], default=["single", "islands"],
                   help="which setups to run (runs are deterministic per seed, so a variant of the "
                        "islands can be compared with an earlier run of the single population)")
    p.add_argument("--seed-list", type=int, nargs="+", help="run exactly these seeds instead of 0..seeds-1")
    p.add_argument("--shared-init", action="store_true",
                   help="every island (and the single population) starts from one network drawn from the "
                        "run's seed, instead of CMA-ES's zero vector")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    runs = []
    with Evaluator(args.task, 16, args.workers) as evaluator:
        setups = {"single": (1, args.single_population), "islands": (args.islands, args.island_population)}
        for seed in args.seed_list if args.seed_list else range(args.seeds):
            for islands, pop in (setups[name] for name in args.setups):
                r = run_setup(args, seed, islands, pop, evaluator)
                runs.append(r)
                print(
                    f"seed {seed} {islands}x{pop}: raw {r['raw_generations']} confirmed "
                    f"{r['confirmed_generations']} gens, {r['env_steps'] / 1e6:.2f} M steps, {r['seconds']} s",
                    file=sys.stderr,
                )
    summary: dict[str, object] = {}
    line = []
    labels = {"single": f"single 1x{args.single_population}",
              "islands": f"islands {args.islands}x{args.island_population}"}
    for name in args.setups:
        rs = [r for r in runs if r["islands"] == setups[name][0]]
        cap = args.max_generations
        s = summary[name] = {
            "median_confirmed_generations": _median([r["confirmed_generations"] for r in rs], cap),
            "median_raw_generations": _median([r["raw_generations"] for r in rs], cap),
            "median_env_steps": float(statistics.median(r["env_steps"] for r in rs)),
            "unfinished": sum(r["confirmed_generations"] is None for r in rs),
        }
        line.append(
            f"{labels[name]}: median {s['median_confirmed_generations']:.0f} gens "
            f"(raw {s['median_raw_generations']:.0f}), {s['median_env_steps'] / 1e6:.2f} M steps"
        )
    if len(args.setups) == 2:
        ratio = summary["islands"]["median_env_steps"] / summary["single"]["median_env_steps"]
        summary["steps_ratio_islands_over_single"] = ratio
        line.append(f"steps ratio {ratio:.2f}")
    print(" | ".join(line), file=sys.stderr)
    if args.json:
        print(json.dumps({"args": vars(args), "summary": summary, "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
