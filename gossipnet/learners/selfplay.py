"""A self-play island for slime volleyball behind the ``Learner`` interface.

Coevolution's difficulty for a swarm is that fitness depends on opponents, so islands
must share *opponents*, not scores. Each island runs tournament selection
(``gossipnet.evo.slime_tournament``: two members play one game, the loser is replaced by
a mutant of the winner) with a share of its games against a swarm-wide hall of fame;
every ``champion_interval`` generations it crowns a champion by a round-robin of its
longest winning streaks against a hall sample, adds it to its hall and offers it as its
migrant. A round's games (a generation) are played in one call to the compiled engine
(``slime_compiled``), which plays each game to its end without waiting for the others.

A receiver runs the same door checks as every island (``learners.migrants``: kind,
fingerprint, shape, finiteness, magnitude), then replays the sender's claim (the
champion's score against the public reference panel on the named seeds; games are
deterministic) and refuses the champion if the claim does not replay. Only then does it
spend games re-scoring it against its own opponents (the sender's claims mean little
here: fitness is relative); it joins the hall unless clearly worse than them, and from
the hall it enters the population by winning games.

The baseline policy is the yardstick of ``evaluate()`` only; it never enters training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from gossipnet.errors import UserError
from gossipnet.evo.algorithm import need, rng_from_state, rng_state
from gossipnet.evo.hall_of_fame import HallOfFame, elo
from gossipnet.evo.selfplay import (
    REFERENCE_SIZE, TASK_NAME, payoff_matrix, reference_score, score_vs_baseline, slime_task,
)
from gossipnet.evo.slime_compiled import play_genome_games
from gossipnet.evo.slime_env import rollout_frames
from gossipnet.evo.slime_tournament import Tournament, TournamentConfig
from gossipnet.learners.base import AbsorbResult, LearnerWire, Scalar, Snapshot
from gossipnet.learners.evolution import KIND, ROLLOUT_EVERY_S, EvolutionLearner
from gossipnet.learners.migrants import MigrantReject, claim, claim_seeds

HISTORY_COLUMNS = ("generation", "best", "mean", "env_steps", "migrants", "games")
CLAIM_TOLERANCE = 1e-3  # claims travel rounded to 4 decimals


@dataclass(frozen=True)
class SelfPlayConfig:
    """One self-play island. A generation is one round: every member plays one game
    (about ``population / 2`` games); a champion every ``champion_interval`` rounds."""

    task: str = TASK_NAME
    algo: str = "ga"
    population: int = 32
    hidden: int = 16
    seed: int = 0
    # mutation noise: the published GA's 0.1 left 4 islands of 32 flat in 2 of 3 seeds; with
    # migration, 0.2 took all 3 past -1 within 300k games (docs/EVOLUTION.md)
    sigma: float = 0.2
    init_scale: float = 0.5  # initial genes ~ N(0, 0.5^2) (the published GA's)
    hall_share: float = 0.1  # fraction of games a member plays against a hall-of-fame champion
    hall_recent: float = 0.0  # of those, the share drawn from the hall's 8 newest entries
    champion_interval: int = 25  # generations between champions (and migrant offers)
    candidates: int = 3  # longest winning streaks that compete to be champion
    round_robin_size: int = 6  # hall sample the candidates play, one game each
    hall_capacity: int = 64
    admit_games: int = 6  # games a received champion plays against our hall and leaders
    admit_score: float = -2.0  # admitted to the hall unless clearly worse than those
    # Migration into the population (island model): an admitted champion also replaces this
    # share of our shortest winning streaks with its mutants (at least one member). 0: it
    # enters only through hall games, which left islands of 32 flat at 300k games (EVOLUTION.md).
    migration_share: float = 0.375
    claim_episodes: int = 2  # serve seeds a claim is measured on (x 4 reference opponents)
    eval_episodes: int = 200  # yardstick: games against the baseline on fixed seeds
    rating_size: int = 16  # newest hall entries rated by a round-robin in evaluate()
    max_migrants: int = 1
    max_abs_gene: float = 1000.0
    history_limit: int = 100_000
    ciao_limit: int = 64  # champions kept for the CIAO plot

    @property
    def migrants_in(self) -> int:
        """Members an admitted champion's mutants replace."""
        return max(1, round(self.migration_share * self.population)) if self.migration_share else 0

    def check(self) -> None:
        if self.task != TASK_NAME:
            raise UserError(f"self-play islands play {TASK_NAME!r}, not {self.task!r}")
        if self.algo != "ga":
            raise UserError(f"self-play islands use --algo ga (got {self.algo!r}): tournament "
                            "selection on single games, as the published GA self-play")
        if not 0.0 <= self.migration_share < 1.0:
            raise UserError(f"migration share {self.migration_share} must be in [0, 1): the share of an island "
                            "an admitted champion's mutants replace")
        if self.population < 4 or self.candidates < 1 or self.champion_interval < 1:
            raise UserError("self-play needs --population >= 4, candidates >= 1, champion interval >= 1")
        if not 0.0 <= self.hall_share < 1.0 or not 0.0 <= self.hall_recent <= 1.0:
            raise UserError(f"hall share must be in [0, 1) and its recent part in [0, 1], got "
                            f"{self.hall_share}, {self.hall_recent}")


