"""Execute plans in `SimFold-v0` with model-predictive control, and the `wmgym plan` command.

Dimension legend: T planned steps, t frames seen so far, H x W pixels.

An episode: reset the simulator; every `replan_every` steps (and whenever the plan runs
out) plan `plan_horizon` steps from the newest simulator frames in the world model, then
execute the plan's actions in the simulator until the next replanning. `replan_every=None`
plans once and executes open loop (replanning only when the plan runs out). Every plan gets
the simulator's grippers (`GripperState`) at each context frame, which a world model
conditioned on the grippers view renders its candidates' grippers views from.

`plan(PlanConfig)` runs E episodes per task from seeds `seed .. seed+E-1` with three arms on
the same start states: the planner, the scripted demonstrator (closed loop, privileged) and
one random proposal (one candidate of the planner's proposal distribution, unselected), drawn
`random_proposals` times per start state. `selection_test` then asks whether selecting in the
world model beats executing one random proposal: under the null, the planner's executed
proposal is one more draw from the proposal distribution, so at each start state its outcome
is exchangeable with the random draws' (an exact permutation test, per task and pooled).

How often the planner, the random proposal and the demonstrator succeed, and what selecting
adds: docs/results.md, "Best-of-64 in imagination".
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from wmgym.conditioning import takes_grippers_view
from wmgym.policies.plan_config import PlanConfig
from wmgym.policies.planning import HELD_MODES, METHODS, Planner, ProposalConfig, RandomProposal
from wmgym.rewards.base import RewardHead, as_goal_texts
from wmgym.sim.gripper_track import GripperState

REWARDS = ("lpips", "lpips-offline", "lpips-calibrated", "videoclip", "judge")
NOMINALS = ("scripted", "none")
ARMS = ("planner", "scripted", "random-proposal")


class JudgeScorer(RewardHead):
    """The success judge as a reward head: score = p(done | clip, task) in [0, 1].

    `score(frames uint8 (b, t, H, W, 3), goal)`: goal is a task name or its caption (one or b).
    """

    name = "judge"
    goal_kind = "text"

    def __init__(self, judge):
        self.judge, self.device = judge, judge.device

    def score(self, frames, goal) -> torch.Tensor:
        return self.judge.probability(frames, as_goal_texts(goal, len(frames)))


def make_reward_head(name: str, bundle_dir: str | os.PathLike | None = None, device: str | torch.device = "auto") -> RewardHead:
    """"lpips" (needs torchvision's ImageNet trunk on disk), "lpips-offline" (LPIPS with the
    seeded random trunk when that file is missing: uncalibrated), "lpips-calibrated" (the
    bundle's LPIPS trained on the simulator's fold score, `wmgym train-lpips`), "videoclip" or
    "judge" (the bundle's VideoCLIP model)."""
    if name not in REWARDS:
        raise ValueError(f"unknown scorer {name!r}; expected one of {REWARDS}")
    if name == "lpips-calibrated":
        from wmgym.envs.bundle import Bundle
        from wmgym.rewards.lpips_head import bundle_head

        return bundle_head(Bundle.load(bundle_dir), device)
    if name.startswith("lpips"):
        from wmgym.rewards.lpips_head import LPIPSHead

        try:
            return LPIPSHead(allow_offline_fallback=name == "lpips-offline", device=device)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{error} With `wmgym plan`, --reward lpips-offline selects that stand-in, and "
                                    "--reward lpips-calibrated the bundle's LPIPS trained on the simulator.") from None
    from wmgym.envs.bundle import Bundle
    from wmgym.rewards.judge import SuccessJudge
    from wmgym.rewards.videoclip import VideoCLIPHead

    clip_dir = Bundle.load(bundle_dir).videoclip_dir
    if clip_dir is None:
        raise FileNotFoundError(f"scorer {name!r} needs a VideoCLIP model and the bundle {bundle_dir or 'default'} has none")
    head = VideoCLIPHead.from_pretrained(clip_dir, device=device)
    return head if name == "videoclip" else JudgeScorer(SuccessJudge(head))


