"""Planners (best-of-N, CEM), proposals, MPC execution in SimFold-v0 and the `plan` command."""

import dataclasses
import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from conftest import as_conditions
from wmgym.actions import ACTION_HIGH, ACTION_LOW
from wmgym.model.world_model import WorldModel
from wmgym.policies.mpc import PlanConfig, make_reward_head, plan, pool_plan_runs, run_plan_episode, scripted_nominal, selection_test
from wmgym.policies.planning import (FREE_DIMS, Planner, ProposalConfig, RandomProposal, identity_sequence,
                                     sample_gaussian, sample_uniform)
from wmgym.rewards.base import RewardHead

pytestmark = pytest.mark.usefixtures("one_thread")

ROTATION_DIMS = np.setdiff1d(np.arange(20), FREE_DIMS)
LOW, HIGH = torch.from_numpy(ACTION_LOW), torch.from_numpy(ACTION_HIGH)


class ActionEchoModel:
    """A stand-in world model whose frame t shows action a_t: pixel (0, j) of the red channel
    holds component j mapped from [ACTION_LOW, ACTION_HIGH] to 0..255. Counts rollout calls."""

    device = torch.device("cpu")

    def __init__(self):
        self.calls: list[torch.Tensor] = []

    def rollout(self, context, actions, *, generator=None, num_steps=None):
        self.calls.append(actions.clone())
        n, horizon = actions.shape[:2]
        frames = context[:, -1:].expand(n, horizon, *context.shape[2:]).clone()  # (n, T, H, W, 3)
        frames[:, :, 0, :20, 0] = ((actions - LOW) / (HIGH - LOW) * 255).round().to(torch.uint8)
        return frames


class TargetScorer(RewardHead):
    """Prefers a known action sequence: minus the squared distance of the decoded actions to it."""

    name = "target"
    goal_kind = "image"
    device = torch.device("cpu")

    def __init__(self, target: np.ndarray):
        self.target = torch.from_numpy(target)

    def score(self, frames, goal):
        decoded = frames[:, -len(self.target):, 0, :20, 0].float() / 255 * (HIGH - LOW) + LOW  # (n, T, 20)
        return -((decoded - self.target)[..., FREE_DIMS] ** 2).sum((1, 2))


def distance(actions, target):
    return float(((actions - target)[..., FREE_DIMS] ** 2).sum())


CONTEXT = np.zeros((1, 32, 32, 3), np.uint8)
NOMINAL = identity_sequence(4)
TARGET = NOMINAL.copy()
TARGET[:, [0, 11]] += 0.03  # 3 cm further along left x and right y at every step
TARGET[:, 9] = 0.0  # left gripper closed


def test_best_of_n_picks_the_best_scoring_candidate():
    model = ActionEchoModel()
    planner = Planner(model, TargetScorer(TARGET), num_candidates=32, proposal=ProposalConfig(position_std=0.02, width_std=0.02))
    result = planner.plan(CONTEXT, goal=None, nominal=NOMINAL, seed=0)
    candidates = model.calls[0].numpy()
    best = int(np.argmax(result.scores[0]))
    np.testing.assert_array_equal(result.actions, candidates[best])
    distances = [distance(c, TARGET) for c in candidates]
    assert distance(result.actions, TARGET) <= min(distances) + 1e-3  # up to the frames' 8-bit quantisation
    assert distance(result.actions, TARGET) < np.median(distances)


def test_cem_mean_moves_toward_the_target():
    planner = Planner(ActionEchoModel(), TargetScorer(TARGET), method="cem", num_candidates=64, num_iterations=8,
                      num_elites=8, proposal=ProposalConfig(position_std=0.02, width_std=0.02))
    result = planner.plan(CONTEXT, goal=None, nominal=NOMINAL, seed=0)
    assert distance(result.mean, TARGET) < 0.35 * distance(NOMINAL, TARGET)  # measured: 0.19 (seed 0)
    assert distance(result.actions, TARGET) < 0.35 * distance(NOMINAL, TARGET)
    per_iteration_best = result.scores.max(axis=1)
    assert per_iteration_best[-1] > per_iteration_best[0]


