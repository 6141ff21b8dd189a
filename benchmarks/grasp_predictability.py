"""Is a proposal's outcome predictable from what the planner's world model is given? A classifier ceiling at 64x64.

    python benchmarks/grasp_predictability.py --data data/prop1k.zarr data/prop2k4.zarr --inputs start+grippers last --out grasp_pred.json

`wmgym plan` asks the world model to imagine a proposal (the demonstrator's sequence plus
Gaussian noise, `--kinds G` episodes) from the start frame and the grippers view of every
step, and ranks proposals by the imagined last frame. On the planner's proposals that ranking
is weak (`benchmarks/plan_ranking.py`: ROC AUC ~0.6). Two explanations differ in what to do
next: the outcome is not resolved by 64x64 pixels at all (a higher frame resolution is
needed), or it is and the world model does not learn it (a larger model or a loss that looks
at the grasp). This script trains a small CNN, from scratch, to predict the simulator's
success of each episode of `--kinds G` stores from
  - `start+grippers`: the first camera frame and the grippers view of all T + 1 frames (54
    channels): exactly what the planner's world model is given;
  - `start+grasp`: the first camera frame and the grippers views of frames 3-6 only (15
    channels: above the grasp point, descended, closed, lifted; a proposal is the speed-1
    demonstrator's sequence, which closes at action 4), the part that decides the grasp;
  - `grippers`: the grippers views alone (the cloth's start state withheld);
  - `last`: the simulator's last camera frame, the outcome itself (a sanity ceiling);
  - `pose`: the grippers' 3-D tool-centre positions and widths at all T + 1 frames, as numbers
    (2 x 4 x 17 values), no image: what a pose-conditioned world model would add;
  - `start+pose`: the first camera frame and those numbers (where the cloth is, and exactly
    where each gripper goes, height included);
  - `imagined-last` / `imagined-all`: the last / every camera frame of a `wmgym imagine` store
    of the same episodes (`--imagined`, in the order of `--data`): what the world model drew.
`--target held` predicts instead whether the episode's grasp held (every hand its task uses
held cloth at some frame: stores that record `robot{0,1}_held_particles`), the one fact a
world model with an explicit grasp state would take from a prior.
Episodes are split 80 / 10 / 10 (train / val / test) by a seeded permutation; the reported
figure is test ROC AUC at the epoch with the best val AUC. `--save-pose-classifier DIR` keeps
the `pose` classifier of that epoch (`classifier.safetensors` + `classifier.json` with its
standardisation), which `benchmarks/plan_ranking.py --pose-classifier DIR` scores a planner's
proposals with (`load_pose_classifier`). Hand-written: a seven-layer CNN and
its loop are shorter than any library's configuration of one.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from hold_outcome import episode_held  # beside this file
from wmgym.data.dataset import POSE_KEYS
from wmgym.data.store import EpisodeStore
from wmgym.eval.ranking import roc_auc
from wmgym.train.checkpoint import write_text_atomic

INPUTS = ("start+grippers", "start+grasp", "grippers", "last", "imagined-last", "imagined-all", "pose", "start+pose")
GRASP_FRAMES = slice(3, 7)  # speed-1 demonstrator: frames 3-6 = approached, descended, closed, lifted


def load_inputs(paths: list[str], kind: str, target: str = "success") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 images (E, C, H, W) per `kind` (C = 0 for `pose`), float32 poses (E, (T + 1) * 8)
    (D = 0 unless `kind` has pose) and bool (E,) labels, over the stores in order: the episode's
    success, or with target "held" whether every hand its task uses held cloth at some frame
    (the store's `robot{0,1}_held_particles`, `hold_outcome.py`'s definition)."""
    xs, vs, ys = [], [], []
    for path in paths:
        store = EpisodeStore.open(path, mode="r")
        ends = store.episode_ends
        starts = np.concatenate([[0], ends[:-1]])
        data = store.root["data"]
        camera = np.asarray(data["camera0_rgb"][:])
        if kind in ("start+grippers", "start+grasp", "grippers"):
            grippers = np.asarray(data["grippers_rgb"][:])
        pose = np.concatenate([np.asarray(data[k][:], np.float32) for k in POSE_KEYS], axis=1)  # (N, 8)
        for s, e in zip(starts, ends):
            vs.append(pose[s:e].reshape(-1) if kind.endswith("pose") else pose[s:e, :0].reshape(-1))
            if kind == "start+grippers":
                frames = np.concatenate([camera[s:s + 1], grippers[s:e]])  # (1 + T + 1, H, W, 3)
            elif kind == "start+grasp":
                frames = np.concatenate([camera[s:s + 1], grippers[s:e][GRASP_FRAMES]])
            elif kind == "grippers":
                frames = grippers[s:e]
            elif kind == "start+pose":
                frames = camera[s:s + 1]
            elif kind == "pose":
                frames = camera[s:s + 1, :, :, :0]
            elif kind in ("last", "imagined-last"):
                frames = camera[e - 1:e]
            else:  # imagined-all
                frames = camera[s:e]
            xs.append(frames.transpose(0, 3, 1, 2).reshape(-1, *frames.shape[1:3]))
        if target == "held":
            ys.append(episode_held(store))
        else:
            ys.append(np.asarray(store.root["meta"]["episode_success"][:], bool))
    if len({x.shape for x in xs}) != 1 or len({v.shape for v in vs}) != 1:
        raise ValueError(f"episodes of different lengths or sizes in {paths}; use stores of one horizon and resolution")
    return np.stack(xs), np.stack(vs), np.concatenate(ys)