def scripted_nominal(env: gym.Env, frames: np.ndarray, horizon: int) -> np.ndarray:
    """float32 (T, 20): the scripted demonstrator's next T actions from the simulator's current
    state, found by running it in a deep copy of the environment (privileged, as the
    demonstrator is; `env` itself is not touched)."""
    twin = copy.deepcopy(env.unwrapped)
    actions = []
    for _ in range(horizon):
        actions.append(twin.expert_action())
        twin.step(actions[-1])
    return np.stack(actions).astype(np.float32)


@dataclass
class EpisodeResult:
    """One executed episode: `success` and final ground-truth `score` of the simulator,
    `steps` taken, `num_plans` planner calls, `actions` float32 (steps, 20)."""

    success: bool
    score: float
    steps: int
    num_plans: int
    actions: np.ndarray


def run_plan_episode(env: gym.Env, planner, *, seed: int, goal=None, replan_every: int | None = None,
                     plan_horizon: int = 16, context_frames: int = 1,
                     nominal_fn: Callable[[gym.Env, np.ndarray, int], np.ndarray] | None = scripted_nominal,
                     rng: np.random.Generator | int | None = None) -> EpisodeResult:
    """Run one MPC episode of `planner` (a `Planner` or `RandomProposal`) in a SimFold-v0 env.

    Args:
        env: a `gym.make("SimFold-v0", ...)` environment.
        planner: has `plan(context, goal, nominal, horizon=, history=, seed=, grippers=) -> PlanResult`;
            `grippers` is the list of the simulator's `GripperState`s at the context frames,
            oldest first (`GripperState.of_world(env.unwrapped.world)` after each step).
        seed: passed to `env.reset`.
        goal: the reward head's goal; None: the simulator's goal image
            (`world.render_goal()`) for image heads, the task's caption for text heads.
        replan_every: k, replan after every k executed steps; None: only when the plan runs out.
        plan_horizon: T, steps per plan (fewer near the episode's end).
        context_frames: c, newest simulator frames the world model starts from.
        nominal_fn: `(env, frames (t, H, W, 3), T) -> (T, 20)` nominal sequence (scripted,
            IDM- or policy-made); None: no nominal (identity rotations, hold still).
        rng: draws every plan's proposals and sampling noise.
    """
    if replan_every is not None and replan_every < 1:
        raise ValueError(f"replan_every must be >= 1 or None, got {replan_every}")
    if plan_horizon < 1 or context_frames < 1:
        raise ValueError(f"plan_horizon and context_frames must be >= 1, got {plan_horizon}, {context_frames}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    obs, info = env.reset(seed=seed)
    sim = env.unwrapped
    if sim.world.config.is_camera_moving and takes_grippers_view(getattr(planner, "world_model", None)):
        raise ValueError("a world model conditioned on the grippers view plans with a static camera; "
                         "make SimFold-v0 with is_camera_moving=False")
    if goal is None:
        head = getattr(planner, "reward_head", None)
        goal = sim.world.task.caption if getattr(head, "goal_kind", "image") == "text" else sim.world.render_goal()
    frames, actions, plan, used, num_plans = [obs], [], None, 0, 0
    grippers = [GripperState.of_world(sim.world)]  # the grippers at every frame seen, as the frames
    done = False
    while not done:
        if plan is None or used >= len(plan) or (replan_every is not None and used >= replan_every):
            horizon = min(plan_horizon, sim.horizon - len(actions))
            seen = np.stack(frames)  # (t, H, W, 3)
            nominal = None if nominal_fn is None else nominal_fn(env, seen, horizon)
            plan = planner.plan(seen[-context_frames:], goal, nominal, horizon=horizon, history=seen, seed=rng,
                                grippers=grippers[-context_frames:]).actions
            used, num_plans = 0, num_plans + 1
        actions.append(plan[used])
        obs, _, terminated, truncated, info = env.step(plan[used])
        used += 1
        frames.append(obs)
        grippers.append(GripperState.of_world(sim.world))
        done = terminated or truncated
    return EpisodeResult(bool(info["success"]), float(info["score"]), len(actions), num_plans, np.stack(actions))


def run_scripted_episode(env: gym.Env, *, seed: int) -> EpisodeResult:
    """The scripted demonstrator, closed loop (`env.expert_action()` at every step)."""
    env.reset(seed=seed)
    actions, done = [], False
    while not done:
        actions.append(env.unwrapped.expert_action())
        _, _, terminated, truncated, info = env.step(actions[-1])
        done = terminated or truncated
    return EpisodeResult(bool(info["success"]), float(info["score"]), len(actions), 0, np.stack(actions))


def plan(config: PlanConfig) -> dict:
    """Run `config.episodes` episodes per task for the three ARMS; return (and write) the summary."""
    from wmgym.envs.bundle import Bundle
    from wmgym.model.world_model import WorldModel
    from wmgym.sim.tasks import TASKS

    tasks = list(TASKS) if config.task == "all" else [config.task]
    if config.task != "all" and config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r}; expected one of {', '.join(TASKS)} or 'all'")
    if config.episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {config.episodes}")
    if config.random_proposals < 1:
        raise ValueError(f"random_proposals must be >= 1, got {config.random_proposals}")
    if config.nominal not in NOMINALS:
        raise ValueError(f"nominal must be one of {NOMINALS}, got {config.nominal!r}")
    if config.method not in METHODS:
        raise ValueError(f"unknown planning method {config.method!r}; expected one of {METHODS}")
    if config.held_mode not in HELD_MODES:
        raise ValueError(f"unknown held_mode {config.held_mode!r}; expected one of {HELD_MODES}")
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    bundle = Bundle.load(config.checkpoint)
    proposal = ProposalConfig(config.proposal, config.position_std, config.width_std)
    head = make_reward_head(config.reward, config.checkpoint, config.device)
    world_model = WorldModel.from_pretrained(bundle.world_model_dir, device=config.device)
    planner = Planner(world_model, head, method=config.method, num_candidates=config.n, num_iterations=config.iterations,
                      num_elites=config.elites, proposal=proposal, num_steps=config.num_steps, include_mean=config.include_mean,
                      held_mode=config.held_mode)
    arms = {"planner": planner, "random-proposal": RandomProposal(proposal)}
    nominal_fn = scripted_nominal if config.nominal == "scripted" else None
    resolution = config.resolution or bundle.height

    out = Path(config.out) if config.out else None
    records = _resume(out, config)
    done = {(r["task"], r["seed"], r["arm"], r.get("draw", 0)) for r in records}
    draws = {"planner": 1, "scripted": 1, "random-proposal": config.random_proposals}
    # episode-major order, so that a run stopped early holds about as many episodes of every task
    todo = [(t, config.seed + i, arm, j) for i in range(config.episodes) for t in tasks for arm in ARMS
            for j in range(draws[arm]) if (t, config.seed + i, arm, j) not in done]
    envs = {t: gym.make("SimFold-v0", task=t, resolution=resolution, horizon=config.horizon) for t in tasks}
    for task, seed, arm, draw in tqdm(todo, desc="plan episodes", disable=not todo):
        start = time.perf_counter()
        if arm == "scripted":
            result = run_scripted_episode(envs[task], seed=seed)
        else:
            # draw 0 shares the planner's generator (its first proposal draw is a planner candidate's)
            key = [config.seed, seed, TASKS.index(task)] + ([draw] if draw else [])
            result = run_plan_episode(envs[task], arms[arm], seed=seed, replan_every=config.replan_every,
                                      plan_horizon=config.plan_horizon, context_frames=config.context_frames,
                                      nominal_fn=nominal_fn, rng=np.random.default_rng(key))
        records.append({"task": task, "seed": seed, "arm": arm, **({"draw": draw} if arm == "random-proposal" else {}),
                        "success": result.success, "score": result.score,
                        "steps": result.steps, "num_plans": result.num_plans, "seconds": time.perf_counter() - start})
        if out is not None:
            # the permutation tests wait for the end: per episode they would cost a random draw's time
            _write_json(out, {"config": asdict(config), "episodes": records, "summary": summarize(records, selection=False)})
    summary = summarize([r for r in records if r["task"] in tasks])
    if out is not None:
        _write_json(out, {"config": asdict(config), "episodes": records, "summary": summary})
    scorer = config.reward + (" (seeded random trunk: NOT calibrated LPIPS)" if getattr(head, "calibration", None) == "none" else "")
    print(f"{config.method} n={config.n} scorer={scorer} replan_every={config.replan_every}")
    for task, row in summary.items():
        test = row["selection"]["success"]
        print(f"{task:>18}: planner {row['planner']:.2f}  scripted {row['scripted']:.2f}  random proposal "
              f"{row['random-proposal']:.2f}  (planner/scripted {row['planner_vs_scripted']:.2f}, {row['episodes']} episodes; "
              f"planner - random {test['difference']:+.3f}, 95% CI [{test['ci95'][0]:+.3f}, {test['ci95'][1]:+.3f}], "
              f"p = {test['p_value']:.3g})")
    return summary


