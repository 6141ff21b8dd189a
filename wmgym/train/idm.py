"""`wmgym train-idm`: train an `InverseDynamicsModel` on an episode store, under Hugging Face Accelerate.

Data: every transition (o_t, a_t, o_{t+1}) of the store's train split (`WindowDataset` with
one action, `split_episodes` with split seed 0 and `val_fraction`, the world model's split),
with the `future_frames` frames after o_{t+1} (the episode's last frame repeated past its end,
`wmgym.policies.idm.future_rows`).
Loss: mean squared error of the normalised action (per-component mean and std of the train
split's actions, std floored at 1e-3, as the world model normalises), summed over components,
the two widths weighted by `width_weight` (1: equal weight, so the loss is 20 * (1 - R²)
averaged over components, roughly). With equal weight the model learnt to guess the width
from the gripper's height and the phase of the fold instead of reading the jaws (a few pixels
at 64x64): its predicted widths for an open and a closed next frame barely differed.
Augmentation: a `blur_probability` share of samples is blurred (2x average-pool, bilinear back
up) with pixel noise, all of a sample's frames alike, so the model also reads the softer
frames a world model generates.

Randomness is a pure function of the seed, so a run can stop and resume bit for bit on the
same machine: epoch e's order is the permutation drawn from SeedSequence(seed, spawn_key=(e,))
(`EpochPermutationSampler`), and step s's augmentation draws from a generator seeded from
(seed, rank, s).

Output directory (`out`, replaced atomically at every checkpoint):
    config.json, model.safetensors      the model (`InverseDynamicsModel.from_pretrained(out)`)
    train_config.json, log.jsonl        this config; loss and validation R² log
    training_state.safetensors/.json    optimizer moments and step (until the end; `--resume`
                                        continues from them)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from wmgym.actions import ACTION_DIM, WIDTH_DIMS
from wmgym.train.checkpoint import STATE_FILE, run_locked, start_run, training_progress
from wmgym.train.loop import train_steps


@dataclass
class TrainIDMConfig:
    """Train an inverse dynamics model: the action that moved the world from one frame to the next.

    It labels videos without actions (`idm:<dir>` policies of `wmgym eval-policies`, pseudo-labelled
    stores). Runs under Hugging Face Accelerate; resumable (`--resume`)."""

    data: str
    """Path of a zarr episode store written by `wmgym generate`."""
    out: str
    """Model directory to write (replaced atomically at every checkpoint)."""
    steps: int = 4000
    """Optimizer steps in total (the learning-rate schedule spans them)."""
    stop_after: int | None = None
    """Stop (with a checkpoint) once this many steps are done; `--resume` continues up to `steps`."""
    stop_after_minutes: float | None = None
    """Stop (with a checkpoint) after this many minutes of wall time, e.g. for time-boxed jobs; `--resume` continues."""
    batch_size: int = 128
    """Transitions per process per step."""
    learning_rate: float = 1e-3
    """AdamW peak learning rate (linear warm-up, then cosine decay to a tenth of it at `steps`)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    warmup_steps: int = 200
    """Steps of linear learning-rate warm-up."""
    seed: int = 0
    """Seed of the initial weights, the data order and the augmentation."""
    channels: tuple[int, ...] = (32, 64, 128, 128)
    """Conv widths, one stride-2 level each (the frame size must divide by 2 ** levels)."""
    hidden: int = 256
    """Width of the MLP head."""
    future_frames: int = 0
    """Frames after t+1 the model also sees (as successive differences), to read the gripper
    width from what follows, e.g. the cloth lifting; 0 = the pair alone. Taken from the model
    with `init_from` or `resume`."""
    width_channels: tuple[int, ...] = ()
    """Conv widths of a separate width reader (`IDMConfig.width_channels`: reads the two widths
    from o_{t+1} alone, its first level at full resolution), e.g. 32 32 64 128 128; empty: the
    trunk regresses the widths too. With `init_from` a model without a reader gets a fresh one
    (the trunk's weights are kept); a model with one keeps its own."""
    width_weight: float = 1.0
    """Loss weight of the two gripper-width components (the others have weight 1)."""
    init_from: str | None = None
    """Start from this trained IDM directory (its weights and action statistics; `channels`,
    `hidden` and `future_frames` are taken from it) instead of a random initialisation."""
    blur_probability: float = 0.25
    """Share of training samples blurred (all their frames alike, with pixel noise), as world-model frames are softer."""
    val_fraction: float = 0.1
    """Fraction of episodes held out (`split_episodes`, split seed 0: the world model's split)."""
    val_transitions: int = 4096
    """Validation transitions (spread evenly over the val split) scored at each validation."""
    validate_every: int = 500
    """Steps between validations (R² per component and group, logged to log.jsonl)."""
    checkpoint_every: int = 500
    """Steps between checkpoints (one is always written at the end)."""
    log_every: int = 50
    """Steps between training-loss lines of log.jsonl."""
    max_episodes: int | None = None
    """Use only the first this many episodes of the store (None = all)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """'auto' lets Accelerate pick (CUDA when available); 'cpu' forces the CPU."""
    num_threads: int | None = None
    """torch CPU threads (None = torch's default)."""
    resume: bool = False
    """Continue the unfinished run at `out` (optimizer state included); refused when a setting
    differs from its train_config.json (see --allow-config-change)."""
    overwrite: bool = False
    """Replace an existing run (or model directory) at `out` with a fresh run; anything else at `out` is refused."""
    allow_config_change: bool = False
    """Let --resume continue with settings that differ from the run's saved configuration
    (data, seed, batch size, learning rate, ...: each change is listed in a warning). Without
    it such a resume is refused. Always free to change on resume: steps, stop_after,
    stop_after_minutes, device, num_threads, show_progress, checkpoint_every, log_every."""
    show_progress: bool = True
    """Show a tqdm progress bar."""


class _Transitions:
    """Every (o_t, a_t, o_{t+1}) of some episodes and the k frames after o_{t+1}, in memory:
    `frames` (N, H, W, 3) uint8 tensor, `actions` (N, 20) float32 tensor, `starts` (n,) rows t
    of the transitions, `future` (n, k) rows of their future windows (`future_rows`)."""

    def __init__(self, path: str, split: str, val_fraction: float, max_episodes: int | None, future_frames: int):
        import torch

        from wmgym.data.dataset import split_episodes
        from wmgym.data.store import EpisodeStore
        from wmgym.data.store_layout import CAMERA_KEY
        from wmgym.policies.idm import future_rows

        store = EpisodeStore.open(path)
        total = store.num_episodes if max_episodes is None else min(max_episodes, store.num_episodes)
        if total == 0:
            raise ValueError(f"episode store {path} holds no episodes")
        self.episode_indices = split_episodes(total, split, val_fraction)
        rows, lengths = store.read_frames(self.episode_indices, [CAMERA_KEY, "action"])
        self.frames, self.actions = torch.from_numpy(rows[CAMERA_KEY]), torch.from_numpy(rows["action"])
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        # a transition starts at every row but an episode's last (its action row is padding)
        self.starts = np.concatenate([o + np.arange(n - 1) for o, n in zip(offsets, lengths)]) if len(lengths) else np.zeros(0, np.int64)
        lasts = np.repeat(offsets + lengths - 1, lengths - 1)  # (n,) each transition's episode's last row
        self.future = future_rows(self.starts, lasts, future_frames)  # (n, k)
        self.height, self.width = store.height, store.width

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int):
        row = int(self.starts[index])
        # (H, W, 3) x2, (k, H, W, 3), (20,)
        return self.frames[row], self.frames[row + 1], self.frames[self.future[index]], self.actions[row]

    def action_statistics(self) -> tuple[list, list]:
        """Mean and std (>= 1e-3) of the transitions' actions (padding rows left out)."""
        actions = self.actions.numpy()[self.starts].astype(np.float64)  # (n, 20)
        return actions.mean(0).tolist(), np.maximum(actions.std(0), 1e-3).tolist()


