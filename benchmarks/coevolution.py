"""Slime volleyball coevolution: engine speed, and self-play islands against one population.

``speed``: game-steps per second of the original slimevolleygym (its own per-game loop,
timed in the venv ``scripts/record_slime_golden.py`` makes: ``--original-venv``), of the
same per-game loop on our engine (our gymnasium env, one game at a time) and of our
batched numpy engine, interleaved in one run (random buttons against the baseline); and
of the compiled engine self-play trains with (``slime_compiled``: evolved MLPs against
each other, one game at a time, so another workload: its own row).

``run --setup islands|single|islands,single``: 4 self-play islands of 32 that gossip
champions (through ``snapshot()``/``absorb()``, every claim replayed, every champion
re-scored by the receiver) against 1 island of 128, at equal total games (every game an
island plays counts: tournament, crowning, claims, re-scoring). Every ``--eval-every``
games the swarm's champion (picked by a round-robin among the islands' champions: no
baseline involved) plays the baseline on fixed seeds; evaluation games are not training
games. Writes a JSON record (and the champions, for the CIAO plot) to ``--out``.

``report``: the table and the CIAO plot from the JSON records.

    nice -n 15 python benchmarks/coevolution.py speed --json
    nice -n 15 python benchmarks/coevolution.py run --setup islands --seeds 0 --out /tmp/coevo
    python benchmarks/coevolution.py report /tmp/coevo --plot docs/img/slime_ciao.png
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gossipnet.evo.hall_of_fame import elo  # noqa: E402
from gossipnet.evo.selfplay import payoff_matrix, score_vs_baseline  # noqa: E402
from gossipnet.evo.slime_compiled import play_genome_games  # noqa: E402
from gossipnet.evo.slime_env import SlimeVolleyEnv  # noqa: E402
from gossipnet.evo.slime_match import play_random_vs_baseline  # noqa: E402
from gossipnet.evo.slime_players import slime_layout  # noqa: E402
from gossipnet.learners.selfplay import SelfPlayConfig, SelfPlayLearner  # noqa: E402

# ----------------------------------------------------------------------------- speed


def per_game_steps(games: int, seed: int = 0) -> tuple[int, float]:
    """Random buttons against the baseline one game and one step at a time, through our
    gymnasium env: the original's loop shape on our engine (numpy on 1-game arrays)."""
    env = SlimeVolleyEnv()
    rng = np.random.default_rng(seed)
    steps, t0 = 0, time.perf_counter()
    for g in range(games):
        env.reset(seed=seed * 100_000 + g)
        done = False
        while not done:
            _, _, terminated, truncated, _ = env.step(rng.integers(0, 2, 3))
            done = terminated or truncated
            steps += 1
    return steps, time.perf_counter() - t0


def original_steps(python: str, steps: int) -> tuple[int, float]:
    """The original slimevolleygym, baseline against random buttons, timed in its venv."""
    code = (
        "import sys, types, time; sys.modules['cv2'] = types.ModuleType('cv2')\n"
        "import numpy as np\nfrom slimevolleygym.slimevolley import SlimeVolleyEnv\n"
        "rs = np.random.RandomState(0); env = SlimeVolleyEnv(); env.seed(0); env.reset()\n"
        f"n = {steps}; t0 = time.perf_counter()\n"
        "for i in range(n):\n"
        "    _, _, done, _ = env.step(list(rs.randint(0, 2, 3)))\n"
        "    if done: env.reset()\n"
        "print(n, time.perf_counter() - t0)\n"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), float(out[1])


