"""`wmgym eval-policies`: does WMFold-v0 rank policies the way the simulator does?

Dimension legend: E episodes per policy, H x W frames.

Every policy runs E episodes in `SimFold-v0`'s world and E in `WMFold-v0`, from the same
start states (`Start(task, seed)`: the world model starts from the simulator's first frame,
with the simulator's goal image), for `horizon` steps. Success in the simulator: the task's
ground truth (`FoldWorld.is_success`) at any step; in the world model: the success judge
fires at any step (the env's `terminated`). The agreement across policies of the two success
rates (`pearson`, `spearman`) says whether the world model is a trustworthy evaluation layer;
`episode_agreement` is the fraction of single episodes whose two verdicts match.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from wmgym.policies.base import Policy, SequencePolicy, SimulatorBehaviourPolicy, Start
from wmgym.train.checkpoint import write_text_atomic

DEFAULT_POLICIES = ("scripted-0", "scripted-0.01", "scripted-0.02", "scripted-0.03", "scripted-0.04", "perturbed", "random")


@dataclass
class EvalPoliciesConfig:
    """Run a set of policies in WMFold-v0 and in SimFold-v0 and check that both rank them alike.

    Each policy runs from the same start states in both worlds; writes each world's success
    rates, their agreement (agreement.json), a scatter plot and a report to `--out`."""

    out: str = "eval_policies"
    """Output directory."""
    checkpoint: str = "default"
    """WMFold-v0 bundle directory, or "default"."""
    policies: tuple[str, ...] = DEFAULT_POLICIES
    """Policy names: scripted-<noise> (the demonstrator with key-pose noise, metres), perturbed,
    random (the data's behaviours, open loop), replay (the demonstrator's actions for another
    start state of the task, open loop: the oracle of idm:<dir>), plan-<n> (best-of-n in the world model around the
    demonstrator, `wmgym plan`'s 1 cm proposals, LPIPS to the goal image with the offline trunk), idm:<dir> (an inverse dynamics
    model replaying a demonstration video from another start), sb3:<path.zip> (a stable-baselines3
    model trained on WMFoldVecEnv's normalised actions)."""
    episodes: int = 51
    """Episodes per policy and world (tasks cycle)."""
    seed: int = 11
    """Master seed of the start states (episode seeds as `wmgym generate`'s, from another master seed)."""
    horizon: int = 16
    """Steps per episode."""
    num_steps: int | None = None
    """Sampler steps (None: the bundle's default)."""
    device: str = "auto"
    """"auto", "cpu" or "cuda"."""
    paired: int = 0
    """K > 0: also report each policy's bias-corrected success rate and its interval from the world
    model's verdicts on episodes K..E-1 and K paired ground-truth episodes (the first K starts,
    both worlds), by two estimators (`wmgym.eval.ppi`): the judge's error rates pooled across the
    policies (`pooled`, the headline) and prediction-powered inference per policy (`paired`); the
    simulator's rate over all E episodes is the truth they are checked against (`covered`)."""
    confidence: float = 0.9
    """Coverage of the --paired intervals."""


def make_starts(episodes: int, seed: int) -> list[Start]:
    """E start states: tasks cycle, seeds are `episode_seed(seed, i)` (held out from seed-1 training data)."""
    from wmgym.data.generate import episode_seed
    from wmgym.sim.tasks import TASKS

    return [Start(TASKS[i % len(TASKS)], episode_seed(seed, i)) for i in range(episodes)]


def start_worlds(starts: list[Start], height: int = 64, width: int = 64):
    """One simulator world per start, reset to it -> (worlds, first frames uint8 (E, H, W, 3), goals uint8 (E, H, W, 3))."""
    from wmgym.sim.world import FoldWorld, WorldConfig

    worlds = []
    for start in starts:
        world = FoldWorld(WorldConfig(height=height, width=width))
        world.reset(np.random.default_rng(start.seed), start.task)  # the state EpisodeSpec(task, seed) draws
        worlds.append(world)
    frames = np.stack([w.views()[0] for w in worlds])
    goals = np.stack([w.render_goal() for w in worlds])
    return worlds, frames, goals


def run_in_simulator(policy: Policy, starts: list[Start], horizon: int = 16, height: int = 64, width: int = 64) -> dict:
    """E episodes of `policy` in the simulator, in lockstep -> {"success": bool (E,), "score": final score (E,)}."""
    worlds, frames, _ = start_worlds(starts, height, width)
    policy.reset(starts, frames)
    success = np.zeros(len(starts), dtype=bool)
    for t in range(horizon):
        actions = _checked(policy.act(frames, t), len(starts))
        for world, action in zip(worlds, actions):
            world.step(action)
        frames = np.stack([w.views()[0] for w in worlds])
        success |= np.array([w.is_success() for w in worlds])
    return {"success": success, "score": np.array([w.score() for w in worlds], dtype=np.float32)}


def run_in_world_model(policy: Policy, starts: list[Start], horizon: int = 16, checkpoint=None, device: str = "auto",
                       num_steps: int | None = None, seed: int = 0, core=None) -> dict:
    """E episodes of `policy` in WMFold-v0 (one batched generator) from the simulator's start
    frames and goal images -> {"success": bool (E,), the judge fired at some step}.

    `core`: an `ImaginedEpisodes` with E rows to reuse (else one is made from the arguments).
    """
    from wmgym.envs.imagined import ImaginedEpisodes

    from wmgym.sim.gripper_track import GripperState

    worlds, frames, goals = start_worlds(starts)
    if core is None:
        core = ImaginedEpisodes(len(starts), checkpoint=checkpoint, task=None, reward="none", num_steps=num_steps,
                                max_episode_steps=horizon, device=device)
    core.generator.manual_seed(seed)
    options = {"frame": frames, "goal_image": goals, "task": [s.task for s in starts]}
    if core.uses_grippers:  # the simulator's grippers at each start, not the nearest bank frame's
        options["grippers"] = [GripperState.of_world(world) for world in worlds]
    observations = core.reset_rows(range(len(starts)), np.random.default_rng(seed), options).cpu().numpy()
    policy.reset(starts, observations)
    success = np.zeros(len(starts), dtype=bool)
    for t in range(horizon):
        actions = _checked(policy.act(observations, t), len(starts))
        observations, _, fired, _ = core.step(actions, active=~success)
        observations = observations.cpu().numpy()
        success |= fired
    return {"success": success}


class PlannerPolicy(SimulatorBehaviourPolicy):
    """Best-of-N in the world model around the scripted demonstrator (noise 0; privileged, as
    the demonstrator is), scored by LPIPS to the simulator's goal image; open loop, 16 steps.
    Proposals perturb positions and widths by `position_std` metres (default: `ProposalConfig`'s,
    the one `wmgym plan` uses)."""

    def __init__(self, n: int = 16, position_std: float | None = None, checkpoint=None, device: str = "auto",
                 num_steps: int | None = None, horizon: int = 16, seed: int = 0):
        super().__init__("demo", 0.0, horizon, name=f"best-of-{n} lpips")
        from wmgym.policies.planning import ProposalConfig

        self.proposal = ProposalConfig() if position_std is None else ProposalConfig(position_std=position_std, width_std=position_std)
        self.n, self.checkpoint, self.device = n, checkpoint, device
        self.num_steps, self.seed, self.planner = num_steps, seed, None

    def plan(self, starts: list[Start], frames: np.ndarray) -> np.ndarray:
        from wmgym.envs.bundle import Bundle
        from wmgym.model.world_model import WorldModel
        from wmgym.policies.mpc import make_reward_head
        from wmgym.policies.planning import Planner
        from wmgym.sim.gripper_track import GripperState

        if self.planner is None:
            model = WorldModel.from_pretrained(Bundle.load(self.checkpoint).world_model_dir, device=self.device).eval()
            self.planner = Planner(model, make_reward_head("lpips-offline", self.checkpoint, self.device), num_candidates=self.n,
                                   proposal=self.proposal,
                                   num_steps=self.num_steps)
        nominal = super().plan(starts, frames)  # (b, T, 20): the demonstrator's sequences
        worlds, _, goals = start_worlds(starts, *frames.shape[1:3])
        grippers = [GripperState.of_world(world) for world in worlds]  # for a model conditioned on the grippers view
        return np.stack([self.planner.plan(frames[i][None], goals[i], nominal[i], seed=self.seed + i, grippers=grippers[i]).actions
                         for i in tqdm(range(len(starts)), desc=self.name, leave=False)])


class IDMReplayPolicy(SequencePolicy):
    """Imitation from video by inverse dynamics: the IDM reads the actions off a demonstration
    video of the same task recorded from another start state (the scripted demonstrator,
    noise 0, seed `seed + reference_offset`), and the policy replays them open loop (clipped
    to the action bounds). It never sees its own start state's privileged information."""

    def __init__(self, idm_dir: str, horizon: int = 16, reference_offset: int = 1_000_003, device: str = "auto"):
        from wmgym.policies.idm import InverseDynamicsModel

        super().__init__(horizon)
        if not (Path(idm_dir) / "config.json").is_file():
            raise FileNotFoundError(f"no inverse dynamics model at {idm_dir} (train one with `wmgym train-idm`)")
        self.idm = InverseDynamicsModel.from_pretrained(idm_dir, device=device)
        self.reference_offset, self.name = reference_offset, f"idm replay ({Path(idm_dir).name})"

    def plan(self, starts: list[Start], frames: np.ndarray) -> np.ndarray:
        from wmgym.actions import ACTION_HIGH, ACTION_LOW
        from wmgym.sim.episode import EpisodeSpec, run_episode

        h, w = frames.shape[1:3]
        videos = [run_episode(EpisodeSpec(s.task, s.seed + self.reference_offset, "demo", 0.0, h, w, self.horizon)).camera
                  for s in starts]  # (T+1, H, W, 3) each
        return np.stack([np.clip(self.idm.predict_episode(v), ACTION_LOW, ACTION_HIGH) for v in videos])


def make_policy(name: str, horizon: int = 16, checkpoint=None, device: str = "auto", num_steps: int | None = None) -> Policy:
    """A policy from its name (see `EvalPoliciesConfig.policies`)."""
    if name.startswith("scripted-"):
        try:
            noise = float(name[len("scripted-"):])
        except ValueError:
            raise ValueError(f"bad policy name {name!r}: expected scripted-<noise>, e.g. scripted-0.02") from None
        return SimulatorBehaviourPolicy("demo", noise, horizon)
    if name == "perturbed":
        return SimulatorBehaviourPolicy("perturbed", 0.02, horizon)
    if name == "random":
        return SimulatorBehaviourPolicy("random", 0.0, horizon)
    if name == "replay":  # another start state's clean demonstration, open loop (the oracle of idm:<dir>)
        return SimulatorBehaviourPolicy("replay", 0.0, horizon)
    if name.startswith("sb3:"):
        return _load_sb3_policy(name[len("sb3:"):])
    if name.startswith("plan-"):
        try:
            n = int(name[len("plan-"):])
        except ValueError:
            raise ValueError(f"bad policy name {name!r}: expected plan-<n>, e.g. plan-16") from None
        return PlannerPolicy(n, checkpoint=checkpoint, device=device, num_steps=num_steps, horizon=horizon)
    if name.startswith("idm:"):
        return IDMReplayPolicy(name[len("idm:"):], horizon, device=device)
    raise ValueError(f"unknown policy {name!r}; expected scripted-<noise>, perturbed, random, replay, plan-<n>, "
                     "idm:<dir> or sb3:<path.zip>")


def rank_agreement(sim_rates, model_rates) -> dict:
    """Pearson and Spearman correlation of two lists of success rates (nan when either is constant)."""
    from scipy.stats import pearsonr, spearmanr

    sim_rates, model_rates = np.asarray(sim_rates, float), np.asarray(model_rates, float)
    if len(sim_rates) != len(model_rates) or len(sim_rates) < 2:
        raise ValueError(f"need two equally long lists of >= 2 rates, got {len(sim_rates)} and {len(model_rates)}")
    if np.ptp(sim_rates) == 0 or np.ptp(model_rates) == 0:
        return {"pearson": float("nan"), "spearman": float("nan")}
    return {"pearson": float(pearsonr(sim_rates, model_rates)[0]), "spearman": float(spearmanr(sim_rates, model_rates)[0])}


def pool_agreements(results: list[dict]) -> dict:
    """Pool `evaluate_policies` results (agreement.json dicts) of the same policies, bundle,
    horizon and judge threshold over disjoint start states into one agreement on all of them.

    Each policy's pooled rate is its episode-weighted mean rate, so two runs of 51 and 102 start
    states give the figure one run of 153 would (up to the world model's sampling noise).
    Returns {"pearson", "spearman", "episodes", "policies": [{"policy", "sim_success_rate",
    "model_success_rate"}], "seeds"}. ValueError when the runs differ in anything but their
    start states, or when two share a start state.
    """
    if len(results) < 2:
        raise ValueError(f"pooling needs at least 2 results, got {len(results)}")
    first = results[0]
    key = lambda r: ([p["policy"] for p in r["policies"]], r["horizon"], r["config"]["checkpoint"], r["judge_threshold"])
    for r in results[1:]:
        if key(r) != key(first):
            raise ValueError("pooled runs must share policies (in order), horizon, checkpoint and judge threshold; got "
                             f"{key(first)} and {key(r)}")
    seen: set[Start] = set()
    for r in results:
        starts = set(make_starts(r["episodes"], r["config"]["seed"]))
        if seen & starts:
            raise ValueError(f"runs share {len(seen & starts)} start states (seed {r['config']['seed']}): pool disjoint ones")
        seen |= starts
    total = sum(r["episodes"] for r in results)
    rate = lambda i, name: sum(r["policies"][i][name] * r["episodes"] for r in results) / total
    rows = [{"policy": p["policy"], "sim_success_rate": rate(i, "sim_success_rate"),
             "model_success_rate": rate(i, "model_success_rate")} for i, p in enumerate(first["policies"])]
    agreement = rank_agreement([r["sim_success_rate"] for r in rows], [r["model_success_rate"] for r in rows])
    return {**agreement, "episodes": total, "policies": rows, "seeds": [r["config"]["seed"] for r in results]}


def evaluate_policies(config: EvalPoliciesConfig, policies: dict[str, Policy] | None = None) -> dict:
    """Run every policy in both worlds; write agreement.json, agreement.png and report.md to `out`.

    `policies`: name -> Policy objects to use instead of `config.policies` (e.g. from Python).
    """
    from wmgym.envs.imagined import ImaginedEpisodes

    if config.episodes < 1 or config.horizon < 1:
        raise ValueError(f"need episodes >= 1 and horizon >= 1, got {config.episodes} and {config.horizon}")
    policies = policies or {name: make_policy(name, config.horizon, config.checkpoint, config.device, config.num_steps)
                            for name in config.policies}
    if len(policies) < 2:
        raise ValueError(f"agreement needs at least 2 policies, got {list(policies)}")
    if config.paired and not 2 <= config.paired < config.episodes:
        raise ValueError(f"--paired K needs 2 <= K < episodes ({config.episodes}), got {config.paired}")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    starts = make_starts(config.episodes, config.seed)
    core = ImaginedEpisodes(len(starts), checkpoint=config.checkpoint, task=None, reward="none", num_steps=config.num_steps,
                            max_episode_steps=config.horizon, device=config.device)
    began, rows = time.perf_counter(), []
    for name, policy in tqdm(policies.items(), desc="policies"):
        sim = run_in_simulator(policy, starts, config.horizon, core.height, core.width)
        imagined = run_in_world_model(policy, starts, config.horizon, seed=config.seed, core=core)
        rows.append({"policy": name, "sim_success_rate": float(sim["success"].mean()),
                     "model_success_rate": float(imagined["success"].mean()), "sim_mean_score": float(sim["score"].mean()),
                     "episode_agreement": float((sim["success"] == imagined["success"]).mean()),
                     "sim_success": sim["success"].astype(bool).tolist(), "model_success": imagined["success"].astype(bool).tolist()})
        if config.paired:
            from wmgym.eval.ppi import ppi_success_rate

            k = config.paired
            ppi = ppi_success_rate(imagined["success"][k:], sim["success"][:k], imagined["success"][:k], config.confidence)
            rows[-1]["paired"] = {**ppi, "covered": bool(ppi["low"] <= rows[-1]["sim_success_rate"] <= ppi["high"]),
                                  "paired_covered": bool(ppi["paired_low"] <= rows[-1]["sim_success_rate"] <= ppi["paired_high"])}
    agreement = rank_agreement([r["sim_success_rate"] for r in rows], [r["model_success_rate"] for r in rows])
    result = {**agreement, "episode_agreement": float(np.mean([r["episode_agreement"] for r in rows])),
              "policies": rows, "episodes": config.episodes, "horizon": config.horizon, "checkpoint": str(core.bundle.directory),
              "judge_threshold": float(core.judge.threshold), "wall_time_s": time.perf_counter() - began, "config": asdict(config)}
    if config.paired:
        from wmgym.eval.ppi import pooled_success_rates

        k = config.paired
        pooled = pooled_success_rates([(np.array(r["model_success"][k:]), np.array(r["sim_success"][:k]),
                                        np.array(r["model_success"][:k])) for r in rows], config.confidence)
        for row, estimate in zip(rows, pooled):
            row["pooled"] = {**estimate, "covered": bool(estimate["low"] <= row["sim_success_rate"] <= estimate["high"])}
        paired = [r["paired"] for r in rows]
        width = lambda key: float(np.mean([r[key]["high"] - r[key]["low"] for r in rows]))
        result["paired_summary"] = {"k": k, "confidence": config.confidence, "policies": len(rows),
                                    "pooled_covered": sum(r["pooled"]["covered"] for r in rows), "pooled_mean_width": width("pooled"),
                                    "covered": sum(p["covered"] for p in paired), "paired_covered": sum(p["paired_covered"] for p in paired),
                                    "mean_width": width("paired"),
                                    "mean_paired_width": float(np.mean([p["paired_high"] - p["paired_low"] for p in paired]))}
        _intervals(out / "intervals.png", result)
    write_text_atomic(out / "agreement.json", json.dumps(result, indent=2))
    _scatter(out / "agreement.png", result)
    write_text_atomic(out / "report.md", _report(result))
    return result


def _checked(actions, n: int) -> np.ndarray:
    from wmgym.actions import ACTION_LAYOUT, validate_action

    actions = validate_action(actions)
    if actions.shape != (n, 20):
        raise ValueError(f"a policy must return ({n}, 20) actions, got {actions.shape}\n{ACTION_LAYOUT}")
    return actions


def _load_sb3_policy(path: str) -> Policy:
    """A `wmgym train-policy` model (.zip): frame stacking from its observation space, the binary
    gripper from the `metrics.json` that train-policy wrote beside it (off when there is none)."""
    from stable_baselines3 import PPO

    from wmgym.policies.base import SB3Policy

    if not Path(path).is_file():
        raise FileNotFoundError(f"no stable-baselines3 model at {path}")
    metrics = Path(path).with_name("metrics.json")
    binary_gripper = bool(json.loads(metrics.read_text()).get("config", {}).get("binary_gripper", False)) if metrics.is_file() else False
    return SB3Policy.for_adapter(PPO.load(path, device="cpu"), binary_gripper, name=f"ppo {Path(path).stem}")


def _scatter(path: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # points are numbered and named in a legend beside the axes: weak policies cluster near the
    # origin, where names written at the points overlap
    fig, ax = plt.subplots(figsize=(7.4, 4.2), dpi=120)
    colors = plt.get_cmap("tab20").colors
    numbers: dict[tuple, list[str]] = {}  # policies with equal rates share a point and a label "6,9"
    for i, row in enumerate(result["policies"]):
        xy = (row["sim_success_rate"], row["model_success_rate"])
        ax.scatter(*xy, color=colors[i % len(colors)], label=f"{i + 1}  {row['policy']}")
        numbers.setdefault(xy, []).append(str(i + 1))
    for xy, names in numbers.items():
        ax.annotate(",".join(names), xy, fontsize=7, textcoords="offset points", xytext=(4, 3))
    ax.plot([0, 1], [0, 1], color="gray", lw=0.8, ls="--")
    fmt = lambda x: "nan" if math.isnan(x) else f"{x:.2f}"
    ax.set(xlim=(-0.05, 1.05), ylim=(-0.05, 1.05), xlabel="success rate in SimFold-v0", ylabel="success rate in WMFold-v0",
           title=f"Spearman {fmt(result['spearman'])}, Pearson {fmt(result['pearson'])}")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _intervals(path: Path, result: dict) -> None:
    """Each policy's --paired interval (and the paired episodes' alone) against the simulator's rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, summary = result["policies"], result["paired_summary"]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(rows) + 1.8), dpi=120)
    for i, row in enumerate(rows):
        p, q = row["paired"], row["pooled"]
        ax.plot([p["paired_low"], p["paired_high"]], [i + 0.25] * 2, color="0.65", lw=3)
        ax.plot([p["low"], p["high"]], [i] * 2, color="C1", lw=3)
        ax.plot([q["low"], q["high"]], [i - 0.25] * 2, color="C0", lw=3)
        ax.plot(q["estimate"], i - 0.25, "o", color="C0", ms=4)
        ax.plot(q["raw"], i - 0.25, "x", color="C3", ms=5)
        ax.plot(row["sim_success_rate"], i, "|", color="k", ms=16, mew=2)
    ax.set_yticks(range(len(rows)), [r["policy"] for r in rows], fontsize=7)
    ax.set(xlabel="success rate", xlim=(-0.02, 1.02),
           title=f"{summary['confidence']:.0%} intervals, K = {summary['k']}: {summary['pooled_covered']} of {summary['policies']} "
                 "cover the simulator")
    ax.plot([], [], color="C0", lw=3, label="world model + K paired, judge errors pooled")
    ax.plot([], [], color="C1", lw=3, label="world model + K paired, PPI++ per policy")
    ax.plot([], [], color="0.65", lw=3, label="K paired alone (Wilson)")
    ax.plot([], [], "x", color="C3", label="world model's own rate")
    ax.plot([], [], "|", color="k", ms=10, mew=2, label=f"simulator, {result['episodes']} episodes")
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.4, -0.1), ncol=2, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _report(result: dict) -> str:
    fmt = lambda x: "nan" if math.isnan(x) else f"{x:.3f}"
    given = result["config"]["checkpoint"]  # as the user wrote it: a report travels, an absolute path does not
    bundle = "`default` (the shipped one)" if given == "default" else f"`{given}`"
    lines = ["# wmgym eval-policies", "",
             f"{result['episodes']} episodes per policy and world, {result['horizon']} steps, same start states; bundle "
             f"{bundle}, judge threshold {result['judge_threshold']:.2f}; {result['wall_time_s'] / 60:.1f} min.", "",
             f"**Spearman {fmt(result['spearman'])}**, Pearson {fmt(result['pearson'])} (target: Spearman >= 0.9); "
             f"per-episode verdicts agree {100 * result['episode_agreement']:.1f}% of the time.", "",
             "| policy | success in SimFold-v0 | success in WMFold-v0 | mean final score (sim) | episode agreement |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['policy']} | {100 * r['sim_success_rate']:.1f}% | {100 * r['model_success_rate']:.1f}% | "
              f"{r['sim_mean_score']:.2f} | {100 * r['episode_agreement']:.1f}% |" for r in result["policies"]]
    lines += ["", "![agreement](agreement.png)", ""]
    if "paired_summary" in result:
        summary = result["paired_summary"]
        lines += [f"**Paired evaluation** (K = {summary['k']} ground-truth episodes per policy, "
                  f"{summary['confidence']:.0%} intervals). The simulator's rate over all {result['episodes']} episodes lies in "
                  f"the interval of {summary['pooled_covered']} of {summary['policies']} policies with the judge's errors pooled "
                  f"across policies (mean width {summary['pooled_mean_width']:.3f}), {summary['covered']} with PPI++ per policy "
                  f"(width {summary['mean_width']:.3f}), {summary['paired_covered']} with the K episodes alone (Wilson, width "
                  f"{summary['mean_paired_width']:.3f}).", "",
                  "| policy | world model's rate | pooled [interval] | PPI++ [interval] | K paired alone [Wilson] | simulator |",
                  "|---|---|---|---|---|---|"]
        span = lambda e, low="low", high="high": f"[{e[low]:.2f}, {e[high]:.2f}]"
        lines += [f"| {r['policy']} | {r['model_success_rate']:.2f} | {r['pooled']['estimate']:.2f} {span(r['pooled'])} | "
                  f"{r['paired']['estimate']:.2f} {span(r['paired'])} | {r['paired']['paired']:.2f} "
                  f"{span(r['paired'], 'paired_low', 'paired_high')} | {r['sim_success_rate']:.2f} |" for r in result["policies"]]
        lines += ["", "![intervals](intervals.png)", ""]
    return "\n".join(lines)
