"""Rank a planner's proposals by pose classifiers, from the poses `plan_ranking.py --save-poses` kept.

    python benchmarks/pose_prior_ranking.py --poses runs/pr05_poses.npz --pose-classifier runs/pose_clf_2k4 runs/pose_clf_3k6

`benchmarks/plan_ranking.py --save-poses FILE` keeps every candidate's grippers' pose vectors
(start states x N x (T + 1) x 8) with its simulated success. This scores them with each
`grasp_predictability.py --save-pose-classifier` directory given, without imagining or
simulating again, and reports per task what `plan_ranking.py` reports for its scorers: the
success of the top-ranked candidate (= best-of-N by that classifier) and the ROC AUC of the
logit within each start state, averaged over start states. It is the ranking a world model
that turned its pose condition into the right outcome would give a planner; it looks at no frame.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from grasp_predictability import load_pose_classifier  # beside this file
from plan_ranking import top1_and_auc
from wmgym.train.checkpoint import write_text_atomic


def rank(poses: np.ndarray, success: np.ndarray, tasks: np.ndarray, logits_of) -> dict:
    """{task: {random_proposal, top1, auc, starts}} for logits_of((n, T + 1, 8)) -> (n,)."""
    out = {}
    for task in dict.fromkeys(tasks.tolist()):
        rows = np.flatnonzero(tasks == task)
        top1, auc = top1_and_auc([logits_of(poses[i]) for i in rows], [success[i] for i in rows])
        out[task] = {"random_proposal": float(success[rows].mean()), "top1": top1, "auc": auc, "starts": int(len(rows))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poses", required=True, help="a `plan_ranking.py --save-poses` file")
    parser.add_argument("--pose-classifier", nargs="+", required=True, help="`grasp_predictability.py --save-pose-classifier` directories")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    saved = np.load(args.poses)
    poses, success, tasks = saved["poses"], saved["success"].astype(bool), saved["task"]
    if poses.ndim != 4 or poses.shape[-1] != 8 or success.shape != poses.shape[:2]:
        raise ValueError(f"{args.poses}: expected poses (starts, n, T + 1, 8) and success (starts, n), "
                         f"got {poses.shape} and {success.shape}")
    results = {directory: rank(poses, success, tasks, load_pose_classifier(directory)) for directory in args.pose_classifier}
    n = poses.shape[1]
    print(f"| classifier | task | start states | one random proposal | best-of-{n} by the pose classifier (AUC) |")
    print("|---|---|---|---|---|")
    for directory, per_task in results.items():
        for task, e in per_task.items():
            print(f"| {directory} | {task} | {e['starts']} | {e['random_proposal']:.0%} | {e['top1']:.0%} ({e['auc']:.2f}) |")
    if args.out:
        write_text_atomic(Path(args.out), json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