def speed(args: argparse.Namespace) -> dict:
    """Medians of ``--repeats`` interleaved rounds, so machine load hits every row alike."""
    rows: dict[str, list[float]] = {"original": [], "per_game_loop": [], "batched": [], "compiled_selfplay": []}
    python = str(Path(args.original_venv) / "bin" / "python") if args.original_venv else None
    layout = slime_layout(16)
    genomes = (np.random.default_rng(0).standard_normal((128, layout.size)) * 0.5).astype(np.float32)
    play_genome_games(layout, genomes, [0], [1], [0])  # compile (or load the cache) before timing
    for rep in range(args.repeats):
        if python:
            steps, secs = original_steps(python, args.original_steps)
            rows["original"].append(steps / secs)
        steps, secs = per_game_steps(args.loop_games, seed=rep)
        rows["per_game_loop"].append(steps / secs)
        t0 = time.perf_counter()
        res = play_random_vs_baseline(np.arange(args.batch) + rep * args.batch, rng_seed=rep)
        rows["batched"].append(res.steps / (time.perf_counter() - t0))
        pairs = np.random.default_rng(rep).integers(0, 128, (args.loop_games * 20, 2))
        t0 = time.perf_counter()
        _, length = play_genome_games(layout, genomes, pairs[:, 0], pairs[:, 1], np.arange(len(pairs)) + rep * 10**6)
        rows["compiled_selfplay"].append(length.sum() / (time.perf_counter() - t0))
    med = {k: float(np.median(v)) for k, v in rows.items() if v}
    out = {"steps_per_s": med, "batch": args.batch, "repeats": args.repeats,
           "ratio_batched_over_per_game_loop": med["batched"] / med["per_game_loop"],
           "ratio_compiled_over_batched": med["compiled_selfplay"] / med["batched"]}
    if "original" in med:
        out["ratio_batched_over_original"] = med["batched"] / med["original"]
    names = {"original": "original slimevolleygym", "per_game_loop": "per-game loop (ours)",
             "batched": f"batched ({args.batch} games)",
             "compiled_selfplay": "compiled, MLP vs MLP"}
    for k, v in med.items():
        print(f"{names[k]:>26}: {v:12,.0f} game-steps/s", file=sys.stderr)
    for k, v in out.items():
        if k.startswith("ratio"):
            print(f"{k}: {v:.1f}x", file=sys.stderr)
    if not python:
        print("(no --original-venv: the original itself was not timed)", file=sys.stderr)
    return out


# ----------------------------------------------------------------------------- islands


def swarm_champion(islands: list[SelfPlayLearner]) -> np.ndarray:
    """The islands' champions play each other; the best on the round-robin is the swarm's."""
    champs = [isl.best_genome() for isl in islands]
    if len(champs) == 1:
        return champs[0]
    payoff, _ = payoff_matrix(islands[0].layout, np.stack(champs), 4, seed=7)
    return champs[int(np.argmax(payoff.sum(axis=1)))]


def migration_share(args: argparse.Namespace, population: int) -> float:
    """``--inject N`` (members per island) as a share, else ``--migration-share``."""
    return args.migration_share if args.inject is None else args.inject / population