def summarize(records: list[dict], selection: bool = True) -> dict:
    """Per task, and pooled over tasks as "all" when there are several: success rate per arm
    (the random proposal's averaged over its draws at each start state, then over start
    states), planner/scripted ratio, episode count, mean planner seconds, random draws per
    start state, and (with `selection`) `selection`: `selection_test` on success and on the
    fold score."""
    tasks = list(dict.fromkeys(r["task"] for r in records))
    summary = {}
    for name, group in [(t, [t]) for t in tasks] + ([("all", tasks)] if len(tasks) > 1 else []):
        rows = {arm: [r for r in records if r["task"] in group and r["arm"] == arm] for arm in ARMS}
        rate = {arm: float(np.mean([r["success"] for r in rs])) if rs else float("nan") for arm, rs in rows.items()}
        starts = _paired_starts(rows["planner"], rows["random-proposal"])
        if starts:
            rate["random-proposal"] = float(np.mean([np.mean(draws["success"]) for _, draws in starts]))
        summary[name] = {**rate, "planner_vs_scripted": rate["planner"] / rate["scripted"] if rate["scripted"] else float("nan"),
                         "episodes": min(len(rs) for rs in rows.values()),
                         "random_draws": min((len(draws["success"]) for _, draws in starts), default=0),
                         "planner_seconds": float(np.mean([r["seconds"] for r in rows["planner"]])) if rows["planner"] else float("nan")}
        if selection:
            summary[name]["selection"] = {key: selection_test([p[key] for p, _ in starts], [d[key] for _, d in starts])
                                          for key in ("success", "score")}
    return summary


