"""`wmgym train-videoclip`: train a `VideoCLIP` on an episode store and calibrate its judge.

Clips. Each training clip is one train-split episode, whole (`full_clip_fraction` of them) or
a prefix of 1..T frames (the environment scores and judges the episode so far after every
step), resampled to `num_frames` frames. Its positive captions:

    whole episode:  its outcome caption ("the left gripper folded the left sleeve onto the body")
                    + its task's instruction if the episode succeeded, else the not-done caption
    prefix:         its task's instruction if the task was done by its newest frame (at some
                    frame so far: score >= the task's threshold with both grippers open, the
                    simulator's success rule), else the not-done caption

Loss. Symmetric InfoNCE with several positives (many episodes share a caption): logits
s * <v_i, u_k> between the batch's clips i and every distinct caption k of the train split
(~20, all encoded each step). Each (anchor, positive) pair is scored against the anchor's
negatives only, -log(e^l_pos / (e^l_pos + sum_neg e^l_neg)), averaged over the anchor's
positives, then over anchors; clip->caption over the caption bank, caption->clip over the
batch's clips (for captions with a positive in the batch); the loss is their mean.

After the last step the judge's threshold is calibrated on the val-split episodes and stored as
`success_threshold`: by default under the environment's rule (an episode succeeds at its first
accepted prefix of 2..T+1 frames; `wmgym.rewards.judge.first_accept_peaks`), the threshold of best
episode accuracy (`calibrate_threshold`); `calibration="prefixes"` takes the best accuracy over
single prefixes instead (the first bundles' rule, which over-accepts whole episodes).

Output directory (`out`, replaced atomically at every checkpoint):
    config.json, model.safetensors   the model (`VideoCLIP.from_pretrained(out)`)
    calibration.json                 threshold sweep result and held-out figures (at the end)
    train_config.json, log.jsonl     this config and the loss / held-out log
    training_state.safetensors/.json optimizer moments, random states, step (until the end;
                                     `--resume` continues exactly from them)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from wmgym.data.store import EpisodeStore
from wmgym.train.checkpoint import (STATE_FILE, optimizer_state, run_lock, start_run, training_progress,
                                    warmup_cosine_learning_rate as learning_rate, write_run_directory)
from wmgym.train.episode_clips import join_clips, load_clips, task_captions
from wmgym.train.judge_eval import CALIBRATION_RULES, calibrate, videoclip_figures

if TYPE_CHECKING:  # torch and wmgym.data.dataset (which imports it) are imported inside the functions: the CLI imports this module
    import torch



@dataclass
class TrainVideoCLIPConfig:
    """Train VideoCLIP, the video-text model behind WMFold-v0's text rewards and success judge.

    After training, the judge's threshold is calibrated on held-out episodes. Add the output to
    a bundle with `wmgym bundle --videoclip`. Resumable (`--resume`)."""

    data: str
    """Path of a zarr episode store written by `wmgym generate`."""
    out: str
    """Model directory to write (replaced atomically at every checkpoint)."""
    extra_data: tuple[str, ...] = ()
    """More stores (same frame size and tasks) whose train and val episodes join `data`'s, each
    split on its own, e.g. imagined replay episodes (`wmgym generate --kinds X`, then `wmgym imagine`)."""
    steps: int = 3000
    """Total optimizer steps (a resumed run continues up to this many)."""
    batch_size: int = 64
    """Clips per step."""
    learning_rate: float = 2e-3
    """AdamW peak learning rate (linear warm-up, then cosine decay to a tenth of it)."""
    weight_decay: float = 0.01
    """AdamW weight decay (not on the temperature)."""
    warmup_steps: int = 100
    """Steps of linear learning-rate warm-up."""
    seed: int = 0
    """Seed of initialisation, clip sampling and augmentation."""
    num_frames: int = 8
    """Frames per clip the model sees (clips are resampled evenly to this many)."""
    conv_channels: tuple[int, ...] = (16, 32, 64, 64)
    """Per-frame conv widths, one stride-2 level each (image size must divide by 2 ** levels)."""
    frame_width: int = 64
    """Width of each frame's vector before temporal mixing."""
    embed_dim: int = 128
    """Width of the joint embedding."""
    text_width: int = 64
    """Width of the text transformer."""
    text_layers: int = 1
    """Layers of the text transformer."""
    temperature_init: float = 0.07
    """Initial softmax temperature (learned)."""
    full_clip_fraction: float = 0.5
    """Share of clips that are whole episodes; the rest are prefixes of uniform length 1..T."""
    blur_probability: float = 0.25
    """Share of clips blurred (2x down-and-up sampling) with pixel noise, so the model also
    reads the softer frames a world model generates."""
    max_shift: int = 3
    """Every clip is shifted by up to this many pixels in x and y (the same for all its frames;
    borders repeat the edge pixels): the shirt's place varies, the fold's meaning does not."""
    color_jitter: float = 0.15
    """Every clip's contrast is scaled by 1 +- this and its brightness offset by +- this (in [-1, 1] units)."""
    val_fraction: float = 0.1
    """Fraction of episodes held out (`split_episodes`, split seed 0, as `WindowDataset`)."""
    eval_every: int = 500
    """Steps between held-out evaluations (logged to log.jsonl)."""
    checkpoint_every: int = 500
    """Steps between checkpoints."""
    log_every: int = 25
    """Steps between training-loss log entries."""
    calibration: str = "episodes"
    """Threshold rule: 'episodes' (best accuracy of the environment's first-accept verdict on
    whole val episodes) or 'prefixes' (best accuracy on every single val prefix)."""
    max_episodes: int | None = None
    """Use only the first this many episodes of the store (None = all)."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda'."""
    num_threads: int | None = None
    """torch CPU threads (None = torch's default)."""
    resume: bool = False
    """Continue the unfinished run at `out` (optimizer and random state included); refused when
    a setting differs from its train_config.json (see --allow-config-change)."""
    overwrite: bool = False
    """Replace an existing run (or model directory) at `out` with a fresh run; anything else at `out` is refused."""
    allow_config_change: bool = False
    """Let --resume continue with settings that differ from the run's saved configuration
    (data, seed, batch size, learning rate, ...: each change is listed in a warning). Without
    it such a resume is refused. Always free to change on resume: steps, stop_after,
    stop_after_minutes, device, num_threads, show_progress, checkpoint_every, log_every."""
    show_progress: bool = True
    """Show a tqdm progress bar."""