class Swarm:
    """One setup of one seed: its islands, their slots in the shared arena, its record."""

    def __init__(self, setup: str, seed: int, args: argparse.Namespace) -> None:
        n = 4 if setup == "islands" else 1
        population = args.population // n
        share = migration_share(args, population)
        self.islands = [SelfPlayLearner(SelfPlayConfig(population=population, seed=seed * 100 + i,
                                                       hall_share=args.hall_share,
                                                       hall_recent=args.hall_recent,
                                                       migration_share=share,
                                                       sigma=args.sigma,
                                                       champion_interval=args.champion_interval),
                                        name=f"island{i}") for i in range(n)]
        self.stem = Path(args.out) / f"{setup}{args.tag}-seed{seed}"
        self.record: dict = {"setup": setup + args.tag, "seed": seed, "islands": n, "population_per_island": population,
                             "hall_share": args.hall_share, "hall_recent": args.hall_recent, "inject": args.inject,
                             "migration_share": share,
                             "sigma": args.sigma, "champion_interval": args.champion_interval,
                             "budget_games": args.games,
                             "eval_episodes": args.eval_episodes, "points": []}
        self.champions: list[np.ndarray] = []
        self.next_eval = 0
        self.offered: list[int] = [-1] * n  # id of the offer last delivered, per island
        self.done = False

    @property
    def games(self) -> int:
        return sum(isl.games for isl in self.islands)

    def gossip(self) -> None:
        """Every new champion offer goes to every other island (all-to-all, as a small LAN)."""
        for i, isl in enumerate(self.islands):
            if len(self.islands) == 1 or isl.offer is None or id(isl.offer) == self.offered[i]:
                continue
            self.offered[i] = id(isl.offer)
            snap = isl.snapshot()
            for j, other in enumerate(self.islands):
                if j != i:
                    other.absorb(snap, isl.name)

    def checkpoint(self, t0: float, eval_episodes: int) -> None:
        games = self.games
        layout = self.islands[0].layout
        champ = swarm_champion(self.islands)
        score, _ = score_vs_baseline(layout, champ[None], eval_episodes)
        self.champions.append(champ)
        t = self.islands[0].tournament
        point = {"setup": self.record["setup"], "seed": self.record["seed"], "games": games,
                 "score_vs_baseline": float(score[0]), "seconds": round(time.perf_counter() - t0, 1),
                 "mean_game_steps": round(sum(i.env_steps for i in self.islands) / max(games, 1)),
                 "longest_streak": int(max(i.tournament.streak.max() for i in self.islands)),
                 "ties": int(sum(i.tournament.ties for i in self.islands)), "decided": int(t.decided),
                 "hall": [len(isl.hall) for isl in self.islands],
                 "foreign": [isl.hall.foreign(isl.name) for isl in self.islands]}
        self.record["points"].append(point)
        print(json.dumps(point), file=sys.stderr, flush=True)
        self.save()

    def save(self) -> None:
        np.save(f"{self.stem}-champions.npy", np.stack(self.champions))
        self.stem.with_suffix(".json").write_text(json.dumps(self.record, indent=1))

    def finish(self) -> None:
        layout = self.islands[0].layout
        score, res = score_vs_baseline(layout, self.champions[-1][None], 1000)
        r = self.record
        r["final"] = {"score_vs_baseline": float(score[0]), "std": float(res.score.std()),
                      "episodes": 1000, "games": r["points"][-1]["games"]}
        hall = self.islands[0].hall.genomes[-32:]
        payoff, _ = payoff_matrix(layout, hall, 2, seed=3)
        r["hall_elo"] = [round(float(x), 1) for x in elo(payoff)]
        r["hall_origin"] = self.islands[0].hall.origin[-32:]
        for k in ("migrants_accepted", "hall_refused", "forged_claims"):
            r[k] = sum(int(isl.metrics()[k]) for isl in self.islands)
        self.save()
        print(json.dumps({"setup": r["setup"], "seed": r["seed"], **r["final"]}), file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict:
    """Every (setup, seed) asked for, side by side in one process: each island plays a
    round in turn, champions are gossiped after every round, and each swarm's champion
    plays the baseline every ``--eval-every`` of its training games (not counted)."""
    Path(args.out).mkdir(parents=True, exist_ok=True)
    swarms = [Swarm(setup, seed, args) for seed in args.seeds for setup in args.setup]
    t0 = time.perf_counter()
    while not all(s.done for s in swarms):
        for s in swarms:
            if s.done:
                continue
            games = s.games
            if games >= s.next_eval or games >= args.games:
                s.checkpoint(t0, args.eval_episodes)
                s.next_eval += args.eval_every
            if games >= args.games:
                s.done = True
                s.finish()
                continue
            for isl in s.islands:
                isl.play_round()
            s.gossip()
    return {"records": [s.record for s in swarms]}


# ----------------------------------------------------------------------------- report


def first_games(games: list[int], scores: np.ndarray, level: float) -> int | None:
    """Training games at the first checkpoint whose champion scored >= ``level``."""
    hit = np.flatnonzero(np.asarray(scores) >= level)
    return int(games[hit[0]]) if hit.size else None


def report(args: argparse.Namespace) -> dict:
    """Table, Elo of the champions over time and the CIAO plot. Every checkpoint's champion
    is re-evaluated here on ``--episodes`` (1,000) fixed seeds, so "games to -1" and "to 0"
    rest on 1,000 episodes, not on the run's 200-episode progress checks. A run stopped
    before its budget (the machine's time ran out) is judged on its last champion and
    marked as stopped; the best checkpoint is reported too."""
    from gossipnet.evo.selfplay import slime_task

    layout = slime_task(16).layout
    directory = Path(args.dir)
    records = [json.loads(p.read_text()) for p in sorted(directory.glob("*-seed*.json"))]
    rows, payoffs = [], []
    for r in records:
        champs = np.load(directory / f"{r['setup']}-seed{r['seed']}-champions.npy")
        n = min(len(champs), len(r["points"]))
        games = [p["games"] for p in r["points"][:n]]
        scores, res = score_vs_baseline(layout, champs[:n], args.episodes)
        r["evaluated"] = {"episodes": args.episodes, "games": games, "scores": [round(float(x), 3) for x in scores]}
        best = int(np.argmax(scores))
        payoff, _ = payoff_matrix(layout, champs[:n], args.ciao_games, seed=11)
        payoffs.append(payoff)
        rows.append({"setup": r["setup"], "seed": r["seed"], "games": games[-1],
                     "to_minus_1": first_games(games, scores, -1.0), "to_0": first_games(games, scores, 0.0),
                     "final": float(scores[-1]), "final_std": float(res.score[-1].std()),
                     "stopped": games[-1] < r["budget_games"],
                     "best": float(scores[best]), "best_std": float(res.score[best].std()), "best_games": games[best],
                     "elo_first_last": [round(float(x), 1) for x in elo(payoff)[[0, -1]]],
                     "champions": n, "seconds": r["points"][n - 1]["seconds"]})
    print("| setup | seed | training games | games to -1 | games to 0 | last champion | best champion (at games) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        note = " (stopped: time)" if row["stopped"] else ""
        print(f"| {row['setup']} | {row['seed']} | {row['games']:,}{note} | {row['to_minus_1'] or 'not reached'} | "
              f"{row['to_0'] or 'not reached'} | {row['final']:.2f} +/- {row['final_std']:.2f} | "
              f"{row['best']:.2f} +/- {row['best_std']:.2f} ({row['best_games']:,}) |")
    medians = median_rows(rows)
    for m in medians:
        print(f"| **{m['setup']}, median of {m['seeds']} seeds** | | | {m['to_minus_1'] or 'not reached'} | "
              f"{m['to_0'] or 'not reached'} | {m['final']:.2f} | {m['best']:.2f} |")
    for r, row in zip(records, rows):
        print(f"{row['setup']}: Elo of the first and last champion {row['elo_first_last']}; "
              f"every checkpoint ({args.episodes} episodes): {r['evaluated']['scores']}", file=sys.stderr)
    if args.plot:
        ciao_plot(records, payoffs, args.plot)
    return {"rows": rows, "medians": medians}


def median_rows(rows: list[dict]) -> list[dict]:
    """Per setup run on more than one seed: the median of each column. A seed that never
    reached a level counts as later than every seed that did (so the median is "not
    reached" when most seeds did not)."""
    out = []
    for setup in dict.fromkeys(r["setup"] for r in rows):
        mine = [r for r in rows if r["setup"] == setup]
        if len(mine) < 2:
            continue

        def median_games(key: str) -> int | None:
            v = np.median([r[key] if r[key] is not None else np.inf for r in mine])
            return int(v) if np.isfinite(v) else None

        out.append({"setup": setup, "seeds": len(mine), "to_minus_1": median_games("to_minus_1"),
                    "to_0": median_games("to_0"), "final": float(np.median([r["final"] for r in mine])),
                    "best": float(np.median([r["best"] for r in mine]))})
    return out


def ciao_plot(records: list[dict], payoffs: list[np.ndarray], path: str) -> None:
    """CIAO (current individual vs ancestral opponents): the swarm's champion at each
    evaluation point against every earlier one, one panel per setup. A lower triangle that
    is red everywhere means steady progress; blue patches mean forgetting or cycles. Below
    each, the champion's score against the baseline over the run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(records), figsize=(5 * len(records), 8.5), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.4]})
    for col, (r, payoff) in enumerate(zip(records, payoffs)):
        n = payoff.shape[0]
        ciao = np.where(np.tril(np.ones_like(payoff, dtype=bool), k=-1), payoff, np.nan)
        ax = axes[0, col]
        g = [p["games"] / 1000 for p in r["points"]][:n]
        im = ax.imshow(ciao, cmap="RdBu_r", vmin=-5, vmax=5, origin="lower", aspect="auto")
        ticks = np.unique(np.linspace(0, n - 1, min(6, n)).round().astype(int))
        ax.set_xticks(ticks, [f"{g[i]:.0f}k" for i in ticks])
        ax.set_yticks(ticks, [f"{g[i]:.0f}k" for i in ticks])
        ax.set_xlabel("ancestral champion (training games)")
        ax.set_ylabel("current champion (training games)")
        ax.set_title(f"{r['setup']} ({r['islands']} x {r['population_per_island']}), seed {r['seed']}")
        fig.colorbar(im, ax=ax, label="mean score, current vs ancestor")
        ax2 = axes[1, col]
        ax2.plot(g, r["evaluated"]["scores"][:n], marker=".")
        ax2.axhline(-1, color="grey", lw=0.8, ls="--")
        ax2.axhline(0, color="grey", lw=0.8)
        ax2.set_ylim(-5.2, 2)
        ax2.set_xlabel("training games (thousands)")
        ax2.set_ylabel(f"vs baseline ({r['evaluated']['episodes']} ep.)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--batch", type=int, default=2048)
    s.add_argument("--loop-games", type=int, default=10)
    s.add_argument("--original-steps", type=int, default=20_000)
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--original-venv", default=None)
    s.add_argument("--json", action="store_true")
    r = sub.add_parser("run")
    r.add_argument("--setup", type=lambda v: v.split(","), required=True,
                   help="islands, single, or both: islands,single (played side by side)")
    r.add_argument("--seeds", "--seed", type=lambda v: [int(x) for x in v.split(",")], default=[0])
    r.add_argument("--hall-share", type=float, default=SelfPlayConfig.hall_share)
    r.add_argument("--hall-recent", type=float, default=SelfPlayConfig.hall_recent)
    r.add_argument("--migration-share", type=float, default=SelfPlayConfig.migration_share,
                   help="an admitted foreign champion's mutants replace this share of an island's shortest streaks")
    r.add_argument("--inject", type=int, default=None,
                   help="the same as a count per island (as in the runs of docs/EVOLUTION.md); overrides the share")
    r.add_argument("--sigma", type=float, default=SelfPlayConfig.sigma, help="mutation noise")
    r.add_argument("--champion-interval", type=int, default=SelfPlayConfig.champion_interval,
                   help="rounds between champions (and migrant offers)")
    r.add_argument("--tag", default="", help="appended to the setup's file names (variants)")
    r.add_argument("--population", type=int, default=128, help="total over all islands")
    r.add_argument("--games", type=int, default=300_000, help="training games, all islands together")
    r.add_argument("--eval-every", type=int, default=10_000)
    r.add_argument("--eval-episodes", type=int, default=200)
    r.add_argument("--out", default="/tmp/coevolution")
    r.add_argument("--json", action="store_true")
    q = sub.add_parser("report")
    q.add_argument("dir")
    q.add_argument("--plot", default=None)
    q.add_argument("--ciao-games", type=int, default=2, help="games per pair of champions")
    q.add_argument("--episodes", type=int, default=1000, help="episodes per checkpoint champion against the baseline")
    q.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = {"speed": speed, "run": run, "report": report}[args.cmd](args)
    if getattr(args, "json", False):
        print(json.dumps(result))


if __name__ == "__main__":
    main()
