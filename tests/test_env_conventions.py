"""Specs of WMFold-v0's input checks and Gymnasium conventions (issue 36, items 2, 3, 7, 9):
a rejected step changes nothing, numbers are checked on make, reset options of the wrong type
and bundles without a task get a message, per-env seeds are all used, stepping past an
episode's end behaves the same after termination and after truncation (tiny models)."""

from __future__ import annotations

import json
import shutil

import gymnasium as gym
import numpy as np
import pytest

import wmgym  # noqa: F401  (registers the envs)
from wmgym.actions import identity_action
from wmgym.envs.bundle import Bundle
from wmgym.envs.sb3 import WMFoldVecEnv

pytestmark = pytest.mark.usefixtures("one_thread")


def hold(n: int | None = None) -> np.ndarray:
    action = identity_action(0.08, 0.08)
    return action if n is None else np.tile(action, (n, 1))


def moves(n: int, seed: int) -> np.ndarray:
    """n actions that move both grippers a little (valid rotations)."""
    actions = hold(n)
    actions[:, [0, 1, 2, 10, 11, 12]] = np.random.default_rng(seed).uniform(-0.02, 0.02, (n, 6))
    return actions


def degenerate_row(actions: np.ndarray, row: int) -> np.ndarray:
    bad = actions.copy()
    bad[row, 3:9] = [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]  # in bounds, but the two columns are parallel
    return bad


def test_a_vector_step_rejected_for_one_row_changes_no_row(tiny_grippers_bundle):
    def run(with_rejected_step: bool) -> np.ndarray:
        envs = gym.make_vec("WMFold-v0", num_envs=4, checkpoint=str(tiny_grippers_bundle), device="cpu", reward="none",
                            use_success_judge=False)
        envs.reset(seed=3)
        envs.step(moves(4, 0))
        if with_rejected_step:
            with pytest.raises(ValueError, match="row 2 left"):
                envs.step(degenerate_row(moves(4, 1), row=2))
        return np.stack([envs.step(moves(4, 2))[0], envs.step(moves(4, 3))[0]])

    np.testing.assert_array_equal(run(with_rejected_step=True), run(with_rejected_step=False))


def test_an_sb3_step_rejected_for_one_row_changes_no_row(tiny_grippers_bundle):
    def run(with_rejected_step: bool) -> np.ndarray:
        venv = WMFoldVecEnv(num_envs=3, normalize_actions=False, checkpoint=str(tiny_grippers_bundle), device="cpu", reward="none",
                            use_success_judge=False)
        venv.seed(5)
        venv.reset()
        venv.step(moves(3, 0))
        if with_rejected_step:
            with pytest.raises(ValueError, match="degenerate 6-D rotation"):
                venv.step(degenerate_row(moves(3, 1), row=1))
        return venv.step(moves(3, 2))[0]

    np.testing.assert_array_equal(run(with_rejected_step=True), run(with_rejected_step=False))


def test_an_all_zero_action_gets_the_layout_and_the_identity_action(tiny_grippers_bundle):
    env = gym.make("WMFold-v0", checkpoint=str(tiny_grippers_bundle), device="cpu", reward="none", use_success_judge=False)
    sim = gym.make("SimFold-v0", resolution=32)
    env.reset(seed=0)
    sim.reset(seed=0)
    for e in (env, sim):
        with pytest.raises(ValueError) as error:
            e.step(np.zeros(20, np.float32))
        message = str(error.value)
        assert "wmgym.actions.identity_action" in message and "[3:9]" in message and "left gripper [0:10]" in message
    sim.unwrapped.step(hold())  # both still usable: the rejected zeros moved nothing
    env.step(hold())


def test_stepping_on_after_termination_and_after_truncation_behave_the_same(tiny_bundle):
    truncating = gym.make("WMFold-v0", checkpoint=str(tiny_bundle), device="cpu", max_episode_steps=2, use_success_judge=False)
    terminating = gym.make("WMFold-v0", checkpoint=str(tiny_bundle), device="cpu", judge_threshold=0.0)  # the judge fires at once
    truncating.reset(seed=0)
    terminating.reset(seed=0)
    assert [truncating.step(hold())[3] for _ in range(2)] == [False, True]
    assert terminating.step(hold())[2] is True
    after = [truncating.step(hold()), terminating.step(hold())]  # neither raises: the same episode goes on
    for frame, reward, _, _, info in after:
        assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and np.isfinite(reward)
    assert [info["step"] for *_, info in after] == [3, 2]
    assert after[0][3] is True and after[1][2] is True  # past the horizon truncated stays True; the judge still fires


def test_make_vec_reset_uses_every_seed(tiny_bundle):
    envs = gym.make_vec("WMFold-v0", num_envs=4, checkpoint=str(tiny_bundle), device="cpu", reward="none", use_success_judge=False)
    first, _ = envs.reset(seed=[0, 1, 2, 3])
    again, _ = envs.reset(seed=[0, 1, 2, 3])
    other, _ = envs.reset(seed=[0, 1, 2, 6])  # only the last env's seed differs (seed 3 draws bank frame 2, seed 6 frame 1)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first[:3], other[:3])  # each env's start state comes from its own seed
    assert not np.array_equal(first[3], other[3])
    bank = Bundle.load(tiny_bundle).start_frames
    np.testing.assert_array_equal(first[3], bank[2])
    np.testing.assert_array_equal(other[3], bank[1])
    with pytest.raises(ValueError, match="list of 4"):
        envs.reset(seed=[0, 1])


@pytest.mark.parametrize("argument, value", [("guidance_scale", float("nan")), ("guidance_scale", -1.0),
                                             ("guidance_scale", float("inf")), ("num_steps", 0), ("num_steps", 1.5),
                                             ("judge_threshold", float("nan"))])
