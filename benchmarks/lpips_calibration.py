"""Does the simulator-calibrated LPIPS measure distance to the goal better than the offline trunk?

    python benchmarks/lpips_calibration.py --model runs/lpips --data data/prop2k_gp.zarr data/prop2k.zarr --out lpips_val.json \
        --plot lpips_vs_score.png

On the held-out split of each store (`split_episodes`, val_fraction 0.1, split seed 0: the
episodes `wmgym train-lpips` did not train on), for the calibrated model and for LPIPS with
the seeded random trunk (`--reward lpips-offline`): ROC AUC of -distance(last frame, goal) for
the episode's success, and Spearman of -distance with the simulator's fold score over all
frames. Imagined stores (`wmgym imagine`) ask it of the world model's frames. `--plot` draws,
per store, the distance of each held-out last frame against its fold score for both metrics
(success threshold 0.7 marked).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from wmgym.rewards.lpips_head import build_lpips, load_calibrated
from wmgym.train.checkpoint import write_text_atomic
from wmgym.train.lpips_calibration import ScoredFrames, distance_metrics, frame_distances


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a `wmgym train-lpips` directory (or a bundle's lpips/)")
    parser.add_argument("--data", nargs="+", required=True, help="episode stores (their val split is scored)")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", default=None, help="PNG: distance against fold score of the val episodes' last frames")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    parts = [ScoredFrames(path, "val", args.val_fraction) for path in args.data]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {"offline": build_lpips("alex"), "calibrated": load_calibrated(args.model)[0]}
    # every frame's distance, once per model and store: the metrics and the plot read them
    distances = {name: [frame_distances(model, part, torch.device("cpu")) for part in parts] for name, model in models.items()}
    results = {name: {k: v for part, d in zip(parts, distances[name]) for k, v in distance_metrics(part, d).items()}
               for name in models}
    print("| store (val episodes) | AUC, offline trunk | AUC, calibrated | Spearman, offline | Spearman, calibrated |")
    print("|---|---|---|---|---|")
    for part in parts:
        cell = lambda name, metric: f"{results[name][f'val/{part.name}/{metric}']:.3f}"
        print(f"| {part.name} ({len(part.finals)}) | {cell('offline', 'auc_final')} | {cell('calibrated', 'auc_final')} | "
              f"{cell('offline', 'spearman')} | {cell('calibrated', 'spearman')} |")
    if args.plot:
        plot(Path(args.plot), parts, distances)
    if args.out:
        write_text_atomic(Path(args.out), json.dumps({"args": vars(args), "seconds": time.perf_counter() - began, **results}, indent=1))


def plot(path: Path, parts: list[ScoredFrames], distances: dict[str, list[np.ndarray]]) -> None:
    """One column per store, one row per model: distance of each val last frame to its goal against its fold score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(distances), len(parts), figsize=(2.6 * len(parts), 2.4 * len(distances)), squeeze=False)
    for column, part in enumerate(parts):
        score = 1.0 - part.target[part.finals]
        for row, (name, per_part) in enumerate(distances.items()):
            distance = per_part[column][part.finals]
            ax = axes[row, column]
            ax.scatter(score[part.success], distance[part.success], s=5, c="tab:green", label="success")
            ax.scatter(score[~part.success], distance[~part.success], s=5, c="tab:red", label="failure")
            ax.axvline(0.7, color="grey", lw=0.8, ls="--")
            ax.set_title(f"{part.name}: {name}", fontsize=8)
            ax.set_xlabel("fold score (simulator)", fontsize=7)
            ax.set_ylabel("LPIPS to goal", fontsize=7)
            ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