def train_videoclip(config: TrainVideoCLIPConfig) -> Path:
    """Train (or resume) a VideoCLIP, calibrate its judge, write the directory `config.out`, return its path.
    Holds the writer lock of `config.out` throughout, so a second run on it refuses."""
    _check_config(config)
    with run_lock(config.out):
        return _train_locked(config)


def _train_locked(config: TrainVideoCLIPConfig) -> Path:
    import torch

    from wmgym.data.dataset import split_episodes
    from wmgym.model.world_model import resolve_device
    from wmgym.rewards.videoclip import NOT_DONE_CAPTION, VideoCLIP, VideoCLIPConfig, build_vocabulary

    out = start_run(config)
    device = resolve_device(config.device)

    store = EpisodeStore.open(config.data)
    train, val = [], []
    for path in (config.data, *config.extra_data):
        part = EpisodeStore.open(path)
        total = part.num_episodes if config.max_episodes is None else min(config.max_episodes, part.num_episodes)
        if total == 0:
            raise ValueError(f"episode store {path} holds no episodes")
        if (part.height, part.width, tuple(part.tasks)) != (store.height, store.width, tuple(store.tasks)):
            raise ValueError(f"store {path} has {part.height}x{part.width} frames and tasks {part.tasks}; "
                             f"{config.data} has {store.height}x{store.width} and {store.tasks}")
        train.append(load_clips(part, split_episodes(total, "train", config.val_fraction)))
        val.append(load_clips(part, split_episodes(total, "val", config.val_fraction)))
    train, val = join_clips(train), join_clips(val)
    instructions = task_captions(store)
    bank = list(dict.fromkeys([*instructions.values(), NOT_DONE_CAPTION, *sorted(set(train.captions))]))
    bank_index = {caption: k for k, caption in enumerate(bank)}
    height, width = store.height, store.width

    resumed = config.resume and (out / STATE_FILE).is_file()
    if resumed:
        model = VideoCLIP.from_pretrained(out, device=device)
        model_config = model.config
    else:
        model_config = VideoCLIPConfig(
            image_size=max(height, width), num_frames=config.num_frames, conv_channels=tuple(config.conv_channels),
            frame_width=config.frame_width, embed_dim=config.embed_dim, text_width=config.text_width,
            text_layers=config.text_layers, vocabulary=build_vocabulary(bank + list(instructions.values())),
            temperature_init=config.temperature_init, task_captions=instructions, not_done_caption=NOT_DONE_CAPTION)
        torch.manual_seed(config.seed)
        model = VideoCLIP(model_config, device=device)
    model.train()
    decay = [p for name, p in model.named_parameters() if name != "logit_scale"]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": [model.logit_scale], "weight_decay": 0.0}], lr=config.learning_rate)
    rng = np.random.default_rng(config.seed)
    noise_generator = torch.Generator(device=device).manual_seed(config.seed)
    step, elapsed, log, meta, state = training_progress(out, optimizer, resumed)
    if resumed:
        noise_generator.set_state(state["rng/noise"])
        rng.bit_generator.state = meta["rng"]

    def save(final: bool, calibration: dict | None = None) -> None:
        tensors, meta = optimizer_state(optimizer)
        state = ({**tensors, "rng/noise": noise_generator.get_state()},
                 {"step": step, "seconds": elapsed, **meta, "rng": rng.bit_generator.state})
        write_run_directory(out, model.write_files, config, log, None if final else state,
                            None if calibration is None else {"calibration.json": calibration})

    positives_full = np.zeros((len(train.tasks), len(bank)), bool)  # whole episodes
    positives_done = np.zeros((len(train.tasks), len(bank)), bool)  # prefixes with the task done
    for e, (caption, task, success) in enumerate(zip(train.captions, train.tasks, train.success)):
        positives_full[e, bank_index[caption]] = True
        positives_full[e, bank_index[instructions[task] if success else NOT_DONE_CAPTION]] = True
        positives_done[e, bank_index[instructions[task]]] = True
    positive_not_done = np.zeros(len(bank), bool)
    positive_not_done[bank_index[NOT_DONE_CAPTION]] = True

    bar = tqdm(total=config.steps, initial=step, desc="train-videoclip", disable=not config.show_progress)
    start_time = time.perf_counter() - elapsed
    while step < config.steps:
        episodes = rng.integers(0, len(train.tasks), config.batch_size)
        is_full = rng.uniform(size=config.batch_size) < config.full_clip_fraction
        lengths = np.where(is_full, train.lengths[episodes], rng.integers(1, train.lengths[episodes]))  # prefix: 1..T
        rows = np.stack([train.rows(e, n, config.num_frames) for e, n in zip(episodes, lengths)])  # (b, n)
        positives = np.where(is_full[:, None], positives_full[episodes],
                             np.where(train.done[train.starts[episodes] + lengths - 1][:, None],
                                      positives_done[episodes], positive_not_done[None]))  # (b, k)
        clips = _augment(model.to_input(train.frames[torch.from_numpy(rows)]), rng, noise_generator, config)  # (b, n, 3, S, S)
        logits = model.scale() * model.video(clips) @ model.encode_text(bank).T  # (b, k)
        positives = torch.from_numpy(positives).to(device)
        present = positives.any(0)
        loss = 0.5 * (multi_positive_nce(logits, positives) + multi_positive_nce(logits.T[present], positives.T[present]))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        bar.update(1)
        if step % config.log_every == 0 or step == config.steps:
            log.append({"step": step, "loss": float(loss.detach()), "temperature": float(1 / model.scale().detach()),
                        "seconds": round(time.perf_counter() - start_time, 1)})
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        if len(val.tasks) and (step % config.eval_every == 0 or step == config.steps):
            figures = videoclip_figures(model, val, prefixes=False)
            model.train()
            log.append({"step": step, **{f"val/{k}": v for k, v in figures.items()}})
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items() if isinstance(v, float)))
        elapsed = time.perf_counter() - start_time
        if step % config.checkpoint_every == 0 and step < config.steps:
            save(final=False)
    bar.close()

    calibration = {"threshold": model_config.success_threshold, "note": "no val episodes: default threshold kept"}
    if len(val.tasks):
        calibration = calibrate(model, val, config.calibration)
        model_config.success_threshold = calibration["threshold"]
        for name in ("episodes", "prefixes"):
            print(f"judge threshold {calibration['threshold']:.2f}: val {name} accuracy {calibration[name]['accuracy']:.3f}, "
                  f"precision {calibration[name]['precision']:.3f}, recall {calibration[name]['recall']:.3f}")
    save(final=True, calibration=calibration)
    return out


