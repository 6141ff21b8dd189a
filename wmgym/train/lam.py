"""`wmgym train-lam`: train a factored latent action model (`wmgym.model.lam`) on frames alone, under Hugging Face Accelerate.

Data: clips of `num_frames` consecutive camera frames of the store's train split
(`split_episodes`, split seed 0, the world model's split), every start of every episode
long enough. Only the camera frames are read (`_FrameClips`); the store's actions,
proprioception and simulator state are never opened, so an action-free store
(`wmgym.policies.pseudo_label.strip_actions`) trains exactly the same model.
Loss: `LatentActionModel.compute_loss`, MSE of each next frame + beta * KL summed over slots.

Randomness is a pure function of the seed (the epoch order of `EpochPermutationSampler`, the
reparameterisation noise of step s from SeedSequence(seed, rank, s)), so a run can stop and
resume bit for bit on the same machine.

Output directory (`out`, replaced atomically at every checkpoint):
    config.json, model.safetensors      the model (`LatentActionModel.from_pretrained(out)`)
    train_config.json, log.jsonl        this config; loss, KL per slot and validation log
    training_state.safetensors/.json    optimizer moments and step (until the end; `--resume`
                                        continues from them)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from wmgym.train.checkpoint import STATE_FILE, run_locked, start_run, training_progress
from wmgym.train.loop import train_steps


@dataclass
class TrainLAMConfig:
    """Train a factored latent action model (FLAM) on video alone: one latent action per scene factor.

    Reads only the store's camera frames, never its actions (an action-free store trains the
    same model). `--slots 1` is the monolithic baseline with the same total latent size. Runs
    under Hugging Face Accelerate; resumable (`--resume`). Evaluate with `wmgym eval-lam`."""

    data: str
    """Path of a zarr episode store (`wmgym generate`, `wmgym import`, or an action-free one); its frames only are read."""
    out: str
    """Model directory to write (replaced atomically at every checkpoint)."""
    slots: int = 2
    """K, the factors (slot attention slots); 1 = the monolithic baseline."""
    latent_dim: int = 16
    """D, the total latent action size per transition; each slot gets D / K."""
    beta: float = 1e-5
    """Weight of the KL term (summed over slots and dimensions) against the per-pixel MSE."""
    beta_warmup_steps: int = 1000
    """beta is 0 for this many steps, then ramps up linearly to `beta` over as many more. With
    any beta > 0 from the start the latents collapsed to the prior (KL 0) before the decoder
    learnt to read them: Adam scales the KL's tiny but steady gradient up to full-size steps."""
    steps: int = 3000
    """Optimizer steps in total (the learning-rate schedule spans them)."""
    stop_after: int | None = None
    """Stop (with a checkpoint) once this many steps are done; `--resume` continues up to `steps`."""
    stop_after_minutes: float | None = None
    """Stop (with a checkpoint) after this many minutes of wall time; `--resume` continues."""
    batch_size: int = 8
    """Clips per process per step."""
    num_frames: int = 11
    """Frames per clip (num_frames - 1 transitions); at most the model's max_frames."""
    learning_rate: float = 1e-3
    """AdamW peak learning rate (linear warm-up, then cosine decay to a tenth of it at `steps`)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    warmup_steps: int = 200
    """Steps of linear learning-rate warm-up."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = no clipping)."""
    seed: int = 0
    """Seed of the initial weights, the data order and the latent noise."""
    channels: tuple[int, ...] = (32, 64)
    """Encoder conv widths, one stride-2 level each (the frame size must divide by 2 ** levels)."""
    slot_dim: int = 64
    """Width of a slot state."""
    hidden: int = 32
    """Width of the per-slot dynamics convs and the decoder."""
    val_fraction: float = 0.1
    """Fraction of episodes held out (`split_episodes`, split seed 0: the world model's split)."""
    val_clips: int = 64
    """Validation clips (spread evenly over the val split's clips) scored at each validation."""
    validate_every: int = 500
    """Steps between validations (teacher-forced MSE and rollout PSNR from inferred latents)."""
    checkpoint_every: int = 500
    """Steps between checkpoints (one is always written at the end)."""
    log_every: int = 50
    """Steps between training-loss lines of log.jsonl."""
    max_episodes: int | None = None
    """Use only the first this many episodes of the store (None = all)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """'auto' lets Accelerate pick (CUDA when available); 'cpu' forces the CPU."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast precision, passed to Accelerate."""
    num_threads: int | None = None
    """torch CPU threads (None = torch's default)."""
    resume: bool = False
    """Continue the unfinished run at `out` (optimizer state included); refused when a setting
    differs from its train_config.json (see --allow-config-change)."""
    overwrite: bool = False
    """Replace an existing run (or model directory) at `out` with a fresh run; anything else at `out` is refused."""
    allow_config_change: bool = False
    """Let --resume continue with settings that differ from the run's saved configuration.
    Always free to change on resume: steps, stop_after, stop_after_minutes, device, num_threads,
    show_progress, checkpoint_every, log_every."""
    show_progress: bool = True
    """Show a tqdm progress bar."""