def test_bad_sampler_numbers_are_refused_on_make(tiny_bundle, argument, value):
    with pytest.raises(ValueError, match=argument):
        gym.make("WMFold-v0", checkpoint=str(tiny_bundle), device="cpu", **{argument: value})


def test_a_bundle_without_the_requested_task_is_refused_naming_its_tasks(tiny_bundle, tmp_path):
    bundle = tmp_path / "two_tasks"
    shutil.copytree(tiny_bundle, bundle)
    meta = json.loads((bundle / "bundle.json").read_text())
    del meta["tasks"]["fold_half"]
    (bundle / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="no goals for task 'fold_half'.*fold_left_sleeve, fold_right_sleeve"):
        gym.make("WMFold-v0", checkpoint=str(bundle), device="cpu", task="fold_half")
    env = gym.make("WMFold-v0", checkpoint=str(bundle), device="cpu", task=None)  # a random task: one the bundle has
    assert {env.reset(seed=seed)[1]["task"] for seed in range(6)} <= {"fold_left_sleeve", "fold_right_sleeve"}
    with pytest.raises(ValueError, match="options\\['task'\\]"):
        env.reset(seed=0, options={"task": "fold_half"})


@pytest.mark.parametrize("options, match", [
    ("fold_half", "takes None or a dict"),
    ({"task": 3}, "options\\['task'\\]"),
    ({"goal_text": 5}, "goal_text must be a non-empty str"),
    ({"frame": {"pixels": 1}}, "options\\['frame'\\] must be a uint8 RGB array"),
    ({"frame": np.zeros((64, 64, 3), np.float32)}, "float images"),
    ({"goal_image": 7}, "goal_image must be a uint8 RGB array"),
    ({"grippers": "left"}, "GripperState"),
])
def test_reset_options_of_the_wrong_type_are_refused_clearly(tiny_grippers_bundle, options, match):
    env = gym.make("WMFold-v0", checkpoint=str(tiny_grippers_bundle), device="cpu")
    with pytest.raises(ValueError, match=match):
        env.reset(seed=0, options=options)


def test_goal_image_may_be_given_as_a_path(tiny_bundle, tmp_path):
    import imageio.v3 as iio

    goal = Bundle.load(tiny_bundle).goals["fold_half"][1]
    iio.imwrite(tmp_path / "goal.png", goal)
    env = gym.make("WMFold-v0", checkpoint=str(tiny_bundle), device="cpu", reward="none", goal_image=str(tmp_path / "goal.png"))
    env.reset(seed=0)
    np.testing.assert_array_equal(env.unwrapped.goal_image(), goal)
    env.reset(seed=0, options={"goal_image": tmp_path / "goal.png"})
    np.testing.assert_array_equal(env.unwrapped.goal_image(), goal)
    with pytest.raises(FileNotFoundError, match="no image file at .*missing.png"):
        env.reset(seed=0, options={"goal_image": str(tmp_path / "missing.png")})


@pytest.mark.parametrize("text", ["crumple the shirt into a ball", "zxqv blorp"])
def test_goal_text_outside_the_vocabulary_is_refused_on_make_and_on_reset(tiny_bundle, text):
    with pytest.raises(ValueError, match="never saw.*vocabulary"):
        gym.make("WMFold-v0", checkpoint=str(tiny_bundle), device="cpu", goal_text=text)
    env = gym.make("WMFold-v0", checkpoint=str(tiny_bundle), device="cpu")
    with pytest.raises(ValueError, match="never saw"):
        env.reset(seed=0, options={"goal_text": text})
    lenient = gym.make("WMFold-v0", checkpoint=str(tiny_bundle), device="cpu", reward="lpips-offline", goal_text=text)
    assert lenient.reset(seed=0)[1]["goal_text"] == text  # no text reward: the text is only reported


def _damaged_bundle(tiny_bundle, tmp_path, damage) -> str:
    bundle = tmp_path / "damaged"
    shutil.copytree(tiny_bundle, bundle)
    damage(bundle / "world_model")
    return str(bundle)


def _nan_weight(model_dir):
    from safetensors.torch import load_file, save_file

    weights = load_file(model_dir / "denoiser.safetensors")
    key = sorted(k for k, v in weights.items() if v.is_floating_point())[0]
    weights[key].view(-1)[0] = float("nan")
    save_file(weights, model_dir / "denoiser.safetensors")


def _edit_config(**changes):
    def damage(model_dir):
        config = json.loads((model_dir / "config.json").read_text())
        for key, value in changes.items():
            if key == "guidance_scale":
                config["sampler"]["guidance_scale"] = value
            else:
                config[key] = value
        (model_dir / "config.json").write_text(json.dumps(config))  # json writes NaN as the bare token NaN
    return damage


@pytest.mark.parametrize("damage, match", [
    (_nan_weight, "denoiser.safetensors.*not finite|denoiser.safetensors.*NaN"),
    (_edit_config(action_std=[0.0] * 20), "config.json.*action_std\\[0\\]"),
    (_edit_config(action_std=[float("nan")] * 20), "config.json.*action_std\\[0\\]"),
    (_edit_config(guidance_scale=float("nan")), "config.json.*guidance_scale"),
])
def test_a_damaged_checkpoint_is_refused_on_make_instead_of_giving_black_frames(tiny_bundle, tmp_path, damage, match):
    with pytest.raises(ValueError, match=match):
        gym.make("WMFold-v0", checkpoint=_damaged_bundle(tiny_bundle, tmp_path, damage), device="cpu")