def multi_positive_nce(logits: "torch.Tensor", positives: "torch.Tensor") -> "torch.Tensor":
    """InfoNCE with several positives per anchor: logits and positives (a, k), rows = anchors.

    Each positive is scored against the row's negatives only; mean over a row's positives,
    then over rows that have one."""
    import torch

    negatives = logits.masked_fill(positives, float("-inf")).logsumexp(-1, keepdim=True)  # (a, 1)
    per_pair = torch.logaddexp(logits, negatives) - logits  # (a, k): -log softmax against negatives
    count = positives.sum(-1)
    per_anchor = (per_pair * positives).sum(-1) / count.clamp(min=1)
    return per_anchor[count > 0].mean()


def _augment(clips: "torch.Tensor", rng: np.random.Generator, generator: "torch.Generator",
             config: TrainVideoCLIPConfig) -> "torch.Tensor":
    """Augment clips (b, n, 3, S, S) in [-1, 1], each clip as a whole: shift (`max_shift`),
    contrast and brightness (`color_jitter`), and for a `blur_probability` share a blur
    (2x average-pool, bilinear back up) with pixel noise."""
    import torch
    import torch.nn.functional as F

    b, n, _, size, _ = clips.shape
    if config.max_shift:
        pad = config.max_shift
        padded = F.pad(clips.flatten(1, 2), (pad, pad, pad, pad), mode="replicate")  # (b, n*3, S+2p, S+2p)
        shifts = rng.integers(0, 2 * pad + 1, (b, 2))
        clips = torch.stack([padded[i, :, y: y + size, x: x + size] for i, (y, x) in enumerate(shifts)]).view(b, n, 3, size, size)
    if config.color_jitter:
        jitter = rng.uniform(-config.color_jitter, config.color_jitter, (2, b, 1, 1, 1, 1)).astype(np.float32)
        contrast, brightness = torch.from_numpy(jitter).to(clips.device)
        clips = (clips * (1 + contrast) + brightness).clamp(-1, 1)
    chosen = np.flatnonzero(rng.uniform(size=b) < config.blur_probability)
    if len(chosen) == 0:
        return clips
    index = torch.from_numpy(chosen).to(clips.device)
    picked = clips[index].flatten(0, 1)  # (c*n, 3, S, S)
    blurred = F.interpolate(F.avg_pool2d(picked, 2), size=(size, size), mode="bilinear", align_corners=False)
    noise = 0.03 * torch.randn(blurred.shape, generator=generator, device=clips.device)
    clips = clips.clone()
    clips[index] = (blurred + noise).clamp(-1, 1).view(len(chosen), n, 3, size, size)
    return clips


def _check_config(config: TrainVideoCLIPConfig) -> None:
    for name in ("steps", "batch_size", "num_frames", "warmup_steps", "eval_every", "checkpoint_every", "log_every"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.max_shift < 0 or config.color_jitter < 0:
        raise ValueError(f"max_shift and color_jitter must be >= 0, got {config.max_shift} and {config.color_jitter}")
    for name in ("full_clip_fraction", "blur_probability"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {getattr(config, name)}")
    if not config.conv_channels:
        raise ValueError("conv_channels needs at least one level")
    if config.calibration not in CALIBRATION_RULES:
        raise ValueError(f"calibration must be one of {sorted(CALIBRATION_RULES)}, got {config.calibration!r}")