class _FrameClips:
    """Clips of `num_frames` consecutive camera frames of some episodes, in memory (never the
    actions): `frames` (N, H, W, 3) uint8 tensor, `starts` (n,) the first row of every clip."""

    def __init__(self, path: str, split: str, val_fraction: float, max_episodes: int | None, num_frames: int):
        import torch

        from wmgym.data.dataset import split_episodes
        from wmgym.data.store import EpisodeStore
        from wmgym.data.store_layout import CAMERA_KEY

        store = EpisodeStore.open(path)
        total = store.num_episodes if max_episodes is None else min(max_episodes, store.num_episodes)
        if total == 0:
            raise ValueError(f"episode store {path} holds no episodes")
        self.episode_indices = split_episodes(total, split, val_fraction)
        rows, lengths = store.read_frames(self.episode_indices, [CAMERA_KEY])  # frames only: never the actions
        self.frames = torch.from_numpy(rows[CAMERA_KEY])
        first_rows = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        per_episode = np.maximum(lengths - num_frames + 1, 0)
        episodes = np.repeat(np.arange(len(lengths)), per_episode)
        offsets = np.concatenate([np.arange(n) for n in per_episode]).astype(np.int64) if len(lengths) else np.zeros(0, np.int64)
        self.starts = first_rows[episodes] + offsets
        self.num_frames, self.height, self.width = num_frames, store.height, store.width
        if len(self.starts) == 0:
            raise ValueError(f"no episode of {path}'s {split} split has {num_frames} frames "
                             f"(longest: {int(lengths.max()) if len(lengths) else 0}); pass a smaller --num-frames")

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int):
        start = int(self.starts[index])
        return self.frames[start: start + self.num_frames]  # (T, H, W, 3) uint8


def train_lam(config: TrainLAMConfig) -> Path:
    """Train (or resume) a latent action model; writes and returns the model directory `config.out`.
    The main process holds the writer lock of `config.out` throughout."""
    _check_config(config)
    return run_locked(config, lambda accelerator: _train_locked(config, accelerator), mixed_precision=config.mixed_precision)


