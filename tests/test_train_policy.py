"""Specs of policy learning inside imagination: behaviour cloning, PPO, judge-filtered fine-tuning (tiny models)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wmgym.actions import ACTION_HIGH, ACTION_LOW, identity_action
from wmgym.data.generate import GenerateConfig, generate
from wmgym.envs.sb3 import WMFoldVecEnv, from_normalized_actions, to_normalized_actions
from wmgym.train.policy import TrainPolicyConfig, behaviour_clone, load_demonstrations, make_ppo, train_policy

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("demos") / "fold.zarr"
    generate(GenerateConfig(out=str(path), episodes=3, resolution=64, tasks=("fold_half",), workers=1, show_progress=False))
    return path


def test_normalised_actions_round_trip():
    actions = np.random.default_rng(0).uniform(-0.1, 0.1, (5, 20)).astype(np.float32)  # rotations: identity + noise
    actions += identity_action(0.05, 0.05)
    actions[:, [9, 19]] = 0.03
    actions = np.clip(actions, ACTION_LOW, ACTION_HIGH)  # valid env actions
    np.testing.assert_allclose(from_normalized_actions(to_normalized_actions(actions)), actions, atol=1e-6)


def test_demonstrations_are_the_successful_demo_frames_of_the_task(demo_store):
    from wmgym.data.store import EpisodeStore

    frames, actions = load_demonstrations(demo_store, "fold_half", split="all")
    store = EpisodeStore.open(demo_store)
    episodes = [store.read_episode(i) for i in range(store.num_episodes)]
    chosen = [e for e in episodes if e["kind"] == "demo" and e["success"]]
    assert len(chosen) >= 1 and len(frames) == 16 * len(chosen)
    np.testing.assert_array_equal(frames[:16], chosen[0]["frames"][:16])
    np.testing.assert_array_equal(actions[:16], chosen[0]["actions"])
    with pytest.raises(ValueError, match="not in"):
        load_demonstrations(demo_store, "fold_left_sleeve")


def test_behaviour_cloning_fits_the_demonstrations(tiny_bundle, demo_store):
    frames, actions = load_demonstrations(demo_store, "fold_half", split="all")
    venv = WMFoldVecEnv(2, checkpoint=str(tiny_bundle), reward="none", use_success_judge=False, device="cpu")
    model = make_ppo(venv, TrainPolicyConfig(out="unused", n_steps=8))
    losses = behaviour_clone(model, frames, actions, epochs=25, batch_size=16, learning_rate=1e-3)
    assert losses[-1] < 0.3 * losses[0]
    predicted = from_normalized_actions(model.predict(frames[:4], deterministic=True)[0])
    assert np.abs(predicted - actions[:4]).mean() < np.abs(actions[:4] - actions.mean(0)).mean() + 1e-3


def test_train_policy_runs_every_stage(tiny_bundle, demo_store, tmp_path):
    config = TrainPolicyConfig(out=str(tmp_path / "pi"), data=str(demo_store), checkpoint=str(tiny_bundle), bc_epochs=1,
                               ppo_timesteps=16, num_envs=2, n_steps=8, filtered_rounds=1, filtered_episodes=4,
                               eval_episodes=1, judge_threshold=0.0, device="cpu")
    metrics = train_policy(config)
    saved = json.loads((tmp_path / "pi" / "metrics.json").read_text())
    assert saved["bc"]["pairs"] > 0 and saved["ppo"]["timesteps"] >= 16
    # judge threshold 0 accepts every imagined episode at its first frame: one (frame, action) pair each
    assert saved["filtered"][0]["accepted_rate"] == 1.0 and saved["filtered"][0]["pairs"] == 4
    assert 0.0 <= metrics["filtered"][0]["sim"]["success_rate"] <= 1.0
    assert all((tmp_path / "pi" / name).is_file() for name in ("bc.zip", "ppo.zip", "filtered.zip"))


def test_train_policy_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        train_policy(TrainPolicyConfig(out=str(tmp_path), task="fold_socks", ppo_timesteps=1))
    with pytest.raises(ValueError, match="nothing to train"):
        train_policy(TrainPolicyConfig(out=str(tmp_path)))