def train_idm(config: TrainIDMConfig) -> Path:
    """Train (or resume) an inverse dynamics model; writes and returns the model directory `config.out`.
    The main process holds the writer lock of `config.out` throughout, so a second run on it refuses."""
    _check_config(config)
    return run_locked(config, lambda accelerator: _train_locked(config, accelerator))


def _train_locked(config: TrainIDMConfig, accelerator) -> Path:
    import torch
    import torch.nn.functional as F

    from wmgym.policies.idm import IDMConfig, InverseDynamicsModel
    from wmgym.policies.idm_metrics import r2_scores
    from wmgym.train.sampling import epoch_loader

    out = start_run(config)
    device, rank = accelerator.device, accelerator.process_index

    resumed = config.resume and (out / STATE_FILE).is_file()
    source = out if resumed else config.init_from
    model = None if source is None else InverseDynamicsModel.from_pretrained(source, device="cpu")
    if config.init_from is not None and not resumed and config.future_frames not in (0, model.config.future_frames):
        raise ValueError(f"future_frames={config.future_frames}, but init_from {config.init_from} reads "
                         f"{model.config.future_frames}")
    if model is not None and not resumed and config.width_channels:
        model = _with_width_reader(model, tuple(config.width_channels), config.init_from, config.seed)
    future_frames = config.future_frames if model is None else model.config.future_frames
    split = lambda name: _Transitions(config.data, name, config.val_fraction, config.max_episodes, future_frames)
    train, val = split("train"), (split("val") if config.val_fraction > 0 else None)
    if len(train) < config.batch_size:
        raise ValueError(f"the train split has {len(train)} transitions, fewer than batch_size {config.batch_size}")
    if model is None:
        mean, std = train.action_statistics()
        torch.manual_seed(config.seed)
        model = InverseDynamicsModel(IDMConfig(height=train.height, width=train.width, channels=tuple(config.channels),
                                               hidden=config.hidden, future_frames=config.future_frames,
                                               width_channels=tuple(config.width_channels), action_mean=mean, action_std=std), device="cpu")
    elif (model.config.height, model.config.width) != (train.height, train.width):
        raise ValueError(f"{source} reads {model.config.height}x{model.config.width} frames, "
                         f"the store has {train.height}x{train.width}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    step, elapsed, log, _, _ = training_progress(out, optimizer, resumed)
    loader = epoch_loader(train, config.batch_size, config.seed)
    sampler = loader.sampler  # set to each epoch by train_steps
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    raw_model = accelerator.unwrap_model(model)

    def validate(step: int) -> tuple[dict, str]:
        picks = np.linspace(0, len(val) - 1, min(len(val), config.val_transitions)).round().astype(int)
        rows = torch.from_numpy(val.starts[picks])
        predicted = raw_model.predict(val.frames[rows], val.frames[rows + 1], val.frames[val.future[picks]])
        raw_model.train()
        scores = r2_scores(predicted, val.actions[rows].numpy())
        entry = {"step": step, **{f"val/r2_{k}": None if math.isnan(v) else v for k, v in scores["groups"].items()}}
        return entry, ", ".join(f"{k.removeprefix('val/r2_')} {v:.3f}" for k, v in entry.items() if k != "step" and v is not None)

    generator = torch.Generator(device=device)
    loss_weights = torch.ones(ACTION_DIM, device=device)
    loss_weights[list(WIDTH_DIMS)] = config.width_weight

    def train_step(batch, step: int) -> dict:
        frames_t, frames_t1, future, actions = batch
        generator.manual_seed(_step_seed(config.seed, rank, step))
        frames = torch.cat([frames_t[:, None], frames_t1[:, None], future], 1)  # (b, 2 + k, H, W, 3)
        x = _augment(raw_model.to_input(frames), config.blur_probability, generator)  # (b, 2 + k, 3, H, W)
        target = raw_model.normalize_actions(actions.to(device))
        predicted = model(x[:, 0], x[:, 1], x[:, 2:])  # (b, 20) normalised
        loss = (F.mse_loss(predicted, target, reduction="none") * loss_weights).sum(-1).mean()
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        return {"loss": float(loss.detach())}

    train_steps(config, accelerator, model, optimizer, loader, sampler, out, step, elapsed, log, train_step,
                validate if val is not None else None, "train-idm")
    return out


def _with_width_reader(model, width_channels: tuple[int, ...], source: str, seed: int):
    """`model` (an `InverseDynamicsModel` loaded from `source`) with the width reader
    `width_channels`: its own if it has that one, else a copy with a freshly initialised reader
    (seeded by `seed`) and every other weight kept."""
    import dataclasses

    import torch

    from wmgym.policies.idm import InverseDynamicsModel

    if model.config.width_channels == width_channels:
        return model
    if model.config.width_channels:
        raise ValueError(f"width_channels={list(width_channels)}, but init_from {source} has a width reader "
                         f"{list(model.config.width_channels)}; pass its widths or none")
    torch.manual_seed(seed)
    fresh = InverseDynamicsModel(dataclasses.replace(model.config, width_channels=width_channels), device="cpu")
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not key.startswith("width_reader.") for key in missing):
        raise ValueError(f"init_from {source}: weights do not fit (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return fresh


def _augment(frames, blur_probability: float, generator):
    """Blur a `blur_probability` share of samples (b, f, 3, H, W) in [-1, 1] (all f frames alike), add pixel noise."""
    import torch
    import torch.nn.functional as F

    if blur_probability <= 0:
        return frames
    b, f, c, h, w = frames.shape
    chosen = torch.rand(b, generator=generator, device=frames.device) < blur_probability  # (b,)
    stack = torch.cat(frames.unbind(1), 1)  # (b, 3f, H, W); cat keeps to_input's channels-last layout (and numerics)
    blurred = F.interpolate(F.avg_pool2d(stack, 2), size=(h, w), mode="bilinear", align_corners=False)
    blurred = (blurred + 0.03 * torch.randn(blurred.shape, generator=generator, device=frames.device)).clamp(-1, 1)
    return torch.where(chosen[:, None, None, None], blurred, stack).unflatten(1, (f, c))


def _step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence(seed, spawn_key=(rank, step)).generate_state(1, np.uint64)[0] >> 1)