RESUME_KEYS = ("episodes", "task", "num_threads", "out", "random_proposals")
"""PlanConfig fields in which a resumed run may differ from the one it resumes."""
POOL_KEYS = RESUME_KEYS + ("seed",)
"""PlanConfig fields in which runs pooled by `pool_plan_runs` may differ."""


def pool_plan_runs(runs: list[dict]) -> dict:
    """Pool `wmgym plan` JSON payloads ({"config", "episodes"}) of the same settings over disjoint
    start states (e.g. `--seed 0`, `--seed 20`, ...) into one {"config", "episodes", "summary"}.

    Raises ValueError when the runs differ in a setting other than `POOL_KEYS` or share a
    (task, seed, arm, draw) record.
    """
    if not runs:
        raise ValueError("no runs to pool")
    settings = [{k: v for k, v in run["config"].items() if k not in POOL_KEYS} for run in runs]
    for i, other in enumerate(settings[1:], 1):
        if other != settings[0]:
            changed = sorted(k for k in set(other) | set(settings[0]) if other.get(k) != settings[0].get(k))
            raise ValueError(f"run {i} has other settings than run 0: {', '.join(changed)}")
    episodes, seen = [], set()
    for run in runs:
        for record in run["episodes"]:
            key = (record["task"], record["seed"], record["arm"], record.get("draw", 0))
            if key in seen:
                raise ValueError(f"two runs hold episode {key}: pool runs over disjoint start states")
            seen.add(key)
            episodes.append(record)
    return {"config": settings[0], "episodes": episodes, "summary": summarize(episodes)}