@pytest.mark.parametrize("method, iterations", [("best-of-n", 1), ("cem", 3)])
def test_all_candidates_of_an_iteration_go_through_one_batched_rollout(method, iterations):
    model = ActionEchoModel()
    Planner(model, TargetScorer(TARGET), method=method, num_candidates=16, num_iterations=3, num_elites=4).plan(
        CONTEXT, None, NOMINAL, seed=0)
    assert len(model.calls) == iterations
    assert all(tuple(c.shape) == (16, 4, 20) for c in model.calls)


def test_proposals_keep_the_nominal_rotations_and_stay_in_bounds():
    rng = np.random.default_rng(0)
    nominal = identity_sequence(5)
    for candidates in (sample_gaussian(nominal, ProposalConfig(position_std=0.5, width_std=0.5).std(), 200, rng),
                       sample_uniform(nominal, 200, rng)):
        assert candidates.shape == (200, 5, 20) and candidates.dtype == np.float32
        assert np.all(candidates >= ACTION_LOW) and np.all(candidates <= ACTION_HIGH)
        np.testing.assert_array_equal(candidates[..., ROTATION_DIMS], np.broadcast_to(nominal[:, ROTATION_DIMS], (200, 5, 12)))
        assert candidates[..., FREE_DIMS].std() > 0.01  # the free dims were actually sampled


def test_include_mean_puts_the_nominal_among_the_candidates():
    model = ActionEchoModel()
    Planner(model, TargetScorer(TARGET), num_candidates=8, include_mean=True).plan(CONTEXT, None, NOMINAL, seed=0)
    np.testing.assert_array_equal(model.calls[0][0].numpy(), NOMINAL)


@pytest.fixture(scope="module")
def tiny_model(tiny_bundle):
    return WorldModel.from_pretrained(tiny_bundle / "world_model", device="cpu")


@pytest.fixture(scope="module")
def lpips_head():
    with warnings.catch_warnings():  # no ImageNet trunk on a test machine: the seeded stand-in warns
        warnings.simplefilter("ignore", UserWarning)
        return make_reward_head("lpips-offline", device="cpu")


def test_same_seed_same_plan_with_the_real_world_model(tiny_model, lpips_head):
    env = gym.make("SimFold-v0", task="fold_half", resolution=64)
    obs, _ = env.reset(seed=3)
    goal = env.unwrapped.world.render_goal()
    nominal = scripted_nominal(env, obs[None], 3)
    planner = Planner(tiny_model, lpips_head, num_candidates=4, num_steps=1)
    first, second = (planner.plan(obs[None], goal, nominal, seed=7) for _ in range(2))
    np.testing.assert_array_equal(first.actions, second.actions)
    np.testing.assert_array_equal(first.scores, second.scores)
    other = planner.plan(obs[None], goal, nominal, seed=8)
    assert not np.array_equal(first.actions, other.actions)
    assert np.all(np.isfinite(first.scores)) and first.score == first.scores.max()


def test_scripted_nominal_is_what_the_demonstrator_does_and_leaves_the_env_alone():
    env = gym.make("SimFold-v0", task="fold_left_sleeve", resolution=64)
    obs, _ = env.reset(seed=1)
    nominal = scripted_nominal(env, obs[None], 5)
    np.testing.assert_array_equal(env.unwrapped.expert_action(), nominal[0])
    assert env.unwrapped.world.step_count == 0
    for t in range(5):
        np.testing.assert_allclose(env.unwrapped.expert_action(), nominal[t], atol=1e-6)
        env.step(nominal[t])


class CountingPlanner:
    """Wraps a planner and records the frames seen and the plans returned at every call."""

    def __init__(self, inner):
        self.inner, self.seen, self.plans = inner, [], []

    def plan(self, context, goal, nominal=None, **kwargs):
        self.seen.append(len(kwargs["history"]))
        result = self.inner.plan(context, goal, nominal, **kwargs)
        self.plans.append(result.actions)
        return result


