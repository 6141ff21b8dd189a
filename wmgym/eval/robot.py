"""`wmgym eval --data STORE`: a world model of a real robot against held-out real episodes.

Dimension legend: N episodes, T steps (actions), K swap episodes, H x W frames.

There is no simulator to replay other actions, so the figures are what held-out recordings
can answer:
    - fidelity by step (PSNR, SSIM, LPIPS) of open-loop rollouts from each episode's first frame
      with its own actions, against two baselines: the last frame the model was given (the first)
      copied, and the same model with the null action of action dropout;
    - the action swap test: start i driven by the actions of episode j. Without a ground truth
      for that pair, two questions: does the rollout move away from start i's own-action rollout
      (`swap_psnr_to_own`, lower = further), and does its motion (last frame minus first)
      resemble episode j's recorded motion more than episode i's (`swap_toward_fraction`, the
      fraction of off-diagonal pairs where it does; 0.5 is chance)?
Held-out episodes are the store's validation split (`split_episodes(E, "val", val_fraction)`,
split seed 0), the episodes `wmgym train-wm` held out with the same `val_fraction`.
Writes `metrics.json`, `report.md` and PNG plots to `--out`.
"""

from __future__ import annotations

import json
import platform
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from wmgym.eval.common import batched_rollouts, lpips_by_step, lpips_head, plot_metrics_by_step, write_grid, write_rollouts
from wmgym.eval.fidelity_config import EvalConfig
from wmgym.image_metrics import psnr, ssim
from wmgym.train.checkpoint import write_text_atomic


def swap_motion(model_swaps: torch.Tensor, truth: torch.Tensor) -> dict:
    """The swap figures of real episodes.

    Args:
        model_swaps: uint8 (K, K, T, H, W, 3), start i driven by the actions of episode j.
        truth: uint8 (K, T + 1, H, W, 3), the recorded episodes (frame 0 is the start).
    Returns:
        {"swap_psnr_to_own": mean PSNR (dB) of each off-diagonal rollout to its row's own-action
         rollout (i, i) over the T frames, "swap_toward_fraction": fraction of off-diagonal pairs
         whose motion (last frame - start) is nearer episode j's recorded motion than episode i's,
         "swap_pairs": K (K - 1)}.
    """
    k = model_swaps.shape[0]
    if model_swaps.shape[:2] != (k, k) or truth.shape[0] != k or truth.shape[1] != model_swaps.shape[2] + 1:
        raise ValueError(f"need model_swaps (K, K, T, H, W, 3) and truth (K, T+1, H, W, 3); got "
                         f"{tuple(model_swaps.shape)} and {tuple(truth.shape)}")
    if k < 2:
        return {"swap_psnr_to_own": float("nan"), "swap_toward_fraction": float("nan"), "swap_pairs": 0}
    off = ~torch.eye(k, dtype=torch.bool, device=model_swaps.device)
    own = model_swaps[torch.arange(k), torch.arange(k)][:, None].expand_as(model_swaps)
    to_own = psnr(model_swaps.reshape(k, k, -1, *model_swaps.shape[-2:]), own.reshape(k, k, -1, *own.shape[-2:]))
    start = truth[:, 0].float()  # (K, H, W, 3)
    motion = model_swaps[:, :, -1].float() - start[:, None]  # (K, K, H, W, 3): rollout (i, j)'s motion from start i
    recorded = truth[:, -1].float() - start  # (K, H, W, 3): episode j's recorded motion
    distance = lambda a, b: (a - b).pow(2).mean(dim=(-3, -2, -1))
    to_j = distance(motion, recorded[None, :])  # (K, K)
    to_i = distance(motion, recorded[:, None])
    toward = (to_j < to_i) & off
    return {"swap_psnr_to_own": float(to_own[off].mean()), "swap_toward_fraction": float(toward.sum()) / int(off.sum()),
            "swap_pairs": int(off.sum())}


def load_model(checkpoint: str, device: str):
    """The world model of a bundle (its world_model/), a train-wm run (its newest checkpoint) or a saved model."""
    from wmgym.model.world_model import WorldModel
    from wmgym.train.wm_checkpoint import latest_checkpoint

    path = Path(checkpoint)
    if (path / "world_model").is_dir():
        path = path / "world_model"
    elif (path / "checkpoints").is_dir():
        path = latest_checkpoint(path) / "model"
    return WorldModel.from_pretrained(path, device=device).eval()


