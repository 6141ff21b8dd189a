"""`wmgym distill`: progressive distillation of a world model's 2-step sampler into a one-step denoiser.

Method: progressive distillation (Salimans & Ho 2022, "Progressive Distillation for Fast
Sampling of Diffusion Models", arXiv:2202.00512): a student initialised as a copy of the
teacher's denoiser learns to match, in one DDIM step, what the teacher reaches in two. Here one
halving, 2 -> 1, adapted to the per-frame sampler with noisy history and KV cache
(`wmgym.model.imagination`):

    One example = a clip of a training store. The frame to generate, `newest`, is drawn among the
    clip's frames 1..clip_actions; its history is what the sampler holds when it generates that
    frame of a rollout started at the clip's first frame (`sampler_history`: the first frame, kept,
    then the newest ones of the window; 1 to window_frames frames). The history is noised to the
    sampler's `history_timestep` (`add_noise`), its first frame gets the null action (a context
    frame), the others the action that produced them; the new frame starts from pure noise x_T at
    the first sampling timestep, conditioned on its action (the null action with probability
    `action_dropout`) and its conditions.
    Teacher (frozen, no grad): `teacher_steps` DDIM steps from x_T, exactly as `Imagination.step`
    takes them (guidance 1): the history's keys and values written once into a KV cache, then one
    call per step on the new frame, `predicted_velocity` anchored on the clean previous frame.
    Student (with gradients): ONE DDIM step from the same x_T, the whole short sequence (history +
    new frame) through its block-causal denoiser without a cache, so the history's keys and
    values are its own, as they are when it samples (the sampler uses it for the cache writes too).
    Loss: mean squared error between the two results. The last sampling timestep is "clean" (-1),
    where progressive distillation's x-target (z_t'' - (sigma_t''/sigma_t) z_t) /
    (alpha_t'' - (sigma_t''/sigma_t) alpha_t) is the teacher's two-step result itself, and its
    truncated-SNR weight max(SNR, 1) at x_T (SNR 0, the zero-terminal-SNR schedule) is 1, as is
    `compute_loss`'s min(1 + SNR, gamma): so this plain MSE is the paper's loss at that timestep.

Randomness is a pure function of the seed: epoch e's clip order is drawn from
SeedSequence(seed, spawn_key=(e,)) (`EpochPermutationSampler`), step s's frame choice and noise
from a generator seeded from (seed, rank, s); a run that stops and resumes takes the same steps.

Output directory (`out`, replaced atomically at every checkpoint; `wmgym.train.loop`):
    the teacher's world-model directory, file for file, plus denoiser_one_step.safetensors (the
    student): `WorldModel.from_pretrained(out)` loads both, and the sampler calls the student when
    num_steps == 1 (`WorldModel.sampling_denoiser`), the teacher's denoiser otherwise
    train_config.json, log.jsonl        this config; loss and validation PSNRs
    training_state.safetensors/.json    optimizer moments and step (until the end; `--resume`)
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wmgym.model.conditions import Conditions
from wmgym.model.denoiser import Denoiser
from wmgym.model.kv_cache import KVCache
from wmgym.model.schedule import add_noise, ddim_step, sampling_timesteps
from wmgym.model.world_model import ONE_STEP_WEIGHTS, WorldModel
from wmgym.train.checkpoint import STATE_FILE, STATE_META, run_locked, start_run, training_progress
from wmgym.train.distill_config import DistillConfig
from wmgym.train.loop import train_steps

RUN_FILES = frozenset({"train_config.json", "log.jsonl", STATE_FILE, STATE_META, ONE_STEP_WEIGHTS})
"""Files of a run directory that are not the teacher's (left out when its files are copied)."""
VAL_SEED_OFFSET = 7919  # validation draws its noise from its own generator, the same at every validation


def distill(config: DistillConfig) -> Path:
    """Distil (or resume distilling) a world model's sampler into a one-step denoiser; writes and
    returns the run directory `config.out`, a world-model directory with the student. The main
    process holds the writer lock of `config.out` throughout, so a second run on it refuses."""
    check_config(config)
    return run_locked(config, lambda accelerator: _distill_locked(config, accelerator))