@pytest.mark.parametrize("replan_every, expected_plans", [(2, 3), (None, 2)])
def test_mpc_replans_every_k_steps_from_the_current_frame(replan_every, expected_plans):
    env = gym.make("SimFold-v0", task="fold_half", resolution=64, horizon=6)  # too short to succeed: all 6 steps run
    planner = CountingPlanner(RandomProposal())
    result = run_plan_episode(env, planner, seed=0, goal="unused", replan_every=replan_every, plan_horizon=4, rng=0)
    assert result.steps == 6 and result.num_plans == expected_plans == len(planner.plans)
    assert planner.seen == ([1, 3, 5] if replan_every == 2 else [1, 5])  # frames seen so far at each replanning
    used = [p[:replan_every] if replan_every else p for p in planner.plans]
    np.testing.assert_array_equal(result.actions, np.concatenate(used)[:6])  # the plans' actions were executed


def test_bad_input_raises_value_error():
    head = TargetScorer(TARGET)
    with pytest.raises(ValueError, match="num_candidates"):
        Planner(ActionEchoModel(), head, num_candidates=0)
    with pytest.raises(ValueError, match="method"):
        Planner(ActionEchoModel(), head, method="mppi")
    with pytest.raises(ValueError, match="num_elites"):
        Planner(ActionEchoModel(), head, method="cem", num_candidates=4, num_elites=5)
    with pytest.raises(ValueError, match="proposal kind"):
        ProposalConfig(kind="sobol")
    with pytest.raises(ValueError, match="unknown scorer"):
        make_reward_head("psnr")
    with pytest.raises(ValueError, match="RewardHead.score"):
        Planner(ActionEchoModel(), object())
    planner = Planner(ActionEchoModel(), head, num_candidates=2)
    with pytest.raises(ValueError, match=r"\(20,\)"):
        planner.plan(CONTEXT, None, np.zeros((4, 19), np.float32))
    with pytest.raises(ValueError, match="nominal must be an action sequence"):
        planner.plan(CONTEXT, None, np.zeros((2, 4, 20), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        planner.plan(CONTEXT.astype(np.float32), None, NOMINAL)
    with pytest.raises(ValueError, match="horizon"):
        planner.plan(CONTEXT, None, None)
    with pytest.raises(ValueError, match="task"):
        plan(PlanConfig(task="fold_socks"))


def test_judge_and_videoclip_scorers_score_every_candidate(tiny_bundle):
    clip = np.random.default_rng(0).integers(0, 256, (3, 5, 64, 64, 3), dtype=np.uint8)
    judge = make_reward_head("judge", tiny_bundle, device="cpu")
    p = judge.score(clip, "fold_half")
    assert p.shape == (3,) and torch.all((p >= 0) & (p <= 1))
    videoclip = make_reward_head("videoclip", tiny_bundle, device="cpu")
    assert videoclip.score(clip, "fold the shirt in half").shape == (3,)


def test_plan_command_reports_three_arms_and_resumes(tiny_bundle, tmp_path):
    config = PlanConfig(task="fold_half", n=2, episodes=1, checkpoint=str(tiny_bundle), horizon=3, plan_horizon=2,
                        num_steps=1, reward="lpips-offline", device="cpu", out=str(tmp_path / "plan.json"))
    summary = plan(config)
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert {r["arm"] for r in saved["episodes"]} == {"planner", "scripted", "random-proposal"}
    row = summary["fold_half"]
    assert row["episodes"] == 1 and all(0.0 <= row[arm] <= 1.0 for arm in ("planner", "scripted", "random-proposal"))
    planner_record = next(r for r in saved["episodes"] if r["arm"] == "planner")
    assert planner_record["steps"] == 3 and planner_record["num_plans"] == 2  # 2 + 1 steps
    plan(config)  # a rerun reuses the finished episodes instead of running them again
    assert json.loads((tmp_path / "plan.json").read_text())["episodes"] == saved["episodes"]
    assert row["random_draws"] == 1 and row["selection"]["success"]["starts"] == 1


def test_plan_resumes_with_more_random_proposals(tiny_bundle, tmp_path):
    config = PlanConfig(task="fold_half", n=2, episodes=1, checkpoint=str(tiny_bundle), horizon=3, plan_horizon=2,
                        num_steps=1, reward="lpips-offline", device="cpu", out=str(tmp_path / "plan.json"))
    plan(config)
    first = json.loads((tmp_path / "plan.json").read_text())["episodes"]
    summary = plan(dataclasses.replace(config, random_proposals=3))
    records = json.loads((tmp_path / "plan.json").read_text())["episodes"]
    assert records[:len(first)] == first  # the planner, the demonstrator and draw 0 are not run again
    added = records[len(first):]
    assert [(r["arm"], r["draw"]) for r in added] == [("random-proposal", 1), ("random-proposal", 2)]
    draws = [r for r in records if r["arm"] == "random-proposal"]
    assert summary["fold_half"]["random_draws"] == 3
    assert summary["fold_half"]["random-proposal"] == pytest.approx(np.mean([r["success"] for r in draws]))
    with pytest.raises(ValueError, match="random_proposals"):
        plan(dataclasses.replace(config, random_proposals=0))


def test_selection_test_is_the_sign_test_with_one_draw_and_sharpens_with_more():
    # one draw per start: the exact two-sided sign test; 3 of 3 discordant starts won by the planner: p = 2 / 8
    one = selection_test([1, 1, 1, 0], [[0], [0], [0], [0]], permutations=40000)
    assert one["difference"] == pytest.approx(0.75) and one["p_value"] == pytest.approx(0.25, abs=0.01)
    assert selection_test([1, 0], [[1], [0]])["p_value"] == 1.0  # no discordant start: no evidence
    # the same planner against 16 draws per start that succeed half the time: a clear win
    many = selection_test([1] * 20, [[1, 0] * 8] * 20)
    assert many["difference"] == pytest.approx(0.5) and many["p_value"] < 1e-3
    assert many["ci95"][0] == pytest.approx(0.5) and many["starts"] == 20
    # a planner no better than the draws is not called better, on average over replications
    rng = np.random.default_rng(1)
    p_values = [selection_test(rng.random(40) < 0.7, rng.random((40, 8)) < 0.7, permutations=2000, seed=k)["p_value"]
                for k in range(40)]
    assert 0.3 < np.mean(p_values) < 0.7 and np.mean(np.array(p_values) < 0.05) <= 0.15
    with pytest.raises(ValueError, match="one entry per start"):
        selection_test([1, 0], [[1]])
    with pytest.raises(ValueError, match="at least one random draw"):
        selection_test([1], [[]])
    assert selection_test([], [])["starts"] == 0


def _plan_run(seed: int, outcomes: list[tuple[bool, bool]], reward: str = "lpips-calibrated") -> dict:
    """A `wmgym plan` payload: per start (planner success, random success), the demonstrator always succeeding."""
    episodes = []
    for i, (won, random_won) in enumerate(outcomes):
        for arm, success in (("planner", won), ("scripted", True), ("random-proposal", random_won)):
            episodes.append({"task": "fold_half", "seed": seed + i, "arm": arm, "success": success, "score": float(success), "seconds": 1.0})
    config = dataclasses.asdict(PlanConfig(task="fold_half", episodes=len(outcomes), seed=seed, reward=reward))
    return {"config": config, "episodes": episodes}


def test_pool_plan_runs_joins_disjoint_start_states_and_refuses_others():
    pooled = pool_plan_runs([_plan_run(0, [(True, False), (True, True)]), _plan_run(20, [(False, False), (True, False)])])
    row = pooled["summary"]["fold_half"]
    assert row["episodes"] == 4 and row["planner"] == 0.75 and row["random-proposal"] == 0.25 and row["scripted"] == 1.0
    assert row["selection"]["success"]["starts"] == 4 and row["selection"]["success"]["difference"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="disjoint"):
        pool_plan_runs([_plan_run(0, [(True, False)]), _plan_run(0, [(True, False)])])
    with pytest.raises(ValueError, match="reward"):
        pool_plan_runs([_plan_run(0, [(True, False)]), _plan_run(20, [(True, False)], reward="judge")])


# ---------------------------------------------------------------- grippers-conditioned world models
class RecordingModel:
    """Wraps a world model and records the `conditions`, `poses` and `held` of every rollout call."""

    def __init__(self, inner):
        self.inner, self.config, self.device, self.conditions, self.poses, self.held = inner, inner.config, inner.device, [], [], []
        self.is_pose_conditioned, self.is_held_conditioned = inner.is_pose_conditioned, inner.is_held_conditioned
        self.grasp_prior, self.actions = getattr(inner, "grasp_prior", None), []

    def rollout(self, context, actions, **kwargs):
        given = kwargs.get("conditions")  # Conditions: its views stacked (n, t, V, H, W, 3), its vectors
        self.conditions.append(torch.stack(list(given.views.values()), dim=2) if given is not None and given.views else None)
        self.poses.append(None if given is None else given.vectors.get("poses"))
        self.held.append(None if given is None else given.vectors.get("held"))
        self.actions.append(actions)
        return self.inner.rollout(context, actions, **kwargs)


@pytest.fixture(scope="module")
def grippers_model(tiny_grippers_bundle):
    return WorldModel.from_pretrained(tiny_grippers_bundle / "world_model", device="cpu")


def test_planner_renders_each_candidates_grippers_views_for_a_conditioned_model(grippers_model, lpips_head):
    from wmgym.sim.gripper_track import GripperState, gripper_views

    env = gym.make("SimFold-v0", task="fold_half", resolution=64)
    obs, _ = env.reset(seed=3)
    goal, state = env.unwrapped.world.render_goal(), GripperState.of_world(env.unwrapped.world)
    nominal = scripted_nominal(env, obs[None], 3)
    model = RecordingModel(grippers_model)
    planner = Planner(model, lpips_head, num_candidates=3, num_steps=1)
    with pytest.raises(ValueError, match="grippers"):
        planner.plan(obs[None], goal, nominal, seed=7)
    with pytest.raises(ValueError, match="2 context frames"):
        planner.plan(np.stack([obs, obs]), goal, nominal, seed=7, grippers=state)
    assert not model.conditions  # nothing was rolled out without the views
    result = planner.plan(obs[None], goal, nominal, seed=7, grippers=state)
    assert result.actions.shape == (3, 20) and np.all(np.isfinite(result.scores))
    conditions = model.conditions[-1].cpu().numpy()  # (n, 1 + T, 1, H, W, 3)
    assert conditions.shape == (3, 4, 1, 64, 64, 3) and conditions.dtype == np.uint8
    np.testing.assert_array_equal(conditions[:, 0, 0], np.broadcast_to(env.unwrapped.world.views()[2], (3, 64, 64, 3)))
    best = int(np.argmax(result.scores[0]))  # the best candidate's views are those of its own actions
    np.testing.assert_array_equal(conditions[best, :, 0], gripper_views([state], result.actions[None])[0])
    for t in range(3):  # and the simulator's, executing them
        env.step(result.actions[t])
        np.testing.assert_array_equal(conditions[best, t + 1, 0], env.unwrapped.world.views()[2])
    # the views steer the imagined frames: other grippers, other scores for the same candidates
    poses = state.poses.copy()
    poses[:, 0, 3] += 0.05
    other = planner.plan(obs[None], goal, nominal, seed=7, grippers=GripperState(poses, state.widths))
    assert not np.array_equal(model.conditions[-1].cpu().numpy(), conditions)
    assert not np.array_equal(other.scores, result.scores)


def test_planner_gives_a_pose_conditioned_model_each_candidates_gripper_poses(tiny_pose_bundle, lpips_head):
    from wmgym.sim.gripper_track import GripperState

    model = RecordingModel(WorldModel.from_pretrained(tiny_pose_bundle / "world_model", device="cpu"))
    env = gym.make("SimFold-v0", task="fold_left_sleeve", resolution=64)
    obs, _ = env.reset(seed=4)
    goal, state = env.unwrapped.world.render_goal(), GripperState.of_world(env.unwrapped.world)
    nominal = scripted_nominal(env, obs[None], 3)
    planner = Planner(model, lpips_head, num_candidates=3, num_steps=1)
    with pytest.raises(ValueError, match="grippers"):
        planner.plan(obs[None], goal, nominal, seed=7)
    result = planner.plan(obs[None], goal, nominal, seed=7, grippers=state)
    poses = model.poses[-1].cpu().numpy()  # (n, 1 + T, 8)
    assert poses.shape == (3, 4, 8) and model.conditions[-1].shape == (3, 4, 1, 64, 64, 3)
    np.testing.assert_allclose(poses[:, 0], np.broadcast_to(state.vector(), (3, 8)))
    best = int(np.argmax(result.scores[0]))
    for t in range(3):  # the best candidate's poses are the simulator's, executing its actions
        env.step(result.actions[t])
        world = env.unwrapped.world
        np.testing.assert_allclose(poses[best, t + 1], [*world.poses[0][:3, 3], world.widths[0], *world.poses[1][:3, 3],
                                                        world.widths[1]], atol=1e-6)
    # the pose steers the imagined frames: the same candidates and views, another height, other scores
    higher = planner.score_candidates(obs[None], obs[None], np.stack([result.actions] * 3), goal,
                                      torch.Generator().manual_seed(0),
                                      as_conditions(model.conditions[-1].cpu().numpy(),
                                                    poses + np.array([0, 0, 0.05, 0, 0, 0, 0.05, 0], np.float32)))
    same = planner.score_candidates(obs[None], obs[None], np.stack([result.actions] * 3), goal,
                                    torch.Generator().manual_seed(0), as_conditions(model.conditions[-1].cpu().numpy(), poses))
    assert not np.allclose(higher, same)


class RecordingHead(RewardHead):
    """Wraps a reward head and records the scores of every call."""

    name, goal_kind, device = "recording", "image", torch.device("cpu")

    def __init__(self, inner):
        self.inner, self.scores = inner, []

    def score(self, frames, goal):
        self.scores.append(self.inner.score(frames, goal).float().numpy())
        return self.scores[-1]


def test_planner_scores_a_held_conditioned_model_by_the_prior_or_by_the_expectation_over_held_and_missed(
        tiny_held_bundle, lpips_head):
    from conftest import tiny_grasp_prior
    from wmgym.model.grasp_prior import close_events
    from wmgym.sim.gripper_track import GripperState

    inner = WorldModel.from_pretrained(tiny_held_bundle / "world_model", device="cpu")
    inner.grasp_prior = tiny_grasp_prior(0.0)  # p(a closing catches) ~ 1/2: the two modes differ
    model, head = RecordingModel(inner), RecordingHead(lpips_head)
    env = gym.make("SimFold-v0", task="fold_half", resolution=64)
    obs, _ = env.reset(seed=3)
    goal, state = env.unwrapped.world.render_goal(), GripperState.of_world(env.unwrapped.world)
    nominal = scripted_nominal(env, obs[None], 16)
    closes = nominal[:, 9] < 0.02
    assert closes.any()  # the demonstrator closes within the plan, so the grasp state matters
    n = 3
    with pytest.raises(ValueError, match="held_mode"):
        Planner(model, head, held_mode="sample")
    soft = Planner(model, head, num_candidates=n, num_steps=1).plan(obs[None], goal, nominal, seed=7, grippers=state)
    held = model.held[-1].numpy()  # (n, 1 + T, 2): the prior's probability while closed
    assert held.shape == (n, 17, 2) and 0.3 < held.max() < 0.7 and set(np.unique(held)) - {0.0} != set()
    np.testing.assert_allclose(soft.scores[0], head.scores[-1])

    result = Planner(model, head, num_candidates=n, num_steps=1, held_mode="expectation").plan(
        obs[None], goal, nominal, seed=7, grippers=state)
    assert len(model.held) == 2  # both grasp states of all n candidates in ONE batched rollout
    both, actions = model.held[-1].numpy(), model.actions[-1]  # (2n, 1 + T, 2), (2n, T, 20)
    torch.testing.assert_close(actions, torch.cat([model.actions[0]] * 2))  # the soft run's n candidates, twice
    np.testing.assert_array_equal(both[:n], (held > 0).astype(np.float32))  # every closing held ...
    assert not both[n:].any()  # ... then none
    p_all = np.ones(n)  # the product over each candidate's closings of the prior's probability
    for row in range(n):
        for hand, first, _ in close_events(np.where(both[row] > 0, 0.0, 0.06)):
            p_all[row] *= held[row, first, hand]
    assert ((0 < p_all) & (p_all < 1)).all()
    clips = head.scores[-1]  # (2n,)
    np.testing.assert_allclose(result.scores[0], p_all * clips[:n] + (1 - p_all) * clips[n:], rtol=1e-5)
    assert result.score == result.scores[0].max()


def test_an_unconditioned_model_ignores_grippers():
    from wmgym.sim.gripper_track import GripperState

    state = GripperState(np.tile(np.eye(4), (2, 1, 1)), np.full(2, 0.02))
    planner = Planner(ActionEchoModel(), TargetScorer(TARGET), num_candidates=4)  # its rollout takes no conditions
    np.testing.assert_array_equal(planner.plan(CONTEXT, None, NOMINAL, seed=0).actions,
                                  planner.plan(CONTEXT, None, NOMINAL, seed=0, grippers=state).actions)


def test_mpc_gives_a_conditioned_planner_the_simulators_grippers_at_every_replanning(grippers_model, lpips_head):
    model = RecordingModel(grippers_model)
    planner = CountingPlanner(Planner(model, lpips_head, num_candidates=2, num_steps=1))
    env = gym.make("SimFold-v0", task="fold_half", resolution=64, horizon=3)
    result = run_plan_episode(env, planner, seed=0, replan_every=1, plan_horizon=2, context_frames=2, rng=0)
    assert result.num_plans == 3 and len(model.conditions) == 3
    twin = gym.make("SimFold-v0", task="fold_half", resolution=64, horizon=3)  # replays the executed actions
    twin.reset(seed=0)
    views = [twin.unwrapped.world.views()[2]]
    for action in result.actions:
        twin.step(action)
        views.append(twin.unwrapped.world.views()[2])
    for step, conditions in enumerate(model.conditions):  # plan k starts at step k from frames max(0, k-1)..k
        context = np.stack(views[max(0, step - 1): step + 1])
        np.testing.assert_array_equal(conditions.cpu().numpy()[:, : len(context), 0],
                                      np.broadcast_to(context, (2, *context.shape)))
    with pytest.raises(ValueError, match="static camera"):
        run_plan_episode(gym.make("SimFold-v0", task="fold_half", resolution=64, horizon=3, is_camera_moving=True),
                         planner.inner, seed=0, rng=0)


def test_plan_command_and_planner_policy_with_a_grippers_conditioned_bundle(tiny_grippers_bundle, tmp_path):
    from wmgym.eval.policies import PlannerPolicy, make_starts, start_worlds

    config = PlanConfig(task="fold_half", n=2, episodes=1, checkpoint=str(tiny_grippers_bundle), horizon=2, plan_horizon=2,
                        num_steps=1, reward="lpips-offline", device="cpu")
    assert plan(config)["fold_half"]["episodes"] == 1
    starts = make_starts(2, 5)
    _, frames, _ = start_worlds(starts)
    policy = PlannerPolicy(n=2, checkpoint=str(tiny_grippers_bundle), device="cpu", num_steps=1, horizon=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        actions = policy.plan(starts, frames)
    assert actions.shape == (2, 2, 20) and np.all(np.isfinite(actions))
