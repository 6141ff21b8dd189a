"""Pieces both `wmgym eval` measurements use (`wmgym.eval.fidelity` against the simulator,
`wmgym.eval.robot` against held-out real episodes): batched rollouts, LPIPS by step, pictures.

Dimension legend: N episodes, T steps (actions), K swap episodes, H x W frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm


def batched_rollouts(model, starts: np.ndarray, actions: np.ndarray, batch_size: int, seed: int, desc: str | None = None,
                     conditions=None, **kwargs) -> torch.Tensor:
    """`model.rollout` in batches: starts uint8 (N, 1, H, W, 3), actions (N, T, A) and, for a conditioned
    model, its `Conditions` (N, T+1) -> uint8 (N, T, H, W, 3) on the model's device.
    Batch i draws its noise from a generator seeded (seed, i)."""
    parts = []
    for i, first in enumerate(tqdm(range(0, len(starts), batch_size), desc=desc, disable=desc is None)):
        generator = torch.Generator(device=model.device).manual_seed(seed * 1_000_003 + i)
        rows = slice(first, first + batch_size)
        parts.append(model.rollout(starts[rows], actions[rows], generator=generator,
                                   conditions=None if conditions is None else conditions.rows(rows), **kwargs))
    return torch.cat(parts)


def hold_still_actions(states, horizon: int) -> np.ndarray:
    """float32 (N, T, 20): for each start `GripperState`, the action that holds both grippers still
    at their start widths, T times (the grippers view of the null-action baseline never moves)."""
    from wmgym.actions import identity_action

    hold = np.stack([identity_action(*state.widths) for state in states]) if states else np.zeros((0, 20), np.float32)
    return np.repeat(hold[:, None], horizon, axis=1)


def lpips_head(allow_offline_fallback: bool = True, device: str = "auto"):
    """LPIPS (AlexNet trunk) for fidelity figures; without its pretrained trunk weights, the offline fallback (flagged as `is_pretrained`)."""
    from wmgym.rewards.lpips_head import LPIPSHead

    return LPIPSHead(net="alex", allow_offline_fallback=allow_offline_fallback, device=device)


def lpips_by_step(head, frames: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LPIPS distance of each frame (N, T, H, W, 3) to its target -> (N, T), in chunks of 256 frames."""
    n, t = frames.shape[:2]
    flat = lambda x: x.reshape(n * t, *x.shape[2:]).contiguous()
    distances = [head.distance(a, b) for a, b in zip(flat(frames).split(256), flat(target).split(256))]
    return torch.cat(distances).reshape(n, t).to(frames.device)


def finish_plot(fig, ax, path: Path) -> None:
    """Grid, legend, layout; save the figure to `path` and free it."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_grid(path: Path, model_last: np.ndarray, sim_last: np.ndarray, gap: int = 2) -> None:
    """Two K x K grids of frames side by side (uint8 (K, K, H, W, 3) each): the world model's last frames
    | the reference's (the simulator's, or the recorded episode j's); row i = start i, column j = actions of j."""
    import imageio.v3 as iio

    def grid(frames):  # (K, K, H, W, 3)
        k, _, h, w, _ = frames.shape
        canvas = np.full((k * (h + gap) - gap, k * (w + gap) - gap, 3), 255, np.uint8)
        for i in range(k):
            for j in range(k):
                canvas[i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = frames[i, j]
        return canvas

    left, right = grid(model_last), grid(sim_last)
    spacer = np.full((left.shape[0], 4 * gap, 3), 255, np.uint8)
    iio.imwrite(path, np.concatenate([left, spacer, right], axis=1))


def write_rollouts(path: Path, truth: np.ndarray, predicted: np.ndarray, rows: int, gap: int = 2) -> None:
    """For `rows` episodes, the true frames (truth uint8 (N, T+1, H, W, 3)) over the world model's
    (predicted (N, T, H, W, 3)) at steps 0, T/4, T/2, 3T/4, T."""
    import imageio.v3 as iio

    t = predicted.shape[1]
    steps = sorted({0, t // 4, t // 2, 3 * t // 4, t})
    h, w = truth.shape[2:4]
    lines = []
    for i in range(rows):
        sim = [truth[i, s] for s in steps]
        gen = [truth[i, 0] if s == 0 else predicted[i, s - 1] for s in steps]
        for frames in (sim, gen):
            line = np.full((h, len(steps) * (w + gap) - gap, 3), 255, np.uint8)
            for c, frame in enumerate(frames):
                line[:, c * (w + gap) : c * (w + gap) + w] = frame
            lines.append(line)
        lines.append(np.full((3 * gap, lines[-1].shape[1], 3), 255, np.uint8))
    iio.imwrite(path, np.concatenate(lines[:-1], axis=0))


def plot_metrics_by_step(out: Path, m: dict, baselines: tuple, what: str) -> None:
    """psnr_by_step.png, ssim_by_step.png and lpips_by_step.png in `out`: the world model's
    `m["<metric>_by_step"]` beside each baseline's `m["<metric><key>_by_step"]`, for `baselines`
    ((key, label), ...); `what` names the episodes in the titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for metric, label in (("psnr", "PSNR (dB), higher is better"), ("ssim", "SSIM, higher is better"),
                          ("lpips", "LPIPS, lower is better" + ("" if m["lpips_pretrained"] else " (offline fallback trunk)"))):
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
        steps = np.arange(1, len(m[f"{metric}_by_step"]) + 1)
        for key, name in (("", "world model"), *baselines):
            ax.plot(steps, m[f"{metric}{key}_by_step"], marker="o", markersize=3, label=name)
        ax.set(xlabel="step", ylabel=label, title=f"{metric.upper()} by step ({what})")
        finish_plot(fig, ax, out / f"{metric}_by_step.png")