def held_out_episodes(store, config: EvalConfig) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(truth uint8 (N, T+1, H, W, 3), actions float32 (N, T, A), store indices) of up to
    `config.episodes` validation episodes, cut to a common T = min(config.horizon, shortest - 1)."""
    from wmgym.data.dataset import split_episodes

    indices = [int(i) for i in split_episodes(store.num_episodes, "val", config.val_fraction)][: config.episodes]
    if not indices:
        raise ValueError(f"{store.path} has no held-out episodes (val_fraction={config.val_fraction}, "
                         f"{store.num_episodes} episodes)")
    episodes = [store.read_episode(i) for i in indices]
    horizon = min(config.horizon, min(len(e["actions"]) for e in episodes))
    truth = np.stack([e["camera"][: horizon + 1] for e in episodes])
    actions = np.stack([e["actions"][:horizon] for e in episodes]).astype(np.float32)
    return truth, actions, indices


def evaluate_robot(config: EvalConfig) -> dict:
    """Every figure of the module docstring for `config.checkpoint` on `config.data`; returns the
    metrics (also written to `out/metrics.json`)."""
    from wmgym.data.store import EpisodeStore

    store = EpisodeStore.open(config.data)
    model = load_model(config.checkpoint, config.device)
    if (model.config.height, model.config.width) != (store.height, store.width):
        raise ValueError(f"the world model draws {model.config.height}x{model.config.width} frames; {config.data} holds "
                         f"{store.height}x{store.width}")
    truth, actions, indices = held_out_episodes(store, config)
    if actions.shape[-1] != model.action_dim:
        raise ValueError(f"{config.data} has {actions.shape[-1]}-D actions; the world model takes {model.action_dim}")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    n, horizon = len(indices), actions.shape[1]
    metrics: dict = {"checkpoint": config.checkpoint, "data": config.data, "episodes": n, "store_episodes": indices,
                     "horizon": horizon, "num_steps": model.sampler.num_steps, "device": str(model.device),
                     "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
                     "command": "wmgym eval " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["eval"] else None}
    truth_t = torch.from_numpy(truth).to(model.device)
    target = truth_t[:, 1:]
    predicted = batched_rollouts(model, truth[:, :1], actions, config.batch_size, config.seed, desc="world model")
    null = batched_rollouts(model, truth[:, :1], actions, config.batch_size, config.seed, drop_actions=True, desc="null action")
    copy_last = truth_t[:, :1].expand(-1, horizon, -1, -1, -1)
    lpips_model = lpips_head(config.lpips_fallback, config.device)
    metrics["lpips_pretrained"] = lpips_model.is_pretrained
    for name, frames in (("", predicted), ("_copy_last", copy_last), ("_null_action", null)):
        for metric, values in (("psnr", psnr(frames, target)), ("ssim", ssim(frames, target)),
                               ("lpips", lpips_by_step(lpips_model, frames, target))):
            metrics[f"{metric}{name}_by_step"] = values.mean(0).tolist()
            metrics[f"{metric}{name}_mean"] = float(values.mean())
    metrics["psnr_gain_over_copy_last"] = metrics["psnr_mean"] - metrics["psnr_copy_last_mean"]
    metrics["psnr_gain_over_null_action"] = metrics["psnr_mean"] - metrics["psnr_null_action_mean"]

    k = min(config.swap_episodes, n)
    starts = np.repeat(truth[:k, :1], k, axis=0)  # row i*k + j: start i
    swap_actions = np.tile(actions[:k], (k, 1, 1))  # row i*k + j: actions j
    swaps = batched_rollouts(model, starts, swap_actions, config.batch_size, config.seed, desc="world model (swaps)")
    swaps = swaps.reshape(k, k, *swaps.shape[1:])
    metrics.update(swap_motion(swaps, truth_t[:k]))
    metrics["wall_time_s"] = time.perf_counter() - began
    metrics["config"] = asdict(config)

    plot_metrics_by_step(out, metrics, (("_null_action", "same model, null actions"), ("_copy_last", "last given frame copied")),
                         f"{n} held-out real episodes")
    write_grid(out / "swap_grid.png", swaps[:, :, -1].cpu().numpy(), np.broadcast_to(truth[None, :k, -1], (k, k, *truth.shape[2:])))
    write_rollouts(out / "rollouts.png", truth, predicted.cpu().numpy(), rows=min(6, n))
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    write_text_atomic(out / "report.md", _report(metrics))
    return metrics


def _report(m: dict) -> str:
    f = lambda x: f"{x:.3f}"
    return "\n".join([
        f"# wmgym eval: {m['checkpoint']} on {m['data']}", "",
        f"{m['episodes']} held-out episodes (store indices {m['store_episodes']}), {m['horizon']} steps, "
        f"{m['num_steps']} sampler steps, {m['device']}; command: `{m['command']}`", "",
        "| figure | world model | last given frame copied | null actions |", "|---|---|---|---|",
        *(f"| {metric} mean | {f(m[f'{metric}_mean'])} | {f(m[f'{metric}_copy_last_mean'])} | {f(m[f'{metric}_null_action_mean'])} |"
          for metric in ("psnr", "ssim", "lpips")), "",
        f"Swap test over {m['swap_pairs']} pairs: rollouts with another episode's actions are "
        f"{f(m['swap_psnr_to_own'])} dB from the own-action rollout (lower: the actions move it further); "
        f"their motion is nearer the other episode's recorded motion in {f(m['swap_toward_fraction'])} of pairs "
        "(0.5 is chance).", "",
        "![PSNR by step](psnr_by_step.png) ![rollouts: recorded over generated](rollouts.png)", ""])
