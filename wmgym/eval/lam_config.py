"""The arguments of `wmgym eval-lam` (the CLI reads them, for `--help` too, without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class EvalLAMConfig:
    """Evaluate latent action models on held-out episodes: rollouts, factorisation probes, counterfactual edits.

    For each model (`--lam`, one or several `wmgym train-lam` directories, e.g. K = 1, 2, 3, 4):
    rollouts driven by the latent actions inferred from the true video (PSNR, SSIM, LPIPS per
    step); a linear probe from each slot's latent action to each gripper's true action (R^2
    matrix, slots matched to grippers); a counterfactual edit (one slot's latent actions swapped
    with another episode's). Writes metrics.json, report.md and pictures to `--out`. The probe
    and the edit read the store's true actions and gripper poses: they measure, nothing is trained on them but the probe."""

    lam: tuple[str, ...]
    """One or more latent action model directories (`wmgym train-lam --out`)."""
    data: str
    """The episode store; its val split (split seed 0, `val_fraction`) is held out."""
    out: str
    """Directory for metrics.json, report.md and the pictures."""
    val_fraction: float = 0.1
    """The val fraction the models were trained with (their held-out episodes)."""
    horizon: int = 10
    """Rollout steps (each rollout starts at a true frame: clips of horizon + 1 frames)."""
    episodes: int | None = None
    """Held-out episodes to use (None: all of the val split)."""
    probe_episodes: int = 400
    """Train-split episodes the probes are fitted on (their latents and true actions); they
    are scored on the held-out episodes."""
    counterfactual_pairs: int = 32
    """Held-out episode pairs for the counterfactual edit (needs a simulator store: gripper poses)."""
    batch_size: int = 32
    """Clips per forward pass."""
    lpips_fallback: bool = True
    """Without LPIPS's pretrained trunk weights, use its offline fallback (flagged in metrics.json)."""
    seed: int = 0
    """Seed of the counterfactual pairs."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Torch device."""
    overwrite: bool = False
    """Replace an existing output directory."""
    show_progress: bool = True
    """Show progress bars."""