class Classifier(nn.Module):
    """(b, channels, 64, 64) images and (b, dims) vectors -> (b,) logit: a CNN for the images
    and an MLP for the vector, their 192-d features summed (either may be absent)."""

    def __init__(self, channels: int, dims: int):
        super().__init__()

        def block(i, o):
            return [nn.Conv2d(i, o, 4, stride=2, padding=1), nn.GroupNorm(8, o), nn.SiLU(), nn.Conv2d(o, o, 3, padding=1), nn.SiLU()]
        self.cnn = nn.Sequential(*block(channels, 64), *block(64, 96), *block(96, 128), *block(128, 192),  # 64 -> 4
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten()) if channels else None
        self.mlp = nn.Sequential(nn.Linear(dims, 256), nn.SiLU(), nn.Linear(256, 256), nn.SiLU(),
                                 nn.Linear(256, 192)) if dims else None
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(192, 1), nn.Flatten(0))

    def forward(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        features = 0
        if self.cnn is not None:
            features = features + self.cnn(x.float() / 127.5 - 1)
        if self.mlp is not None:
            features = features + self.mlp(v)
        return self.head(features)


def predict(model: nn.Module, x: np.ndarray, v: np.ndarray, batch: int = 128) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch]), torch.from_numpy(v[i:i + batch])).numpy()
                               for i in range(0, len(x), batch)])


