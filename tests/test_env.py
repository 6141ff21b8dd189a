"""Specs of `SimFold-v0`, the reference simulator as a Gymnasium environment."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import wmgym  # noqa: F401  (registers SimFold-v0)
from wmgym.actions import ACTION_HIGH, identity_action
from wmgym.sim.tasks import TASKS, make_task


def make_env(**kwargs) -> gym.Env:
    return gym.make("SimFold-v0", **kwargs)


def hold(info) -> np.ndarray:
    """The action that keeps both grippers still at their current widths."""
    return identity_action(*info["widths"])


def expert_rollout(env, seed: int):
    """Reset with `seed`, then follow the scripted demonstrator until the episode ends."""
    observation, info = env.reset(seed=seed)
    observations, actions, rewards, infos = [observation], [], [], [info]
    while True:
        action = env.unwrapped.expert_action()
        observation, reward, terminated, truncated, info = env.step(action)
        observations.append(observation)
        actions.append(action)
        rewards.append(reward)
        infos.append(info)
        if terminated or truncated:
            return np.array(observations), np.array(actions), np.array(rewards), infos, terminated, truncated


# API conformance


def test_passes_the_gymnasium_env_checker():
    env = make_env()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gymnasium_check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []


def test_passes_the_stable_baselines3_env_checker():
    env = make_env()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(env.unwrapped)
    # SB3 recommends a [-1, 1] action box; ours is in metres and unit 6-D rotations, by design.
    unexpected = [str(w.message) for w in caught if "symmetric and normalized Box action space" not in str(w.message)]
    assert unexpected == []


# Determinism


def test_same_seed_same_rollout():
    first = expert_rollout(make_env(task="fold_right_sleeve"), seed=5)
    env = make_env(task="fold_right_sleeve")
    expert_rollout(env, seed=6)  # an episode in between must leave nothing behind
    again = expert_rollout(env, seed=5)
    for name, a, b in zip(("observations", "actions", "rewards"), first[:3], again[:3]):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert [i["score"] for i in first[3]] == [i["score"] for i in again[3]]
    other = expert_rollout(make_env(task="fold_right_sleeve"), seed=6)
    assert not np.array_equal(other[0][0], first[0][0])


# Rewards and episode end


def test_reward_is_the_sum_of_its_terms_and_sums_to_the_score_gain():
    observations, actions, rewards, infos, _, _ = expert_rollout(make_env(task="fold_half"), seed=3)
    assert infos[0]["reward_terms"] == {"score_improvement": 0.0}
    for reward, info in zip(rewards, infos[1:]):
        assert reward == sum(info["reward_terms"].values())
    assert rewards.sum() == pytest.approx(infos[-1]["score"] - infos[0]["score"], abs=1e-9)
    assert rewards.sum() > 0.7  # the expert folded it


@pytest.mark.parametrize("task", TASKS)
def test_expert_episode_terminates_on_success(task):
    env = make_env(task=task, horizon=16)
    _, actions, _, infos, terminated, truncated = expert_rollout(env, seed=0)
    assert terminated and not truncated
    assert len(actions) < 16
    assert infos[-1]["success"] and infos[-1]["task"] == task
    assert infos[-1]["score"] >= make_task(task).success_threshold
    assert not any(info["success"] for info in infos[:-1])


def test_holding_still_truncates_at_horizon():
    env = make_env(horizon=4)
    _, info = env.reset(seed=0)
    for step in range(1, 5):
        _, reward, terminated, truncated, info = env.step(hold(info))
        assert reward == 0.0 and not terminated
        assert truncated == (step == 4)


def test_info_reports_the_gripper_state():
    env = make_env()
    _, info = env.reset(seed=0)
    for key in ("left_pose", "right_pose"):
        pose = info[key]
        assert pose.shape == (4, 4)
        np.testing.assert_allclose(pose[3], [0, 0, 0, 1])
        np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-9)
    assert info["widths"].shape == (2,)
    assert isinstance(info["score"], float) and isinstance(info["success"], bool)
    # Move the left gripper 5 cm along its own x axis and set new widths.
    action = identity_action(0.05, 0.03)
    action[0] = 0.05
    left, right = info["left_pose"], info["right_pose"]
    _, _, _, _, info = env.step(action)
    np.testing.assert_allclose(info["left_pose"][:3, 3], left[:3, 3] + 0.05 * left[:3, 0], atol=1e-7)
    np.testing.assert_allclose(info["right_pose"], right, atol=1e-9)
    np.testing.assert_allclose(info["widths"], [0.05, 0.03], atol=1e-7)


# Input validation


@pytest.mark.parametrize(
    "action",
    [
        np.zeros(19, np.float32),
        np.zeros((2, 20), np.float32),
        np.where(np.arange(20) == 4, np.nan, identity_action(0.08, 0.08)),
        identity_action(0.08, 0.08) + np.eye(20, dtype=np.float32)[2] * 0.2,  # 20 cm in one step
        np.where(np.arange(20) == 19, ACTION_HIGH[19] + 0.01, identity_action(0.08, 0.08)),
        np.where(np.arange(20) == 9, -0.01, identity_action(0.08, 0.08)),
    ],
    ids=["short", "batch", "nan", "too-far", "too-wide", "negative-width"],
)
def test_bad_actions_raise_and_change_nothing(action):
    env = make_env()
    _, info = env.reset(seed=0)
    world = env.unwrapped.world
    positions, poses = world.positions.copy(), world.poses.copy()
    with pytest.raises(ValueError, match="action"):
        env.step(action)
    assert world.step_count == 0
    np.testing.assert_array_equal(world.positions, positions)
    np.testing.assert_array_equal(world.poses, poses)
    env.step(hold(info))  # still usable
    assert world.step_count == 1


def test_step_before_reset_raises():
    env = make_env().unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.step(identity_action(0.08, 0.08))
    with pytest.raises(RuntimeError, match="reset"):
        env.expert_action()


def test_task_none_draws_every_task_across_resets():
    env = make_env(task=None)
    tasks = [env.reset(seed=seed)[1]["task"] for seed in range(12)]
    assert set(tasks) == set(TASKS)
    assert [env.reset(seed=seed)[1]["task"] for seed in range(12)] == tasks  # drawn from the seed


def test_render_returns_the_observation():
    env = make_env(render_mode="rgb_array")
    observation, info = env.reset(seed=0)
    np.testing.assert_array_equal(env.render(), observation)
    observation, *_ = env.step(env.unwrapped.expert_action())
    np.testing.assert_array_equal(env.render(), observation)
    plain = make_env().unwrapped
    plain.reset(seed=0)
    assert plain.render() is None  # no render_mode, no frame


# Configuration


@pytest.mark.parametrize("resolution, shape", [(64, (64, 64, 3)), (128, (128, 128, 3)), ((320, 512), (320, 512, 3))])
def test_observations_have_the_requested_resolution(resolution, shape):
    env = make_env(resolution=resolution)
    assert env.observation_space.shape == shape
    observation, info = env.reset(seed=0)
    assert observation.shape == shape and observation.dtype == np.uint8
    observation, *_ = env.step(hold(info))
    assert env.observation_space.contains(observation)
    assert all(view.shape == shape for view in env.unwrapped.views().values())


def test_too_small_resolution_raises_naming_the_camera_model():
    with pytest.raises(ValueError, match="fisheye camera model"):
        make_env(resolution=8)


def test_unknown_task_raises_naming_the_valid_tasks():
    with pytest.raises(ValueError, match="fold_socks") as error:
        make_env(task="fold_socks")
    assert all(name in str(error.value) for name in TASKS)
