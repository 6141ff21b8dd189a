"""The world-model training loop: diffusion forcing under Hugging Face Accelerate.

One command trains on one CPU, one GPU or, through `accelerate launch`, several processes
(DDP): each draws its own batch, gradients are averaged, all take identical steps (global batch
`batch_size * num_processes`). Several CPU processes: `ACCELERATE_USE_CPU=1 accelerate launch
--multi_gpu --num_processes 2 ...` (gloo; Accelerate's `--cpu` goes through mpirun instead).

Randomness is a pure function of the seed, so a run can stop and resume bit for bit:
  - data order: epoch e is the permutation drawn from SeedSequence(seed, spawn_key=(e,));
    a resumed run skips the batches its checkpoint had already used in that epoch;
  - noise, timesteps and action dropout of step s on process r come from a generator seeded
    from SeedSequence(seed, spawn_key=(r, s)) (no generator state to carry).

Checkpoints: see `wmgym.train.wm_checkpoint`. No pickle anywhere (docs/design.md, "Checkpoints").
Nothing in the loop draws from the global torch RNG (data loaders have their own generators);
its state is saved and restored per process anyway. NumPy's and Python's global RNGs are not used.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from wmgym.actions import ACTION_NAMES
from wmgym.data.batch import WindowBatch
from wmgym.data.dataset import WindowDataset
from wmgym.model.codec import PixelCodec
from wmgym.model.denoiser import DenoiserConfig
from wmgym.model.world_model import SamplerDefaults, WorldModel, WorldModelConfig
from wmgym.outputs import check_output
from wmgym.train.checkpoint import check_resume_config, read_json, read_log, run_locked, section, write_text_atomic
from wmgym.train.sampling import epoch_items, epoch_loader
from wmgym.model.world_model_config import HELD_VECTOR, pose_vector_spec
from wmgym.train.wm_build import (HELD_DIM, POSE_DIM, action_statistics, pose_statistics, with_condition_views,
                                  with_held_conditioning, with_pose_conditioning)
from wmgym.train.wm_checkpoint import (RUN_DIRECTORY_KIND, latest_checkpoint, newest_intact_checkpoint, restore_checkpoint,
                                       save_checkpoint)
from wmgym.train.wm_config import TrainWorldModelConfig
from wmgym.train.wm_validation import validation_metrics

VAL_SEED_OFFSET = 7919  # validation draws from its own generator, the same at every validation


class _LossModule(nn.Module):
    """Routes `compute_loss` through `forward`, so DDP syncs gradients and Accelerate autocasts."""

    def __init__(self, model: WorldModel, action_dropout: float, gripper_weight: float, gripper_dilation: int):
        super().__init__()
        self.model, self.action_dropout = model, action_dropout
        self.gripper_weight, self.gripper_dilation = gripper_weight, gripper_dilation

    def forward(self, frames, actions, conditions, generator):
        return self.model.compute_loss(frames, actions, conditions, action_dropout=self.action_dropout, generator=generator,
                                       gripper_weight=self.gripper_weight, gripper_dilation=self.gripper_dilation)


def train_world_model(config: TrainWorldModelConfig) -> Path:
    """Train (or resume) a world model; returns the newest checkpoint directory. The main
    process holds the writer lock of `config.out` throughout, so a second run on it refuses."""
    _check_config(config)
    summary_writer = None
    if config.tensorboard:  # an optional dependency: fail before any work when it is missing
        try:
            from torch.utils.tensorboard import SummaryWriter as summary_writer
        except ImportError:
            raise ValueError("--tensorboard needs the optional `tensorboard` package: pip install tensorboard") from None
    return run_locked(config, lambda accelerator: _train_locked(config, accelerator, summary_writer),
                      mixed_precision=config.mixed_precision, step_scheduler_with_optimizer=False)  # the schedule counts optimizer steps


def _train_locked(config: TrainWorldModelConfig, accelerator, summary_writer) -> Path:
    from accelerate.utils import set_seed
    from diffusers.training_utils import EMAModel

    out = Path(config.out)
    check_output(out, RUN_DIRECTORY_KIND, overwrite=True)  # its own run is continued or refused below; nothing else
    if latest_checkpoint(out) is not None and not config.resume:
        raise FileExistsError(f"{out} already holds checkpoints; pass --resume to continue or choose another --out")
    if config.resume and (out / "train_config.json").is_file():
        check_resume_config(read_json(out / "train_config.json"), out / "train_config.json", config, config.allow_config_change)
    set_seed(config.seed)
    rank, device = accelerator.process_index, accelerator.device
    num_actions = config.num_frames - 1
    checkpoint, state, tensors = None, None, {}
    if config.resume and (found := newest_intact_checkpoint(out, accelerator.is_main_process)) is not None:
        checkpoint, model, state, tensors = found
    if checkpoint is None and config.init_from is not None:
        model = WorldModel.from_pretrained(config.init_from, device="cpu")
        if config.condition_views and tuple(model.config.condition_views) != tuple(config.condition_views):
            model = with_condition_views(model, config.condition_views)
    # The model's views (a checkpoint's or an --init-from model's config wins) decide what the data yields.
    loaded = checkpoint is not None or config.init_from
    views = tuple(model.config.condition_views) if loaded else tuple(config.condition_views)
    poses = (model.is_pose_conditioned or (checkpoint is None and config.pose_conditioning)) if loaded else config.pose_conditioning
    held = (model.is_held_conditioned or (checkpoint is None and config.held_conditioning)) if loaded else config.held_conditioning
    train_set = WindowDataset([config.data, *config.extra_data], num_actions=num_actions, split="train", views=views,
                              poses=poses, held=held, val_fraction=config.val_fraction)
    if checkpoint is None and config.init_from is not None and poses and not model.is_pose_conditioned:
        model = with_pose_conditioning(model, *pose_statistics(train_set), pose_input=config.pose_input)
    if checkpoint is None and config.init_from is not None and held and not model.is_held_conditioned:
        model = with_held_conditioning(model)
    if checkpoint is None and config.init_from is not None:
        if (model.config.height, model.config.width) != (train_set.height, train_set.width):
            raise ValueError(f"--init-from {config.init_from} makes {model.config.height}x{model.config.width} frames, "
                             f"the data {config.data} has {train_set.height}x{train_set.width}")
        state, tensors = None, {}
    elif checkpoint is None:
        codec = PixelCodec() if config.codec == "pixel" else _load_codec(config.codec)
        model = WorldModel(_model_config(config, train_set, codec), device="cpu")
        model.codec.load_state_dict(codec.state_dict())  # a trained codec's weights (none for pixels)
        state, tensors = None, {}
    else:
        model.denoiser.load_state_dict(section(tensors, "raw/"))
    model.codec.requires_grad_(False)

    loader = epoch_loader(train_set, config.batch_size, config.seed,
                          epoch_items(train_set.window_offsets, config.focus_window_starts, config.focus_repeats),
                          collate_fn=WindowBatch.collate,  # stacked by name
                          num_workers=config.num_workers, pin_memory=device.type == "cuda",
                          persistent_workers=config.num_workers > 0)
    sampler = loader.sampler  # set to each epoch below
    if config.pose_lr_scale != 1.0 and not model.denoiser.config.vector_dim:
        raise ValueError("pose_lr_scale needs a model that reads the pose or the grasp state through its embedding "
                         "(--pose-conditioning --pose-input embedding, or --held-conditioning)")
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay, config.learning_rate, config.pose_lr_scale),
                                  lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config))
    loss_module, optimizer, loader, scheduler = accelerator.prepare(
        _LossModule(model, config.action_dropout, config.gripper_loss_weight, config.gripper_dilation), optimizer, loader, scheduler)
    batches_per_epoch = len(loader)
    if batches_per_epoch == 0:
        raise ValueError(f"the train split has {len(train_set)} windows, fewer than batch_size {config.batch_size} "
                         f"x {accelerator.num_processes} processes")
    ema = EMAModel(model.denoiser.parameters(), decay=config.ema_decay, foreach=device.type == "cuda")
    ema_model = WorldModel(model.config, device=device).eval() if accelerator.is_main_process else None  # EMA weights
    step = 0 if state is None else restore_checkpoint(state, tensors, model, ema, optimizer, scheduler, accelerator)
    if accelerator.is_main_process:
        ema_model.codec.load_state_dict(model.codec.state_dict())
        val_loader = _val_loader(WindowDataset([config.data, *config.extra_data], num_actions=num_actions, split="val",
                                               views=views, poses=poses, held=held, val_fraction=config.val_fraction), config)
        _start_log(out, config, step)
    writer = summary_writer(out / "tensorboard") if summary_writer and accelerator.is_main_process else None

    stop = min(config.steps, config.stop_after or config.steps)
    deadline = math.inf if config.stop_after_minutes is None else time.perf_counter() + 60.0 * config.stop_after_minutes
    generator = torch.Generator(device=device)
    progress = tqdm(total=config.steps, initial=step, desc="train-wm", disable=not accelerator.is_main_process)
    totals, train_time = torch.zeros(3, device=device), 0.0  # loss, x0_mse, steps; seconds incl. data
    loss_module.train()
    model.codec.eval()
    while step < stop:
        epoch, done_in_epoch = divmod(step, batches_per_epoch)
        sampler.set_epoch(epoch)
        loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, done_in_epoch) if done_in_epoch else loader
        tick = time.perf_counter()
        for batch in batches:
            generator.manual_seed(_step_seed(config.seed, rank, step))
            loss, logs = loss_module(batch.frames, batch.actions, batch.conditions, generator)
            accelerator.backward(loss)
            lr = scheduler.get_last_lr()[0]  # the rate this step uses
            grad_norm = accelerator.clip_grad_norm_(loss_module.parameters(), config.grad_clip or math.inf)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            ema.step(model.denoiser.parameters())
            step += 1
            train_time += time.perf_counter() - tick
            totals += torch.stack([logs["loss"].float(), logs["x0_mse"].float(), torch.ones((), device=device)])  # no host sync
            progress.update(1)
            if time.perf_counter() >= deadline:
                stop = step  # out of time: this step is the last
            is_last = step >= stop
            if step % config.log_every == 0 or is_last:
                summed = accelerator.reduce(totals, "sum").double().cpu()
                progress.set_postfix(loss=f"{float(summed[0] / summed[2]):.4f}")
                if accelerator.is_main_process:
                    _log(out, writer, {"step": step, "epoch": epoch, "loss": float(summed[0] / summed[2]),
                                       "x0_mse": float(summed[1] / summed[2]), "lr": lr,
                                       "grad_norm": float(grad_norm), "sec_per_step": train_time / summed[2].item()
                                       * accelerator.num_processes})
                totals.zero_()
                train_time = 0.0
            if accelerator.is_main_process and (step % config.validate_every == 0 or is_last):
                ema.copy_to(ema_model.denoiser.parameters())
                _log(out, writer, {"step": step, **validation_metrics(ema_model, val_loader, config.seed + VAL_SEED_OFFSET,
                                                            config.action_dropout)})
            if step % config.checkpoint_every == 0 or is_last:
                save_checkpoint(out, step, model, ema, ema_model, optimizer, scheduler, accelerator,
                                 {"epoch": epoch, "batches_per_epoch": batches_per_epoch}, config.keep_checkpoints)
            if is_last:
                break
            tick = time.perf_counter()  # validation and checkpoints are not training time
    progress.close()
    if writer is not None:
        writer.close()
    accelerator.end_training()
    return latest_checkpoint(out)


# ---------------------------------------------------------------- validation
def _val_loader(val_set: WindowDataset, config: TrainWorldModelConfig):
    count = min(len(val_set), config.val_batches * config.batch_size)
    indices = np.linspace(0, len(val_set) - 1, count).round().astype(int).tolist()  # spread over episodes
    return torch.utils.data.DataLoader(torch.utils.data.Subset(val_set, indices), batch_size=config.batch_size,
                                       collate_fn=WindowBatch.collate, generator=torch.Generator())  # leaves the global RNG alone


# ---------------------------------------------------------------- setup helpers
def _check_config(config: TrainWorldModelConfig) -> None:
    for name in ("steps", "batch_size", "checkpoint_every", "log_every", "validate_every", "val_batches", "num_steps"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.num_frames < 2:
        raise ValueError(f"num_frames must be >= 2 (history and a frame to predict), got {config.num_frames}")
    if not 0.0 <= config.action_dropout < 1.0 or not 0.0 <= config.ema_decay < 1.0:
        raise ValueError(f"action_dropout and ema_decay must be in [0, 1), got {config.action_dropout}, {config.ema_decay}")
    if config.learning_rate <= 0 or config.warmup_steps < 0 or config.grad_clip < 0 or (config.stop_after or 1) < 1:
        raise ValueError("need learning_rate > 0, warmup_steps >= 0, grad_clip >= 0 and stop_after >= 1 (or None)")
    if config.gripper_loss_weight < 0 or config.gripper_dilation < 0:
        raise ValueError(f"gripper_loss_weight and gripper_dilation must be >= 0, got {config.gripper_loss_weight}, "
                         f"{config.gripper_dilation}")
    if config.focus_repeats < 1 or config.pose_lr_scale <= 0:
        raise ValueError(f"focus_repeats must be >= 1 and pose_lr_scale > 0, got {config.focus_repeats}, {config.pose_lr_scale}")
    if config.focus_window_starts is not None and not 0 <= config.focus_window_starts[0] <= config.focus_window_starts[1]:
        raise ValueError(f"focus_window_starts must be (first, last) with 0 <= first <= last, got {config.focus_window_starts}")
    if config.stop_after_minutes is not None and not config.stop_after_minutes > 0:
        raise ValueError(f"stop_after_minutes must be > 0 (or None), got {config.stop_after_minutes}")


def _load_codec(path: str):
    from wmgym.train.codec import load_codec  # only runs with a trained codec

    if not Path(path).is_dir():
        raise FileNotFoundError(f"codec must be 'pixel' or a codec checkpoint directory from `wmgym train-codec`; "
                                f"{path} is not a directory")
    return load_codec(path)


def _model_config(config: TrainWorldModelConfig, train_set: WindowDataset, codec) -> WorldModelConfig:
    codec.check_frame_size(train_set.height, train_set.width)
    if config.held_conditioning and config.pose_conditioning and config.pose_input == "channels":
        raise ValueError("--held-conditioning reads the grasp state through the frame-vector embedding; "
                         "combine it with --pose-input embedding, not channels")
    vector = (POSE_DIM if config.pose_conditioning else 0) + (HELD_DIM if config.held_conditioning else 0)
    denoiser = DenoiserConfig(latent_channels=codec.latent_channels, latent_height=train_set.height // codec.downsample,
                              latent_width=train_set.width // codec.downsample, patch_size=config.patch_size,
                              width=config.width, depth=config.depth, num_heads=config.num_heads,
                              condition_channels=len(config.condition_views) * codec.latent_channels + vector,
                              vector_dim=vector if config.pose_input == "embedding" or config.held_conditioning else 0,
                              action_dim=train_set.actions.shape[1])
    # The model never attends over more frames than a training window holds, so its
    # sampling window (the KV cache's) is the training window.
    sampler = SamplerDefaults(num_steps=config.num_steps, history_timestep=config.history_timestep, window_frames=config.num_frames)
    mean, std, low, high = action_statistics(train_set)
    vectors = {**({"poses": pose_vector_spec(*pose_statistics(train_set))} if config.pose_conditioning else {}),
               **({"held": dict(HELD_VECTOR)} if config.held_conditioning else {})}
    return WorldModelConfig(height=train_set.height, width=train_set.width, camera=train_set.camera, codec=codec.config(),
                            denoiser=asdict(denoiser), sampler=asdict(sampler), action_mean=mean, action_std=std,
                            action_min=low, action_max=high, action_names=train_set.action_names or list(ACTION_NAMES),
                            condition_views=tuple(config.condition_views),
                            condition_vectors=vectors,
                            prediction=config.prediction)


def _param_groups(model: WorldModel, weight_decay: float, learning_rate: float, pose_lr_scale: float = 1.0) -> list[dict]:
    """AdamW groups: matrices decayed, the rest not; with pose_lr_scale != 1 the pose embedding's
    two groups follow at learning_rate * pose_lr_scale (the first group is the one logged)."""
    groups = {(pose, decay): [] for pose in (False, True) for decay in (True, False)}  # in this order
    scaled = pose_lr_scale != 1.0
    for name, param in model.denoiser.named_parameters():
        is_matrix = param.dim() >= 2 and name != "position"
        groups[scaled and name.startswith("vector_embed."), is_matrix].append(param)
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0,
             "lr": learning_rate * (pose_lr_scale if pose else 1.0)}
            for (pose, decay), params in groups.items() if params]


def _lr_factor(config: TrainWorldModelConfig):
    """Step s (0-based) -> LR multiplier: linear warm-up to 1, then constant or cosine to 0 at `steps`."""
    warmup, total, is_cosine = config.warmup_steps, config.steps, config.lr_schedule == "cosine"

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        if not is_cosine:
            return 1.0
        progress = min(1.0, (s - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence(seed, spawn_key=(rank, step)).generate_state(1, np.uint64)[0] >> 1)


def _start_log(out: Path, config: TrainWorldModelConfig, step: int) -> None:
    """Write train_config.json; on resume drop log lines past the checkpoint (they are redone),
    and a damaged last line (`read_log`); a fresh run starts an empty log."""
    log = out / "log.jsonl"
    kept = [entry for entry in read_log(log) if entry["step"] <= step] if step > 0 and log.exists() else []
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "train_config.json", json.dumps(asdict(config), indent=2))
    if log.exists():
        write_text_atomic(log, "".join(json.dumps(entry) + "\n" for entry in kept))


def _log(out: Path, writer, record: dict) -> None:
    with open(out / "log.jsonl", "a") as file:
        file.write(json.dumps(record) + "\n")
    if writer is not None:
        for key, value in record.items():
            if key != "step":
                writer.add_scalar(key, value, record["step"])
    if any(key.startswith("val/") for key in record):
        tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
