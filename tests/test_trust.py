"""The per-step trust score (`wmgym.trust`, `info["trust"]`) and the action-support gate
(`sampler.action_support`) that keeps uniform random actions from turning rollouts into noise."""

from __future__ import annotations

import json
import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch

import wmgym  # noqa: F401  (registers WMFold-v0)
from conftest import tiny_world_model
from wmgym.actions import ACTION_HIGH, ACTION_LOW, identity_action
from wmgym.envs.bundle import Bundle
from wmgym.envs.sb3 import WMFoldVecEnv
from wmgym.eval.trust import auroc, bad_frames, flagged_frames
from wmgym.model.world_model_config import SamplerDefaults
from wmgym.trust import TRUST_FEATURES, TRUST_FILE, TrustCalibration, fit_trust

pytestmark = pytest.mark.usefixtures("one_thread")


def calibration(weights=None, bias: float = 0.0) -> TrustCalibration:
    f = len(TRUST_FEATURES)
    return TrustCalibration(list(TRUST_FEATURES), [0.0] * f, [1.0] * f, list(weights or [0.5] + [0.1] * (f - 1)), bias)


@pytest.fixture(scope="module")
def trusted_bundle(tiny_grippers_bundle, tmp_path_factory):
    """The tiny grippers bundle with a trust.json beside its world model."""
    root = tmp_path_factory.mktemp("trusted") / "bundle"
    shutil.copytree(tiny_grippers_bundle, root)
    calibration().save(Bundle.load(root).world_model_dir / TRUST_FILE)
    return root


def uniform_actions(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(ACTION_LOW, ACTION_HIGH, size=(n, 20)).astype(np.float32)


# ---------------------------------------------------------------- the environments
def test_trust_is_in_the_unit_interval_in_every_info_of_the_single_vector_and_sb3_envs(trusted_bundle):
    env = gym.make("WMFold-v0", checkpoint=str(trusted_bundle), device="cpu", reward="none", use_success_judge=False)
    _, info = env.reset(seed=0)
    values = [info["trust"]]
    for action in uniform_actions(5, 0):
        values.append(env.step(action)[-1]["trust"])
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in values), values
    assert values[0] == 1.0  # the start frame is the given one

    vec = gym.make_vec("WMFold-v0", num_envs=3, vectorization_mode="vector_entry_point", checkpoint=str(trusted_bundle),
                       device="cpu", reward="none", use_success_judge=False)
    _, info = vec.reset(seed=0)
    assert info["trust"].shape == (3,)
    for action in uniform_actions(4, 1):
        info = vec.step(np.stack([action] * 3))[-1]
        assert info["trust"].shape == (3,) and np.all((0 <= info["trust"]) & (info["trust"] <= 1))

    sb3 = WMFoldVecEnv(num_envs=2, checkpoint=str(trusted_bundle), device="cpu", reward="none", use_success_judge=False,
                    normalize_actions=False)
    sb3.reset()
    for action in uniform_actions(3, 2):
        infos = sb3.step(np.stack([action] * 2))[-1]
        assert all(0.0 <= i["trust"] <= 1.0 for i in infos)


def test_trust_is_deterministic_per_seed(trusted_bundle):
    def run(seed):
        env = gym.make("WMFold-v0", checkpoint=str(trusted_bundle), device="cpu", reward="none", use_success_judge=False)
        env.reset(seed=seed)
        return [env.step(a)[-1]["trust"] for a in uniform_actions(6, 3)]

    first, again, other = run(5), run(5), run(6)
    assert first == again
    assert first != other


def test_a_world_model_without_trust_json_reports_no_trust(tiny_grippers_bundle):
    env = gym.make("WMFold-v0", checkpoint=str(tiny_grippers_bundle), device="cpu", reward="none", use_success_judge=False)
    assert "trust" not in env.reset(seed=0)[1]
    assert "trust" not in env.step(identity_action(0.08, 0.08))[-1]


def test_a_one_step_sampler_reports_no_trust_and_warns(trusted_bundle):
    # Trust reads the second denoiser call's correction of the first; one step has none to read.
    with pytest.warns(UserWarning, match="at least two steps"):
        env = gym.make("WMFold-v0", checkpoint=str(trusted_bundle), device="cpu", reward="none", use_success_judge=False,
                       num_steps=1)
    assert "trust" not in env.reset(seed=0)[1]
    assert "trust" not in env.step(identity_action(0.08, 0.08))[-1]


def test_the_shipped_bundle_carries_a_calibrated_trust_score():
    assert TrustCalibration.of_model_dir(Bundle.load("default").world_model_dir) is not None
    directory = Bundle.load("default").world_model_dir
    assert TrustCalibration.of_model_dir(directory, num_steps=2) is not None
    assert TrustCalibration.of_model_dir(directory, num_steps=1) is None  # one step: no second call to read
    env = gym.make("WMFold-v0", device="cpu", reward="none", use_success_judge=False)
    env.reset(seed=0)
    env.action_space.seed(0)
    trust = [env.step(env.action_space.sample())[-1]["trust"] for _ in range(3)]
    assert all(0.0 <= t <= 1.0 for t in trust)


# ---------------------------------------------------------------- the calibration
def test_a_damaged_trust_file_is_refused_naming_it(tmp_path):
    path = tmp_path / TRUST_FILE
    path.write_text(json.dumps({"features": list(TRUST_FEATURES), "mean": [0.0], "std": [1.0], "weights": [1.0], "bias": 0.0}))
    with pytest.raises(ValueError, match=str(path)):
        TrustCalibration.load(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="calibrate-trust"):
        TrustCalibration.load(path)


