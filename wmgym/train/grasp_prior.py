"""`wmgym train-grasp-prior`: fit the `GraspPrior` on the simulator's grasp state.

Every close event of every episode of the stores (a run of frames where one gripper's width is
below `GRASP_WIDTH`, `close_events`) is one example: the grippers' pose vectors over the
`window` frames ending at the event's first closed frame -> whether that gripper then holds
cloth (`robot{hand}_held_particles > 0`, which the simulator keeps constant over the run).
Each store is split by episodes as the world model's data is (`split_episodes`, split seed 0),
so the prior's val events are episodes the world model did not train on either.

Loss: binary cross-entropy, AdamW, mini-batches drawn from a generator seeded by `seed`.
Reported (and written to metrics.json): train and val ROC AUC and the base rate of "held".
Output directory: config.json + model.safetensors (`GraspPrior.from_pretrained`), metrics.json.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from wmgym.model.model_files import MODEL_DIRECTORY
from wmgym.outputs import check_output
from wmgym.sim.gripper import GRASP_WIDTH


@dataclass
class TrainGraspPriorConfig:
    """Train the grasp prior: the chance that a closing gripper catches cloth, from the grippers' poses.

    A world model conditioned on the grasp state draws it from this prior in imagination, where
    the simulator is not there to say; write it to `<world model dir>/grasp_prior`."""

    data: tuple[str, ...]
    """Episode stores that record the grasp state (`robot{0,1}_held_particles`, written by the
    current `wmgym generate`)."""
    out: str
    """Directory to write the prior to: new, empty, or (with --overwrite) a model directory to replace
    (e.g. `<world model dir>/grasp_prior`); anything else is refused."""
    overwrite: bool = False
    """Replace an existing model directory at `out`."""
    window: int = 2
    """Frames of pose per close event, ending at its first closed frame."""
    hidden: int = 128
    """Width of the MLP's two hidden layers."""
    epochs: int = 60
    """Passes over the train events."""
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    """Fraction of each store's episodes held out (`split_episodes`, split seed 0)."""
    seed: int = 0
    show_progress: bool = True


def read_events(path: str, split: str, window: int, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(features (e, window * 8 + 2) float32, held (e,) bool) of every close event of `split`
    of the store at `path`."""
    from wmgym.data.dataset import HELD_KEYS, POSE_KEYS, split_episodes
    from wmgym.data.store import EpisodeStore
    from wmgym.model.grasp_prior import WIDTH_COLUMNS, close_events, event_features

    store = EpisodeStore.open(path, mode="r")
    if not store.has_held_particles:
        raise ValueError(f"store {path} does not record the grippers' grasp state (robot{{0,1}}_held_particles); "
                         "regenerate it with the current `wmgym generate`")
    indices = split_episodes(store.num_episodes, split, val_fraction)
    rows, lengths = store.read_frames(indices, [*POSE_KEYS, *HELD_KEYS])
    n = int(lengths.sum())
    poses = np.concatenate([rows[k].reshape(n, -1).astype(np.float32) for k in POSE_KEYS], axis=1)  # (N, 8)
    held = np.stack([rows[k] > 0 for k in HELD_KEYS], axis=1)  # (N, 2)
    features, labels = [], []
    for start, length in zip(np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths):
        episode, episode_held = poses[start: start + length], held[start: start + length]
        for hand, first, _ in close_events(episode[:, WIDTH_COLUMNS], GRASP_WIDTH):
            features.append(event_features(episode, first, hand, window))
            labels.append(episode_held[first, hand])
    width = window * 8 + 2
    return (np.stack(features) if features else np.zeros((0, width), np.float32)), np.array(labels, bool)


def train_grasp_prior(config: TrainGraspPriorConfig) -> Path:
    """Fit a `GraspPrior` on the stores' close events; returns the output directory."""
    import torch

    from wmgym.eval.ranking import roc_auc
    from wmgym.model.grasp_prior import GraspPrior, GraspPriorConfig

    if not config.data:
        raise ValueError("need at least one episode store (--data)")
    if min(config.epochs, config.batch_size, config.window, config.hidden) < 1 or config.learning_rate <= 0:
        raise ValueError("epochs, batch_size, window and hidden must be >= 1 and learning_rate > 0")
    check_output(config.out, MODEL_DIRECTORY, config.overwrite)  # before the work, not after it
    parts = {split: [read_events(p, split, config.window, config.val_fraction) for p in config.data] for split in ("train", "val")}
    x, y = (np.concatenate([part[i] for part in parts["train"]]) for i in (0, 1))
    vx, vy = (np.concatenate([part[i] for part in parts["val"]]) for i in (0, 1))
    if len(y) == 0 or y.all() or not y.any():
        raise ValueError(f"the train split has {len(y)} close events, {int(y.sum())} of them held: need both outcomes")
    mean, std = x.mean(0), np.maximum(x.std(0), 1e-4)
    mean[-2:], std[-2:] = 0.0, 1.0  # the hand's one-hot stays as it is
    torch.manual_seed(config.seed)  # the MLP's initialisation
    model = GraspPrior(GraspPriorConfig(window=config.window, hidden=config.hidden,
                                        feature_mean=mean.tolist(), feature_std=std.tolist(), grasp_width=GRASP_WIDTH))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    features, labels = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in tqdm(range(config.epochs), desc="train-grasp-prior", disable=not config.show_progress):
        model.train()
        for batch in torch.randperm(len(labels), generator=generator).split(config.batch_size):
            loss = loss_fn(model(features[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        score = lambda f: model(torch.from_numpy(f)).numpy() if len(f) else np.zeros(0)
        metrics = {"train_events": int(len(y)), "val_events": int(len(vy)), "train_held_rate": float(y.mean()),
                   "val_held_rate": float(vy.mean()) if len(vy) else float("nan"),
                   "train_auc": roc_auc(score(x), y), "val_auc": roc_auc(score(vx), vy),
                   "config": asdict(config)}
    out = model.save_pretrained(config.out, overwrite=config.overwrite)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"grasp prior -> {out}: val AUC {metrics['val_auc']:.3f} over {len(vy)} close events "
          f"({metrics['val_held_rate']:.0%} held), train AUC {metrics['train_auc']:.3f}")
    return out
