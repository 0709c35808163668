"""A self-play island for slime volleyball behind the ``Learner`` interface.

Coevolution's difficulty for a swarm is that fitness depends on opponents, so islands
must share *opponents*, not scores. Each island runs the GA of ``gossipnet.evo.ga`` with
fitness = mean score against a panel (siblings plus a sample of the swarm-wide hall of
fame); every ``champion_interval`` generations it crowns a champion by a round-robin
against a hall sample, adds it to its hall and offers it as its migrant.

A receiver runs the same door checks as every island (``learners.migrants.check_migrants``:
kind, fingerprint, shape, finiteness, magnitude), then replays the sender's claim (the
champion's score against the public reference panel on the named seeds; games are
deterministic) and refuses the champion if the claim does not replay. Only then does it
spend games on re-scoring it against its own panel (the sender's fitness, measured
against other opponents, means little here): those games join the next generation's
batch. It is admitted to the hall if it is not clearly worse than that panel, and the GA
takes it if it beats the worst member.

The baseline policy is the yardstick of ``evaluate()`` only; it never enters training.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from gossipnet.errors import UserError
from gossipnet.evo.algorithm import need, rng_from_state, rng_state
from gossipnet.evo.algorithms import make_algorithm
from gossipnet.evo.hall_of_fame import HallOfFame, elo
from gossipnet.evo.selfplay import (
    REFERENCE_SIZE, TASK_NAME, Plan, join, pairings, panel_fitness, panel_plan, payoff_matrix,
    play_plan, reference_plan, reference_score, remember_reference, score_vs_baseline, slime_task,
)
from gossipnet.evo.slime_env import rollout_frames
from gossipnet.evo.slime_match import Results
from gossipnet.learners.base import AbsorbResult, LearnerWire, Scalar, Snapshot
from gossipnet.learners.evolution import KIND, EvolutionLearner
from gossipnet.learners.migrants import Door, MigrantReject, check_migrants, claim, claim_seeds

HISTORY_COLUMNS = ("generation", "best", "mean", "env_steps", "migrants", "games")
CLAIM_TOLERANCE = 1e-3  # claims travel rounded to 4 decimals


@dataclass(frozen=True)
class SelfPlayConfig:
    """One self-play island. Defaults: 32 members; per generation each plays 4 sibling
    games and 2 hall-of-fame games (96 games); a champion every 5 generations."""

    task: str = TASK_NAME
    algo: str = "ga"
    population: int = 32
    hidden: int = 16
    seed: int = 0
    sibling_rounds: int = 4  # random pairings per generation; a game scores for both
    hall_games: int = 2  # games per member against hall-of-fame opponents
    champion_interval: int = 5  # generations between champions (and migrant offers)
    candidates: int = 4  # best members of the generation that compete to be champion
    round_robin_size: int = 8  # hall sample the candidates play
    round_robin_games: int = 2
    hall_capacity: int = 64
    admit_games: int = 8  # games a received champion plays against our panel
    admit_score: float = -2.0  # admitted to the hall unless clearly worse than our panel
    claim_episodes: int = 2  # serve seeds a claim is measured on (x 4 reference opponents)
    eval_episodes: int = 200  # yardstick: games against the baseline on fixed seeds
    rating_size: int = 16  # newest hall entries rated by a round-robin in evaluate()
    max_migrants: int = 1
    max_pending: int = 8  # received champions waiting for re-scoring; older ones are dropped
    max_abs_gene: float = 1000.0
    history_limit: int = 100_000
    ciao_limit: int = 64  # champions kept for the CIAO plot

    @property
    def migration_interval(self) -> int:
        return self.champion_interval

    def check(self) -> None:
        if self.task != TASK_NAME:
            raise UserError(f"self-play islands play {TASK_NAME!r}, not {self.task!r}")
        if self.algo != "ga":
            raise UserError(f"self-play islands use --algo ga (got {self.algo!r}): a relative "
                            "fitness that changes every generation suits truncation selection")
        if self.population < 4 or self.candidates < 1 or self.champion_interval < 1:
            raise UserError("self-play needs --population >= 4, candidates >= 1, champion interval >= 1")
        if min(self.sibling_rounds, self.hall_games) < 0 or self.sibling_rounds + self.hall_games < 1:
            raise UserError("each member must play at least one panel game per generation")


class SelfPlayLearner(EvolutionLearner):
    """A slime volleyball island: GA, panel fitness, a hall of fame, champions as migrants."""

    kind = KIND
    # champions travel exactly (their claims are replayed), one generation per worker call
    wire = LearnerWire(blob_kind="genome", dtype="float32", default_chunk=1, merge_event="migrant",
                       absorb_reasons=(*(r.value for r in MigrantReject), "forged_claim"))

    def __init__(self, config: SelfPlayConfig, name: str = "self") -> None:  # noqa: D107
        config.check()
        self.config = config
        self.name = name
        self.task = slime_task(config.hidden)
        self.layout = self.task.layout
        self.algo = make_algorithm("ga", self.layout, config.population, config.seed)
        self.rng = np.random.default_rng([config.seed, 0x5E1F])
        self.hall = HallOfFame(self.layout.size, config.hall_capacity)
        self.champion: np.ndarray | None = None
        # what snapshot() offers: a champion, its claimed reference score and the claim's seeds
        self.offer: tuple[np.ndarray, float, np.ndarray] | None = None
        self._claim_due: np.ndarray | None = None  # seeds of the newest champion's claim
        self.champions: list[tuple[int, np.ndarray]] = []  # (generation, genome) for CIAO
        self.games = 0
        self.env_steps = 0
        self.eval_env_steps = 0
        self.migrants_accepted = 0
        self.migrants_rejected = 0
        self.forged_claims = 0
        self.hall_refused = 0
        self.rejections = {r: 0 for r in MigrantReject}
        self.door = Door(KIND, self.fingerprint, self.layout.size, config.max_migrants, config.max_abs_gene)
        self.forgeries: deque[tuple[str, float, float]] = deque(maxlen=16)
        self._migrants_since_generation = 0
        self._pending: list[tuple[np.ndarray, str]] = []  # received, not yet re-scored
        self._planned_pending: list[tuple[np.ndarray, str]] = []
        self._plan_parts: list[tuple[str, int, int]] = []
        self._rollout: tuple[bytes, float, np.ndarray] | None = None
        self._last_eval: dict[str, float] = {}
        self._history: dict[str, list[float]] = {k: [] for k in HISTORY_COLUMNS}

    # --- training ----------------------------------------------------------

    def train(self, budget: int) -> dict[str, float]:
        """Run ``budget`` generations."""
        games_before = self.games
        for _ in range(max(0, int(budget))):
            plan = self.plan_generation()
            self.finish_generation(plan, play_plan(self.layout, plan))
        best, mean = self._last_best_mean()
        return {"best_fitness": best, "mean_fitness": mean,
                "generation": float(self.algo.generation), "games": float(self.games - games_before)}

    def plan_generation(self) -> Plan:
        """Ask the GA for a generation and plan every game it needs, as one batch: the
        panel games; on a crowning generation, the round-robin of the last generation's
        best against a hall sample; and the re-scoring of champions received since the
        last generation. (``train`` plays the plan; a benchmark may play several islands'
        plans in one batch: a batch costs per step, whatever its size.)"""
        c = self.config
        genomes = self.algo.ask()
        sample = self.hall.sample(c.population * c.hall_games, self.rng)
        panel = panel_plan(genomes, sample, c.sibling_rounds, self.rng)
        parts = [("panel", panel)]
        elites, _ = self.algo.elite(max(c.candidates, c.admit_games))
        if (self.algo.generation + 1) % c.champion_interval == 0 and elites.shape[0]:
            candidates = elites[: c.candidates]
            opponents = self.hall.sample(c.round_robin_size, self.rng)
            if len(opponents) == 0:
                opponents = genomes[c.candidates:][: c.round_robin_size]
            parts.append(("crown", pairings(candidates, opponents, c.round_robin_games, self.rng)))
        if self._claim_due is not None and self.champion is not None:
            parts.append(("claim", reference_plan(self.layout, self.champion, self._claim_due)))
        for champion, peer in self._pending:
            opponents = self.hall.sample(c.admit_games // 2, self.rng)
            opponents = np.concatenate([opponents, elites])[: c.admit_games]
            if len(opponents) == 0:
                opponents = genomes[: c.admit_games]
            parts.append((f"admit:{peer}", pairings(champion[None], opponents, 1, self.rng)))
        self._plan_parts = [(name, part.games, part.genomes.shape[0]) for name, part in parts]
        pending, self._pending = self._pending, []
        self._planned_pending = pending
        return join([part for _, part in parts])

    def finish_generation(self, plan: Plan, results: Results) -> None:
        """Tell the GA the panel's verdict, crown a champion, admit received ones."""
        c = self.config
        self._count(plan.games, results.steps)
        g0 = r0 = 0
        pending = iter(self._planned_pending)
        for name, games, genomes in self._plan_parts:
            part = Plan(plan.genomes[g0:g0 + genomes], plan.right[r0:r0 + games] - g0,
                        plan.left[r0:r0 + games] - g0, plan.seeds[r0:r0 + games])
            res = Results(results.score[r0:r0 + games], results.length[r0:r0 + games])
            g0, r0 = g0 + genomes, r0 + games
            if name == "panel":
                population = part.genomes[: c.population]
                fitness = panel_fitness(part, res, c.population)
                self.algo.tell(population, fitness)
            elif name == "claim":
                score = float(res.score.mean())
                remember_reference(self.layout, self.champion, self._claim_due, score, res.steps)
                self.offer = (self.champion, round(score, 4), self._claim_due)
                self._claim_due = None
            elif name == "crown":
                n_cand = int(part.right.max()) + 1
                scores = np.zeros(n_cand)
                np.add.at(scores, part.right, res.score)
                self._crown(part.genomes[int(np.argmax(scores))])
            else:
                champion, peer = next(pending)
                self._admit(champion, peer, float(res.score.mean()))
        self._planned_pending = []
        self._log_generation(fitness)

    def _crown(self, champion: np.ndarray) -> None:
        """The round-robin's winner joins the hall and is what this island offers."""
        c = self.config
        self.champion = champion.copy()
        self.hall.add(self.champion, self.name, self.algo.generation)
        self.champions.append((self.algo.generation, self.champion))
        del self.champions[: -c.ciao_limit]
        # its claim is measured in the next generation's batch; until then the previous
        # champion stays on offer
        self._claim_due = self.rng.integers(0, 2**31, c.claim_episodes)

    def _admit(self, champion: np.ndarray, peer: str, measured: float) -> None:
        if measured < self.config.admit_score:
            self.hall_refused += 1
            return
        self.hall.add(champion, peer, self.algo.generation)
        self.algo.inject(champion[None], np.array([measured]))
        self.migrants_accepted += 1
        self._migrants_since_generation += 1

    def _count(self, games: int, steps: int) -> None:
        self.games += int(games)
        self.env_steps += int(steps)

    # --- gossip ------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The newest champion and a claim a receiver can replay (nothing before one)."""
        n = self.layout.size
        if self.offer is None:
            return Snapshot(KIND, self.fingerprint, float(self.games), {"genomes": np.zeros((0, n), np.float32)})
        champion, claimed, seeds = self.offer
        meta: dict[str, Scalar] = {"count": 1, "generation": self.algo.generation, "algo": "ga",
                                   "fitness_0": claimed, "hall": len(self.hall)}
        for j, s in enumerate(seeds):
            meta[f"seed_{j}"] = int(s)
        return Snapshot(KIND, self.fingerprint, float(self.games),
                        {"genomes": np.ascontiguousarray(champion[None], dtype=np.float32)}, meta)

    def offer_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"genomes": (1, self.layout.size)}

    def absorb(self, snapshot: Snapshot, peer: str) -> AbsorbResult:
        """Door checks, claim replay, re-scoring against our panel, then the hall."""
        try:
            problem = check_migrants(snapshot, self.door)
        except Exception as exc:  # anything odd about the object is the peer's fault
            problem = (MigrantReject.MALFORMED, f"{type(exc).__name__}: {exc}")
        if problem is not None:
            reason, detail = problem
            self.rejections[reason] += 1
            self.migrants_rejected += 1
            return AbsorbResult(False, reason.value, detail)
        champion = np.array(snapshot.tensors["genomes"][:1], dtype=np.float32)
        claimed, seeds = claim(snapshot.meta, 0), claim_seeds(snapshot.meta, self.config.claim_episodes)
        if claimed is None or seeds is None:
            self.rejections[MigrantReject.MALFORMED] += 1
            self.migrants_rejected += 1
            return AbsorbResult(False, MigrantReject.MALFORMED.value, "a champion needs a numeric claim "
                                f"fitness_0 and exactly {self.config.claim_episodes} seeds")
        replayed, steps = reference_score(self.layout, champion[0], seeds)
        self._count(len(seeds) * REFERENCE_SIZE, steps)  # counted even when replayed before
        if abs(claimed - replayed) > CLAIM_TOLERANCE:
            self.forged_claims += 1
            self.migrants_rejected += 1
            self.forgeries.append((peer, claimed, replayed))
            return AbsorbResult(False, "forged_claim",
                                f"claimed {claimed:.4f} against the reference panel, replayed {replayed:.4f}")
        self._pending.append((champion[0], str(peer)[:64]))
        del self._pending[: -self.config.max_pending]
        return AbsorbResult(True, "ok", "claim replayed; champion queued for re-scoring "
                            "against our panel in the next generation")

    # --- measurement -------------------------------------------------------

    def best_genome(self) -> np.ndarray | None:
        """The current champion, or before the first one the best of the last generation."""
        if self.champion is not None:
            return self.champion
        genomes, _ = self.algo.elite(1)
        return genomes[0] if genomes.shape[0] else None

    def evaluate(self) -> dict[str, float]:
        """The yardstick: the champion against the baseline on fixed seeds, plus the
        hall's newest entries rated by a round-robin (Elo)."""
        best = self.best_genome()
        if best is None:
            return {"score_vs_baseline": float("nan"), "eval_episodes": 0.0}
        mean, res = score_vs_baseline(self.layout, best[None], self.config.eval_episodes)
        self.eval_env_steps += res.steps
        out = {"score_vs_baseline": float(mean[0]), "eval_mean": float(mean[0]),
               "eval_std": float(res.score.std()), "eval_episodes": float(res.score.size),
               "solved": float(mean[0] > 0.0)}
        newest = self.hall.genomes[-self.config.rating_size:]
        if len(newest) >= 2:
            payoff, steps = payoff_matrix(self.layout, newest, 1, seed=0)
            self.eval_env_steps += steps
            ratings = elo(payoff)
            out["hall_elo_newest"] = float(ratings[-1])
            out["hall_elo_spread"] = float(ratings.max() - ratings.min())
        self._last_eval = out
        return out

    def visuals(self) -> dict[str, np.ndarray]:
        """A strip of one game, the champion (right, yellow) against the baseline (left)."""
        best = self.best_genome()
        if best is None:
            return {}
        key = best.tobytes()
        now = time.monotonic()
        if self._rollout is None or (key != self._rollout[0] and now - self._rollout[1] >= 30.0):
            self._rollout = (key, now, rollout_frames(self.layout, best))
        return {"rollout": self._rollout[2]}

    def metrics(self) -> dict[str, Scalar]:
        best, mean = self._last_best_mean()
        out: dict[str, Scalar] = {
            "task": self.task.name, "algo": "ga", "population": self.config.population,
            "best_fitness": best, "mean_fitness": mean, "generation": self.algo.generation,
            "games": self.games, "env_steps": self.env_steps,
            "eval_env_steps": self.eval_env_steps, "hall_size": len(self.hall),
            "hall_foreign": self.hall.foreign(self.name), "hall_refused": self.hall_refused,
            # which peers' champions the hall holds (a few ids, for the status page and tests)
            "hall_peers": ",".join(sorted({o for o in self.hall.origin if o != self.name}))[:256],
            "champions": len(self.champions), "migrants_accepted": self.migrants_accepted,
            "migrants_rejected": self.migrants_rejected, "forged_claims": self.forged_claims,
        }
        for key in ("score_vs_baseline", "hall_elo_newest", "hall_elo_spread"):
            if key in self._last_eval:
                out[key] = self._last_eval[key]
        for reason, count in self.rejections.items():
            out[f"rejected_{reason.value}"] = count
        return out

    def history(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=np.float64) for k, v in self._history.items()}

    def _log_generation(self, fitness: np.ndarray) -> None:
        super()._log_generation(fitness)
        self._history["games"].append(float(self.games))
        del self._history["games"][: -self.config.history_limit]

    # --- checkpoints -------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {f"algo.{k}": v for k, v in self.algo.state_dict().items()}
        state.update({f"hall.{k}": v for k, v in self.hall.state_dict().items()})
        state["learner.fingerprint"] = np.frombuffer(self.fingerprint.encode(), dtype=np.uint8).copy()
        state["learner.rng"] = rng_state(self.rng)
        state["learner.counters"] = np.array(
            [self.games, self.env_steps, self.eval_env_steps, self.migrants_accepted,
             self.migrants_rejected, self.forged_claims, self.hall_refused], dtype=np.int64)
        state["learner.rejections"] = np.array([self.rejections[r] for r in MigrantReject], dtype=np.int64)
        n = self.layout.size
        state["champion"] = (self.champion if self.champion is not None else np.zeros(0, np.float32)).reshape(-1, n)
        if self.offer is not None:
            state["offer.genome"] = self.offer[0].reshape(1, n)
            state["offer.claim"] = np.array([self.offer[1]])
            state["offer.seeds"] = np.asarray(self.offer[2], np.int64)
        if self._claim_due is not None:
            state["claim_due"] = np.asarray(self._claim_due, np.int64)
        state["ciao.generation"] = np.array([g for g, _ in self.champions], np.int64)
        state["ciao.genomes"] = (np.stack([c for _, c in self.champions]) if self.champions
                                 else np.zeros((0, n), np.float32))
        for k, v in self.history().items():
            state[f"history.{k}"] = v
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        fp = bytes(need(state, "learner.fingerprint").astype(np.uint8)).decode(errors="replace")
        if fp != self.fingerprint:
            raise UserError(f"checkpoint is for task/layout {fp}, this island runs {self.fingerprint}; "
                            "use a fresh state directory for this task")
        self.algo.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("algo.")})
        self.hall.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("hall.")})
        self.rng = rng_from_state(need(state, "learner.rng"))
        (self.games, self.env_steps, self.eval_env_steps, self.migrants_accepted,
         self.migrants_rejected, self.forged_claims, self.hall_refused) = (
            int(v) for v in need(state, "learner.counters", (7,)))
        self.rejections = {r: int(c) for r, c in zip(MigrantReject, need(state, "learner.rejections", (len(MigrantReject),)))}
        champion = need(state, "champion").astype(np.float32)
        self.champion = champion[0].copy() if champion.shape[0] else None
        self.offer = None
        if "offer.genome" in state:
            self.offer = (need(state, "offer.genome").astype(np.float32)[0],
                          float(need(state, "offer.claim")[0]), need(state, "offer.seeds").astype(np.int64))
        self._claim_due = state["claim_due"].astype(np.int64) if "claim_due" in state else None
        gens, genomes = need(state, "ciao.generation"), need(state, "ciao.genomes").astype(np.float32)
        self.champions = [(int(g), c) for g, c in zip(gens, genomes)]
        self._history = {k: [float(x) for x in need(state, f"history.{k}").reshape(-1)]
                         for k in HISTORY_COLUMNS}

    def close(self) -> None:
        """Nothing to stop: games run inline, batched."""


__all__ = ["SelfPlayConfig", "SelfPlayLearner"]
