"""The arguments of `wmgym calibrate-trust` (`wmgym.eval.trust`); torch-free, for `--help`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrustConfig:
    """Fit a world model's per-step trust score (`info["trust"]`) on simulator rollouts of six behaviours.

    Rolls out held-out simulator episodes of expert, noisy, perturbed, random, uniform-random
    (`action_space.sample()`) and hold-still behaviour in the world model from the same starts,
    labels each frame bad when its PSNR against the simulator is more than 3 dB below its
    rollout's median or below 24 dB, and fits a logistic model of that label on features the
    model computes while sampling (`wmgym.trust`). Writes trust.json beside the model's config.json."""

    checkpoint: str = "default"
    """Bundle directory ("default": the shipped one), a saved world model or a `wmgym train-wm` run."""
    out: str | None = None
    """Where to write the calibration (default: trust.json in the world model's directory)."""
    episodes: int = 48
    """Held-out episodes per behaviour."""
    seed: int = 101
    """Master seed of the episodes (`wmgym eval` measures on its own seed, 7 by default)."""
    horizon: int = 16
    """Steps per episode."""
    device: str = "auto"
    """"auto" (CUDA when available, else CPU), "cpu" or "cuda"."""

    def __post_init__(self):
        for name in ("episodes", "horizon"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
