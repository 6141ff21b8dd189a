"""Specs of policy learning inside imagination: behaviour cloning, PPO, judge-filtered fine-tuning (tiny models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from wmgym.actions import ACTION_HIGH, ACTION_LOW, identity_action
from wmgym.data.generate import GenerateConfig, generate
from wmgym.eval.policies import make_policy
from wmgym.envs.sb3 import OPEN_WIDTH, WMFoldVecEnv, binarize_widths, from_normalized_actions, to_normalized_actions
from wmgym.train.policy import (ACTOR_PREFIXES, TrainPolicyConfig, behaviour_clone, evaluate_in_simulator, load_demonstrations, make_ppo,
                                stack_frames, train_policy, warm_up_critic, with_success_bonus)

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


def test_binary_gripper_thresholds_the_width_at_the_middle_of_its_range():
    actions = np.zeros((4, 20), np.float32)
    actions[:, 9] = [-1.0, -0.01, 0.01, 1.0]
    actions[:, 19] = [0.5, -0.5, 0.0, 2.0]
    env = from_normalized_actions(actions, binary_gripper=True)
    np.testing.assert_array_equal(env[:, 9], [0, 0, np.float32(OPEN_WIDTH), np.float32(OPEN_WIDTH)])
    np.testing.assert_array_equal(env[:, 19], [np.float32(OPEN_WIDTH), 0, 0, np.float32(OPEN_WIDTH)])
    others = np.setdiff1d(np.arange(20), [9, 19])
    np.testing.assert_array_equal(env[:, others], from_normalized_actions(actions)[:, others])  # only widths change
    np.testing.assert_allclose(from_normalized_actions(actions)[:, 9], [0.0, 0.04455, 0.04545, 0.09], atol=1e-6)  # default: linear
    rows = [0, 1, 3]  # (not row 2: exactly on the threshold, which float32 rounding may put either side in env units)
    np.testing.assert_array_equal(binarize_widths(from_normalized_actions(actions))[rows], env[rows])  # same rule in env units


def test_frame_stacks_hold_each_episodes_previous_frames():
    frames = np.arange(5, dtype=np.uint8).reshape(5, 1, 1, 1).repeat(3, axis=-1) + 1  # frame i is all i + 1
    stacked = stack_frames(frames, [3, 2], n_stack=3)  # episodes: frames 1, 2, 3 then 4, 5
    assert stacked.shape == (5, 1, 1, 9)
    np.testing.assert_array_equal(stacked[:, 0, 0, ::3], [[0, 0, 1], [0, 1, 2], [1, 2, 3], [0, 0, 4], [0, 4, 5]])
    np.testing.assert_array_equal(stack_frames(frames, [5], n_stack=1), frames)


def test_stacked_demonstrations_align_frames_and_actions(demo_store):
    single, actions = load_demonstrations(demo_store, "fold_half", split="all")
    stacked, stacked_actions = load_demonstrations(demo_store, "fold_half", split="all", n_stack=3)
    assert stacked.shape == (*single.shape[:3], 9)
    np.testing.assert_array_equal(stacked_actions, actions)
    np.testing.assert_array_equal(stacked[..., 6:], single)  # the newest frame is the frame the action was taken in
    np.testing.assert_array_equal(stacked[1:16, ..., 3:6], single[:15])  # then the one before it, in its episode
    assert not stacked[0, ..., :6].any() and not stacked[1, ..., :3].any()  # zeros before the episode's start
    if len(single) > 16:  # the second episode starts afresh
        assert not stacked[16, ..., :6].any()


def test_sb3_policy_stacks_frames_as_vec_frame_stack_does(tiny_bundle):
    from stable_baselines3.common.vec_env import VecFrameStack

    from wmgym.policies.base import SB3Policy, Start

    venv = VecFrameStack(WMFoldVecEnv(2, checkpoint=str(tiny_bundle), reward="none", use_success_judge=False, device="cpu",
                                      binary_gripper=True), 3, channels_order="last")
    venv.seed(0)
    seen = []

    class Recorder:  # stands in for an SB3 model: records what the policy hands it
        def predict(self, obs, deterministic=True):
            seen.append(obs.copy())
            return np.zeros((len(obs), 20), np.float32), None

    policy = SB3Policy(Recorder(), n_stack=3)
    obs = venv.reset()
    frames = venv.venv.get_images()
    policy.reset([Start("fold_half", 0)] * 2, np.stack(frames))
    for t in range(4):
        policy.act(np.stack(venv.venv.get_images()), t)
        np.testing.assert_array_equal(seen[-1], obs)
        obs, _, dones, _ = venv.step(np.zeros((2, 20), np.float32))
        assert not dones.any()
    policy.reset([Start("fold_half", 0)] * 2, np.stack(frames))
    policy.act(np.stack(frames), 0)
    assert not seen[-1][..., :6].any()  # a new episode's stack starts from zeros, as after VecFrameStack.reset
    venv.close()


def test_demonstrations_are_the_successful_demo_frames_of_the_task(demo_store):
    from wmgym.data.store import EpisodeStore

    frames, actions = load_demonstrations(demo_store, "fold_half", split="all")
    store = EpisodeStore.open(demo_store)
    episodes = [store.read_episode(i) for i in range(store.num_episodes)]
    chosen = [e for e in episodes if e["kind"] == "demo" and e["success"]]
    assert len(chosen) >= 1 and len(frames) == 16 * len(chosen)
    np.testing.assert_array_equal(frames[:16], chosen[0]["camera"][:16])
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
                               ppo_timesteps=16, critic_warmup_timesteps=16, num_envs=2, n_steps=8, filtered_rounds=1,
                               filtered_episodes=4, eval_episodes=1, judge_threshold=0.0, device="cpu")
    metrics = train_policy(config)
    saved = json.loads((tmp_path / "pi" / "metrics.json").read_text())
    assert saved["bc"]["pairs"] > 0 and saved["ppo"]["timesteps"] >= 32  # warm-up steps count too
    assert saved["random"]["sim"]["episodes"] == 1  # the random baseline on the same start states
    # judge threshold 0 accepts every imagined episode at its first frame: one (frame, action) pair each
    assert saved["filtered"][0]["accepted_rate"] == 1.0 and saved["filtered"][0]["pairs"] == 4
    assert 0.0 <= metrics["filtered"][0]["sim"]["success_rate"] <= 1.0
    assert all((tmp_path / "pi" / name).is_file() for name in ("bc.zip", "ppo.zip", "filtered.zip"))
    assert config.n_stack == 3 and not config.binary_gripper  # the defaults: stacked frames, continuous gripper
    assert PPO.load(tmp_path / "pi" / "bc.zip").observation_space.shape[0] == 9  # 3 frames x RGB (SB3 stores channels first)
    policy = make_policy(f"sb3:{tmp_path / 'pi' / 'bc.zip'}", 16)  # how eval-policies loads it
    assert policy.n_stack == 3 and not policy.to_env_actions.keywords["binary_gripper"]


def test_success_bonus_rewards_the_judges_verdict(tiny_bundle):
    # Judge threshold 0 accepts every first step: each env gets the bonus on top of a zero reward.
    venv = WMFoldVecEnv(2, checkpoint=str(tiny_bundle), reward="none", judge_threshold=0.0, device="cpu")
    assert with_success_bonus(venv, 0.0) is venv
    wrapped = with_success_bonus(venv, 2.5)
    wrapped.reset()
    _, rewards, dones, infos = wrapped.step(np.zeros((2, 20), np.float32))  # normalised: hold still, half open
    assert all(info["success"] for info in infos) and dones.all()
    np.testing.assert_allclose(rewards, [2.5, 2.5])
    judge_off = with_success_bonus(WMFoldVecEnv(2, checkpoint=str(tiny_bundle), reward="none", use_success_judge=False,
                                                device="cpu"), 2.5)
    judge_off.reset()
    _, rewards, _, _ = judge_off.step(np.zeros((2, 20), np.float32))
    np.testing.assert_allclose(rewards, [0.0, 0.0])  # no verdict, no bonus
    venv.close()
    judge_off.close()


@pytest.mark.filterwarnings("ignore:LPIPSHead is using a seeded random")
def test_critic_warm_up_trains_only_the_value_function(tiny_bundle):
    venv = WMFoldVecEnv(2, checkpoint=str(tiny_bundle), reward="lpips-offline", use_success_judge=False, device="cpu")
    model = make_ppo(venv, TrainPolicyConfig(out="unused", n_steps=8))
    assert not model.policy.share_features_extractor  # the critic has its own CNN
    before = {name: p.detach().clone() for name, p in model.policy.named_parameters()}
    warm_up_critic(model, 16)
    after = dict(model.policy.named_parameters())
    actor = {name for name in before if name.startswith(ACTOR_PREFIXES)}
    assert actor and all(torch.equal(before[name], after[name]) for name in actor)
    assert any(not torch.equal(before[name], after[name]) for name in before.keys() - actor)  # the critic learnt
    assert all(p.requires_grad for p in model.policy.parameters())  # the actor is trainable again
    assert model.policy.optimizer.param_groups[0]["lr"] == pytest.approx(TrainPolicyConfig(out="unused").ppo_learning_rate)
    venv.close()


def test_train_policy_single_frames_binary_gripper(tiny_bundle, demo_store, tmp_path):
    config = TrainPolicyConfig(out=str(tmp_path / "pi"), data=str(demo_store), checkpoint=str(tiny_bundle), bc_epochs=1,
                               num_envs=2, n_steps=8, eval_episodes=1, n_stack=1, binary_gripper=True, device="cpu")
    metrics = train_policy(config)
    assert metrics["bc"]["pairs"] > 0 and 0.0 <= metrics["bc"]["sim"]["success_rate"] <= 1.0
    model = PPO.load(tmp_path / "pi" / "bc.zip")
    assert model.observation_space.shape[0] == 3
    assert evaluate_in_simulator(model, "fold_half", 1)["episodes"] == 1  # n_stack inferred from the model: 1
    policy = make_policy(f"sb3:{tmp_path / 'pi' / 'bc.zip'}", 16)  # binary gripper read from metrics.json beside it
    assert policy.n_stack == 1
    size = model.observation_space.shape[1]
    widths = policy.act(np.zeros((2, size, size, 3), np.uint8), 0)[:, [9, 19]]
    assert np.all((widths == 0.0) | (widths == np.float32(OPEN_WIDTH)))


def test_train_policy_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        train_policy(TrainPolicyConfig(out=str(tmp_path), task="fold_socks", ppo_timesteps=1))
    with pytest.raises(ValueError, match="nothing to train"):
        train_policy(TrainPolicyConfig(out=str(tmp_path)))
    with pytest.raises(ValueError, match="critic_warmup_timesteps"):
        train_policy(TrainPolicyConfig(out=str(tmp_path), ppo_timesteps=8, critic_warmup_timesteps=-1))
