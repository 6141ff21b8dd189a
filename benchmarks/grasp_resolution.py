"""How many pixels separate a planner proposal that grasps from one that misses? Simulator only.

    python benchmarks/grasp_resolution.py --starts 150 --workers 2 --out grasp_resolution.json

For each task and start state s (`--kinds G`'s `EpisodeSpec(kind="proposal")`, seeds
seed .. seed+starts-1), the clean speed-1 demonstrator's sequence (what `wmgym plan` centres
its proposals on; noise 0) and one proposal (that sequence plus `--noise` on every position
delta and width, as `wmgym plan` and `--kinds G` draw it) are run in the simulator. At the
frame where the clean sequence has closed each gripper the task uses, the proposal's gripper
is displaced from the clean one by d (metres, worst hand). Reported per task:
  - ROC AUC of -d (3-D), -d_xy and -d_z for telling the proposal's success from its failure:
    how much of the outcome the grasp-time displacement decides;
  - the same displacement projected by the scene's fisheye camera at 64 x 64 and 128 x 128
    pixels (continuous, and between the pixel centres the two positions fall in): what an image
    of that size can show of it; and the median pixel displacement of succeeded and of failed
    proposals.
A world model that ranks proposals from images must see this displacement (relative to the
cloth's edge, which the image also only shows at that resolution).
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from wmgym.eval.ranking import roc_auc
from wmgym.sim.tasks import TASKS
from wmgym.train.checkpoint import write_text_atomic

RESOLUTIONS = (64, 128)


def pair(task: str, seed: int, noise: float) -> dict:
    """One clean run and one proposal from the same start state -> displacements and success."""
    from wmgym.sim.camera import FisheyeCamera
    from wmgym.sim.episode import EpisodeSpec, run_episode
    from wmgym.sim.gripper import GRASP_WIDTH
    from wmgym.sim.world import WorldConfig

    clean = run_episode(EpisodeSpec(task=task, seed=seed, kind="proposal", noise=0.0))
    proposal = run_episode(EpisodeSpec(task=task, seed=seed, kind="proposal", noise=noise))
    config = WorldConfig()
    cameras = {r: FisheyeCamera(r, r, config.camera_position, config.camera_look_at, fov_deg=config.camera_fov_deg)
               for r in RESOLUTIONS}
    rows = []
    for hand in range(2):
        closed = np.nonzero(clean.gripper_width[:, hand] < GRASP_WIDTH)[0]
        if len(closed) == 0:
            continue  # the task does not use this hand
        t = int(closed[0])
        a, b = clean.eef_pos[t, hand].astype(np.float64), proposal.eef_pos[t, hand].astype(np.float64)
        row = {"frame": t, "d": float(np.linalg.norm(b - a)), "d_xy": float(np.linalg.norm((b - a)[:2])),
               "d_z": float(abs(b[2] - a[2]))}
        for r, camera in cameras.items():
            uv = camera.project(np.stack([a, b]))[0]
            row[f"px{r}"] = float(np.linalg.norm(uv[1] - uv[0]))
            row[f"px{r}_cells"] = float(np.linalg.norm(np.floor(uv[1]) - np.floor(uv[0])))
        rows.append(row)
    worst = {k: max(r[k] for r in rows) for k in rows[0]}
    return {"task": task, "seed": seed, "success": bool(proposal.success), "clean_success": bool(clean.success), **worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=150, help="start states per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.01, help="proposal std (m), as wmgym plan's --position-std/--width-std")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    jobs = [(task, args.seed + s, args.noise) for task in TASKS for s in range(args.starts)]
    with ProcessPoolExecutor(args.workers) as pool:
        records = list(pool.map(pair, *zip(*jobs), chunksize=8))
    keys = ["d", "d_xy", "d_z"] + [f"px{r}{s}" for r in RESOLUTIONS for s in ("", "_cells")]
    summary = {}
    for task in TASKS:
        rows = [r for r in records if r["task"] == task and r["clean_success"]]
        y = np.array([r["success"] for r in rows])
        entry = {"proposals": len(rows), "success_rate": float(y.mean())}
        for k in keys:
            v = np.array([r[k] for r in rows])
            entry[f"auc_{k}"] = roc_auc(-v, y)
            entry[f"median_{k}_success"], entry[f"median_{k}_failure"] = float(np.median(v[y])), float(np.median(v[~y]))
        summary[task] = entry
    print(f"proposal noise {args.noise} m; per task: proposals (clean sequence succeeded), success; AUC of -displacement")
    print("| task | proposals | success | d 3-D | d_xy | d_z | px at 64 | px cells at 64 | px at 128 | px cells at 128 |"
          " median px at 64, succeeded / failed |")
    print("|---" * 11 + "|")
    for task, e in summary.items():
        cells = " | ".join(f"{e['auc_' + k]:.2f}" for k in keys)
        print(f"| {task} | {e['proposals']} | {e['success_rate']:.0%} | {cells} | "
              f"{e['median_px64_success']:.2f} / {e['median_px64_failure']:.2f} |")
    if args.out:
        write_text_atomic(Path(args.out), json.dumps({"args": vars(args), "summary": summary, "records": records}, indent=1))


if __name__ == "__main__":
    main()
