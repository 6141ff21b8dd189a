"""The world model under six behaviours against the simulator: fidelity by step (uniform random
exploration included), and how well the trust score flags its bad frames.

`behaviour_rollouts` simulates held-out episodes of each behaviour in `BEHAVIOURS`, imagines
them with the world model from the same starts with the same actions (grasps drawn as
`WMFold-v0` draws them), and keeps per step the PSNR against the simulator and the trust
features (`wmgym.trust`). `wmgym calibrate-trust` fits a `TrustCalibration` on them;
`wmgym eval` reports `behaviour_figures` on other seeds (`wmgym.eval.fidelity`).

Dimension legend: n episodes per behaviour, T steps, F trust features.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

BEHAVIOURS = {  # name -> (episode kind, noise); "hold-still" replays the action that keeps both grippers still
    "expert": ("demo", 0.0),
    "noisy": ("demo", 0.03),
    "perturbed": ("perturbed", 0.02),
    "random": ("random", 0.0),
    "uniform": ("uniform", 0.0),
    "hold-still": ("demo", 0.0),
}
"""The behaviours trust is fitted and measured on: the scripted demonstrator clean and with 3 cm
key-pose noise, perturbed demonstrations, the data's smooth random behaviour, uniform draws over
the action box (`action_space.sample()`) and holding still."""
RELATIVE_DROP_DB = 3.0
"""The issue's flag: a frame more than this below its rollout's median PSNR."""
ABSOLUTE_FLOOR_DB = 24.0
"""Below this PSNR a frame is bad whatever its rollout (the project's fidelity bar)."""


def flagged_frames(psnr: np.ndarray) -> np.ndarray:
    """bool (n, T): frames more than `RELATIVE_DROP_DB` below their rollout's median PSNR (n, T)."""
    return psnr < np.median(psnr, axis=1, keepdims=True) - RELATIVE_DROP_DB


def bad_frames(psnr: np.ndarray) -> np.ndarray:
    """bool (n, T): flagged, or below `ABSOLUTE_FLOOR_DB` (what `TrustCalibration` is fitted to)."""
    return flagged_frames(psnr) | (psnr < ABSOLUTE_FLOOR_DB)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` (higher = more likely positive) for bool `labels`
    (Mann-Whitney U with mid-ranks for ties); NaN without both classes."""
    from scipy.stats import rankdata

    scores, labels = np.asarray(scores, np.float64).ravel(), np.asarray(labels, bool).ravel()
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def behaviour_specs(name: str, episodes: int, seed: int, size: int, horizon: int):
    """`EpisodeSpec`s of one behaviour: tasks cycle, seeds hashed from (seed, behaviour, i)."""
    from wmgym.data.generate import episode_seed
    from wmgym.sim.episode import EpisodeSpec
    from wmgym.sim.tasks import TASKS

    kind, noise = BEHAVIOURS[name]
    offset = list(BEHAVIOURS).index(name) * 100_003
    return [EpisodeSpec(TASKS[i % len(TASKS)], episode_seed(seed, offset + i), kind, noise, size, size, horizon)
            for i in range(episodes)]


def _simulate(name: str, specs) -> tuple[np.ndarray, np.ndarray, list]:
    """Frames uint8 (n, T+1, H, W, 3), actions float32 (n, T, 20) and start `GripperState`s."""
    from wmgym.eval.common import hold_still_actions
    from wmgym.sim.episode import replay_actions, simulate_episodes, start_gripper_state

    states = [start_gripper_state(s) for s in specs]
    if name == "hold-still":
        actions = hold_still_actions(states, specs[0].horizon)
        return np.stack([replay_actions(s, a) for s, a in zip(specs, actions)]), actions, states
    return (*simulate_episodes(specs), states)


@torch.no_grad()
def imagine_with_trust(model, starts: np.ndarray, actions: np.ndarray, states: list, seed: int, calibration=None):
    """Imagine n episodes as `WMFold-v0` does (grasps sampled by the model's grasp prior) and
    track trust: starts uint8 (n, 1, H, W, 3), actions (n, T, 20), start `GripperState`s ->
    frames uint8 (n, T, H, W, 3), features float32 (n, T, F), trust (n, T) (NaN without a
    calibration), gated bool (n, T)."""
    from wmgym.conditioning import model_conditions, needs_grippers
    from wmgym.model.imagination import Imagination
    from wmgym.sim.gripper_track import gripper_views
    from wmgym.sim.world import WorldConfig
    from wmgym.trust import TrustTracker

    generator = torch.Generator(device=model.device).manual_seed(seed)
    n, horizon = actions.shape[:2]
    conditions = None
    if needs_grippers(model):
        views, poses = gripper_views(states, actions, WorldConfig(height=model.config.height, width=model.config.width),
                                     with_poses=True)
        conditions = model_conditions(model, views, poses, grasp_mode="sample", generator=generator).to(model.device)
    frame = lambda i: None if conditions is None else conditions.frames(i)
    imagination = Imagination(model, n)
    imagination.start(starts, generator=generator, conditions=frame(slice(0, 1)))
    tracker = TrustTracker(n, model.device, calibration)
    tracker.reset()
    latents, features, trust, gated = [], [], [], []
    for t in range(horizon):
        latents.append(imagination.step(torch.from_numpy(actions[:, t]), generator, frame(t + 1)))
        features.append(tracker.update(imagination))
        trust.append(tracker.trust.clone())
        gated.append(imagination.gated)
    frames = model.decode_latents(torch.cat(latents, dim=1))
    stack = lambda xs: torch.stack(xs, dim=1).cpu().numpy()
    return frames, stack(features).astype(np.float32), stack(trust), stack(gated)


def behaviour_rollouts(model, episodes: int, seed: int, horizon: int = 16, calibration=None,
                       behaviours=tuple(BEHAVIOURS), batch_size: int = 64) -> dict:
    """For each behaviour: {"psnr" (n, T), "features" (n, T, F), "trust" (n, T), "gated" (n, T),
    "copy_first_psnr" (n, T)} of n held-out episodes (master seed `seed`)."""
    from wmgym.image_metrics import psnr

    size = model.config.height
    out = {}
    for index, name in enumerate(tqdm(behaviours, desc="behaviours")):
        specs = behaviour_specs(name, episodes, seed, size, horizon)
        truth, actions, states = _simulate(name, specs)
        parts = []
        for first in range(0, episodes, batch_size):
            rows = slice(first, first + batch_size)
            parts.append(imagine_with_trust(model, truth[rows, :1], actions[rows], states[rows],
                                            seed * 1_000_003 + index * 1009 + first, calibration))
        frames, features, trust, gated = (torch.cat([p[0] for p in parts]), *(np.concatenate([p[i] for p in parts]) for i in (1, 2, 3)))
        target = torch.from_numpy(truth[:, 1:]).to(frames.device)
        first = torch.from_numpy(truth[:, :1]).to(frames.device).expand_as(target)
        out[name] = {"psnr": psnr(frames, target).cpu().numpy(), "features": features, "trust": trust, "gated": gated,
                     "copy_first_psnr": psnr(first, target).cpu().numpy()}
    return out


def behaviour_figures(rollouts: dict) -> dict:
    """Fidelity by behaviour (uniform random exploration's step-16 PSNR and lowest step among
    them) and the trust score's AUROC at flagging bad frames, pooled over behaviours."""
    m: dict = {"behaviours": {}}
    for name, r in rollouts.items():
        p = r["psnr"]
        m["behaviours"][name] = {"episodes": len(p), "psnr_mean": float(p.mean()), "psnr_last_step": float(p[:, -1].mean()),
                                 "psnr_min_step": float(p.min()), "psnr_by_step": p.mean(0).tolist(),
                                 "copy_first_psnr_last_step": float(r["copy_first_psnr"][:, -1].mean()),
                                 "gated_fraction": float(r["gated"].mean()),
                                 "trust_mean": float(np.nanmean(r["trust"])) if np.isfinite(r["trust"]).any() else None,
                                 "flagged_fraction": float(flagged_frames(p).mean())}
    if "uniform" in rollouts:
        u = rollouts["uniform"]["psnr"]
        m["psnr_uniform_step16"] = float(u[:, 15].mean()) if u.shape[1] >= 16 else None
        m["psnr_uniform_min_step"] = float(u.min())
        m["psnr_uniform_episodes"] = len(u)
    psnr_all = np.concatenate([r["psnr"] for r in rollouts.values()])
    trust_all = np.concatenate([r["trust"] for r in rollouts.values()])
    if np.isfinite(trust_all).all():
        m["trust_auroc"] = auroc(-trust_all, flagged_frames(psnr_all))
        m["trust_auroc_bad"] = auroc(-trust_all, bad_frames(psnr_all))
        m["trust_flagged_fraction"] = float(flagged_frames(psnr_all).mean())
        m["trust_bad_fraction"] = float(bad_frames(psnr_all).mean())
    return m


def calibrate_trust(config) -> dict:
    """`wmgym calibrate-trust`: fit the trust calibration of a bundle's world model on simulator
    rollouts of every behaviour and write it (see `wmgym.eval.trust_config.TrustConfig`)."""
    from wmgym.envs.bundle import BUNDLE_FILE, Bundle, resolve_world_model
    from wmgym.model.world_model import WorldModel
    from wmgym.trust import TRUST_FILE, fit_trust

    began = time.perf_counter()
    is_bundle = config.checkpoint == "default" or (Path(config.checkpoint) / BUNDLE_FILE).is_file()
    model_dir = Bundle.load(config.checkpoint).world_model_dir if is_bundle else resolve_world_model(config.checkpoint)
    model = WorldModel.from_pretrained(model_dir, device=config.device).eval()
    rollouts = behaviour_rollouts(model, config.episodes, config.seed, config.horizon)
    features = np.concatenate([r["features"].reshape(-1, r["features"].shape[-1]) for r in rollouts.values()])
    bad = np.concatenate([bad_frames(r["psnr"]) for r in rollouts.values()]).ravel()
    calibration = fit_trust(features, bad, fitted_on={
        "command": "wmgym calibrate-trust " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in asdict(config).items() if v is not None),
        "behaviours": list(BEHAVIOURS), "episodes_per_behaviour": config.episodes, "seed": config.seed,
        "horizon": config.horizon, "frames": int(len(bad)), "bad_frames": int(bad.sum())})
    out = Path(config.out) if config.out else Path(model_dir) / TRUST_FILE
    calibration.save(out)
    for r in rollouts.values():  # in-sample figures, for the log
        r["trust"] = calibration.trust(torch.from_numpy(r["features"])).numpy()
    figures = behaviour_figures(rollouts)
    summary = {"out": str(out), "wall_time_s": time.perf_counter() - began,
               "in_sample_auroc": figures["trust_auroc"], "in_sample_auroc_bad": figures["trust_auroc_bad"]}
    print(json.dumps(summary, indent=2))
    return summary