def teacher_directory(world_model: str) -> Path:
    """The world-model directory `--world-model` names: "default" (the shipped bundle's), a bundle's
    world_model/, a `wmgym train-wm` run or checkpoint directory, or a saved world model."""
    from wmgym.envs.bundle import BUNDLE_FILE, DEFAULT_BUNDLE, resolve_world_model

    path = DEFAULT_BUNDLE if world_model == "default" else Path(world_model)
    if (path / BUNDLE_FILE).is_file():
        path = path / "world_model"
    return resolve_world_model(path)


def _distill_locked(config: DistillConfig, accelerator) -> Path:
    from wmgym.data.batch import WindowBatch
    from wmgym.train.sampling import epoch_loader

    out = start_run(config)
    device, rank = accelerator.device, accelerator.process_index
    resumed = config.resume and (out / STATE_FILE).is_file()
    source = out if resumed else teacher_directory(config.world_model)  # a resumed run's teacher is its own copy
    teacher = WorldModel.from_pretrained(source, device="cpu")
    if resumed and teacher.one_step_denoiser is None:
        raise ValueError(f"cannot resume {out}: it has no {ONE_STEP_WEIGHTS}")
    student = teacher.one_step_denoiser if resumed else copy.deepcopy(teacher.denoiser)  # starts as the teacher
    teacher.one_step_denoiser = None  # the teacher samples with its own denoiser
    teacher.requires_grad_(False).eval()
    student.requires_grad_(True).train()

    clip_actions = config.clip_actions or 2 * (teacher.sampler.window_frames or 4)
    train, val = (_clips(config, teacher, source, clip_actions, split) for split in ("train", "val"))
    if len(train) < config.batch_size:
        raise ValueError(f"the train split has {len(train)} clips of {clip_actions} actions, fewer than batch_size "
                         f"{config.batch_size}")
    distiller = Distiller(teacher.to(device), student, source, config.teacher_steps, config.action_dropout)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    step, elapsed, log, _, _ = training_progress(out, optimizer, resumed)
    loader = epoch_loader(train, config.batch_size, config.seed, collate_fn=WindowBatch.collate)
    sampler = loader.sampler  # set to each epoch by train_steps
    model, optimizer, loader = accelerator.prepare(distiller, optimizer, loader)
    generator = torch.Generator(device=device)

    def train_step(batch, step: int) -> dict:
        generator.manual_seed(step_seed(config.seed, rank, step))
        loss = model(batch.frames, batch.actions, batch.conditions, generator)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if config.grad_clip > 0:
            accelerator.clip_grad_norm_(student.parameters(), config.grad_clip)
        optimizer.step()
        return {"loss": float(loss.detach())}

    def validate(step: int) -> tuple[dict, str]:
        entry = validation_metrics(distiller, val, config.val_windows, config.batch_size, config.seed + VAL_SEED_OFFSET)
        student.train()
        message = (f"one step: student {entry['val/student_psnr']:.2f} dB, teacher {entry['val/teacher_1step_psnr']:.2f} dB; "
                   f"teacher {config.teacher_steps} steps {entry['val/teacher_psnr']:.2f} dB (against the true frame); "
                   f"student against teacher {entry['val/student_teacher_psnr']:.2f} dB")
        return {"step": step, **entry}, message

    train_steps(config, accelerator, model, optimizer, loader, sampler, out, step, elapsed, log, train_step,
                validate if val is not None else None, "distill")
    return out


