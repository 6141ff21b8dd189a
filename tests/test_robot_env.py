"""`wmgym/WorldModel-v0` and its robot bundle (issue 38): a world model trained on a robot store,
bundled with start and goal frames of held-out episodes, served as a Gymnasium env (tiny models,
16x24 frames, 7-D actions)."""

from __future__ import annotations

import json
from dataclasses import asdict

import gymnasium as gym
from pathlib import Path

import numpy as np
import pytest
import torch

import wmgym  # noqa: F401  (registers the envs)
from wmgym.data.dataset import split_episodes
from wmgym.data.robot_data import RobotRecord
from wmgym.data.store import EpisodeStore
from wmgym.envs.bundle import Bundle
from wmgym.envs.robot_bundle import RobotBundle, make_robot_bundle
from wmgym.envs.robot_env import RobotWorldModelEnv, RobotWorldModelVectorEnv
from wmgym.model.denoiser import DenoiserConfig
from wmgym.model.world_model import SamplerDefaults, WorldModel, WorldModelConfig

pytestmark = pytest.mark.usefixtures("one_thread")

ENV = "wmgym/WorldModel-v0"
NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
TASKS = ["put the cup in the sink", "open the drawer"]
H, W, EPISODES, FRAMES = 16, 24, 8, 6


def record(index: int) -> RobotRecord:
    rng = np.random.default_rng(index)
    return RobotRecord(camera=rng.integers(0, 256, (FRAMES, H, W, 3), dtype=np.uint8),
                       actions=rng.normal(size=(FRAMES, len(NAMES))).astype(np.float32),
                       timestamps=np.arange(FRAMES) / 5.0, task=TASKS[index % 2], source_index=index)


