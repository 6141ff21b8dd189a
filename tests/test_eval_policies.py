"""Specs of policy evaluation in both worlds (`wmgym eval-policies`), on a tiny bundle."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from wmgym.actions import ACTION_HIGH, ACTION_LOW, identity_action
from wmgym.eval.policies import (EvalPoliciesConfig, evaluate_policies, make_policy, make_starts, rank_agreement,
                                 run_in_simulator, run_in_world_model, start_worlds)
from wmgym.policies.base import ActionSequencesPolicy, Policy, SimulatorBehaviourPolicy, Start
from wmgym.sim.episode import EpisodeSpec, run_episode

pytestmark = pytest.mark.usefixtures("one_thread")


def test_scripted_policy_in_the_lockstep_simulator_matches_run_episode():
    starts = make_starts(2, seed=3)
    result = run_in_simulator(SimulatorBehaviourPolicy("demo", 0.0), starts)
    records = [run_episode(EpisodeSpec(s.task, s.seed, "demo", 0.0)) for s in starts]
    np.testing.assert_array_equal(result["success"], [r.success for r in records])
    np.testing.assert_allclose(result["score"], [r.score[-1] for r in records], rtol=1e-6)
    assert result["success"].all()  # noise 0 folds every shirt (docs/results.md)


class Recorder(Policy):
    """Holds still and records what it was shown."""

    name = "recorder"

    def reset(self, starts, frames):
        self.starts, self.first, self.seen = starts, frames.copy(), []

    def act(self, observations, step):
        self.seen.append(observations.copy())
        return np.stack([identity_action(0.08, 0.08)] * len(observations))


def test_both_worlds_start_from_the_same_frames_and_step_the_policy(tiny_bundle):
    starts = [Start("fold_half", 5), Start("fold_left_sleeve", 6)]
    in_sim, in_model = Recorder(), Recorder()
    run_in_simulator(in_sim, starts, horizon=3)
    result = run_in_world_model(in_model, starts, horizon=3, checkpoint=str(tiny_bundle), device="cpu")
    np.testing.assert_array_equal(in_sim.first, in_model.first)
    assert len(in_model.seen) == 3 and in_model.seen[1].shape == (2, 64, 64, 3) and result["success"].dtype == bool
    assert not np.array_equal(in_model.seen[1], in_model.seen[0])  # the model generated new frames


def test_world_model_run_starts_a_conditioned_model_from_the_simulators_grippers(tiny_grippers_bundle):
    from wmgym.envs.imagined import ImaginedEpisodes

    starts = [Start("fold_half", 5), Start("fold_left_sleeve", 6)]  # not bank starts: their own grippers
    core = ImaginedEpisodes(2, checkpoint=str(tiny_grippers_bundle), task=None, reward="none", max_episode_steps=2, device="cpu")
    run_in_world_model(Recorder(), starts, horizon=2, core=core)
    worlds, _, _ = start_worlds(starts)
    hold = np.stack([identity_action(0.08, 0.08)] * 2)
    for row, world in enumerate(worlds):
        for _ in range(2):
            world.step(hold[0])
        np.testing.assert_allclose(core.grippers.tracks.state(row).poses, world.poses, atol=1e-12)


def test_rank_agreement_known_values():
    assert rank_agreement([0.1, 0.5, 0.9], [0.0, 0.2, 0.3]) == pytest.approx({"pearson": 0.98198051, "spearman": 1.0})
    assert rank_agreement([0.1, 0.5, 0.9], [0.3, 0.2, 0.0])["spearman"] == pytest.approx(-1.0)
    assert math.isnan(rank_agreement([0.1, 0.5], [0.0, 0.0])["spearman"])
    with pytest.raises(ValueError, match="equally long"):
        rank_agreement([0.1], [0.2, 0.3])


def test_policy_names_and_bad_input():
    assert make_policy("scripted-0.02").noise == 0.02 and make_policy("random").kind == "random"
    assert make_policy("replay").kind == "replay" and make_policy("replay").noise == 0.0
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("teleop")
    with pytest.raises(ValueError, match="scripted-<noise>"):
        make_policy("scripted-high")
    with pytest.raises(FileNotFoundError):
        make_policy("sb3:/nowhere/ppo.zip")
    with pytest.raises(ValueError, match="plan-<n>"):
        make_policy("plan-many")
    with pytest.raises(FileNotFoundError, match="wmgym train-idm"):
        make_policy("idm:/nowhere/idm")
    policy = ActionSequencesPolicy(np.zeros((2, 4, 20), np.float32))
    with pytest.raises(ValueError, match="2 action sequences for 1"):
        policy.reset([Start("fold_half", 1)], np.zeros((1, 64, 64, 3), np.uint8))


def test_eval_policies_writes_agreement(tiny_bundle, tmp_path):
    config = EvalPoliciesConfig(out=str(tmp_path / "ep"), checkpoint=str(tiny_bundle), policies=("scripted-0", "random"),
                                episodes=3, horizon=4, device="cpu")
    result = evaluate_policies(config)
    saved = json.loads((tmp_path / "ep" / "agreement.json").read_text())
    assert [r["policy"] for r in saved["policies"]] == ["scripted-0", "random"]
    assert all(0.0 <= r["sim_success_rate"] <= 1.0 for r in saved["policies"])
    # The tiny bundle's judge never fires (threshold 1.0): every imagined rate is 0, so no ranking.
    assert all(r["model_success_rate"] == 0.0 for r in saved["policies"]) and math.isnan(result["spearman"])
    report = (tmp_path / "ep" / "report.md").read_text()
    assert (tmp_path / "ep" / "agreement.png").stat().st_size > 1000 and "Spearman" in report
    assert f"bundle `{tiny_bundle}`" in report  # the checkpoint as given
    from wmgym.eval.policies import _report
    assert "bundle `default` (the shipped one)" in _report({**saved, "config": {**saved["config"], "checkpoint": "default"}})
    with pytest.raises(ValueError, match="at least 2 policies"):
        evaluate_policies(EvalPoliciesConfig(out=str(tmp_path / "x"), checkpoint=str(tiny_bundle), policies=("random",)))


def test_planner_policy_perturbs_the_demonstrator_within_bounds(tiny_bundle):
    import warnings

    from wmgym.actions import ACTION_HIGH, ACTION_LOW

    starts = [Start("fold_half", 21)]
    policy = make_policy("plan-3", horizon=16, checkpoint=str(tiny_bundle), device="cpu")
    _, frames, _ = start_worlds(starts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # LPIPS's offline trunk
        policy.reset(starts, frames)
    nominal = run_episode(EpisodeSpec("fold_half", 21, "demo", 0.0)).actions
    planned = policy.act(frames, 0)
    assert policy.actions.shape == (1, 16, 20) and ((ACTION_LOW <= policy.actions) & (policy.actions <= ACTION_HIGH)).all()
    np.testing.assert_array_equal(policy.actions[0][:, 3:9], nominal[:, 3:9])  # rotations are the nominal's
    assert 0 < np.abs(policy.actions[0] - nominal).max() < 0.12 and planned.shape == (1, 20)


def test_idm_replay_policy_reads_actions_off_another_starts_video(tmp_path):
    from wmgym.policies.idm import IDMConfig, InverseDynamicsModel

    InverseDynamicsModel(IDMConfig(), device="cpu").save_pretrained(tmp_path / "idm")
    policy = make_policy(f"idm:{tmp_path / 'idm'}", horizon=4, device="cpu")
    starts = [Start("fold_half", 3), Start("fold_half", 4)]
    _, frames, _ = start_worlds(starts)
    policy.reset(starts, frames)
    reference = run_episode(EpisodeSpec("fold_half", 3 + 1_000_003, "demo", 0.0, horizon=4)).camera
    expected = np.clip(policy.idm.predict(reference[:-1], reference[1:]), ACTION_LOW, ACTION_HIGH)
    np.testing.assert_allclose(policy.actions[0], expected, atol=1e-6)


def _agreement(seed: int, episodes: int, sim, model, policies=("a", "b", "c")) -> dict:
    rows = [{"policy": p, "sim_success_rate": s, "model_success_rate": m} for p, s, m in zip(policies, sim, model)]
    return {"policies": rows, "episodes": episodes, "horizon": 16, "judge_threshold": 0.96,
            "config": {"checkpoint": "default", "seed": seed}}


def test_pool_agreements_weights_rates_by_episodes():
    from wmgym.eval.policies import pool_agreements, rank_agreement

    small = _agreement(11, 2, sim=[1.0, 0.5, 0.0], model=[0.5, 1.0, 0.0])  # ranks disagree on a and b
    large = _agreement(12, 6, sim=[1.0, 0.0, 0.5], model=[1.0, 0.0, 0.5])
    pooled = pool_agreements([small, large])
    assert pooled["episodes"] == 8 and pooled["seeds"] == [11, 12]
    np.testing.assert_allclose([r["sim_success_rate"] for r in pooled["policies"]], [1.0, 1 / 8, 3 / 8])
    np.testing.assert_allclose([r["model_success_rate"] for r in pooled["policies"]], [7 / 8, 2 / 8, 3 / 8])
    # alone the small run ranks a and b the wrong way round; pooled, both worlds rank a > c > b
    assert rank_agreement([1.0, 0.5, 0.0], [0.5, 1.0, 0.0])["spearman"] == pytest.approx(0.5)
    assert pooled["spearman"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="share policies"):
        pool_agreements([small, _agreement(12, 6, [0, 0, 0], [0, 0, 0], policies=("a", "c", "b"))])
    with pytest.raises(ValueError, match="share 2 start states"):
        pool_agreements([small, _agreement(11, 2, [0, 0, 0], [0, 0, 0])])
    with pytest.raises(ValueError, match="at least 2"):
        pool_agreements([small])


def test_paired_evaluation_reports_corrected_rates_with_intervals(tiny_bundle, tmp_path):
    config = EvalPoliciesConfig(out=str(tmp_path / "ep"), checkpoint=str(tiny_bundle), policies=("scripted-0", "random"),
                                episodes=6, horizon=4, device="cpu", paired=3)
    result = evaluate_policies(config)
    for row in result["policies"]:
        p = row["paired"]
        assert p["k"] == 3 and p["n"] == 3 and p["raw"] == 0.0  # the tiny judge never fires
        assert 0.0 <= p["low"] <= p["estimate"] <= p["high"] <= 1.0 and p["high"] > p["low"]
        assert p["covered"] == (p["low"] <= row["sim_success_rate"] <= p["high"])
        q = row["pooled"]
        assert 0.0 <= q["low"] <= q["estimate"] <= q["high"] <= 1.0 and q["covered"] == (q["low"] <= row["sim_success_rate"] <= q["high"])
        assert len(row["sim_success"]) == len(row["model_success"]) == 6  # per-episode verdicts, for re-analysis
    summary = result["paired_summary"]
    assert summary["policies"] == 2 and 0 <= summary["covered"] <= 2 and 0 <= summary["pooled_covered"] <= 2
    assert (tmp_path / "ep" / "intervals.png").stat().st_size > 1000
    assert "Paired evaluation" in (tmp_path / "ep" / "report.md").read_text()
    with pytest.raises(ValueError, match="--paired K"):
        evaluate_policies(EvalPoliciesConfig(out=str(tmp_path / "x"), checkpoint=str(tiny_bundle), policies=("random", "scripted-0"),
                                             episodes=3, paired=3))