def _clips(config: DistillConfig, teacher: WorldModel, source: Path, clip_actions: int, split: str):
    """The `WindowDataset` of `split` with clips of `clip_actions` actions and the teacher's conditions
    (None for an empty val split); ValueError naming the store and the teacher when they do not fit."""
    from wmgym.data.dataset import WindowDataset

    if split == "val" and config.val_fraction == 0:
        return None
    views, vectors = tuple(teacher.config.condition_views), tuple(teacher.condition_vectors)
    try:
        clips = WindowDataset([config.data, *config.extra_data], num_actions=clip_actions, split=split, views=views,
                              poses=teacher.is_pose_conditioned, held=teacher.is_held_conditioned,
                              val_fraction=config.val_fraction)
    except ValueError as error:
        raise ValueError(f"--data {config.data} cannot feed the world model {source} (conditioned on views {views} and "
                         f"vectors {vectors}, clips of --clip-actions {clip_actions}): {error}") from None
    if (clips.height, clips.width) != (teacher.config.height, teacher.config.width):
        raise ValueError(f"the world model {source} makes {teacher.config.height}x{teacher.config.width} frames, "
                         f"--data {config.data} has {clips.height}x{clips.width}")
    if clips.actions.shape[1] != teacher.action_dim:
        raise ValueError(f"the world model {source} takes {teacher.action_dim} action values, --data {config.data} "
                         f"has {clips.actions.shape[1]}")
    return clips


# ---------------------------------------------------------------- the distillation pair
def sampler_history(newest: int, window_frames: int | None, keep_first_frame: bool) -> list[int]:
    """The frames (indices into a clip) the sampler holds as history when it generates frame
    `newest` of a rollout that started from frame 0: all earlier frames while they fit in its
    window (the KV cache's `window_frames`), then, with `keep_first_frame`, frame 0 and the
    newest window_frames - 1, else the newest window_frames."""
    if window_frames is None or newest <= window_frames:
        return list(range(newest))
    first = [0] if keep_first_frame else []
    return first + list(range(newest - window_frames + len(first), newest))


@dataclass
class DistillationClip:
    """One batch of distillation examples (b clips, t = history + 1 frames), as the sampler sees them.

    noisy: (b, t, C, h, w) the history at `history_timestep` noise, then x_T (pure noise) for the new frame.
    timesteps: long (b, t), the history's level, then the first sampling timestep.
    actions: (b, t, action_dim) normalised; frame i's producing action. dropped: bool (b, t), null action.
    maps, vectors: the conditions' encodings (`WorldModel.encode_conditions`), or None.
    anchor: (b, 1, C, h, w) the clean newest history frame (a residual prediction's anchor).
    truth: (b, 1, C, h, w) the clean new frame (validation only: the distillation never reads it).
    """

    noisy: torch.Tensor
    timesteps: torch.Tensor
    actions: torch.Tensor
    dropped: torch.Tensor
    maps: torch.Tensor | None
    vectors: torch.Tensor | None
    anchor: torch.Tensor
    truth: torch.Tensor


def distillation_clip(model: WorldModel, frames, actions, conditions: Conditions | None, newest: int,
                      generator: torch.Generator, action_dropout: float = 0.0) -> DistillationClip:
    """The sampler's view of generating frame `newest` of clips frames uint8 (b, T+1, H, W, 3),
    actions raw (b, T, action_dim), conditions (b, T+1) (`WindowBatch`), 1 <= newest <= T."""
    s, device = model.sampler, model.device
    index = torch.tensor(sampler_history(newest, s.window_frames, s.keep_first_frame) + [newest], device=device)
    z = model.encode_frames(frames.to(device)[:, index])  # (b, t, C, h, w)
    b, t = z.shape[:2]
    raw = actions.to(device)[:, (index - 1).clamp(min=0)]  # (b, t, A): frame i is produced by a_{i-1}
    dropped = (index == 0)[None].expand(b, t) | model.out_of_support(raw)  # frame 0: a context frame; gated as step() gates
    dropped[:, -1] |= torch.rand(b, device=device, generator=generator) < action_dropout
    timesteps = torch.full((b, t), s.history_timestep, device=device, dtype=torch.long)
    timesteps[:, -1] = int(sampling_timesteps(1, model.config.num_train_timesteps)[0])  # T - 1: every step count starts there
    history = add_noise(z[:, :-1], torch.randn(z[:, :-1].shape, device=device, generator=generator), timesteps[:, :-1],
                        model.alphas_cumprod)
    noise = torch.randn(z[:, -1:].shape, device=device, generator=generator)
    maps, vectors = model.encode_conditions(None if conditions is None else conditions.to(device).frames(index), b, t)
    return DistillationClip(torch.cat([history, noise], dim=1), timesteps, model.normalize_actions(raw), dropped, maps,
                            vectors, anchor=z[:, -2:-1], truth=z[:, -1:])