class SelfPlayLearner(EvolutionLearner):
    """A slime volleyball island: tournament self-play, a hall of fame, champions as migrants."""

    kind = KIND
    history_columns = HISTORY_COLUMNS
    # champions travel exactly (their claims are replayed), one generation per worker call
    wire = LearnerWire(blob_kind="genome", dtype="float32", default_chunk=1, merge_event="migrant",
                       absorb_reasons=(*(r.value for r in MigrantReject), "forged_claim"))

    def __init__(self, config: SelfPlayConfig, name: str = "self") -> None:  # noqa: D107 (not super: _open_door)
        config.check()
        self.config = config
        self.name = name
        self.task = slime_task(config.hidden)
        self.layout = self.task.layout
        self.tournament = Tournament(self.layout.size, TournamentConfig(config.population, config.sigma,
                                                                        config.init_scale), config.seed)
        self.rng = np.random.default_rng([config.seed, 0x5E1F])
        self.hall = HallOfFame(self.layout.size, config.hall_capacity)
        self.champion: np.ndarray | None = None
        # what snapshot() offers: a champion, its claimed reference score and the claim's seeds
        self.offer: tuple[np.ndarray, float, np.ndarray] | None = None
        self.champions: list[tuple[int, np.ndarray]] = []  # (generation, genome) for CIAO
        self.generation = 0
        self.games = 0  # every game played: tournament, crowning, claims, re-scoring
        self.hall_refused = 0
        self._last_eval: dict[str, float] = {}
        self._open_door(self.layout.size)

    @property
    def step(self) -> int:
        return self.generation

    # --- training ----------------------------------------------------------

    def train(self, budget: int) -> dict[str, float]:
        """Play ``budget`` rounds (generations)."""
        games_before = self.games
        for _ in range(max(0, int(budget))):
            self.play_round()
        best, mean = self._last_best_mean()
        return {"best_fitness": best, "mean_fitness": mean, "generation": float(self.generation),
                "games": float(self.games - games_before)}

    def play_round(self) -> None:
        """One generation: every member plays one game, ``hall_share`` of them against a
        hall-of-fame champion, the rest in disjoint random pairs, all in one call to the
        compiled engine; then each result is settled. Every ``champion_interval`` rounds
        a champion is crowned."""
        c, t = self.config, self.tournament
        on_hall = (self.rng.random(c.population) < c.hall_share) if len(self.hall) else np.zeros(c.population, bool)
        hall_members = np.flatnonzero(on_hall)
        pairs = t.pairs(np.flatnonzero(~on_hall))
        opponents = self.hall.sample(hall_members.size, self.rng, c.hall_recent)
        k, h = pairs.shape[0], hall_members.size
        score = self._play(np.concatenate([t.members, opponents]),
                           np.concatenate([pairs[:, 0], hall_members]),
                           np.concatenate([pairs[:, 1], c.population + np.arange(h)]))
        for (a, b), sc in zip(pairs, score[:k]):
            t.settle(int(a), int(b), float(sc))
        for m, opp, sc in zip(hall_members, opponents, score[k:]):
            t.settle_frozen(int(m), opp, float(sc))
        self.generation += 1
        self._log_generation(t.streak.astype(np.float64))
        if self.generation % c.champion_interval == 0:
            self._crown()

    def _play(self, genomes: np.ndarray, right: np.ndarray, left: np.ndarray) -> np.ndarray:
        """Training games (counted), serves from our generator; the right players' scores."""
        score, length = play_genome_games(self.layout, genomes, right, left,
                                          self.rng.integers(0, 2**31, len(right)))
        self.games += score.size
        self.env_steps += int(length.sum())
        return score

    def _versus(self, players: np.ndarray, opponents: np.ndarray) -> np.ndarray:
        """Mean score of each player over one game against each opponent."""
        n, o = len(players), len(opponents)
        score = self._play(np.concatenate([players, opponents]), np.repeat(np.arange(n), o),
                           n + np.tile(np.arange(o), n))
        return score.reshape(n, o).mean(axis=1)

    def _crown(self) -> None:
        """The longest winning streaks play a hall sample (before there is a hall: the
        rest of the population); the best is the champion. It joins the hall and is
        offered with its claim: its score against the public reference panel."""
        c, t = self.config, self.tournament
        leaders = t.leaders(c.candidates)
        opponents = self.hall.sample(c.round_robin_size, self.rng)
        if len(opponents) == 0:
            others = np.setdiff1d(np.arange(c.population), leaders)
            opponents = t.members[self.rng.choice(others, min(c.round_robin_size, others.size), replace=False)]
        best = leaders[int(np.argmax(self._versus(t.members[leaders], opponents)))]
        self.champion = t.members[best].copy()
        self.hall.add(self.champion, self.name, self.generation)
        self.champions.append((self.generation, self.champion))
        del self.champions[: -c.ciao_limit]
        seeds = self.rng.integers(0, 2**31, c.claim_episodes)
        claimed, steps = reference_score(self.layout, self.champion, seeds)
        self.games += len(seeds) * REFERENCE_SIZE
        self.env_steps += steps
        self.offer = (self.champion, round(claimed, 4), seeds)

    def _admit(self, champion: np.ndarray, peer: str) -> bool:
        """Re-score a received champion against our hall and leaders; into the hall
        unless clearly worse than them."""
        c, t = self.config, self.tournament
        opponents = np.concatenate([self.hall.sample(c.admit_games // 2, self.rng),
                                    t.members[t.leaders(c.admit_games)]])[: c.admit_games]
        measured = float(self._versus(champion[None], opponents)[0])
        if measured < c.admit_score:
            self.hall_refused += 1
            return False
        self.hall.add(champion, peer, self.generation)
        t.immigrate(champion, c.migrants_in)  # none when migration_share is 0
        self.migrants_accepted += 1
        self._migrants_since_generation += 1
        return True

    # --- gossip ------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The newest champion and a claim a receiver can replay (nothing before one)."""
        n = self.layout.size
        if self.offer is None:
            return Snapshot(KIND, self.fingerprint, float(self.games), {"genomes": np.zeros((0, n), np.float32)})
        champion, claimed, seeds = self.offer
        meta: dict[str, Scalar] = {"count": 1, "generation": self.generation, "algo": "ga",
                                   "fitness_0": claimed, "hall": len(self.hall)}
        for j, s in enumerate(seeds):
            meta[f"seed_{j}"] = int(s)
        return Snapshot(KIND, self.fingerprint, float(self.games),
                        {"genomes": np.ascontiguousarray(champion[None], dtype=np.float32)}, meta)

    def offer_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"genomes": (1, self.layout.size)}

    def absorb(self, snapshot: Snapshot, peer: str) -> AbsorbResult:
        """Door checks, claim replay, re-scoring against our own opponents, then the hall."""
        refused = self._refused_at_door(snapshot)
        if refused is not None:
            return refused
        champion = np.array(snapshot.tensors["genomes"][:1], dtype=np.float32)[0]
        claimed, seeds = claim(snapshot.meta, 0), claim_seeds(snapshot.meta, self.config.claim_episodes)
        if claimed is None or seeds is None:
            self.rejections[MigrantReject.MALFORMED] += 1
            self.migrants_rejected += 1
            return AbsorbResult(False, MigrantReject.MALFORMED.value, "a champion needs a numeric claim "
                                f"fitness_0 and exactly {self.config.claim_episodes} seeds")
        replayed, steps = reference_score(self.layout, champion, seeds)
        self.games += len(seeds) * REFERENCE_SIZE  # counted even when replayed before
        self.env_steps += steps
        if abs(claimed - replayed) > CLAIM_TOLERANCE:
            self.forged_claims += 1
            self.migrants_rejected += 1
            self.forgeries.append((peer, claimed, replayed))
            return AbsorbResult(False, "forged_claim",
                                f"claimed {claimed:.4f} against the reference panel, replayed {replayed:.4f}")
        if not self._admit(champion, str(peer)[:64]):
            return AbsorbResult(True, "ok", "claim replayed; re-scored against our hall and leaders, "
                                "too weak for the hall")
        return AbsorbResult(True, "ok", "claim replayed; re-scored against our hall and leaders; in the hall")

    # --- measurement -------------------------------------------------------

    def best_genome(self) -> np.ndarray:
        """The current champion, or before the first one the longest winning streak."""
        if self.champion is not None:
            return self.champion
        return self.tournament.members[self.tournament.leaders(1)[0]].copy()

    def evaluate(self) -> dict[str, float]:
        """The yardstick: the champion against the baseline on fixed seeds, plus the
        hall's newest entries rated by a round-robin (Elo)."""
        mean, res = score_vs_baseline(self.layout, self.best_genome()[None], self.config.eval_episodes)
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
        key, now = best.tobytes(), time.monotonic()
        if self._rollout is None or (key != self._rollout[0] and now - self._rollout[1] >= ROLLOUT_EVERY_S):
            self._rollout = (key, now, rollout_frames(self.layout, best))
        return {"rollout": self._rollout[2]}

    def metrics(self) -> dict[str, Scalar]:
        best, mean = self._last_best_mean()
        t = self.tournament
        out: dict[str, Scalar] = {
            "task": self.task.name, "algo": "ga", "population": self.config.population,
            # fitness in a tournament is the winning streak: the longest, and the mean
            "best_fitness": best, "mean_fitness": mean, "generation": self.generation,
            "games": self.games, "env_steps": self.env_steps, "ties": t.ties,
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

    def _log_generation(self, fitness: np.ndarray) -> None:
        super()._log_generation(fitness)
        self._history["games"].append(float(self.games))
        del self._history["games"][: -self.config.history_limit]

    # --- checkpoints ---------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {f"tournament.{k}": v for k, v in self.tournament.state_dict().items()}
        state.update({f"hall.{k}": v for k, v in self.hall.state_dict().items()})
        state["learner.fingerprint"] = np.frombuffer(self.fingerprint.encode(), dtype=np.uint8).copy()
        state["learner.rng"] = rng_state(self.rng)
        state["learner.counters"] = np.array(
            [self.generation, self.games, self.env_steps, self.eval_env_steps,
             self.migrants_accepted, self.migrants_rejected, self.forged_claims, self.hall_refused], dtype=np.int64)
        state["learner.rejections"] = np.array([self.rejections[r] for r in MigrantReject], dtype=np.int64)
        n = self.layout.size
        state["champion"] = (self.champion if self.champion is not None else np.zeros(0, np.float32)).reshape(-1, n)
        if self.offer is not None:
            state["offer.genome"] = self.offer[0].reshape(1, n)
            state["offer.claim"] = np.array([self.offer[1]])
            state["offer.seeds"] = np.asarray(self.offer[2], np.int64)
        state["ciao.generation"] = np.array([g for g, _ in self.champions], np.int64)
        state["ciao.genomes"] = (np.stack([c for _, c in self.champions]) if self.champions
                                 else np.zeros((0, n), np.float32))
        for k, v in self.history().items():
            state[f"history.{k}"] = v
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self._check_fingerprint(state)
        self.tournament.load_state_dict({k[11:]: v for k, v in state.items() if k.startswith("tournament.")})
        self.hall.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("hall.")})
        self.rng = rng_from_state(need(state, "learner.rng"))
        (self.generation, self.games, self.env_steps, self.eval_env_steps,
         self.migrants_accepted, self.migrants_rejected, self.forged_claims, self.hall_refused) = (
            int(v) for v in need(state, "learner.counters", (8,)))
        self.rejections = {r: int(c) for r, c in zip(MigrantReject, need(state, "learner.rejections", (len(MigrantReject),)))}
        champion = need(state, "champion").astype(np.float32)
        self.champion = champion[0].copy() if champion.shape[0] else None
        self.offer = None
        if "offer.genome" in state:
            self.offer = (need(state, "offer.genome").astype(np.float32)[0],
                          float(need(state, "offer.claim")[0]), need(state, "offer.seeds").astype(np.int64))
        gens, genomes = need(state, "ciao.generation"), need(state, "ciao.genomes").astype(np.float32)
        self.champions = [(int(g), c) for g, c in zip(gens, genomes)]
        self._history = {k: [float(x) for x in need(state, f"history.{k}").reshape(-1)]
                         for k in HISTORY_COLUMNS}

    def close(self) -> None:
        """Nothing to stop: games run inline, batched."""


__all__ = ["SelfPlayConfig", "SelfPlayLearner"]