def _paired_starts(planner: list[dict], random: list[dict]) -> list[tuple[dict, dict]]:
    """[(planner {"success", "score"}, random draws {"success": [...], "score": [...]})] for every
    (task, seed) that has both arms."""
    draws: dict = {}
    for r in random:
        entry = draws.setdefault((r["task"], r["seed"]), {"success": [], "score": []})
        entry["success"].append(float(r["success"]))
        entry["score"].append(float(r["score"]))
    return [({"success": float(p["success"]), "score": float(p["score"])}, draws[(p["task"], p["seed"])])
            for p in planner if (p["task"], p["seed"]) in draws]


def selection_test(planner, random, *, permutations: int = 20000, seed: int = 0) -> dict:
    """Does the planner's executed proposal do better than a random one from the same start state?

    planner: (S,) the planner's outcome (success 0/1 or fold score) at S start states;
    random: S sequences, each the outcomes of K_s >= 1 random proposals executed from that start.
    Statistic: the mean over start states of planner - mean(random draws). Null: selection adds
    nothing, so at each start the planner's outcome is one more draw, exchangeable with the
    random draws; the two-sided p-value permutes which of the K_s + 1 outcomes is the planner's
    (Monte Carlo, `permutations` draws, counting the observed one). `ci95`: percentile bootstrap
    over start states. Returns {"difference", "ci95", "p_value", "starts"}; NaNs when S = 0.
    """
    if len(planner) != len(random):
        raise ValueError(f"planner and random must have one entry per start state, got {len(planner)} and {len(random)}")
    if not len(planner):
        return {"difference": float("nan"), "ci95": [float("nan"), float("nan")], "p_value": float("nan"), "starts": 0}
    if any(len(r) < 1 for r in random):
        raise ValueError("every start state needs at least one random draw")
    rng = np.random.default_rng(seed)
    pools = [np.concatenate([[p], np.asarray(r, float)]) for p, r in zip(planner, random)]  # planner first
    observed = np.array([pool[0] - pool[1:].mean() for pool in pools])  # (S,)
    # the statistic if the planner's outcome were pool[i]: pool[i] - (sum - pool[i]) / K
    null = np.zeros(permutations)
    for pool in pools:
        k = len(pool) - 1
        values = pool - (pool.sum() - pool) / k  # (K + 1,)
        null += values[rng.integers(0, k + 1, permutations)]
    null /= len(pools)
    difference = float(observed.mean())
    p_value = float((1 + np.sum(np.abs(null) >= abs(difference) - 1e-12)) / (permutations + 1))
    boot = observed[rng.integers(0, len(observed), (2000, len(observed)))].mean(axis=1)
    return {"difference": difference, "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
            "p_value": p_value, "starts": len(pools)}


def _resume(out: Path | None, config: PlanConfig) -> list[dict]:
    """Finished episodes of an earlier run with the same settings (episodes and task may differ)."""
    if out is None or not out.is_file():
        return []
    saved = json.loads(out.read_text())
    mine, theirs = asdict(config), dict(saved.get("config", {}))
    for key in RESUME_KEYS:
        mine.pop(key), theirs.pop(key, None)
    if mine != theirs:
        raise ValueError(f"{out} holds a run with other settings ({theirs}); pick another --out or delete it")
    return list(saved.get("episodes", []))


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)