@torch.no_grad()
def teacher_sample(model: WorldModel, clip: DistillationClip, num_steps: int) -> torch.Tensor:
    """The new frame's latents (b, 1, C, h, w) after `num_steps` DDIM steps of the model's own
    denoiser, as `Imagination.step` takes them (guidance 1): the history's keys and values
    written into a KV cache once, then one call per step on the new frame."""
    cfg = model.denoiser.config
    cache = KVCache(cfg.depth, cfg.tokens_per_frame)
    part = lambda x, i: None if x is None else x[:, i]
    history, new = slice(0, -1), slice(-1, None)
    model.denoiser(clip.noisy[:, history], clip.timesteps[:, history], clip.actions[:, history], clip.dropped[:, history],
                   part(clip.maps, history), part(clip.vectors, history), cache=cache, write_cache=True)
    x = clip.noisy[:, new]
    steps = sampling_timesteps(num_steps, model.config.num_train_timesteps).tolist()
    for k, k_next in zip(steps[:-1], steps[1:]):
        timesteps = torch.full_like(clip.timesteps[:, new], k)
        output = model.denoiser(x, timesteps, clip.actions[:, new], clip.dropped[:, new], part(clip.maps, new),
                                part(clip.vectors, new), cache=cache, previous_first=clip.noisy[:, -2:-1])
        v = model.predicted_velocity(output.float(), x, timesteps, clip.anchor)
        x = ddim_step(x, v, timesteps, torch.full_like(timesteps, k_next), model.alphas_cumprod)
    return x


def student_sample(model: WorldModel, student: Denoiser, clip: DistillationClip) -> torch.Tensor:
    """The new frame's latents (b, 1, C, h, w) after ONE DDIM step of `student` (gradients kept):
    the whole clip, history and new frame, through its block-causal attention without a cache."""
    output = student(clip.noisy, clip.timesteps, clip.actions, clip.dropped, clip.maps, clip.vectors)[:, -1:]
    x, timesteps = clip.noisy[:, -1:], clip.timesteps[:, -1:]
    v = model.predicted_velocity(output.float(), x, timesteps, clip.anchor)
    return ddim_step(x, v, timesteps, torch.full_like(timesteps, -1), model.alphas_cumprod)


class Distiller(nn.Module):
    """The student (a `Denoiser`, the only trained module) and its frozen teacher (a `WorldModel`,
    kept out of the module tree: no gradients, not in the optimizer or the state dict).

    forward(frames, actions, conditions, generator) -> the distillation loss of a `WindowBatch`'s
    tensors, the frame to generate drawn from `generator`. `write_files(directory)` writes the
    world-model directory: the teacher's files from `source`, then the student's weights."""

    def __init__(self, teacher: WorldModel, student: Denoiser, source: Path, teacher_steps: int = 2,
                 action_dropout: float = 0.0):
        super().__init__()
        self.student = student
        object.__setattr__(self, "teacher", teacher)
        self.source, self.teacher_steps, self.action_dropout = Path(source), teacher_steps, action_dropout

    def forward(self, frames, actions, conditions, generator: torch.Generator) -> torch.Tensor:
        newest = int(torch.randint(1, frames.shape[1], (1,), device=generator.device, generator=generator))
        clip = distillation_clip(self.teacher, frames, actions, conditions, newest, generator, self.action_dropout)
        target = teacher_sample(self.teacher, clip, self.teacher_steps)
        # Progressive distillation's loss at the last step: the teacher's result is the x-target (module docstring).
        return (student_sample(self.teacher, self.student, clip) - target).square().mean()

    def write_files(self, directory: Path) -> None:
        """The teacher's directory (`source`) file for file, then denoiser_one_step.safetensors."""
        from safetensors.torch import save_file

        for entry in sorted(self.source.iterdir()):
            if entry.name in RUN_FILES or entry.name.startswith("."):
                continue
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, Path(directory) / entry.name)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.student.state_dict().items()},
                  Path(directory) / ONE_STEP_WEIGHTS)


