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


def episode_held(store: EpisodeStore, min_particles: int = 1) -> np.ndarray:
    """bool (E,): whether every hand the episode's task uses held >= min_particles cloth
    particles at some frame, from the store's `robot{0,1}_held_particles` (read once)."""
    if not store.has_held_particles:
        raise ValueError(f"{store.path} does not record robot{{0,1}}_held_particles; regenerate it with this wmgym")
    data, ends = store.root["data"], store.episode_ends
    held = np.stack([np.asarray(data[f"robot{r}_held_particles"][: store.num_frames]) >= min_particles for r in (0, 1)], 1)
    ever = np.logical_or.reduceat(held, np.concatenate([[0], ends[:-1]]), axis=0)  # (E, 2): each hand ever held
    tasks = np.asarray(store.root["meta"]["episode_task_id"][: store.num_episodes])
    return np.array([ever[i, list(HANDS[store.tasks[k]])].all() for i, k in enumerate(tasks)])


def hold_table(paths: list[str], min_particles: int = 1) -> dict:
    """{task: {episodes, success, held, success_if_held, success_if_not, auc}} over the stores."""
    held, success, tasks = [], [], []
    for path in paths:
        store = EpisodeStore.open(path)
        held.append(episode_held(store, min_particles))
        success.append(np.asarray(store.root["meta"]["episode_success"][: store.num_episodes], bool))
        tasks += [store.tasks[k] for k in store.root["meta"]["episode_task_id"][: store.num_episodes]]
    held, success, tasks = np.concatenate(held), np.concatenate(success), np.array(tasks)
    rate = lambda m: float(success[m].mean()) if m.any() else float("nan")
    out = {}
    for task in HANDS:
        rows = tasks == task
        if not rows.any():
            continue
        h = held & rows
        out[task] = {"episodes": int(rows.sum()), "success": rate(rows), "held": float(held[rows].mean()),
                     "success_if_held": rate(h), "success_if_not": rate(rows & ~held),
                     "auc": roc_auc(held[rows].astype(float), success[rows])}
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