def _check_config(config: TrainIDMConfig) -> None:
    for name in ("steps", "batch_size", "validate_every", "checkpoint_every", "log_every", "val_transitions", "hidden"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.future_frames < 0:
        raise ValueError(f"future_frames must be >= 0, got {config.future_frames}")
    if config.width_weight <= 0:
        raise ValueError(f"width_weight must be positive, got {config.width_weight}")
    if config.init_from is not None and not (Path(config.init_from) / "config.json").is_file():
        raise FileNotFoundError(f"init_from: no inverse dynamics model at {config.init_from}")
    if config.learning_rate <= 0 or config.warmup_steps < 0 or config.weight_decay < 0:
        raise ValueError(f"need learning_rate > 0, warmup_steps >= 0 and weight_decay >= 0, got {config.learning_rate}, "
                         f"{config.warmup_steps}, {config.weight_decay}")
    if not 0.0 <= config.blur_probability <= 1.0:
        raise ValueError(f"blur_probability must be in [0, 1], got {config.blur_probability}")
    if not 0.0 <= config.val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {config.val_fraction}")
    if config.stop_after is not None and config.stop_after < 1:
        raise ValueError(f"stop_after must be at least 1 (or None), got {config.stop_after}")
    if config.stop_after_minutes is not None and config.stop_after_minutes <= 0:
        raise ValueError(f"stop_after_minutes must be positive, got {config.stop_after_minutes}")
    if not config.channels or min(config.channels) < 1:
        raise ValueError(f"channels needs at least one positive width, got {config.channels}")
