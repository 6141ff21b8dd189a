"""`wmgym eval`: a WMFold-v0 bundle against the simulator, from the same states with the same actions.

Dimension legend: N episodes, T steps (actions), K cross-swap episodes, H x W frames.

For held-out simulator episodes (scripted, perturbed and random, planned by
`wmgym.data.generate.plan_episodes` from a master seed the training data did not use), the
world model starts from each episode's first frame and receives its actions; every generated
frame is compared with the simulator's:
    - fidelity by step (PSNR, SSIM, LPIPS) against two baselines: the first frame copied, and
      the same model with the null action of action dropout (does the model use the actions?);
      for a model conditioned on the grippers view, that baseline's grippers view is the
      hold-still action's (the grippers never move), so it gets no gripper motion either;
    - the action cross-swap test (seed 000): start i driven by the actions of episode j, for
      all K x K pairs; `swap_controllability` is the fraction of off-diagonal pairs whose two
      ground truths (actions j vs actions i from start i) differ visibly, in which the model's
      rollout is closer to the swapped ground truth than to the original one;
    - long rollouts past the training window (sliding KV window): PSNR by step up to 48;
    - speed: env steps/s of 16 vector envs, and a quality-speed curve over sampler settings.
A world model conditioned on the grippers view (`condition_views == ("grippers",)`) gets, in
every rollout, the grippers view of its start state driven by the actions it receives
(`wmgym.sim.gripper_track.gripper_views`, the simulator's own view bit for bit).
Writes `metrics.json`, `report.md` and PNG plots to `--out`.
"""

from __future__ import annotations

import json
import math
import platform
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from wmgym.eval.common import (batched_rollouts, finish_plot, hold_still_actions, lpips_by_step, lpips_head,
                               plot_metrics_by_step, write_grid, write_rollouts)
from wmgym.eval.fidelity_config import EvalConfig
from wmgym.image_metrics import psnr, psnr_from_mse, ssim
from wmgym.model.world_model_config import PRECISIONS
from wmgym.train.checkpoint import write_text_atomic

TARGETS = {  # issue 6: what a shipped bundle must reach (reported, never lowered)
    "psnr_mean": 24.0,
    "psnr_gain_over_baselines": 3.0,
    "swap_controllability": 0.9,
    "long_drop_db": 3.0,
    "env_steps_per_s": 30.0,
}


# ---------------------------------------------------------------- metrics (pure functions, tested)
def swap_controllability(model: torch.Tensor, swapped: torch.Tensor, original: torch.Tensor,
                         visible_db: float = 30.0) -> dict:
    """The action cross-swap figure.

    Args:
        model: uint8 (K, K, T, H, W, 3), model[i, j] = start i driven by the actions of episode j.
        swapped: uint8 (K, K, T, H, W, 3), the simulator's frames for the same pairs.
        original: uint8 (K, T, H, W, 3), the simulator's frames of start i with its own actions
            (= swapped[i, i]).
        visible_db: a pair counts when PSNR(swapped[i, j], original[i]) over its T frames is below this.
    Returns:
        {"swap_controllability": fraction of counted off-diagonal pairs where the model's frames
         are closer (MSE over T frames) to swapped[i, j] than to original[i] (nan if none count),
         "swap_pairs_counted", "swap_pairs_total", "closer": bool (K, K) list}.
    """
    k = model.shape[0]
    if model.shape[:2] != (k, k) or swapped.shape != model.shape or original.shape != (k, *model.shape[2:]):
        raise ValueError(f"need model, swapped (K, K, T, H, W, 3) and original (K, T, H, W, 3); got "
                         f"{tuple(model.shape)}, {tuple(swapped.shape)}, {tuple(original.shape)}")
    mse = lambda x, y: (x.float() - y.float()).pow(2).mean(dim=(-4, -3, -2, -1))
    orig = original[:, None].expand_as(swapped)
    to_swapped, to_original, truths = mse(model, swapped), mse(model, orig), mse(swapped, orig)
    truth_psnr = psnr_from_mse(truths)
    counted = (truth_psnr < visible_db) & ~torch.eye(k, dtype=torch.bool, device=model.device)
    closer = to_swapped < to_original
    n = int(counted.sum())
    fraction = float((closer & counted).sum()) / n if n else float("nan")
    return {"swap_controllability": fraction, "swap_pairs_counted": n, "swap_pairs_total": k * (k - 1),
            "closer": closer.cpu().tolist()}


