"""How much of a proposal's outcome is whether its grasp held? From the stores' `robot{0,1}_held_particles`.

    wmgym generate --out data/prop05_held.zarr --episodes 600 --kinds G --proposal-noise 0.005 --seed 24
    python benchmarks/hold_outcome.py --data data/prop05_held.zarr

For every episode of stores that record the simulator's grasp state, a hand "held" when it
holds at least `--min-particles` cloth particles at some frame (the hands a task uses are those
the clean demonstrator closes: left for fold_left_sleeve, right for fold_right_sleeve, both for
fold_half). Reported per task: the episodes' success rate, the share whose grasp held (every
hand the task uses), the success rate of those and of the rest, and the ROC AUC of "held" (a
binary score) for success. If a held grasp is nearly all that separates success from failure,
a world model needs to get one binary fact per hand right to rank a planner's proposals, which
its 64x64 frames show only as the cloth following the gripper or staying put.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from wmgym.data.store import EpisodeStore
from wmgym.eval.ranking import roc_auc
from wmgym.train.checkpoint import write_text_atomic

HANDS = {"fold_left_sleeve": (0,), "fold_right_sleeve": (1,), "fold_half": (0, 1)}


def hold_table(paths: list[str], min_particles: int = 1) -> dict:
    """{task: {episodes, success, held, success_if_held, success_if_not, auc}} over the stores."""
    rows = {task: ([], []) for task in HANDS}
    for path in paths:
        store = EpisodeStore.open(path)
        if not store.has_held_particles:
            raise ValueError(f"{path} does not record robot{{0,1}}_held_particles; regenerate it with this wmgym")
        for i in range(store.num_episodes):
            ep = store.read_episode(i)
            held = ep["held_particles"].max(0) >= min_particles  # (2,): each hand ever held
            rows[ep["task"]][0].append(all(held[h] for h in HANDS[ep["task"]]))
            rows[ep["task"]][1].append(ep["success"])
    out = {}
    for task, (held, success) in rows.items():
        if not held:
            continue
        held, success = np.array(held), np.array(success)
        rate = lambda m: float(success[m].mean()) if m.any() else float("nan")
        out[task] = {"episodes": int(len(held)), "success": float(success.mean()), "held": float(held.mean()),
                     "success_if_held": rate(held), "success_if_not": rate(~held),
                     "auc": roc_auc(held.astype(float), success)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="stores with robot{0,1}_held_particles")
    parser.add_argument("--min-particles", type=int, default=1, help="particles a hand must hold to count as a grasp")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    table = hold_table(args.data, args.min_particles)
    print("| task | episodes | success | grasp held | success if held | success if not | AUC of held |")
    print("|---|---|---|---|---|---|---|")
    for task, e in table.items():
        print(f"| {task} | {e['episodes']} | {e['success']:.0%} | {e['held']:.0%} | {e['success_if_held']:.0%} | "
              f"{e['success_if_not']:.0%} | {e['auc']:.2f} |")
    if args.out:
        write_text_atomic(Path(args.out), json.dumps({"args": vars(args), "results": table}, indent=1))


if __name__ == "__main__":
    main()
