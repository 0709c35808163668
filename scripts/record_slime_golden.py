"""Record the original slimevolleygym's trajectories as golden files for our engine's tests.

The original needs the old ``gym`` (it breaks on numpy 2) and imports ``cv2`` without
declaring it, so it is not a gossipnet dependency: this script makes a throw-away virtual
environment with what it needs (gym 0.26.2, numpy<2, slimevolleygym 0.1.0 without its
opencv dependency, and a stub ``cv2`` module: only the pixel mode, unused here, draws
with it), runs the original there, and writes

- ``tests/data/slime_golden.npz``: per scenario, the serves the original drew, both
  sides' buttons, and after every step the ball and both slimes (x, y, vx, vy), lives,
  reward, done and both observations;
- ``tests/data/slime_reference.json``: the original's score distributions, random buttons
  against the baseline (1,000 episodes) and baseline against baseline (300 by default:
  those games mostly run the full 3,000 steps, slowly, in the original).

Usage: ``python scripts/record_slime_golden.py [--venv /tmp/slime-golden] [--episodes 1000]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["gym==0.26.2", "numpy<2"]
ORIGINAL = "slimevolleygym==0.1.0"

# Runs inside the throw-away venv, against the original package.
RECORDER = textwrap.dedent(r'''
    import json, sys, time, types
    sys.modules["cv2"] = types.ModuleType("cv2")  # only the pixel renderer uses cv2
    import numpy as np
    from slimevolleygym.slimevolley import BaselinePolicy, Game, SlimeVolleyEnv

    out_npz, out_json = sys.argv[1], sys.argv[2]
    episodes, episodes_bvb = int(sys.argv[3]), int(sys.argv[4])

    class LoggedRandom:
        """The game's np_random, remembering every serve it draws."""
        def __init__(self, seed):
            self.rs = np.random.RandomState(seed)
            self.log = []
        def uniform(self, low, high):
            v = float(self.rs.uniform(low=low, high=high))
            self.log.append(v)
            return v

    def fresh_env(seed):
        env = SlimeVolleyEnv()
        rnd = LoggedRandom(seed)
        env.game = Game(np_random=rnd)
        env.ale = env.game.agent_right
        rnd.log.clear()  # Game() already served once; reset() serves again
        return env, rnd

    def state(g):
        b, l, r = g.ball, g.agent_left, g.agent_right
        return [b.x, b.y, b.vx, b.vy, l.x, l.y, l.vx, l.vy, r.x, r.y, r.vx, r.vy, l.life, r.life]

    def record(seed, right_kind, left_kind, action_seed):
        env, rnd = fresh_env(seed)
        obs_r = env.reset()
        obs_l = env.game.agent_left.getObservation()
        acts = np.random.RandomState(action_seed)
        right_policy = BaselinePolicy() if right_kind == "baseline" else None
        left_policy = BaselinePolicy() if left_kind == "baseline" else None
        rows = {"state": [], "reward": [], "done": [], "obs_right": [], "obs_left": [],
                "buttons_right": [], "buttons_left": []}
        rows_init = {"state0": state(env.game), "obs_right0": list(obs_r), "obs_left0": list(obs_l)}
        done = False
        while not done:
            a_r = right_policy.predict(obs_r) if right_policy else list(acts.randint(0, 2, 3))
            a_l = left_policy.predict(obs_l) if left_policy else list(acts.randint(0, 2, 3))
            obs_r, reward, done, info = env.step(a_r, a_l)
            obs_l = info["otherObs"]
            rows["state"].append(state(env.game))
            rows["reward"].append(reward)
            rows["done"].append(done)
            rows["obs_right"].append(list(obs_r))
            rows["obs_left"].append(list(obs_l))
            rows["buttons_right"].append([int(v) for v in a_r])
            rows["buttons_left"].append([int(v) for v in a_l])
        out = {k: np.asarray(v) for k, v in rows.items()}
        out.update({k: np.asarray(v) for k, v in rows_init.items()})
        out["serves"] = np.asarray(rnd.log).reshape(-1, 2)
        return out

    scenarios = {
        "random_vs_random": (11, "random", "random", 101),
        "random_vs_baseline_a": (12, "random", "baseline", 102),
        "random_vs_baseline_b": (13, "random", "baseline", 103),
        "baseline_vs_random": (14, "baseline", "random", 104),
        "baseline_vs_baseline": (15, "baseline", "baseline", 105),
    }
    arrays = {}
    for name, args in scenarios.items():
        for k, v in record(*args).items():
            arrays[f"{name}/{k}"] = v
    np.savez_compressed(out_npz, **arrays)

    def distribution(right_random, seed0, episodes):
        scores, steps, t0 = [], 0, time.perf_counter()
        for i in range(episodes):
            env, _ = fresh_env(seed0 + i)
            space = np.random.RandomState(7 + i)
            right = None if right_random else BaselinePolicy()
            obs, done, total = env.reset(), False, 0
            while not done:
                a = list(space.randint(0, 2, 3)) if right_random else right.predict(obs)
                obs, r, done, _ = env.step(a)
                total += r
                steps += 1
            scores.append(total)
        seconds = time.perf_counter() - t0
        s = np.asarray(scores, dtype=float)
        return {"episodes": episodes, "mean": s.mean(), "std": s.std(), "steps": steps,
                "steps_per_second": steps / seconds,
                "histogram": {str(k): int((s == k).sum()) for k in range(-5, 6)}}

    ref = {"random_vs_baseline": distribution(True, 10_000, episodes),
           "baseline_vs_baseline": distribution(False, 20_000, episodes_bvb)}
    with open(out_json, "w") as f:
        json.dump(ref, f, indent=1)
    print(json.dumps(ref))
''')


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--venv", default="/tmp/slime-golden-venv", help="throw-away venv (made if missing)")
    p.add_argument("--out", default=str(ROOT / "tests" / "data"), help="directory for the golden files")
    p.add_argument("--episodes", type=int, default=1000, help="episodes of random against the baseline")
    p.add_argument("--episodes-bvb", type=int, default=300,
                   help="episodes of baseline against baseline (most run the full 3,000 steps)")
    args = p.parse_args()
    venv = Path(args.venv)
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", ORIGINAL], check=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    script = venv / "record_slime.py"
    script.write_text(RECORDER)
    t0 = time.perf_counter()
    subprocess.run([str(python), str(script), str(out / "slime_golden.npz"),
                    str(out / "slime_reference.json"), str(args.episodes), str(args.episodes_bvb)],
                   check=True)
    print(f"recorded in {time.perf_counter() - t0:.0f} s -> {out}")


if __name__ == "__main__":
    main()