def _train_locked(config: TrainLAMConfig, accelerator) -> Path:
    import torch

    from wmgym.model.lam import LAMConfig, LatentActionModel
    from wmgym.train.sampling import epoch_loader

    out = start_run(config)
    device, rank = accelerator.device, accelerator.process_index
    resumed = config.resume and (out / STATE_FILE).is_file()
    split = lambda name: _FrameClips(config.data, name, config.val_fraction, config.max_episodes, config.num_frames)
    train, val = split("train"), (split("val") if config.val_fraction > 0 else None)
    if len(train) < config.batch_size:
        raise ValueError(f"the train split has {len(train)} clips, fewer than batch_size {config.batch_size}")
    if resumed:
        model = LatentActionModel.from_pretrained(out, device="cpu")
    else:
        torch.manual_seed(config.seed)
        model = LatentActionModel(LAMConfig(height=train.height, width=train.width, slots=config.slots,
                                            latent_dim=config.latent_dim, channels=tuple(config.channels),
                                            slot_dim=config.slot_dim, hidden=config.hidden,
                                            max_frames=max(32, config.num_frames),
                                            extra={"data": str(config.data)}), device="cpu")
    if config.num_frames > model.config.max_frames:
        raise ValueError(f"num_frames {config.num_frames} exceeds the model's max_frames {model.config.max_frames}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    step, elapsed, log, _, _ = training_progress(out, optimizer, resumed)
    loader = epoch_loader(train, config.batch_size, config.seed)
    sampler = loader.sampler  # set to each epoch by train_steps
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    raw_model = accelerator.unwrap_model(model)

    def validate(step: int) -> tuple[dict, str]:
        from wmgym.image_metrics import psnr

        picks = np.linspace(0, len(val) - 1, min(len(val), config.val_clips)).round().astype(int)
        raw_model.eval()
        mses, psnrs = [], []
        with torch.no_grad():
            for chunk in np.array_split(picks, max(1, len(picks) // 16)):
                frames = raw_model.to_input(torch.stack([val[int(i)] for i in chunk]).to(device))
                mses.append(float(raw_model.compute_loss(frames, 0.0)["mse"]) * len(chunk))
                predicted = raw_model.reconstruct(frames)["frames"]
                psnrs.append(psnr(_to_uint8(predicted[:, 1:]), _to_uint8(frames[:, 1:])).mean(1).numpy())
        raw_model.train()
        entry = {"step": step, "val/mse": sum(mses) / len(picks), "val/rollout_psnr": float(np.concatenate(psnrs).mean())}
        return entry, f"val mse {entry['val/mse']:.5f}, rollout PSNR {entry['val/rollout_psnr']:.2f} dB"

    generator = torch.Generator(device=device)

    def train_step(clips, step: int) -> dict:
        generator.manual_seed(_step_seed(config.seed, rank, step))
        with accelerator.autocast():
            losses = raw_model.compute_loss(raw_model.to_input(clips), _beta(step, config), generator)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(losses["loss"])
        if config.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        return {key: losses[key].detach().float().cpu().numpy() for key in ("loss", "mse", "kl", "kl_per_slot")}

    train_steps(config, accelerator, model, optimizer, loader, sampler, out, step, elapsed, log, train_step,
                validate if val is not None else None, "train-lam")
    return out


def _beta(step: int, config: TrainLAMConfig) -> float:
    """The KL weight at `step`: 0 for `config.beta_warmup_steps` steps, then linear up to `config.beta` over as many."""
    if not config.beta_warmup_steps:
        return config.beta
    return config.beta * min(1.0, max(0.0, step / config.beta_warmup_steps - 1.0))


def _to_uint8(frames):
    """float (..., 3, H, W) in [-1, 1] -> uint8 (..., H, W, 3), on the CPU."""
    return ((frames.float().clamp(-1, 1) + 1.0) * 127.5).round().byte().movedim(-3, -1).cpu()


def _step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence(seed, spawn_key=(rank, step)).generate_state(1, np.uint64)[0] >> 1)


def _check_config(config: TrainLAMConfig) -> None:
    for name in ("slots", "latent_dim", "steps", "batch_size", "validate_every", "checkpoint_every", "log_every",
                 "val_clips", "slot_dim", "hidden"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.latent_dim % config.slots:
        raise ValueError(f"latent_dim {config.latent_dim} must divide by slots {config.slots}")
    if config.num_frames < 2:
        raise ValueError(f"num_frames must be at least 2 (one transition), got {config.num_frames}")
    if config.beta < 0 or config.beta_warmup_steps < 0:
        raise ValueError(f"beta and beta_warmup_steps must be >= 0, got {config.beta}, {config.beta_warmup_steps}")
    if config.learning_rate <= 0 or config.warmup_steps < 0 or config.weight_decay < 0 or config.grad_clip < 0:
        raise ValueError("need learning_rate > 0 and warmup_steps, weight_decay, grad_clip >= 0")
    if not 0.0 <= config.val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {config.val_fraction}")
    if config.stop_after is not None and config.stop_after < 1:
        raise ValueError(f"stop_after must be at least 1 (or None), got {config.stop_after}")
    if config.stop_after_minutes is not None and config.stop_after_minutes <= 0:
        raise ValueError(f"stop_after_minutes must be positive, got {config.stop_after_minutes}")
    if not config.channels or min(config.channels) < 1:
        raise ValueError(f"channels needs at least one positive width, got {config.channels}")
    if not Path(config.data).exists():
        raise FileNotFoundError(f"no episode store at {config.data}")