@torch.no_grad()
def validation_metrics(distiller: Distiller, val, num_windows: int, batch_size: int, seed: int) -> dict:
    """PSNRs (dB, 0-255 scale, of the mean squared error over all clips) of the last frame of
    `num_windows` val clips (spread evenly) generated from the rest, its history as the sampler
    holds it: the student's one step, the teacher's `teacher_steps` and its one step against the
    true frame, and the student's against the teacher's; val/distill_mse, the loss."""
    from wmgym.data.batch import WindowBatch
    from wmgym.image_metrics import psnr_from_mse

    teacher, student = distiller.teacher, distiller.student.eval()
    generator = torch.Generator(device=teacher.device).manual_seed(seed)
    picks = np.linspace(0, len(val) - 1, min(len(val), num_windows)).round().astype(int).tolist()
    sums = torch.zeros(5, dtype=torch.float64)  # squared errors: student, teacher, teacher 1 step, student - teacher; latent mse
    count, batches = 0, 0
    for first in range(0, len(picks), batch_size):
        batch = WindowBatch.collate([val[i] for i in picks[first:first + batch_size]])
        clip = distillation_clip(teacher, batch.frames, batch.actions, batch.conditions, batch.actions.shape[1], generator)
        latents = [student_sample(teacher, student, clip), teacher_sample(teacher, clip, distiller.teacher_steps),
                   teacher_sample(teacher, clip, 1), clip.truth]
        sums[4] += (latents[0] - latents[1]).square().mean().item()
        pixels = [teacher.decode_latents(x).double() for x in latents]
        pairs = [(pixels[0], pixels[3]), (pixels[1], pixels[3]), (pixels[2], pixels[3]), (pixels[0], pixels[1])]
        for i, (a, b) in enumerate(pairs):
            sums[i] += (a - b).square().sum().item()
        count += pixels[3].numel()
        batches += 1
    psnr = lambda se: float(psnr_from_mse(torch.tensor(se / count, dtype=torch.float64)))
    names = ("student_psnr", "teacher_psnr", "teacher_1step_psnr", "student_teacher_psnr")
    return {**{f"val/{name}": psnr(sums[i].item()) for i, name in enumerate(names)}, "val/distill_mse": float(sums[4] / batches)}


# ---------------------------------------------------------------- setup helpers
def step_seed(seed: int, rank: int, step: int) -> int:
    """The seed of step `step`'s generator on process `rank`: a pure function, so a resumed run draws the same."""
    return int(np.random.SeedSequence(seed, spawn_key=(rank, step)).generate_state(1, np.uint64)[0] >> 1)


def check_config(config: DistillConfig) -> None:
    """ValueError naming the first setting out of range."""
    for name in ("steps", "batch_size", "checkpoint_every", "log_every", "validate_every", "val_windows"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.teacher_steps < 2:
        raise ValueError(f"teacher_steps must be >= 2 (the student takes one step), got {config.teacher_steps}")
    if config.clip_actions is not None and config.clip_actions < 1:
        raise ValueError(f"clip_actions must be >= 1 (or None), got {config.clip_actions}")
    if config.learning_rate <= 0 or config.warmup_steps < 0 or config.weight_decay < 0 or config.grad_clip < 0:
        raise ValueError("need learning_rate > 0, warmup_steps >= 0, weight_decay >= 0 and grad_clip >= 0")
    if not 0.0 <= config.action_dropout < 1.0:
        raise ValueError(f"action_dropout must be in [0, 1), got {config.action_dropout}")
    if not 0.0 <= config.val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {config.val_fraction}")
    if config.stop_after is not None and config.stop_after < 1:
        raise ValueError(f"stop_after must be >= 1 (or None), got {config.stop_after}")
    if config.stop_after_minutes is not None and not config.stop_after_minutes > 0:
        raise ValueError(f"stop_after_minutes must be > 0 (or None), got {config.stop_after_minutes}")
