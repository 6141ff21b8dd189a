"""Specs of `WMFold-v0`: WorldModelEnv, the batched vector env, registration, bundles (tiny models)."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import wmgym  # noqa: F401  (registers WMFold-v0)
from wmgym.actions import ACTION_HIGH, identity_action
from conftest import tiny_grasp_prior
from wmgym.envs.bundle import Bundle
from wmgym.envs.world_model_env import WorldModelEnv, WorldModelVectorEnv
from wmgym.sim.gripper import GRASP_WIDTH
from wmgym.sim.tasks import TASKS

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 64


@pytest.fixture(scope="module")
def bundle_dir(tiny_bundle):
    return tiny_bundle


def make(bundle_dir, **kwargs) -> gym.Env:
    return gym.make("WMFold-v0", checkpoint=str(bundle_dir), device="cpu", **kwargs)


def hold() -> np.ndarray:
    return identity_action(0.08, 0.08)


def test_bundle_banks_are_simfold_start_states(bundle_dir):
    bundle = Bundle.load(bundle_dir)
    assert bundle.start_frames.shape == (3, SIZE, SIZE, 3) and set(bundle.goals) == set(TASKS)
    sim = gym.make("SimFold-v0", resolution=SIZE)
    first, _ = sim.reset(seed=1_000_000 + 2)
    np.testing.assert_array_equal(bundle.start_frames[2], first)
    assert bundle.nearest_start(first) == 2


def test_missing_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="wmgym train-wm"):
        gym.make("WMFold-v0", checkpoint=str(tmp_path / "nowhere"))


def test_both_checkers_pass(bundle_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        gymnasium_check_env(make(bundle_dir).unwrapped, skip_render_check=False)
    sb3_check_env(make(bundle_dir).unwrapped, warn=False)


def test_shipped_default_bundle_makes_wmfold_and_passes_both_checkers():
    env = gym.make("WMFold-v0", device="cpu")  # no checkpoint: the bundle in wmgym/assets/wmfold
    core = env.unwrapped.core
    assert core.bundle.directory.name == "wmfold" and core.bundle.start_frames.shape[1:] == (SIZE, SIZE, 3)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, core.bundle.start_frames[core.bundle.nearest_start(obs)])
    for _ in range(2):
        obs, reward, terminated, truncated, info = env.step(hold())
        assert obs.shape == (SIZE, SIZE, 3) and isinstance(reward, float) and isinstance(info["success"], bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gymnasium_check_env(gym.make("WMFold-v0", device="cpu").unwrapped, skip_render_check=False)
    sb3_check_env(gym.make("WMFold-v0", device="cpu").unwrapped, warn=False)


def test_same_seed_same_frames_other_seed_differs(bundle_dir):
    def run(seed):
        env = make(bundle_dir)
        frames = [env.reset(seed=seed)[0]]
        rng = np.random.default_rng(0)
        for _ in range(3):
            frames.append(env.step(rng.uniform(ACTION_LOW_SAFE, ACTION_HIGH_SAFE).astype(np.float32))[0])
        return np.stack(frames)

    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[1:], c[1:])


def test_bf16_precision_is_taken_deterministic_and_checked(bundle_dir):
    def run(**kwargs):
        env = make(bundle_dir, **kwargs)
        frames, rng = [env.reset(seed=3)[0]], np.random.default_rng(0)
        for _ in range(2):
            frames.append(env.step(rng.uniform(ACTION_LOW_SAFE, ACTION_HIGH_SAFE).astype(np.float32))[0])
        return env, np.stack(frames).astype(np.float64)

    env, half = run(precision="bf16")
    assert env.unwrapped.core.model.sampler.precision == "bf16"
    np.testing.assert_array_equal(half, run(precision="bf16")[1])
    assert np.abs(half - run()[1]).mean() < 2.0  # rounding, not another rollout
    with pytest.raises(ValueError, match="precision must be one of"):
        make(bundle_dir, precision="fp16")


ACTION_LOW_SAFE = np.where(np.arange(20) % 10 == 9, 0.0, -ACTION_HIGH * 0.5)
ACTION_HIGH_SAFE = ACTION_HIGH * 0.5


def test_reward_is_the_sum_of_named_terms_and_types_are_python(bundle_dir):
    env = make(bundle_dir, reward="lpips-offline")
    env.reset(seed=0, options={"goal_image": np.zeros((32, 32, 3), np.uint8)})  # resized to 64x64
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(hold())
        assert type(reward) is float and type(terminated) is bool and type(truncated) is bool
        assert type(info["success"]) is bool and set(info["reward_terms"]) == {"lpips"}
        assert reward == pytest.approx(sum(info["reward_terms"].values()))
        assert obs.dtype == np.uint8 and obs.shape == (SIZE, SIZE, 3)


def test_reset_from_a_given_frame_returns_it_unchanged(bundle_dir):
    frame = gym.make("SimFold-v0", resolution=SIZE).reset(seed=11)[0]
    env = make(bundle_dir)
    obs, info = env.reset(seed=0, options={"frame": frame, "goal_text": "fold the left sleeve onto the body"})
    np.testing.assert_array_equal(obs, frame)
    assert info["goal_text"] == "fold the left sleeve onto the body"
    np.testing.assert_array_equal(env.unwrapped.core.frames[0, 0].numpy(), frame)
    _, info = env.reset(seed=0, options={"task": "fold_right_sleeve"})  # a task for this episode only
    assert info["task"] == "fold_right_sleeve" and info["goal_text"] == "fold the right sleeve onto the body"
    assert env.reset(seed=0)[1]["task"] == "fold_half"
    with pytest.raises(ValueError, match="fold_half"):
        env.reset(seed=0, options={"task": "fold_socks"})


def test_truncates_at_the_horizon_and_success_judge_terminates(bundle_dir):
    env = make(bundle_dir, max_episode_steps=3, use_success_judge=False)
    env.reset(seed=0)
    flags = [env.step(hold())[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    direct = WorldModelEnv(checkpoint=str(bundle_dir), device="cpu", max_episode_steps=3, use_success_judge=False)
    direct.reset(seed=0)
    assert [direct.step(hold())[2:4] for _ in range(3)] == flags  # the class's own horizon agrees with TimeLimit's
    always = make(bundle_dir, judge_threshold=0.0)  # p >= 0 always: the judge fires at once
    always.reset(seed=0)
    _, _, terminated, truncated, info = always.step(hold())
    assert terminated and not truncated and info["success"] is True


def test_bad_input_is_rejected_clearly(bundle_dir):
    env = make(bundle_dir)
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.step(hold())
    env.reset(seed=0)
    for bad, match in [(np.zeros(19, np.float32), "shape"), (np.full(20, np.nan, np.float32), "NaN"),
                       (np.array(["a"] * 20), "real numbers"), (np.full(20, 5.0, np.float32), "bounds")]:
        with pytest.raises(ValueError, match=match) as error:
            env.unwrapped.step(bad)
        assert "rot6d" in str(error.value) or "6-D" in str(error.value) or "layout" in str(error.value).lower()
    with pytest.raises(ValueError, match="fold_half"):
        make(bundle_dir, task="fold_socks")
    with pytest.raises(ValueError, match="videoclip"):
        make(bundle_dir, reward="cosine")
    with pytest.raises(ValueError, match="goal_image"):
        env.reset(options={"goal_image": np.zeros((8, 8), np.uint8)})


def test_vector_env_is_batched_and_autoresets_next_step(bundle_dir):
    envs = gym.make_vec("WMFold-v0", num_envs=3, checkpoint=str(bundle_dir), device="cpu", max_episode_steps=2,
                        use_success_judge=False, reward="lpips-offline")
    assert isinstance(envs, WorldModelVectorEnv) and envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (3, SIZE, SIZE, 3)
    actions = np.stack([hold()] * 3)
    calls = []
    original = envs.core.model.denoiser.forward
    envs.core.model.denoiser.forward = lambda *a, **k: (calls.append(a[0].shape[0]), original(*a, **k))[1]
    _, rewards, terminated, truncated, info = envs.step(actions)
    assert set(calls) == {3}  # every denoiser call carries the whole batch
    assert rewards.shape == (3,) and not truncated.any()
    np.testing.assert_allclose(rewards, info["reward_terms"]["lpips"])
    _, _, _, truncated, _ = envs.step(actions)
    assert truncated.all()
    obs, rewards, terminated, truncated, _ = envs.step(actions)  # the autoreset step
    assert not (terminated | truncated).any() and (rewards == 0).all()
    assert all(any(np.array_equal(o, s) for s in Bundle.load(bundle_dir).start_frames) for o in obs)


def test_vector_env_row_matches_single_env_after_its_own_reset(bundle_dir):
    # One env restarting from a frame inside a running batch sees what a fresh env sees:
    # with the history noise disabled the frames depend only on the frame and the actions.
    envs = WorldModelVectorEnv(2, checkpoint=str(bundle_dir), device="cpu", use_success_judge=False, reward="none",
                               num_steps=1, max_episode_steps=2)
    envs.reset(seed=0)
    start = Bundle.load(bundle_dir).start_frames[1]
    single = WorldModelEnv(checkpoint=str(bundle_dir), device="cpu", use_success_judge=False, reward="none", num_steps=1)
    for env in (envs, single):
        env.core.model.sampler.history_timestep = -1  # clean history
        env.core.model.denoiser.forward = _deterministic(env.core.model.denoiser.forward)
    single.reset(options={"frame": start})
    rng = np.random.default_rng(0)
    actions = rng.uniform(ACTION_LOW_SAFE, ACTION_HIGH_SAFE, size=(4, 2, 20)).astype(np.float32)
    envs.step(actions[0])
    envs.step(actions[1])  # both truncated: the next step resets them (bank frames)
    envs.step(actions[2])
    envs.core.reset_rows([1], np.random.default_rng(0), {"frame": start})  # row 1 restarts from `start`
    batched = envs.step(np.stack([actions[3, 0], actions[3, 1]]))[0][1]
    np.testing.assert_array_equal(batched, single.step(actions[3, 1])[0])


def _deterministic(forward):
    """The denoiser with the noisy input zeroed: outputs depend on history and actions only."""
    def wrapped(noisy, *args, **kwargs):
        if kwargs.get("write_cache"):
            return forward(noisy, *args, **kwargs)
        return forward(torch.zeros_like(noisy), *args, **kwargs)
    return wrapped


def test_vector_env_returns_torch_tensors_on_the_device(bundle_dir):
    envs = WorldModelVectorEnv(2, checkpoint=str(bundle_dir), device="cpu", return_torch=True, reward="lpips-offline")
    obs, _ = envs.reset(seed=0)
    assert isinstance(obs, torch.Tensor) and obs.dtype == torch.uint8
    obs, rewards, terminated, truncated, _ = envs.step(torch.from_numpy(np.stack([hold()] * 2)))
    assert all(isinstance(x, torch.Tensor) and x.device == envs.core.device for x in (obs, rewards, terminated, truncated))


def test_record_video_works_on_render(bundle_dir, tmp_path):
    env = gym.wrappers.RecordVideo(make(bundle_dir, render_mode="rgb_array"), str(tmp_path))
    env.reset(seed=0)
    for _ in range(3):
        env.step(hold())
    env.close()
    assert list(tmp_path.glob("*.mp4"))


def test_render_returns_the_current_frame(bundle_dir):
    env = make(bundle_dir, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(env.render(), obs)
    obs = env.step(hold())[0]
    np.testing.assert_array_equal(env.render(), obs)


def test_sb3_adapter_same_step_autoreset_and_terminal_observation(bundle_dir):
    from wmgym.envs.sb3 import WMFoldVecEnv

    venv = WMFoldVecEnv(3, checkpoint=str(bundle_dir), device="cpu", max_episode_steps=2, use_success_judge=False, reward="lpips-offline")
    assert venv.action_space.low.min() == -1 and venv.action_space.high.max() == 1
    np.testing.assert_allclose(venv.to_env_actions(np.zeros((1, 20)))[0], identity_action(0.045, 0.045), atol=1e-7)
    full = venv.to_env_actions(np.ones((1, 20)))[0]
    np.testing.assert_allclose(full[[0, 1, 2, 9]], ACTION_HIGH[[0, 1, 2, 9]])  # positions and width: the bounds
    from wmgym.actions import rot6d_to_matrix
    corners = venv.to_env_actions(np.random.default_rng(0).choice([-1.0, 1.0], size=(256, 20)))
    rot6d_to_matrix(np.concatenate([corners[:, 3:9], corners[:, 13:19]]))  # no corner of the box is a degenerate rotation
    venv.seed(0)
    obs = venv.reset()
    assert obs.shape == (3, SIZE, SIZE, 3) and obs.dtype == np.uint8
    zero = np.zeros((3, 20), np.float32)  # the middle of the box: hold still
    _, rewards, dones, infos = venv.step(zero)
    assert not dones.any() and rewards.dtype == np.float32
    obs, _, dones, infos = venv.step(zero)
    assert dones.all()
    starts = Bundle.load(bundle_dir).start_frames
    for o, info in zip(obs, infos):
        assert info["TimeLimit.truncated"] and info["terminal_observation"].shape == (SIZE, SIZE, 3)
        assert any(np.array_equal(o, s) for s in starts)  # already the next episode's start


def test_ppo_cnn_policy_trains_on_the_batched_adapter(bundle_dir):
    from stable_baselines3 import PPO

    from wmgym.envs.sb3 import WMFoldVecEnv

    venv = WMFoldVecEnv(4, checkpoint=str(bundle_dir), device="cpu", use_success_judge=False, reward="lpips-offline")
    model = PPO("CnnPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters()))


def test_reachable_through_the_module_prefix_and_kwargs_override(bundle_dir):
    env = gym.make("wmgym:WMFold-v0", checkpoint=str(bundle_dir), device="cpu", task="fold_left_sleeve", resolution=32,
                   num_steps=1, reward="none", use_success_judge=False)
    obs, info = env.reset(seed=0)
    assert obs.shape == (32, 32, 3) and info["task"] == "fold_left_sleeve"
    assert env.unwrapped.core.imagination.num_steps == 1 and env.unwrapped.core.head is None
    assert env.spec.max_episode_steps == 16


def test_cached_videoclip_features_equal_encoding_the_clip(bundle_dir):
    envs = gym.make_vec("WMFold-v0", num_envs=3, checkpoint=str(bundle_dir), device="cpu", max_episode_steps=None)
    core = envs.unwrapped.core
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    for t in range(20):  # past the initial frame buffer (17), so it grows; row 1 restarts midway
        core.step(rng.uniform(ACTION_LOW_SAFE, ACTION_HIGH_SAFE, size=(3, 20)).astype(np.float32))
        if t == 6:
            core.reset_rows([1], np.random.default_rng(1))
        rows = [0, 1, 2]
        cached = core.videoclip.embeddings_of_features(core._clip_features(rows))
        direct = core.videoclip.video_embeddings(core._clips(rows, core.videoclip.model.config.num_frames))
        torch.testing.assert_close(cached, direct, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- grippers-conditioned world model


def test_grippers_conditioned_bundle_passes_both_checkers(tiny_grippers_bundle):
    env = make(tiny_grippers_bundle)
    gymnasium_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(make(tiny_grippers_bundle))


def test_conditioned_env_feeds_the_simulators_grippers_view(tiny_grippers_bundle):
    bundle = Bundle.load(tiny_grippers_bundle)
    sim = gym.make("SimFold-v0", resolution=SIZE)
    frame, _ = sim.reset(seed=1_000_000 + 2)  # bank start 2
    env = make(tiny_grippers_bundle)
    env.reset(seed=0, options={"frame": frame})
    core = env.unwrapped.core
    np.testing.assert_array_equal(core.grippers.tracks.state(0).poses, bundle.start_grippers[2].poses)
    seen = []
    original = core.imagination.step
    core.imagination.step = lambda actions, generator, conditions=None, **kw: seen.append(conditions.views["grippers"]) or original(
        actions, generator, conditions, **kw)
    for _ in range(3):
        action = sim.unwrapped.expert_action()
        sim.step(action)
        env.step(action)
        np.testing.assert_array_equal(seen[-1][0, 0].cpu().numpy(), sim.unwrapped.views()["grippers"])


def test_a_simfold_state_starts_an_episode_without_gripper_internals(tiny_grippers_bundle):
    """`reset(options={"start": sim.unwrapped.state()})` is the frame and the grippers of that state."""
    from wmgym.sim.gripper_track import GripperState

    sim = gym.make("SimFold-v0", resolution=SIZE)
    frame, _ = sim.reset(seed=11)
    state = sim.unwrapped.state()
    np.testing.assert_array_equal(state.frame, frame)
    runs = []
    for options in ({"start": state}, {"frame": frame, "grippers": GripperState.of_world(sim.unwrapped.world)}):
        env = make(tiny_grippers_bundle)
        first, _ = env.reset(seed=3, options=options)
        runs.append([first] + [env.step(hold())[0] for _ in range(2)])
    np.testing.assert_array_equal(np.stack(runs[0]), np.stack(runs[1]))
    np.testing.assert_allclose(env.unwrapped.core.grippers.tracks.state(0).widths, state.grippers.widths, atol=1e-6)  # held still
    with pytest.raises(ValueError, match="without 'frame' and 'grippers'"):
        env.reset(options={"start": state, "frame": frame})
    with pytest.raises(ValueError, match="StartState"):
        env.reset(options={"start": frame})


def test_conditioned_frames_depend_on_the_grippers(tiny_grippers_bundle):
    bundle = Bundle.load(tiny_grippers_bundle)
    env = make(tiny_grippers_bundle)
    frame = bundle.start_frames[0]
    a, _ = env.reset(seed=5, options={"frame": frame})
    a = env.step(hold())[0]
    b, _ = env.reset(seed=5, options={"frame": frame, "grippers": bundle.start_grippers[1]})
    b = env.step(hold())[0]
    assert not np.array_equal(a, b)  # same frame, seed and action; other grippers
    with pytest.raises(ValueError, match="GripperState"):
        env.reset(options={"grippers": "left"})


def test_conditioned_model_needs_the_bundles_start_grippers(tiny_grippers_bundle, tmp_path):
    import shutil

    from wmgym.envs.bundle import GRIPPERS_FILE

    copy = tmp_path / "old_bundle"
    shutil.copytree(tiny_grippers_bundle, copy)
    (copy / GRIPPERS_FILE).unlink()
    assert Bundle.load(copy).start_grippers is None
    with pytest.raises(FileNotFoundError, match="remake it with `wmgym bundle`"):
        make(copy)


# ---------------------------------------------------------------- pose-conditioned world model


def test_pose_conditioned_bundle_passes_both_checkers_and_feeds_the_simulators_poses(tiny_pose_bundle):
    gymnasium_check_env(make(tiny_pose_bundle).unwrapped, skip_render_check=True)
    sb3_check_env(make(tiny_pose_bundle))
    sim = gym.make("SimFold-v0", resolution=SIZE)
    frame, _ = sim.reset(seed=1_000_000 + 1)  # bank start 1
    env = make(tiny_pose_bundle)
    env.reset(seed=0, options={"frame": frame})
    core = env.unwrapped.core
    seen = []
    original = core.imagination.step
    core.imagination.step = lambda actions, generator, conditions=None, **kw: seen.append(
        (conditions.views["grippers"], conditions.vectors["poses"][:, 0])) or original(actions, generator, conditions, **kw)
    for _ in range(3):
        action = sim.unwrapped.expert_action()
        sim.step(action)
        env.step(action)
        world = sim.unwrapped.world
        views, poses = seen[-1]
        np.testing.assert_array_equal(views[0, 0].cpu().numpy(), sim.unwrapped.views()["grippers"])
        np.testing.assert_allclose(poses[0].cpu().numpy(), [*world.poses[0][:3, 3], world.widths[0], *world.poses[1][:3, 3],
                                                            world.widths[1]], atol=1e-6)


# ---------------------------------------------------------------- held-conditioned world model


def _record_held(core) -> list:
    """Wrap `core.imagination.step` (after reset: a full reset makes a new Imagination) to record
    the grasp state each step gives the model."""
    seen, original = [], core.imagination.step
    core.imagination.step = lambda actions, generator, conditions=None, **kw: seen.append(
        conditions.vectors["held"][:, 0].cpu().numpy()) or original(actions, generator, conditions, **kw)
    return seen


def test_held_conditioned_bundle_passes_both_checkers(tiny_held_bundle):
    gymnasium_check_env(make(tiny_held_bundle).unwrapped, skip_render_check=True)
    sb3_check_env(make(tiny_held_bundle))


def test_held_conditioned_env_draws_the_grasp_state_once_per_closing_from_the_prior(tiny_held_bundle):
    # open, open, left closes, both closed, both closed, left opens
    widths = [(0.08, 0.08), (0.08, 0.08), (0.0, 0.08), (0.0, 0.0), (0.0, 0.0), (0.08, 0.0)]
    start, frames = Bundle.load(tiny_held_bundle).start_frames[0], {}
    for bias in (20.0, -20.0):  # the prior says every closing holds / none does
        env = make(tiny_held_bundle)
        core = env.unwrapped.core
        core.model.grasp_prior = tiny_grasp_prior(bias)
        env.reset(seed=3, options={"frame": start})
        seen = _record_held(core)
        frames[bias] = [env.step(identity_action(*w))[0] for w in widths]
        held = np.concatenate(seen)  # (steps, 2)
        closed = np.array(widths) < GRASP_WIDTH
        np.testing.assert_array_equal(held, closed if bias > 0 else np.zeros_like(closed))
    assert not np.array_equal(frames[20.0][-1], frames[-20.0][-1])  # same seed and actions; the grasp state differs
    np.testing.assert_array_equal(frames[20.0][0], frames[-20.0][0])  # ... and nothing before the first closing


def test_held_draws_are_one_per_closing_and_follow_the_probability(tiny_held_bundle):
    """With p(held) = 1/2 the draw is made when a hand closes and kept until it opens."""
    env = make(tiny_held_bundle)
    core = env.unwrapped.core
    core.model.grasp_prior = tiny_grasp_prior(0.0)
    start = Bundle.load(tiny_held_bundle).start_frames[0]
    runs = []
    for seed in range(24):
        env.reset(seed=seed, options={"frame": start})
        seen = _record_held(core)
        for w in [(0.08, 0.08), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)]:
            env.step(identity_action(*w))
        held = np.concatenate(seen)
        assert (held[0] == 0).all()
        assert (held[1:] == held[1]).all()  # one draw for the whole closing
        runs.append(held[1])
    rate = np.mean(runs)
    assert 0.2 < rate < 0.8  # ~ sigmoid(0) = 0.5 over 48 draws