def tiny_model(height: int = H, width: int = W, action_dim: int = len(NAMES)) -> WorldModel:
    """A residual-prediction model with small random weights everywhere (so frames follow the
    actions) and no action range in its config (the action space falls back to mean +- 4 std)."""
    denoiser = DenoiserConfig(latent_channels=3, latent_height=height, latent_width=width, patch_size=8, width=32, depth=1,
                              num_heads=2, action_dim=action_dim)
    config = WorldModelConfig(height=height, width=width, denoiser=asdict(denoiser), prediction="residual",
                              sampler=asdict(SamplerDefaults(num_steps=2, window_frames=4)),
                              action_names=NAMES if action_dim == len(NAMES) else None,
                              action_mean=[0.1] * action_dim, action_std=[0.5] * action_dim)
    model = WorldModel(config, device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.denoiser.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("robot") / "robot.zarr"
    with EpisodeStore.create_robot(path, H, W, tasks=TASKS, action_names=NAMES, attrs={"camera": "wrist", "fps": 5.0}) as writer:
        writer.append([record(i) for i in range(EPISODES)])
    return path


@pytest.fixture(scope="module")
def run(store, tmp_path_factory):
    """A `wmgym train-wm` run directory: 2 training steps on the robot store."""
    from wmgym.train.wm_config import TrainWorldModelConfig
    from wmgym.train.world_model import train_world_model

    out = tmp_path_factory.mktemp("run") / "run"
    train_world_model(TrainWorldModelConfig(
        data=str(store), out=str(out), steps=2, batch_size=4, width=32, depth=1, num_heads=2, patch_size=4, warmup_steps=1,
        checkpoint_every=2, log_every=1, validate_every=100, val_batches=1, num_steps=2, device="cpu"))
    return out


@pytest.fixture(scope="module")
def bundle(store, tmp_path_factory):
    """A robot bundle of `tiny_model` with 4 starts (val_fraction 0.5)."""
    root = tmp_path_factory.mktemp("tiny")
    tiny_model().save_pretrained(root / "wm")
    return make_robot_bundle(root / "bundle", root / "wm", store, val_fraction=0.5, made_with="tests")


def make(bundle, **kwargs):
    return gym.make(ENV, checkpoint=str(bundle), device="cpu", **{"reward": "none", **kwargs})


def actions(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.1, 0.5, (n, len(NAMES))).astype(np.float32)


# ---------------------------------------------------------------- the bundle
def test_a_robot_bundle_holds_the_held_out_episodes_first_and_last_frames(store, run, tmp_path):
    out = make_robot_bundle(tmp_path / "b", run, store, num_start_frames=2, val_fraction=0.5)  # a run directory
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["kind"] == "robot" and meta["format_version"] == 1 and (meta["height"], meta["width"]) == (H, W)
    assert meta["camera"] == "wrist" and meta["action_names"] == NAMES and meta["fps"] == 5.0 and meta["tasks"] == TASKS
    val = [int(i) for i in split_episodes(EPISODES, "val", 0.5)][:2]
    assert meta["num_start_frames"] == 2 and meta["start_episodes"] == val and meta["start_split"] == "val"
    loaded = RobotBundle.load(out)
    source = EpisodeStore.open(store)
    for i, episode in enumerate(val):
        camera = source.read_episode(episode)["camera"]
        np.testing.assert_array_equal(loaded.start_frames[i], camera[0])
        np.testing.assert_array_equal(loaded.goals[i], camera[-1])
        assert loaded.start_tasks[i] == TASKS[episode % 2]
    model = WorldModel.from_pretrained(loaded.world_model_dir, device="cpu")
    assert model.config.features()["action"]["dim"] == 7 and model.config.camera == "wrist"
    # More starts asked than validation episodes: all of them; a store without a split: its first episodes.
    assert RobotBundle.load(make_robot_bundle(tmp_path / "all_val", run, store)).num_starts == len(split_episodes(EPISODES, "val"))
    everything = make_robot_bundle(tmp_path / "no_val", run, store, num_start_frames=3, val_fraction=0.0)
    assert json.loads((everything / "bundle.json").read_text())["start_episodes"] == [0, 1, 2]


def test_the_robot_bundle_follows_the_writer_rule(bundle, store, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    model_dir = bundle / "world_model"
    with pytest.raises(FileExistsError, match="not a bundle"):
        make_robot_bundle(foreign, model_dir, store)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    out = make_robot_bundle(tmp_path / "b", model_dir, store, num_start_frames=1)
    with pytest.raises(FileExistsError, match="already exists"):
        make_robot_bundle(out, model_dir, store)
    make_robot_bundle(out, model_dir, store, num_start_frames=2, val_fraction=0.5, overwrite=True)
    assert RobotBundle.load(out).num_starts == 2
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["b", "foreign"]  # nothing left beside


def test_a_model_that_does_not_fit_the_store_is_refused(store, tmp_path):
    for name, model, match in (("size", tiny_model(height=24, width=24), "24x24 frames but .* 16x24"),
                               ("actions", tiny_model(action_dim=6), "takes 6 action values but .* has 7")):
        model.save_pretrained(tmp_path / name)
        with pytest.raises(ValueError, match=match):
            make_robot_bundle(tmp_path / f"out_{name}", tmp_path / name, store)
        assert not (tmp_path / f"out_{name}").exists()
    with EpisodeStore.create(tmp_path / "sim.zarr", H, W, tasks=["fold_half"]):
        pass
    tiny_model().save_pretrained(tmp_path / "ok")
    with pytest.raises(ValueError, match="simulator episode store"):
        make_robot_bundle(tmp_path / "out_sim", tmp_path / "ok", tmp_path / "sim.zarr")
    with pytest.raises(FileNotFoundError, match="no world model"):
        make_robot_bundle(tmp_path / "out_none", tmp_path / "missing", store)


def test_each_bundle_loader_refuses_the_other_kind_and_damage_is_named(bundle, tmp_path):
    with pytest.raises(ValueError, match="is a robot bundle"):  # a robot bundle where WMFold-v0's is needed
        Bundle.load(bundle)
    wmfold = tmp_path / "wmfold"
    wmfold.mkdir()
    (wmfold / "bundle.json").write_text(json.dumps({"format_version": 1, "height": 64, "width": 64, "num_start_frames": 1,
                                                    "tasks": {"fold_half": {"caption": "fold it"}}}))
    with pytest.raises(ValueError, match="is a WMFold-v0 bundle"):
        RobotBundle.load(wmfold)
    with pytest.raises(ValueError, match="is a WMFold-v0 bundle"):
        make(wmfold)
    with pytest.raises(FileNotFoundError, match="no robot bundle"):
        RobotBundle.load(tmp_path / "nothing")
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(bundle, damaged)
    (damaged / "goals.png").unlink()
    with pytest.raises(FileNotFoundError, match="goals.png"):
        RobotBundle.load(damaged)
    (damaged / "bundle.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        RobotBundle.load(damaged)


# ---------------------------------------------------------------- the environment
def test_spaces_are_the_models_action_spec_and_the_checkers_pass(bundle, run, store, tmp_path):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = make(bundle, reward="lpips-offline", render_mode="rgb_array")
    assert env.observation_space == gym.spaces.Box(0, 255, (H, W, 3), np.uint8)
    space = env.action_space
    assert space.shape == (7,) and space.dtype == np.float32 and env.unwrapped.action_names == NAMES
    np.testing.assert_allclose(space.low, 0.1 - 4 * 0.5, rtol=1e-6)  # no range in the config: mean +- 4 std
    np.testing.assert_allclose(space.high, 0.1 + 4 * 0.5, rtol=1e-6)
    assert env.unwrapped.bounds_source == "mean +- 4 std" and env.spec.max_episode_steps == 32
    check_env(env.unwrapped)
    sb3_check_env(env)
    # A trained model's range is the action space: the model clamps to it.
    trained = gym.make(ENV, checkpoint=str(make_robot_bundle(tmp_path / "trained", run, store)), device="cpu", reward="none")
    config = WorldModel.from_pretrained(RobotBundle.load(tmp_path / "trained").world_model_dir, device="cpu").config
    np.testing.assert_array_equal(trained.action_space.low, np.float32(config.action_min))
    np.testing.assert_array_equal(trained.action_space.high, np.float32(config.action_max))
    assert trained.unwrapped.bounds_source == "training range"
    obs, _ = trained.reset(seed=0)
    assert trained.step(trained.action_space.sample())[0].shape == (H, W, 3)


def test_the_lpips_reward_is_the_change_of_distance_to_the_start_episodes_last_frame(bundle, tmp_path):
    env = make(bundle, reward="lpips-offline")
    _, info = env.reset(seed=0, options={"start": 1})
    np.testing.assert_array_equal(env.unwrapped.goal_image(), RobotBundle.load(bundle).goals[1])
    head = env.unwrapped.core.head
    before = float(env.unwrapped.core._scores([0])[0])
    obs, reward, terminated, truncated, info = env.step(actions(1)[0])
    after = float(env.unwrapped.core._scores([0])[0])
    assert set(info["reward_terms"]) == {"lpips"} and reward == pytest.approx(after - before, abs=1e-6)
    assert not terminated and head.calibration == "none"
    with pytest.raises(FileNotFoundError, match="lpips-offline"):  # real LPIPS without the trunk file: say what to do
        make(bundle, reward="lpips", lpips_trunk_weights=str(tmp_path / "alexnet.pth"))
    with pytest.raises(ValueError, match="unknown reward"):
        make(bundle, reward="videoclip")


def test_same_seed_and_actions_give_the_same_frames_which_are_the_models_rollout(bundle):
    def frames(seed: int, start=None) -> np.ndarray:
        env = make(bundle)
        out = [env.reset(seed=seed, options=None if start is None else {"start": start})[0]]
        out += [env.step(a)[0] for a in actions(4)]
        return np.stack(out)

    np.testing.assert_array_equal(frames(3), frames(3))
    assert not np.array_equal(frames(3, start=0), frames(4, start=0))  # another seed, other sampling noise
    # The env's persistent KV cache gives exactly `WorldModel.rollout`'s frames for the same noise.
    model = WorldModel.from_pretrained(RobotBundle.load(bundle).world_model_dir, device="cpu")
    seed = int(np.random.default_rng(3).integers(2**62))  # how reset(seed=3) seeds the env's generator
    start = RobotBundle.load(bundle).start_frames[2]
    expected = model.rollout(start[None, None], actions(4)[None], generator=torch.Generator().manual_seed(seed))[0]
    np.testing.assert_array_equal(frames(3, start=2)[1:], expected.numpy())


def test_reset_options_pick_the_start_its_goal_and_task(bundle):
    loaded = RobotBundle.load(bundle)
    env = make(bundle, render_mode="rgb_array")
    for i in range(loaded.num_starts):
        obs, info = env.reset(seed=0, options={"start": i})
        np.testing.assert_array_equal(obs, loaded.start_frames[i])
        assert info["start_index"] == i and info["task"] == loaded.start_tasks[i] and info["reward_terms"] == {}
        np.testing.assert_array_equal(env.unwrapped.goal_image(), loaded.goals[i])
    frame = loaded.start_frames[3].copy()
    frame[0, 0] = 0
    obs, info = env.reset(seed=0, options={"frame": frame})
    np.testing.assert_array_equal(obs, frame)
    assert info["start_index"] == 3 and info["task"] == loaded.start_tasks[3]
    obs, _, _, _, info = env.step(actions(1)[0])
    np.testing.assert_array_equal(env.render(), obs)
    assert info["step"] == 1 and info["start_index"] == 3
    drawn = {env.reset(seed=s)[1]["start_index"] for s in range(20)}
    assert drawn == set(range(loaded.num_starts))  # random by seed over the bank
    fixed = make(bundle, start=2)
    assert {fixed.reset(seed=s)[1]["start_index"] for s in range(5)} == {2}
    for bad in ({"start": loaded.num_starts}, {"start": 0, "frame": frame}, {"goal": frame}):
        with pytest.raises(ValueError):
            env.reset(options=bad)


def test_bad_actions_raise_naming_the_action_values(bundle):
    env = make(bundle)
    env.reset(seed=0)
    good = actions(1)[0]
    nan = good.copy()
    nan[2] = np.nan
    for bad, match in ((good[:6], r"shape \(7,\)"), (nan, "NaN or inf at dz"), (good.astype(bool), "real numbers"),
                       (np.array(["a"] * 7), "real numbers")):
        with pytest.raises(ValueError, match=match) as error:
            env.step(bad)
        assert "dx [" in str(error.value) and "gripper [" in str(error.value)
    env.step(np.full(7, 1e6, np.float32))  # outside the box: passed on to the model, not refused


def test_stepping_is_causal(bundle):
    def frames(last_action: np.ndarray) -> np.ndarray:
        env = make(bundle)
        env.reset(seed=5, options={"start": 0})
        steps = actions(4)
        steps[-1] = last_action
        return np.stack([env.step(a)[0] for a in steps])

    first, second = frames(np.full(7, -1.5, np.float32)), frames(np.full(7, 1.5, np.float32))
    np.testing.assert_array_equal(first[:3], second[:3])  # the last action changes no earlier frame
    assert not np.array_equal(first[3], second[3])  # and does change its own


def test_a_vector_env_of_two_natively_and_by_gymnasiums_loop(bundle):
    envs = gym.make_vec(ENV, num_envs=2, checkpoint=str(bundle), device="cpu", reward="lpips-offline", max_episode_steps=2)
    assert isinstance(envs.unwrapped, RobotWorldModelVectorEnv)
    assert envs.observation_space.shape == (2, H, W, 3) and envs.action_space.shape == (2, 7)
    obs, info = envs.reset(seed=[1, 2], options={"start": [0, 3]})
    loaded = RobotBundle.load(bundle)
    np.testing.assert_array_equal(obs, loaded.start_frames[[0, 3]])
    assert info["start_index"].tolist() == [0, 3]
    for _ in range(2):
        obs, rewards, terminated, truncated, info = envs.step(actions(2))
        assert obs.shape == (2, H, W, 3) and rewards.shape == (2,) and not terminated.any()
    assert truncated.all() and info["step"].tolist() == [2, 2]
    obs, rewards, _, truncated, info = envs.step(actions(2))  # next-step autoreset: new starts, reward 0
    assert not truncated.any() and np.all(rewards == 0) and info["step"].tolist() == [0, 0]
    np.testing.assert_array_equal(obs, loaded.start_frames[info["start_index"]])
    sync = gym.make_vec(ENV, num_envs=2, vectorization_mode="sync", checkpoint=str(bundle), device="cpu", reward="none")
    obs, info = sync.reset(seed=0)
    assert obs.shape == (2, H, W, 3)
    obs, *_ = sync.step(actions(2))
    assert obs.shape == (2, H, W, 3)
    with pytest.raises(ValueError, match=r"shape \(2, 7\)"):
        envs.step(actions(3))


def test_the_class_itself_has_no_horizon_but_can_be_given_one(bundle):
    env = RobotWorldModelEnv(checkpoint=bundle, device="cpu", reward="none", max_episode_steps=1)
    env.reset(seed=0)
    assert env.step(actions(1)[0])[3] is True


# ---------------------------------------------------------------- the command line
def test_wmgym_bundle_with_data_makes_a_robot_bundle(run, store, tmp_path, capsys):
    from wmgym.cli import main

    out = tmp_path / "cli_bundle"
    main(["bundle", "--world-model", str(run), "--data", str(store), "--out", str(out), "--num-start-frames", "2"])
    assert "robot bundle" in capsys.readouterr().out
    assert RobotBundle.load(out).action_names == NAMES
    env = gym.make(ENV, checkpoint=str(out), device="cpu", reward="none")
    assert env.reset(seed=0)[0].shape == (H, W, 3)
    with pytest.raises(SystemExit) as error:
        main(["bundle", "--world-model", str(run), "--data", str(store), "--out", str(tmp_path / "x"), "--videoclip", "v"])
    assert "--videoclip" in str(error.value.code) and "robot bundle" in str(error.value.code)
    with pytest.raises(SystemExit) as error:
        main(["bundle", "--world-model", str(run), "--data", str(store), "--out", str(out)])  # no --overwrite
    assert "already exists" in str(error.value.code)


def test_the_default_reward_makes_the_env_on_any_machine_and_says_which_lpips_it_is(bundle):
    import warnings

    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        env = gym.make(ENV, checkpoint=str(bundle), device="cpu")  # reward "auto"
    env.reset(seed=0)
    _, reward, _, _, info = env.step(env.action_space.sample())
    assert np.isfinite(reward) and set(info["reward_terms"]) == {"lpips"}
    trunk = Path.home() / ".cache/torch/hub/checkpoints/alexnet-owt-7be5be79.pth"
    assert env.unwrapped.core.head.is_pretrained == trunk.is_file()  # real LPIPS where the trunk is, the stand-in otherwise
    check_env(env.unwrapped, skip_render_check=True)