def test_trust_lies_in_the_unit_interval_and_falls_with_the_logit():
    features = torch.randn(50, len(TRUST_FEATURES)) * 100
    trust = calibration().trust(features)
    assert trust.shape == (50,) and bool(((trust >= 0) & (trust <= 1)).all())
    steady = calibration([1.0] + [0.0] * (len(TRUST_FEATURES) - 1))
    x = torch.zeros(2, len(TRUST_FEATURES))
    x[1, 0] = 3.0  # a later step: more likely bad
    assert steady.trust(x)[1] < steady.trust(x)[0]


def test_fit_trust_ranks_frames_by_the_feature_that_predicts_them():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, len(TRUST_FEATURES)))
    bad = x[:, 2] + 0.3 * rng.normal(size=2000) > 1.0
    fitted = fit_trust(x, bad)
    trust = fitted.trust(torch.from_numpy(x).float()).numpy()
    assert auroc(-trust, bad) > 0.95
    assert abs(fitted.weights[2]) == max(abs(w) for w in fitted.weights)


def test_auroc_counts_pairs_and_ties():
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True])) == 0.75
    assert auroc(np.array([1.0, 1.0]), np.array([True, False])) == 0.5
    assert np.isnan(auroc(np.array([1.0, 2.0]), np.array([True, True])))


def test_flagged_frames_are_three_db_below_their_rollouts_median():
    psnr = np.array([[30.0, 29.0, 26.5, 31.0, 30.0], [40.0, 40.0, 36.0, 38.0, 40.0]])
    assert flagged_frames(psnr).tolist() == [[False, False, True, False, False], [False, False, True, False, False]]
    assert bad_frames(np.array([[23.0, 23.5, 23.9]])).all()


# ---------------------------------------------------------------- the action-support gate
def gate_model(action_support):
    model = tiny_world_model(condition_views=())
    model.config.action_min, model.config.action_max = [-0.05] * 20, [0.05] * 20
    model.sampler.action_support = action_support
    model.action_low.fill_(-0.05)
    model.action_high.fill_(0.05)
    return model


def rollout(model, actions, drop=False):
    start = np.full((1, 1, 64, 64, 3), 120, np.uint8)
    return model.rollout(start, actions[None], generator=torch.Generator().manual_seed(0), drop_actions=drop)


def test_an_action_outside_the_training_support_is_read_as_the_null_action():
    model = gate_model(3.0)
    far = np.full((4, 20), 4.0, np.float32)  # 3.95 beyond the range: more than 3 training std (1 here)
    assert bool(model.out_of_support(torch.from_numpy(far)[None]).all())
    assert torch.equal(rollout(model, far), rollout(model, far, drop=True))
    near = np.full((4, 20), 0.04, np.float32)
    assert not bool(model.out_of_support(torch.from_numpy(near)[None]).any())
    assert not torch.equal(rollout(model, near), rollout(model, near, drop=True))


def test_without_action_support_every_action_is_read():
    model = gate_model(None)
    far = np.full((4, 20), 4.0, np.float32)
    assert not bool(model.out_of_support(torch.from_numpy(far)[None]).any())
    assert not torch.equal(rollout(model, far), rollout(model, far, drop=True))


def test_action_support_must_not_be_negative():
    with pytest.raises(ValueError, match="action_support"):
        SamplerDefaults(action_support=-1.0)


def test_one_sampling_step_has_no_disagreement_and_two_have_some():
    from wmgym.model.imagination import Imagination

    model = tiny_world_model()
    start = np.full((2, 1, 64, 64, 3), 120, np.uint8)
    for steps, has_some in ((1, False), (2, True)):
        imagination = Imagination(model, 2, num_steps=steps)
        imagination.start(start, generator=torch.Generator().manual_seed(0))
        imagination.step(torch.zeros(2, 20), torch.Generator().manual_seed(1))
        assert imagination.disagreement.shape == (2,) and bool((imagination.disagreement > 1e-12).all()) == has_some
        assert bool((imagination.change > 0).all())


def test_both_env_checkers_pass_with_trust_in_the_infos(trusted_bundle):
    from gymnasium.utils.env_checker import check_env as gymnasium_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make("WMFold-v0", checkpoint=str(trusted_bundle), device="cpu", reward="none", use_success_judge=False)
    gymnasium_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)


def test_calibrate_trust_fits_a_calibration_the_env_then_reads(tiny_grippers_bundle, tmp_path):
    from wmgym.cli import main

    root = tmp_path / "bundle"
    shutil.copytree(tiny_grippers_bundle, root)
    main(["calibrate-trust", "--checkpoint", str(root), "--episodes", "3", "--horizon", "4", "--device", "cpu"])
    fitted = TrustCalibration.of_model_dir(Bundle.load(root).world_model_dir)
    assert fitted is not None and fitted.fitted_on["episodes_per_behaviour"] == 3 and fitted.fitted_on["frames"] == 6 * 3 * 4
    env = gym.make("WMFold-v0", checkpoint=str(root), device="cpu", reward="none", use_success_judge=False)
    env.reset(seed=0)
    assert 0.0 <= env.step(identity_action(0.08, 0.08))[-1]["trust"] <= 1.0
