"""`wmgym train-codec`: train a small `AutoencoderKLCodec` on the frames of an episode store.

Loss per batch (Stable Diffusion's KL autoencoder without its perceptual and GAN terms):
mean |x - x'| + mean (x - x')^2 over pixels, plus kl_weight * KL(q(z|x) || N(0, I)) summed
over latent elements and divided by the number of pixel values (SD's weighting, where the
reconstruction term is a sum over pixels). x' decodes a posterior *sample*; the codec itself
encodes to the posterior mean.

A checkpoint is a directory, replaced atomically (temporary directory, then rename):
    config.json                 {"codec": codec.config(), "training": step, seconds, the
                                 TrainCodecConfig, optimizer hyper-parameters, log, val}
    codec.safetensors           the codec's state dict (what `load_codec` reads)
    training_state.safetensors  AdamW moments and step counts ("optimizer/<param>/<key>") and
                                 the two random generators' states ("rng/batch", "rng/noise"),
                                 so `--resume` continues exactly as if never stopped.
At every checkpoint the latents' mean and std are measured on training frames and stored as the
codec's shift_factor and 1 / scaling_factor, so each checkpoint encodes to ~N(0, 1) latents.
Held-out frames come from the validation episodes of `split_episodes(..., split_seed=0)`, the
same episodes `WindowDataset` holds out by default.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from wmgym.data.store import EpisodeStore
from wmgym.data.store_layout import CAMERA_KEY, FRAME_ARRAYS, ROBOT_FRAME_ARRAYS
from wmgym.model.model_files import MODEL_DIRECTORY
from wmgym.outputs import check_output, recover_directory, replace_directory, temporary_directory_beside
from wmgym.train.checkpoint import check_resume_config, flatten_optimizer, read_json, run_lock, section, unflatten_optimizer

# torch, diffusers and safetensors are imported inside the functions: the CLI imports this
# module, and importing them here would add seconds to every `wmgym` command and worker.
if TYPE_CHECKING:
    import torch

    from wmgym.model.autoencoder import AutoencoderKLCodec

CONFIG_FILE, CODEC_FILE, STATE_FILE = "config.json", "codec.safetensors", "training_state.safetensors"
ARCHITECTURE = ("latent_channels", "block_out_channels", "layers_per_block", "norm_num_groups")
STATIC_VIEW = "static_scene_rgb"  # constant within an episode: one frame per episode is loaded
STATS_FRAMES = 1024  # training frames encoded at each checkpoint to measure the latents' mean and std


@dataclass
class TrainCodecConfig:
    """Train a small image autoencoder (a KL codec) whose latents a world model can denoise instead of pixels.

    Use its output directory as `wmgym train-wm --codec`. Resumable (`--resume`)."""

    data: str
    """Path of a zarr episode store written by `wmgym generate`."""
    out: str
    """Checkpoint directory to write (replaced atomically at every checkpoint)."""
    steps: int = 2000
    """Total optimizer steps (a resumed run continues up to this many)."""
    batch_size: int = 32
    """Frames per step, drawn uniformly from the pooled views."""
    learning_rate: float = 1e-3
    """AdamW learning rate after warm-up."""
    warmup_steps: int = 100
    """Steps of linear learning-rate warm-up from zero."""
    kl_weight: float = 1e-6
    """Weight of the KL term (SD's convention; see the module docstring)."""
    latent_channels: int = 4
    """Channels of the latent."""
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    """Widths of the encoder/decoder levels; the codec downsamples by 2 ** (levels - 1)."""
    layers_per_block: int = 1
    """ResNet layers per level."""
    norm_num_groups: int = 8
    """GroupNorm groups (must divide every width)."""
    views: tuple[str, ...] | None = None
    """Store image arrays to train on (None: every image array of the store: a simulator store's
    three views, which a conditioned world model all encodes, or a robot store's camera)."""
    val_fraction: float = 0.1
    """Fraction of episodes held out (split seed 0, as `WindowDataset`)."""
    val_frames: int = 256
    """Held-out frames per view for the PSNR report (evenly spaced)."""
    seed: int = 0
    """Seed of initialisation, batch sampling and posterior noise."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda'."""
    log_every: int = 50
    """Steps between entries of the training-loss log."""
    checkpoint_every: int = 500
    """Steps between checkpoints and held-out PSNR measurements."""
    resume: bool = False
    """Continue the checkpoint at `out` (optimizer and random state included); refused when a
    setting differs from the one it was trained with (see --allow-config-change)."""
    overwrite: bool = False
    """Replace an existing checkpoint (a model directory) at `out` with a fresh run; anything else at `out` is refused."""
    allow_config_change: bool = False
    """Let --resume continue with settings that differ from the checkpoint's saved configuration
    (data, seed, batch size, learning rate, ...: each change is listed in a warning; the
    architecture can never change). Without it such a resume is refused. Always free to change
    on resume: steps, device, checkpoint_every, log_every."""
    max_frames: int | None = None
    """Cap on training frames loaded (all views together; a random subset); None = all."""


def train_codec(config: TrainCodecConfig) -> Path:
    """Train (or resume) a codec, write the checkpoint directory `config.out`, return its path.
    Holds the writer lock of `config.out` throughout, so a second run on it refuses."""
    _check_config(config)
    with run_lock(config.out):
        return _train_locked(config)


def _train_locked(config: TrainCodecConfig) -> Path:
    import torch

    from wmgym.model.autoencoder import AutoencoderKLCodec
    from wmgym.model.world_model import resolve_device

    out = Path(config.out)
    device = resolve_device(config.device)
    if config.resume:
        recover_directory(out)
    exists = check_output(out, MODEL_DIRECTORY, config.resume or config.overwrite,
                          hint="pass --resume to continue it or --overwrite to replace it")
    store = EpisodeStore.open(config.data)
    if config.views is None:  # the store's image arrays
        from dataclasses import replace

        config = replace(config, views=(CAMERA_KEY,) if store.is_robot else ("camera0_rgb", STATIC_VIEW, "grippers_rgb"))
        _check_config(config)
    rng = np.random.default_rng(config.seed)
    train_frames, _ = _load_frames(store, "train", config, rng)
    val_frames, val_views = _load_frames(store, "val", config, None)
    if len(val_frames) == 0:
        raise ValueError(f"train-codec reports PSNR on held-out episodes, but {config.data} has "
                         f"{store.num_episodes} episode(s) and val_fraction={config.val_fraction} leaves none out")

    torch.manual_seed(config.seed)
    codec = AutoencoderKLCodec.small(config.latent_channels, config.block_out_channels,
                                     config.layers_per_block, config.norm_num_groups).to(device)
    optimizer = torch.optim.AdamW(codec.parameters(), lr=config.learning_rate)
    batch_rng = torch.Generator().manual_seed(config.seed)
    noise_rng = torch.Generator(device).manual_seed(config.seed + 1)
    training = {"step": 0, "seconds": 0.0, "log": [], "val": []}
    if config.resume and exists:
        training = _restore(out, config, codec, optimizer, batch_rng, noise_rng)
    else:
        training["val"].append({"step": 0, **_validate(codec, val_frames, val_views, config.views)})

    start, sums, postfix = time.perf_counter() - training["seconds"], np.zeros(3), {}
    bar = tqdm(total=config.steps, initial=training["step"], desc="train-codec", unit="step")
    while training["step"] < config.steps:
        step = training["step"] = training["step"] + 1
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * min(1.0, step / max(config.warmup_steps, 1))
        index = torch.randint(len(train_frames), (config.batch_size,), generator=batch_rng)
        x = _to_model(train_frames[index], device)  # (b, 3, H, W)
        posterior = codec.vae.encode(x).latent_dist
        recon = codec.vae.decode(posterior.sample(generator=noise_rng)).sample
        rec = (recon - x).abs().mean() + ((recon - x) ** 2).mean()
        kl = posterior.kl().mean() / x[0].numel()
        loss = rec + config.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(codec.parameters(), 1.0)
        optimizer.step()
        sums += (1, float(rec.detach()), float(kl.detach()))
        bar.update(1)
        if step % config.log_every == 0 or step == config.steps:
            training["log"].append({"step": step, "seconds": round(time.perf_counter() - start, 2),
                                    "rec_loss": sums[1] / sums[0], "kl": sums[2] / sums[0]})
            postfix["loss"] = f"{sums[1] / sums[0]:.4f}"
            bar.set_postfix(postfix)
            sums[:] = 0
        if step % config.checkpoint_every == 0 or step == config.steps:
            _set_latent_statistics(codec, train_frames, device)  # so every checkpoint is usable
            training["val"].append({"step": step, **_validate(codec, val_frames, val_views, config.views)})
            postfix["psnr"] = f"{training['val'][-1]['psnr']:.2f}"
            bar.set_postfix(postfix)
            training["seconds"] = time.perf_counter() - start
            _save_checkpoint(out, codec, optimizer, batch_rng, noise_rng, training, config)
    bar.close()
    if training["val"]:
        last = training["val"][-1]
        print(f"codec {out}: step {last['step']}, held-out PSNR {last['psnr']:.2f} dB "
              f"(plain {codec.downsample}x downsampling: {last['psnr_downsample']:.2f} dB) "
              f"({', '.join(f'{v} {p:.2f}' for v, p in last['psnr_by_view'].items())}), "
              f"{training['seconds'] / max(training['step'], 1):.3f} s/step")
    return out


def _check_config(config: TrainCodecConfig) -> None:
    images = [name for name, (_, tail) in {**FRAME_ARRAYS, **ROBOT_FRAME_ARRAYS}.items() if tail == "image"]
    if config.views is not None and (not config.views or any(view not in images for view in config.views)):
        raise ValueError(f"views must name image arrays of the store {images}, got {config.views}")
    for name in ("steps", "batch_size", "log_every", "checkpoint_every", "val_frames"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(config, name)}")


def load_codec(directory: str | os.PathLike) -> AutoencoderKLCodec:
    """The trained codec in a `train_codec` checkpoint directory (on the CPU)."""
    from wmgym.model.autoencoder import AutoencoderKLCodec
    from wmgym.model.model_files import load_state_checked

    directory = Path(directory)
    for name in (CONFIG_FILE, CODEC_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a codec checkpoint: {name} is missing")
    from wmgym.model.config_checks import read_config_json

    raw = read_config_json(directory / CONFIG_FILE)
    if "codec" not in raw:
        raise ValueError(f"{directory / CONFIG_FILE} has no 'codec' key; keys are {sorted(raw)}")
    try:
        codec = AutoencoderKLCodec.from_config(raw["codec"])
    except ValueError as error:
        raise ValueError(f"{directory / CONFIG_FILE}: codec: {error}") from None
    load_state_checked(codec, directory / CODEC_FILE)
    return codec.eval()


# ------------------------------------------------------------------ data
def _load_frames(store: EpisodeStore, split: str, config: TrainCodecConfig, rng) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 frames (n, H, W, 3) of `split` pooled over the views, and each frame's view index.

    Training (rng given) keeps a random subset when max_frames caps it; validation (rng None)
    keeps `val_frames` evenly spaced frames per view.
    """
    import torch

    from wmgym.data.dataset import split_episodes

    episodes = split_episodes(store.num_episodes, split, config.val_fraction, split_seed=0)
    rows = []
    for view in config.views:
        slices = [store.episode_slice(int(e)) for e in episodes]
        rows.append(np.array([s.start for s in slices]) if view == STATIC_VIEW
                    else np.concatenate([np.arange(s.start, s.stop) for s in slices]))
    total = sum(len(r) for r in rows)
    frames, view_ids = [], []
    for v, (view, r) in enumerate(zip(config.views, rows)):
        if rng is None:
            r = np.unique(r[np.linspace(0, len(r) - 1, min(config.val_frames, len(r))).astype(int)])
        elif config.max_frames is not None and total > config.max_frames:
            r = rng.choice(r, size=max(1, round(len(r) * config.max_frames / total)), replace=False)
        keep = np.zeros(store.num_frames, bool)
        keep[r] = True
        frames.append(store.read_rows(keep, [view])[view])
        view_ids.append(np.full(len(frames[-1]), v))
    return torch.from_numpy(np.concatenate(frames)), np.concatenate(view_ids)


def _to_model(frames: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, H, W) in [-1, 1] on `device`."""
    return frames.to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _set_latent_statistics(codec, frames, device, batch: int = 64) -> None:
    """scaling_factor = 1 / std and shift_factor = mean of the raw posterior means."""
    import torch

    index = np.linspace(0, len(frames) - 1, min(STATS_FRAMES, len(frames))).astype(int)
    with torch.no_grad():
        means = torch.cat([codec.vae.encode(_to_model(frames[index[i: i + batch]], device)).latent_dist.mode()
                           for i in range(0, len(index), batch)])
    codec.set_latent_statistics(1.0 / float(means.std()), float(means.mean()))


def _validate(codec, frames, view_ids: np.ndarray, views, batch: int = 64) -> dict:
    """Mean per-frame PSNR (dB, uint8 frames as the world model decodes them), overall and by view,
    and `psnr_downsample`: the same frames shrunk by the codec's factor (area) and scaled back
    (bilinear), the plain-downsampling baseline at the latent grid's resolution."""
    import torch
    import torch.nn.functional as F

    from wmgym.image_metrics import psnr_from_mse

    device = next(codec.parameters()).device
    psnr, plain = [], []
    for i in range(0, len(frames), batch):
        x = frames[i: i + batch].to(device)
        target = x.permute(0, 3, 1, 2).float()
        with torch.no_grad():
            y = ((codec.decode(codec.encode(_to_model(x, device))).clamp(-1, 1) + 1) * 127.5).round()
        small = F.interpolate(target, scale_factor=1 / codec.downsample, mode="area")
        back = F.interpolate(small, size=target.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 255).round()
        psnr.append(psnr_from_mse(((y - target) ** 2).mean(dim=(1, 2, 3))).cpu())
        plain.append(psnr_from_mse(((back - target) ** 2).mean(dim=(1, 2, 3))).cpu())
    psnr = torch.cat(psnr).numpy()
    by_view = {view: float(psnr[view_ids == v].mean()) for v, view in enumerate(views) if (view_ids == v).any()}
    return {"psnr": float(psnr.mean()), "psnr_by_view": by_view, "psnr_downsample": float(torch.cat(plain).mean())}


# ------------------------------------------------------------------ checkpoints
def _save_checkpoint(out: Path, codec, optimizer, batch_rng, noise_rng, training: dict, config: TrainCodecConfig) -> None:
    from safetensors.torch import save_file

    optimizer_tensors, optimizer_meta = flatten_optimizer(optimizer.state_dict())
    tensors = {f"optimizer/{k}": v for k, v in optimizer_tensors.items()}
    tensors.update({"rng/batch": batch_rng.get_state(), "rng/noise": noise_rng.get_state()})
    meta = {"codec": codec.config(), "training": {**training, "config": asdict(config), "optimizer": optimizer_meta}}
    tmp = temporary_directory_beside(out, "codec checkpoint")
    (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=1))
    save_file({k: v.detach().cpu().contiguous() for k, v in codec.state_dict().items()}, tmp / CODEC_FILE)
    save_file(tensors, tmp / STATE_FILE)
    replace_directory(tmp, out)


def _restore(out: Path, config: TrainCodecConfig, codec, optimizer, batch_rng, noise_rng) -> dict:
    """Load weights, optimizer and generator states of the checkpoint at `out`; return its training dict."""
    from safetensors.torch import load_file

    from wmgym.model.model_files import load_state_checked

    for name in (CONFIG_FILE, CODEC_FILE, STATE_FILE):
        if not (out / name).is_file():
            raise FileNotFoundError(f"cannot resume {out}: {name} is missing")
    meta = read_json(out / CONFIG_FILE)
    training, saved_codec = meta["training"], meta["codec"]
    saved = training.pop("config")
    for key in ARCHITECTURE:
        if saved[key] != json.loads(json.dumps(getattr(config, key))):
            raise ValueError(f"cannot resume {out}: it was trained with {key}={saved[key]}, this run asks for {getattr(config, key)}")
    check_resume_config(saved, out / CONFIG_FILE, config, config.allow_config_change)
    codec.set_latent_statistics(**{k: saved_codec["vae_config"][k] for k in ("scaling_factor", "shift_factor")})
    load_state_checked(codec, out / CODEC_FILE)
    try:
        tensors = load_file(out / STATE_FILE)
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise ValueError(f"cannot resume {out}: {out / STATE_FILE} is not a readable safetensors file ({error})") from None
    batch_rng.set_state(tensors["rng/batch"])
    noise_rng.set_state(tensors["rng/noise"])
    optimizer.load_state_dict(unflatten_optimizer(section(tensors, "optimizer/"), training.pop("optimizer")))
    return training
