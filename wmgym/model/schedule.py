"""Noise schedule, the per-frame DDIM step for v-prediction, and the sampling noise matrix.

Code names -> paper symbols (Song et al. 2021, DDIM; Salimans & Ho 2022, v-prediction):
    alphas_cumprod[k]  alpha-bar_k          x_k = sqrt(alpha-bar_k) x_0 + sqrt(1 - alpha-bar_k) eps
    v                  v_k = sqrt(alpha-bar_k) eps - sqrt(1 - alpha-bar_k) x_0
    timesteps          k, an integer in [0, T), one per frame

The schedule table comes from diffusers' `DDIMScheduler` (cosine betas rescaled to zero
terminal SNR, so k = T-1 is pure noise, as v-prediction needs). Its `step()` takes one
scalar timestep for the whole batch; here every frame has its own, so the deterministic DDIM
update (eta = 0) is written out per frame:
    1. x0_hat  = sqrt(a_k) x_k - sqrt(1 - a_k) v          (v-prediction inverted)
    2. eps_hat = sqrt(1 - a_k) x_k + sqrt(a_k) v
    3. x_prev  = sqrt(a_prev) x0_hat + sqrt(1 - a_prev) eps_hat   (DDIM eq. 12 with sigma = 0)
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler

NUM_TRAIN_TIMESTEPS = 1000


def make_scheduler(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> DDIMScheduler:
    return DDIMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        clip_sample=False,
    )


def _gather(table: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """table[timesteps] shaped to broadcast over like (b, t, c, H, W); timesteps -1 means clean."""
    values = torch.where(timesteps >= 0, table.to(like.device)[timesteps.clamp(min=0)], torch.ones((), device=like.device))
    return values.to(like.dtype).reshape(*timesteps.shape, *([1] * (like.dim() - timesteps.dim())))


def add_noise(x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x_k for per-frame timesteps (b, t); x0 and noise (b, t, c, H, W)."""
    a = _gather(alphas_cumprod, timesteps, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def velocity(x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The v target (b, t, c, H, W)."""
    a = _gather(alphas_cumprod, timesteps, x0)
    return a.sqrt() * noise - (1 - a).sqrt() * x0


def ddim_step(x: torch.Tensor, v: torch.Tensor, timesteps: torch.Tensor, prev_timesteps: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step per frame from `timesteps` to `prev_timesteps` (-1 = clean)."""
    a = _gather(alphas_cumprod, timesteps, x)
    a_prev = _gather(alphas_cumprod, prev_timesteps, x)
    x0_hat = a.sqrt() * x - (1 - a).sqrt() * v  # step 1
    eps_hat = (1 - a).sqrt() * x + a.sqrt() * v  # step 2
    return a_prev.sqrt() * x0_hat + (1 - a_prev).sqrt() * eps_hat  # step 3


def sampling_timesteps(num_steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """(num_steps + 1,) decreasing timesteps from T-1 to -1 (clean), diffusers' trailing spacing."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    scheduler = make_scheduler(num_train_timesteps)
    scheduler.set_timesteps(num_steps)
    return torch.cat([scheduler.timesteps.long(), torch.tensor([-1])])


def noise_level_matrix(num_frames: int, num_context: int, num_steps: int, history_timestep: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """The rollout's noise schedule as an explicit (rows, num_frames) integer matrix (Diffusion
    Forcing's convention): row r holds every frame's timestep at denoiser call r; -1 = not yet
    generated. Context frames sit at `history_timestep`; each new frame goes through the
    `num_steps` timesteps of `sampling_timesteps`, then joins the history at `history_timestep`.
    """
    steps = sampling_timesteps(num_steps, num_train_timesteps)[:-1]
    rows = []
    level = torch.full((num_frames,), -1, dtype=torch.long)
    level[:num_context] = history_timestep
    for frame in range(num_context, num_frames):
        for k in steps:
            row = level.clone()
            row[frame] = k
            rows.append(row)
        level[frame] = history_timestep
    return torch.stack(rows) if rows else level[None]