# ---------------------------------------------------------------- the run
def evaluate(config: EvalConfig) -> dict:
    """Run every measurement of `config`; returns the metrics (also written to `out/metrics.json`).
    With `config.data`, the held-out real episodes of a robot store (`wmgym.eval.robot`)."""
    if config.data is not None:
        from wmgym.eval.robot import evaluate_robot

        return evaluate_robot(config)
    from wmgym.data.generate import plan_episodes
    from wmgym.envs.bundle import Bundle
    from wmgym.model.world_model import WorldModel
    from wmgym.sim.episode import replay_actions, start_gripper_state
    from wmgym.conditioning import needs_grippers
    from wmgym.sim.tasks import TASKS

    _check_config(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    bundle = Bundle.load(config.checkpoint)
    model = WorldModel.from_pretrained(bundle.world_model_dir, device=config.device).eval()
    if config.precision is not None:
        model.set_precision(config.precision)
    if config.num_steps is not None:
        model.sampler.num_steps = config.num_steps
    conditioned = needs_grippers(model)
    height, width = model.config.height, model.config.width
    began = time.perf_counter()
    metrics: dict = {"checkpoint": str(bundle.directory), "episodes": config.episodes, "seed": config.seed,
                     "horizon": config.horizon, "num_steps": model.sampler.num_steps, "precision": model.sampler.precision,
                     "guidance_scale": model.sampler.guidance_scale, "device": str(model.device),
                     "condition_views": list(model.config.condition_views),
                     "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
                     "command": "wmgym eval " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["eval"] else None}

    # ---- fidelity: held-out episodes, model vs copy-first vs null action
    specs = plan_episodes(config.episodes, config.seed, TASKS, height, width, config.horizon)
    truth, actions, sim_grippers = _simulate(specs, "simulator (fidelity)")  # (N, T+1, H, W, 3), (N, T, 20), (N, T+1, H, W, 3)
    truth_t = torch.from_numpy(truth).to(model.device)
    # The grippers' Conditions (N, T+1) for a conditioned model (None otherwise).
    states = [start_gripper_state(s) for s in specs] if conditioned else None
    views = _gripper_conditions(model, states, actions, height, width, sim_grippers) if conditioned else None
    null_views = _gripper_conditions(model, states, hold_still_actions(states, config.horizon), height, width) if conditioned else None
    predicted = batched_rollouts(model, truth[:, :1], actions, config.batch_size, config.seed, conditions=views, desc="world model")
    null = batched_rollouts(model, truth[:, :1], actions, config.batch_size, config.seed, conditions=null_views, drop_actions=True,
                     desc="null action")
    copy_first = truth_t[:, :1].expand(-1, config.horizon, -1, -1, -1)
    target = truth_t[:, 1:]
    lpips_model = lpips_head(config.lpips_fallback, config.device)
    metrics["lpips_pretrained"] = lpips_model.is_pretrained
    for name, frames in (("", predicted), ("_copy_first", copy_first), ("_null_action", null)):
        by_step = {"psnr": psnr(frames, target), "ssim": ssim(frames, target), "lpips": lpips_by_step(lpips_model, frames, target)}
        for metric, values in by_step.items():  # values (N, T)
            metrics[f"{metric}{name}_by_step"] = values.mean(0).tolist()
            metrics[f"{metric}{name}_mean"] = float(values.mean())
        if name == "":
            per_episode = by_step["psnr"].mean(1)
            for kind in sorted({s.kind for s in specs}):
                rows = [i for i, s in enumerate(specs) if s.kind == kind]
                metrics[f"psnr_mean_{kind}"] = float(per_episode[rows].mean())
    metrics["psnr_gain_over_copy_first"] = metrics["psnr_mean"] - metrics["psnr_copy_first_mean"]
    metrics["psnr_gain_over_null_action"] = metrics["psnr_mean"] - metrics["psnr_null_action_mean"]

    # ---- action cross-swap: start i, actions j
    k = min(config.swap_episodes, config.episodes)
    swapped = np.stack([np.stack([truth[i] if i == j else replay_actions(specs[i], actions[j]) for j in range(k)])
                        for i in tqdm(range(k), desc="simulator (swaps)")])  # (K, K, T+1, H, W, 3)
    starts = np.repeat(truth[:k, :1], k, axis=0)  # row i*k + j: start i
    swap_actions = np.tile(actions[:k], (k, 1, 1))  # row i*k + j: actions j
    swap_views = (_gripper_conditions(model, [states[i] for i in range(k) for _ in range(k)], swap_actions, height, width)
                  if conditioned else None)  # row i*k + j: start i's grippers driven by actions j
    model_swaps = batched_rollouts(model, starts, swap_actions, config.batch_size, config.seed, conditions=swap_views,
                            desc="world model (swaps)")
    model_swaps = model_swaps.reshape(k, k, *model_swaps.shape[1:])
    swapped_t = torch.from_numpy(swapped[:, :, 1:]).to(model.device)
    swap = swap_controllability(model_swaps, swapped_t, target[:k], config.swap_visible_db)
    metrics.update({key: value for key, value in swap.items() if key != "closer"})
    metrics["swap_closer"] = swap["closer"]

    # ---- long rollouts past the 5-frame training window
    long_specs = plan_episodes(config.long_episodes, config.seed + 1, TASKS, height, width, config.long_horizon)
    long_truth, long_actions, long_grippers = _simulate(long_specs, "simulator (long)")
    long_views = (_gripper_conditions(model, [start_gripper_state(s) for s in long_specs], long_actions, height, width,
                                      long_grippers) if conditioned else None)
    long_predicted = batched_rollouts(model, long_truth[:, :1], long_actions, config.batch_size, config.seed, conditions=long_views,
                               desc="world model (long)")
    long_target = torch.from_numpy(long_truth[:, 1:]).to(model.device)
    long_psnr = psnr(long_predicted, long_target).mean(0)
    long_first = torch.from_numpy(long_truth[:, :1]).to(model.device).expand_as(long_target)
    long_copy = psnr(long_first, long_target).mean(0)
    metrics["psnr_by_step_long"] = long_psnr.tolist()
    metrics["psnr_copy_first_by_step_long"] = long_copy.tolist()
    metrics["psnr_long_step16"], metrics["psnr_long_step32"] = float(long_psnr[15]), float(long_psnr[31])
    metrics["psnr_long_step_last"] = float(long_psnr[-1])
    metrics["psnr_drop_16_to_32"] = metrics["psnr_long_step16"] - metrics["psnr_long_step32"]

    # ---- behaviours: uniform random exploration and the trust score (wmgym.eval.trust)
    if config.behaviour_episodes:
        from wmgym.eval.trust import behaviour_figures, behaviour_rollouts
        from wmgym.trust import TrustCalibration

        calibration = TrustCalibration.of_model_dir(bundle.world_model_dir, model.sampler.num_steps)  # none for one step
        rollouts = behaviour_rollouts(model, config.behaviour_episodes, config.seed, config.horizon, calibration,
                                      batch_size=config.batch_size)
        metrics.update(behaviour_figures(rollouts))

    # ---- speed and the quality-speed curve
    if config.speed:
        from wmgym.eval.speed import env_steps_per_s

        speed = lambda **kw: env_steps_per_s(config.speed_envs, config.horizon, repeats=2, checkpoint=str(bundle.directory),
                                             device=config.device, precision=model.sampler.precision,
                                             **{"num_steps": model.sampler.num_steps, **kw})
        metrics["env_steps_per_s"] = speed()
        c = min(config.curve_episodes, config.episodes)
        curve = []
        settings = [(n, g) for g in config.curve_guidance for n in config.curve_num_steps]
        for n, g in tqdm(settings, desc="quality-speed curve"):
            frames = batched_rollouts(model, truth[:c, :1], actions[:c], config.batch_size, config.seed,
                               conditions=None if views is None else views.rows(slice(0, c)), num_steps=n, guidance_scale=g,
                               desc=None)
            curve.append({"num_steps": n, "guidance_scale": g, "psnr_mean": float(psnr(frames, target[:c]).mean()),
                          "env_steps_per_s": speed(num_steps=n, guidance_scale=g)})
        metrics["quality_speed"] = curve
    metrics["wall_time_s"] = time.perf_counter() - began
    metrics["config"] = asdict(config)
    metrics["targets"] = _targets(metrics)

    # ---- pictures and the report
    _plot_by_step(out, metrics)
    write_grid(out / "swap_grid.png", model_swaps[:, :, -1].cpu().numpy(), swapped[:, :, -1])
    write_rollouts(out / "rollouts.png", truth, predicted.cpu().numpy(), rows=min(6, config.episodes))
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    write_text_atomic(out / "report.md", _report(metrics, config))
    return metrics


def _check_config(config: EvalConfig) -> None:
    for name in ("episodes", "horizon", "swap_episodes", "long_episodes", "speed_envs", "curve_episodes", "batch_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.swap_episodes < 2:
        raise ValueError(f"swap_episodes must be >= 2 (the swap test needs off-diagonal pairs), got {config.swap_episodes}")
    if config.long_horizon < 32:
        raise ValueError(f"long_horizon must be >= 32 (step 32 is compared with step 16), got {config.long_horizon}")
    if not config.curve_num_steps or not config.curve_guidance:
        raise ValueError("need at least one curve_num_steps and curve_guidance value")
    if config.num_steps is not None and config.num_steps < 1:
        raise ValueError(f"num_steps must be >= 1 or None (the checkpoint's), got {config.num_steps}")
    if config.precision is not None and config.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} or None (the checkpoint's), got {config.precision!r}")


def _simulate(specs, desc: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run `EpisodeSpec`s (one size and horizon) in the simulator -> camera frames uint8 (N, T+1, H, W, 3),
    actions float32 (N, T, 20) and the simulator's grippers view uint8 (N, T+1, H, W, 3)."""
    from wmgym.sim.episode import run_episode

    records = [run_episode(spec) for spec in tqdm(specs, desc=desc)]
    return (np.stack([r.camera for r in records]), np.stack([r.actions for r in records]).astype(np.float32),
            np.stack([r.grippers for r in records]))


def _gripper_conditions(model, states, actions: np.ndarray, height: int, width: int, simulated: np.ndarray | None = None):
    """N start `GripperState`s driven by actions (N, T, 20), as `model.rollout`'s `Conditions` (N, T+1)
    (`wmgym.conditioning.track_conditions`: the grippers view, poses and grasp state the model takes).
    With `simulated` (N, T+1, H, W, 3), the simulator's own grippers view of the same episodes,
    RuntimeError unless they are equal."""
    from wmgym.conditioning import track_conditions
    from wmgym.sim.world import WorldConfig

    return track_conditions(model, states, actions, WorldConfig(height=height, width=width), simulated=simulated)


@torch.no_grad()


def _targets(m: dict) -> list[dict]:
    """Each target of issue 6 with the measured figure and whether it is met."""
    rows = [("psnr_mean >= 24 dB", m["psnr_mean"], m["psnr_mean"] >= TARGETS["psnr_mean"]),
            ("psnr_mean - psnr_copy_first_mean >= 3 dB", m["psnr_gain_over_copy_first"],
             m["psnr_gain_over_copy_first"] >= TARGETS["psnr_gain_over_baselines"]),
            ("psnr_mean - psnr_null_action_mean >= 3 dB", m["psnr_gain_over_null_action"],
             m["psnr_gain_over_null_action"] >= TARGETS["psnr_gain_over_baselines"]),
            ("swap_controllability >= 0.9", m["swap_controllability"],
             m["swap_controllability"] >= TARGETS["swap_controllability"]),
            ("PSNR at step 32 within 3 dB of step 16 (long rollouts)", m["psnr_drop_16_to_32"],
             m["psnr_drop_16_to_32"] <= TARGETS["long_drop_db"])]
    if "psnr_uniform_step16" in m and m["psnr_uniform_step16"] is not None:
        rows.append(("uniform random actions: PSNR at step 16 >= 24 dB", m["psnr_uniform_step16"], m["psnr_uniform_step16"] >= 24.0))
        rows.append(("uniform random actions: no step below 18 dB", m["psnr_uniform_min_step"], m["psnr_uniform_min_step"] >= 18.0))
    if "trust_auroc" in m:
        rows.append(("trust AUROC at flagging frames > 3 dB below their rollout's median >= 0.85", m["trust_auroc"],
                     m["trust_auroc"] >= 0.85))
    if "env_steps_per_s" in m:
        rows.append(("env_steps_per_s >= 30 with 16 envs", m["env_steps_per_s"], m["env_steps_per_s"] >= TARGETS["env_steps_per_s"]))
    return [{"target": name, "measured": float(value), "met": bool(met)} for name, value, met in rows]


# ---------------------------------------------------------------- pictures
def _plot_by_step(out: Path, m: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_metrics_by_step(out, m, (("_null_action", "same model, null actions"), ("_copy_first", "first frame copied")),
                         f"{m['episodes']} held-out episodes")
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    steps = np.arange(1, len(m["psnr_by_step_long"]) + 1)
    ax.plot(steps, m["psnr_by_step_long"], marker="o", markersize=2, label="world model (sliding window)")
    ax.plot(steps, m["psnr_copy_first_by_step_long"], marker="o", markersize=2, label="first frame copied")
    ax.axvline(16, color="gray", ls="--", lw=0.8)
    ax.axvline(32, color="gray", ls="--", lw=0.8)
    ax.set(xlabel="step", ylabel="PSNR (dB)", title="Long rollouts")
    finish_plot(fig, ax, out / "psnr_by_step_long.png")
    if "behaviours" in m:
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
        for name, b in m["behaviours"].items():
            ax.plot(np.arange(1, len(b["psnr_by_step"]) + 1), b["psnr_by_step"], marker="o", markersize=2, label=name)
        ax.axhline(24, color="gray", ls="--", lw=0.8)
        ax.set(xlabel="step", ylabel="PSNR (dB)", title="World model against the simulator, by behaviour")
        finish_plot(fig, ax, out / "psnr_by_behaviour.png")
    if "quality_speed" in m:
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
        for g in sorted({p["guidance_scale"] for p in m["quality_speed"]}):
            points = [p for p in m["quality_speed"] if p["guidance_scale"] == g]
            ax.plot([p["env_steps_per_s"] for p in points], [p["psnr_mean"] for p in points], marker="o", label=f"guidance {g:g}")
            for p in points:
                ax.annotate(f"{p['num_steps']}", (p["env_steps_per_s"], p["psnr_mean"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
        ax.set(xlabel="env steps/s (16 vector envs)", ylabel="PSNR mean (dB)", title="Quality vs speed (labels: sampler steps)")
        finish_plot(fig, ax, out / "quality_speed.png")


def _report(m: dict, config: EvalConfig) -> str:
    fmt = lambda x: "nan" if isinstance(x, float) and math.isnan(x) else f"{x:.3f}" if abs(x) < 10 else f"{x:.2f}"
    lines = [f"# wmgym eval: {m['checkpoint']}", "",
             f"{m['episodes']} held-out simulator episodes (master seed {m['seed']}, {m['horizon']} steps, demo / perturbed / "
             f"random), sampler {m['num_steps']} steps, guidance {m['guidance_scale']:g}, device {m['device']}, "
             f"{m['machine']}; {m['wall_time_s'] / 60:.1f} min.", ""]
    if m.get("command"):
        lines += ["Reproduce:", "", "```", m["command"], "```", ""]
    lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {fmt(t['measured'])} | {'yes' if t['met'] else '**no**'} |" for t in m["targets"]]
    lines += ["", "## Fidelity over 16 steps", "", "| predictor | PSNR (dB) | SSIM | LPIPS |", "|---|---|---|---|"]
    for key, name in (("", "world model"), ("_null_action", "same model, null actions"), ("_copy_first", "first frame copied")):
        lines.append(f"| {name} | {fmt(m[f'psnr{key}_mean'])} | {fmt(m[f'ssim{key}_mean'])} | {fmt(m[f'lpips{key}_mean'])} |")
    kinds = [k for k in m if k.startswith("psnr_mean_")]
    lines += ["", "World-model PSNR by episode kind: " + ", ".join(f"{k[len('psnr_mean_'):]} {fmt(m[k])} dB" for k in kinds) + "."]
    null_note = ("Null actions: the same model with action dropout's null action at every step"
                 + ("; it is conditioned on the grippers view, and that baseline's grippers view is the hold-still action's "
                    "(the grippers never move), so it gets no gripper motion through the conditioning either."
                    if m.get("condition_views") == ["grippers"] else "."))
    lines += ["", null_note]
    if not m["lpips_pretrained"]:
        lines += ["", "LPIPS used the offline fallback (random AlexNet trunk, LPIPS's own linear heads): put torchvision's "
                  "`alexnet-owt-7be5be79.pth` in torch's hub cache for calibrated LPIPS."]
    lines += ["", "![psnr](psnr_by_step.png) ![ssim](ssim_by_step.png) ![lpips](lpips_by_step.png)", "",
              "Simulator (upper) over world model (lower) at steps 0, 4, 8, 12, 16:", "", "![rollouts](rollouts.png)", "",
              "## Action cross-swap", "",
              f"Start i (rows) driven by the actions of episode j (columns), last frame; world model left, simulator right. "
              f"`swap_controllability` = {fmt(m['swap_controllability'])} over {m['swap_pairs_counted']} of "
              f"{m['swap_pairs_total']} off-diagonal pairs whose ground truths differ visibly (PSNR < {config.swap_visible_db:g} dB).",
              "", "![swap grid](swap_grid.png)", "",
              "## Long rollouts", "",
              f"{config.long_episodes} episodes of {config.long_horizon} steps, sliding window: PSNR at step 16 "
              f"{fmt(m['psnr_long_step16'])} dB, step 32 {fmt(m['psnr_long_step32'])} dB, step {config.long_horizon} "
              f"{fmt(m['psnr_long_step_last'])} dB.", "", "![long](psnr_by_step_long.png)", ""]
    if "behaviours" in m:
        lines += ["## Behaviours and trust", "", f"{config.behaviour_episodes} held-out episodes per behaviour; PSNR against the "
                  "simulator; trust = `info[\"trust\"]`; flagged = more than 3 dB below the rollout's median PSNR; gated = "
                  "actions outside the training support, read as the null action.", "",
                  "| behaviour | PSNR mean | PSNR step 16 | lowest step | first frame copied, step 16 | gated | mean trust | flagged |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, b in m["behaviours"].items():
            trust = "-" if b["trust_mean"] is None else fmt(b["trust_mean"])
            lines.append(f"| {name} | {fmt(b['psnr_mean'])} | {fmt(b['psnr_last_step'])} | {fmt(b['psnr_min_step'])} | "
                         f"{fmt(b['copy_first_psnr_last_step'])} | {b['gated_fraction']:.2f} | {trust} | {b['flagged_fraction']:.3f} |")
        lines += ["", "![by behaviour](psnr_by_behaviour.png)"]
        if "trust_auroc" in m:
            lines += ["", f"Trust AUROC, pooled: flagged frames {fmt(m['trust_auroc'])}, bad frames (flagged or below 24 dB) "
                      f"{fmt(m['trust_auroc_bad'])}."]
        lines.append("")
    if "quality_speed" in m:
        lines += ["## Speed", "", f"`env_steps_per_s` with {config.speed_envs} vector envs at the default settings: "
                  f"{m['env_steps_per_s']:.1f}.", "", "| sampler steps | guidance | PSNR mean (dB) | env steps/s |", "|---|---|---|---|"]
        lines += [f"| {p['num_steps']} | {p['guidance_scale']:g} | {fmt(p['psnr_mean'])} | {p['env_steps_per_s']:.1f} |"
                  for p in m["quality_speed"]]
        lines += ["", "![quality vs speed](quality_speed.png)", ""]
    return "\n".join(lines)
