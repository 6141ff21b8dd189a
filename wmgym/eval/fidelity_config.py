"""The arguments of `wmgym eval`, apart from the measurements (`wmgym.eval.fidelity`): the CLI
reads them, for `--help` too, without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvalConfig:
    """Measure how faithfully a world model follows the simulator (a WMFold-v0 bundle) or held-out real episodes (--data).

    From held-out simulator episodes: frame fidelity by step against two baselines, whether the
    model obeys the actions (the action cross-swap), long rollouts past the training window, and
    env steps per second. Writes metrics.json, report.md and plots to `--out`."""

    checkpoint: str = "default"
    """Bundle directory, or "default" for the one shipped in wmgym/assets/wmfold (with --data: a
    robot bundle, a train-wm run or a saved world model)."""
    data: str | None = None
    """A robot store (`wmgym import`): measure on its held-out real episodes instead of the simulator
    (PSNR/SSIM/LPIPS by step against copying and null actions, and the swap test; `wmgym.eval.robot`)."""
    val_fraction: float = 0.1
    """With --data: the fraction of the store's episodes held out (split seed 0), as `wmgym train-wm --val-fraction` held them out."""
    out: str = "eval"
    """Output directory (metrics.json, report.md, *.png)."""
    episodes: int = 48
    """Held-out simulator episodes for fidelity (kinds cycle demo / perturbed / random, tasks cycle)."""
    seed: int = 7
    """Master seed of the held-out episodes (the shipped data used 1; episode seeds are 32-bit hashes of (seed, i))."""
    horizon: int = 16
    """Steps per fidelity episode."""
    swap_episodes: int = 8
    """K for the K x K action cross-swap (the first K fidelity episodes)."""
    swap_visible_db: float = 30.0
    """A swap pair counts when its two ground truths differ visibly: PSNR between them below this (dB)."""
    long_episodes: int = 8
    """Episodes of the long-rollout test."""
    long_horizon: int = 48
    """Steps of the long-rollout test (>= 32; step 32 is compared with step 16)."""
    behaviour_episodes: int = 32
    """Held-out episodes per behaviour (expert, noisy, perturbed, random, uniform random =
    `action_space.sample()`, hold-still; `wmgym.eval.trust`) for fidelity by behaviour and the
    trust score's AUROC; 0 skips them."""
    speed_envs: int = 16
    """Vector envs for `env_steps_per_s` and the quality-speed curve."""
    curve_num_steps: tuple[int, ...] = (1, 2, 4, 8)
    """Sampler steps of the quality-speed curve."""
    curve_guidance: tuple[float, ...] = (1.0, 2.0)
    """Action guidance scales of the quality-speed curve."""
    curve_episodes: int = 16
    """Fidelity episodes whose PSNR is measured for each curve point."""
    speed: bool = True
    """Measure speed and the quality-speed curve (False: fidelity and swaps only)."""
    batch_size: int = 64
    """Rollouts per batched world-model call."""
    lpips_fallback: bool = True
    """Without LPIPS's pretrained trunk weights, use its offline fallback (flagged in metrics.json) instead of failing."""
    num_steps: int | None = None
    """Sampler steps per frame for everything but the quality-speed curve (1: a distilled one-step
    denoiser if the world model has one, `wmgym distill`); None: the checkpoint's."""
    precision: str | None = None
    """What the denoiser computes in, "auto", "fp32" or "bf16" (`SamplerDefaults.precision`); None: the checkpoint's."""
    device: str = "auto"
    """"auto" (CUDA when available, else CPU), "cpu" or "cuda"."""
