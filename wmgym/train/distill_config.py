"""The arguments of `wmgym distill`, apart from the distillation (`wmgym.train.distill`): the CLI
reads them, for `--help` too, without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import tyro


@dataclass
class DistillConfig:
    """Distil a world model's 2-step sampler into a one-step denoiser that `num_steps=1` then uses.

    Progressive distillation (Salimans & Ho 2022, arXiv:2202.00512) adapted to the per-frame
    sampler with noisy history: a copy of the teacher's denoiser learns to reach, in one step from
    pure noise, the frame the teacher's two DDIM steps reach from the same noise and history. Writes
    a world-model directory: the teacher's files plus denoiser_one_step.safetensors. Runs under
    Hugging Face Accelerate; resumable (`--resume`)."""

    data: str
    """Path of a zarr episode store written by `wmgym generate` (with the views and vectors the world model is conditioned on)."""
    out: str
    """Run directory to write: a world-model directory (the teacher's files, denoiser_one_step.safetensors),
    train_config.json, log.jsonl and, until the end, the training state; replaced atomically at every checkpoint."""
    world_model: str = "default"
    """Teacher: a world-model directory, a bundle, a `wmgym train-wm` run or checkpoint directory, or "default"
    (the shipped bundle's world model)."""
    extra_data: tuple[str, ...] = ()
    """More stores (same frame size and tasks) whose train and val splits join `data`'s."""
    val_fraction: float = 0.1
    """Fraction of each store's episodes held out for validation (split seed 0, as `wmgym train-wm` splits)."""
    teacher_steps: int = 2
    """DDIM steps of the teacher's sampler whose result the student learns to reach in one step."""
    clip_actions: int | None = None
    """Actions per training clip (None: twice the sampler's window). The frame to generate is drawn among
    frames 1..clip_actions of the clip, its history as the sampler keeps it (first frame, then the newest):
    from the first frame alone to a full window whose first frame lies far behind, as in long rollouts."""
    steps: int = 3000
    """Optimizer steps in total (the learning-rate schedule spans them)."""
    stop_after: int | None = None
    """Stop (with a checkpoint) once this many steps are done; `--resume` continues up to `steps`."""
    stop_after_minutes: float | None = None
    """Stop (with a checkpoint) after this many minutes of wall time; `--resume` continues."""
    batch_size: int = 16
    """Clips per process per step."""
    learning_rate: Annotated[float, tyro.conf.arg(aliases=("--lr",))] = 1e-4
    """AdamW peak learning rate (linear warm-up, then cosine decay to a tenth of it at `steps`)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 100
    """Steps of linear learning-rate warm-up."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = no clipping)."""
    action_dropout: float = 0.1
    """Probability of giving teacher and student the null action for the frame to generate (so the student
    also learns the action-free prediction that `drop_actions` and guidance ask for)."""
    seed: int = 0
    """Seed of the data order and the noise."""
    val_windows: int = 64
    """Validation clips (spread evenly over the val split), scored at each validation."""
    validate_every: int = 500
    """Steps between validations (PSNR of the student's one step, the teacher's two steps and the teacher's
    one step against the true frame, and student against teacher; logged to log.jsonl)."""
    checkpoint_every: int = 500
    """Steps between checkpoints (one is always written at the end)."""
    log_every: int = 50
    """Steps between training-loss lines of log.jsonl."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """'auto' lets Accelerate pick (CUDA when available); 'cpu' forces the CPU."""
    num_threads: int | None = None
    """torch CPU threads (None = torch's default)."""
    resume: bool = False
    """Continue the unfinished run at `out` (student and optimizer state; the teacher is the copy in `out`);
    refused when a setting differs from its train_config.json (see --allow-config-change)."""
    overwrite: bool = False
    """Replace an existing run (or model directory) at `out` with a fresh run; anything else at `out` is refused."""
    allow_config_change: bool = False
    """Let --resume continue with settings that differ from the run's saved configuration (each change is
    listed in a warning). Always free to change on resume: steps, stop_after, stop_after_minutes, device,
    num_threads, show_progress, checkpoint_every, log_every."""
    show_progress: bool = True
    """Show a tqdm progress bar."""