def fit(x: np.ndarray, v: np.ndarray, y: np.ndarray, *, epochs: int, seed: int, batch: int = 64) -> dict:
    """Train on 80%, pick the epoch by val AUC (10%), report test AUC (10%). The returned dict
    also holds that epoch's weights (`state_dict`) and the vector's standardisation (`mean`, `std`)."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = n_test = max(1, len(x) // 10)
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    mean, std = v[train].mean(0), v[train].std(0) + 1e-6
    if v.shape[1]:  # standardise the poses with the training split's statistics
        v = ((v - mean) / std).astype(np.float32)
    torch.manual_seed(seed)
    model = Classifier(x.shape[1], v.shape[1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    rng = np.random.default_rng(seed + 1)
    best, curve = {"val_auc": -1.0}, []
    for epoch in tqdm(range(epochs), desc="epochs", leave=False):
        model.train()
        for i in range(0, len(train), batch):
            idx = train[rng.permutation(len(train))[:batch]]
            logits = model(torch.from_numpy(x[idx]), torch.from_numpy(v[idx]))
            loss = nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(y[idx]).float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        val_auc = roc_auc(predict(model, x[val], v[val]), y[val])
        curve.append(val_auc)
        if val_auc > best["val_auc"]:
            best = {"val_auc": val_auc, "test_auc": roc_auc(predict(model, x[test], v[test]), y[test]), "epoch": epoch + 1,
                    "state_dict": {k: t.detach().clone() for k, t in model.state_dict().items()}}
    return {**best, "val_curve": curve, "train": len(train), "val": len(val), "test": len(test),
            "success_rate": float(y.mean()), "mean": mean.tolist(), "std": std.tolist()}


def save_pose_classifier(directory: Path, result: dict) -> None:
    """Write a `pose` fit's best-epoch classifier: classifier.safetensors + classifier.json."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file(result["state_dict"], str(directory / "classifier.safetensors"))
    meta = {"dims": len(result["mean"]), "mean": result["mean"], "std": result["std"],
            **{k: result[k] for k in ("val_auc", "test_auc", "epoch", "train", "success_rate")}}
    write_text_atomic(directory / "classifier.json", json.dumps(meta, indent=1))


def load_pose_classifier(directory) -> "callable":
    """A saved `pose` classifier as a function: float32 poses (n, T + 1, 8) (`GripperState.vector`
    of every frame, the store's `POSE_KEYS`) -> float32 logits (n,) of the proposal's success."""
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = json.loads((directory / "classifier.json").read_text())
    model = Classifier(0, meta["dims"])
    model.load_state_dict(load_file(str(directory / "classifier.safetensors")))
    mean, std = np.asarray(meta["mean"], np.float32), np.asarray(meta["std"], np.float32)

    def logits(poses: np.ndarray) -> np.ndarray:
        v = np.asarray(poses, np.float32).reshape(len(poses), -1)
        if v.shape[1] != meta["dims"]:
            raise ValueError(f"the classifier in {directory} takes {meta['dims']} numbers a proposal "
                             f"({meta['dims'] // 8} frames of 8), got poses of shape {np.shape(poses)}")
        v = ((v - mean) / std).astype(np.float32)
        return predict(model, v[:, :0].reshape(len(v), 0, 1, 1), v)
    return logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="`--kinds G` stores (simulator frames)")
    parser.add_argument("--imagined", nargs="*", default=[], help="`wmgym imagine` stores of the same episodes, same order")
    parser.add_argument("--inputs", nargs="+", default=["start+grippers", "last"], choices=INPUTS)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--target", choices=("success", "held"), default="success",
                        help="what to predict: the episode's success, or whether its grasp held (stores with held_particles)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--save-pose-classifier", default=None, help="directory to keep the `pose` classifier's best epoch in")
    args = parser.parse_args()
    if args.save_pose_classifier and "pose" not in args.inputs:
        parser.error("--save-pose-classifier needs --inputs pose")
    torch.set_num_threads(args.threads)
    results = {}
    for kind in args.inputs:
        paths = args.imagined if kind.startswith("imagined") else args.data
        if not paths:
            parser.error(f"--inputs {kind} needs --imagined stores")
        began = time.perf_counter()
        x, v, y = load_inputs(paths, kind, args.target)
        results[kind] = {**fit(x, v, y, epochs=args.epochs, seed=args.seed), "channels": int(x.shape[1]), "dims": int(v.shape[1]),
                         "seconds": time.perf_counter() - began}
        r = results[kind]
        if kind == "pose" and args.save_pose_classifier:
            save_pose_classifier(Path(args.save_pose_classifier), r)
        del r["state_dict"]
        print(f"{kind:>15}: test AUC {r['test_auc']:.3f} (val {r['val_auc']:.3f} at epoch {r['epoch']}; "
              f"{r['train']} train / {r['test']} test episodes, {r['success_rate']:.0%} {'succeed' if args.target == 'success' else 'held'}; {r['seconds']:.0f} s)", flush=True)
    if args.out:
        write_text_atomic(Path(args.out), json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
