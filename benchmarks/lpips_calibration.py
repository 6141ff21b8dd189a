"""Does the simulator-calibrated LPIPS measure distance to the goal better than the offline trunk?

    python benchmarks/lpips_calibration.py --model runs/lpips --data data/prop2k_gp.zarr data/prop2k.zarr --out lpips_val.json

On the held-out split of each store (`split_episodes`, val_fraction 0.1, split seed 0: the
episodes `wmgym train-lpips` did not train on), for the calibrated model and for LPIPS with
the seeded random trunk (`--reward lpips-offline`): ROC AUC of -distance(last frame, goal) for
the episode's success, and Spearman of -distance with the simulator's fold score over all
frames. Imagined stores (`wmgym imagine`) ask it of the world model's frames.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from wmgym.rewards.lpips_head import build_lpips, load_calibrated
from wmgym.train.checkpoint import write_text_atomic
from wmgym.train.lpips_calibration import ScoredFrames, validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a `wmgym train-lpips` directory (or a bundle's lpips/)")
    parser.add_argument("--data", nargs="+", required=True, help="episode stores (their val split is scored)")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    parts = [ScoredFrames(path, "val", args.val_fraction) for path in args.data]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {"offline": build_lpips("alex"), "calibrated": load_calibrated(args.model)[0]}
    results = {name: validate(model, parts, torch.device("cpu")) for name, model in models.items()}
    print("| store (val episodes) | AUC, offline trunk | AUC, calibrated | Spearman, offline | Spearman, calibrated |")
    print("|---|---|---|---|---|")
    for part in parts:
        cell = lambda name, metric: f"{results[name][f'val/{part.name}/{metric}']:.3f}"
        print(f"| {part.name} ({len(part.finals)}) | {cell('offline', 'auc_final')} | {cell('calibrated', 'auc_final')} | "
              f"{cell('offline', 'spearman')} | {cell('calibrated', 'spearman')} |")
    if args.out:
        write_text_atomic(Path(args.out), json.dumps({"args": vars(args), "seconds": time.perf_counter() - began, **results}, indent=1))


if __name__ == "__main__":
    main()
