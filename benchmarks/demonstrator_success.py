"""How often the scripted demonstrator folds each task, per noise level.

Two variants, seeds 0..N-1 for every task:

* "episode": `run_episode(EpisodeSpec(task, seed, "demo", noise))` -- exactly what dataset
  generation records; it also draws a random demonstrator speed in [0.85, 1.3], and a slow
  draw may not finish the fold within the 16-step horizon. Success is the record's flag
  (`world.is_success()` at any frame).
* "pure": zero noise, speed 1: `FoldWorld` + `ScriptedDemonstrator(DemoParams())` stepped
  directly (nothing rendered), success by the environment's rule `world.is_success()`
  (score >= the task's threshold with the cloth released) at any step.

"final score" is the task score after the last (16th) action.

    python benchmarks/demonstrator_success.py --seeds 50 --json demo_success.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from wmgym.sim.demonstrator import DemoParams, ScriptedDemonstrator
from wmgym.sim.episode import EpisodeSpec, run_episode
from wmgym.sim.tasks import TASKS
from wmgym.sim.world import FoldWorld, WorldConfig

NOISE_LEVELS = (0.0, 0.01, 0.02, 0.04)  # = wmgym.data.generate.DEMO_NOISE_LEVELS
HORIZON = 16


def code_version() -> str:
    """`git describe --always --dirty` of the checkout the numbers came from ("unknown" outside git)."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_pure(world: FoldWorld, task: str, seed: int, horizon: int = HORIZON) -> tuple[bool, float]:
    """(success at any step, final score) of one zero-noise, speed-1 scripted fold."""
    rng = np.random.default_rng(seed)
    world.reset(rng, task)
    expert = ScriptedDemonstrator(world, rng, DemoParams(), horizon)
    success = world.is_success()
    for _ in range(horizon):
        world.step(expert.action())
        success = success or world.is_success()
    return bool(success), float(world.score())


def _summary(successes: list[bool], scores: list[float], seconds: float) -> dict:
    return {"episodes": len(successes), "success_rate": round(float(np.mean(successes)), 3),
            "mean_final_score": round(float(np.mean(scores)), 3),
            "min_final_score": round(float(np.min(scores)), 3),
            "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=50, help="seeds 0..N-1 per task and noise level")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    results: dict = {"benchmark": "demonstrator_success", "date": time.strftime("%Y-%m-%d"),
                     "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
                     "code_version": code_version(),
                     "seeds": args.seeds, "horizon": HORIZON, "episode": {}, "pure": {}}
    for task in TASKS:
        results["episode"][task] = {}
        for noise in NOISE_LEVELS:
            start = time.perf_counter()
            records = [run_episode(EpisodeSpec(task, seed, "demo", noise)) for seed in range(args.seeds)]
            results["episode"][task][str(noise)] = _summary(
                [r.success for r in records], [float(r.score[-1]) for r in records],
                time.perf_counter() - start)
            print(f"episode {task:18s} noise {noise:.2f}: {results['episode'][task][str(noise)]}", flush=True)
    world = FoldWorld(WorldConfig())
    for task in TASKS:
        start = time.perf_counter()
        outcomes = [run_pure(world, task, seed) for seed in range(args.seeds)]
        results["pure"][task] = _summary([o[0] for o in outcomes], [o[1] for o in outcomes],
                                         time.perf_counter() - start)
        print(f"pure    {task:18s}: {results['pure'][task]}", flush=True)

    header = "| task | " + " | ".join(f"noise {n:g}" for n in NOISE_LEVELS) + " | pure (noise 0, speed 1) |"
    lines = ["", f"success rate / mean final score over {args.seeds} seeds", header,
             "|" + "---|" * (len(NOISE_LEVELS) + 2)]
    for task in TASKS:
        cells = [results["episode"][task][str(n)] for n in NOISE_LEVELS] + [results["pure"][task]]
        lines.append(f"| {task} | " + " | ".join(
            f"{c['success_rate']:.0%} / {c['mean_final_score']:.2f}" for c in cells) + " |")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
