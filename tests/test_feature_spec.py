"""A world model's declared features (issue 37): its config says what it predicts, what conditions
it and what an action is; the model reads that, so a robot with another action size needs no
change to wmgym.model, and configs written before the declaration still load."""

import json
import shutil
from dataclasses import asdict

import numpy as np
import pytest
import torch

from conftest import as_conditions
from wmgym.actions import ACTION_DIM, ACTION_NAMES
from wmgym.envs.bundle import DEFAULT_BUNDLE
from wmgym.model.denoiser import DenoiserConfig
from wmgym.model.conditions import Conditions
from wmgym.model.grasp_prior import GraspPrior, GraspPriorConfig
from wmgym.model.world_model import SamplerDefaults, WorldModel, WorldModelConfig
from wmgym.sim.gripper import GRASP_WIDTH

SIZE = 16


def config_with_actions(action_dim: int, **overrides) -> WorldModelConfig:
    denoiser = DenoiserConfig(latent_channels=3, latent_height=SIZE, latent_width=SIZE, patch_size=4, width=32, depth=1,
                              num_heads=2, action_dim=action_dim)
    return WorldModelConfig(height=SIZE, width=SIZE, denoiser=asdict(denoiser), sampler=asdict(SamplerDefaults(num_steps=2)),
                            **overrides)


def test_a_world_model_takes_the_action_size_its_config_declares():
    names = [f"joint_{i}" for i in range(7)]
    model = WorldModel(config_with_actions(7, action_names=names, action_min=[-1.0] * 7, action_max=[1.0] * 7), device="cpu")
    assert model.action_dim == 7 and model.config.action_mean == [0.0] * 7 and model.config.action_std == [1.0] * 7
    frames = torch.randint(0, 256, (2, 1, SIZE, SIZE, 3), dtype=torch.uint8)
    out = model.rollout(frames, torch.zeros(2, 3, 7), generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, SIZE, SIZE, 3)
    loss, _ = model.compute_loss(torch.randint(0, 256, (2, 3, SIZE, SIZE, 3), dtype=torch.uint8), torch.zeros(2, 2, 7))
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match=r"\(b, T, 7\)(.|\n)*joint_0, joint_1"):  # the declared size and names
        model.rollout(frames, torch.zeros(2, 3, ACTION_DIM))
    spec = model.config.features()["action"]
    assert spec["dim"] == 7 and spec["names"] == names and spec["low"] == [-1.0] * 7


def test_action_statistics_and_names_must_fit_the_declared_size():
    with pytest.raises(ValueError, match="action_mean must be a list of 7 numbers"):
        config_with_actions(7, action_mean=[0.0] * ACTION_DIM)
    with pytest.raises(ValueError, match="action_names must be None or 7 names"):
        config_with_actions(7, action_names=list(ACTION_NAMES))
    with pytest.raises(ValueError, match="action_max must be a list of 7 numbers"):
        config_with_actions(7, action_min=[0.0] * 7, action_max=[1.0] * 6)


def test_the_shipped_config_declares_wmfold_features():
    model = WorldModel.from_pretrained(DEFAULT_BUNDLE / "world_model", device="cpu")
    features = model.config.features()
    assert features["camera"] == {"camera": (64, 64, 3)} and features["views"] == {"grippers": (64, 64, 3)}
    assert features["vectors"] == {"held": 2} and model.condition_vectors == {"held": 2}
    assert model.denoiser.config.vector_dim == 2  # the grasp state, named as what it is
    assert features["action"]["dim"] == ACTION_DIM == len(ACTION_NAMES) == 20 and features["action"]["names"] == list(ACTION_NAMES)
    assert model.grasp_prior.config.grasp_width == GRASP_WIDTH  # the prior's config.json predates the field


def test_a_checkpoint_saved_before_the_declaration_loads_and_draws_the_same_frames(tmp_path):
    """The layout of configs and weights before issue 37 (pose_mean / pose_std / held_conditioning,
    the denoiser's pose_dim, weights under pose_embed.*) still loads, and gives the same frames."""
    from safetensors.torch import load_file, save_file

    shipped = DEFAULT_BUNDLE / "world_model"
    old = tmp_path / "old"
    shutil.copytree(shipped, old)
    config = json.loads((shipped / "config.json").read_text())
    for key in ("camera", "condition_vectors", "action_names"):
        config.pop(key)
    config.update(pose_mean=None, pose_std=None, held_conditioning=True)
    config["denoiser"]["pose_dim"] = config["denoiser"].pop("vector_dim")
    (old / "config.json").write_text(json.dumps(config))
    weights = load_file(shipped / "denoiser.safetensors")
    save_file({key.replace("vector_embed.", "pose_embed."): value for key, value in weights.items()}, old / "denoiser.safetensors")
    assert any(key.startswith("pose_embed.") for key in load_file(old / "denoiser.safetensors"))
    models = [WorldModel.from_pretrained(path, device="cpu") for path in (shipped, old)]
    assert models[1].config.condition_vectors == models[0].config.condition_vectors
    frames = torch.randint(0, 256, (2, 1, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    views = torch.randint(0, 256, (2, 4, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    held = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.3, 1.0], [1.0, 1.0]]).expand(2, 4, 2)
    actions = torch.zeros(2, 3, ACTION_DIM)
    actions[..., [3, 7, 13, 17]] = 1.0  # identity rotations
    run = lambda m: m.rollout(frames, actions, generator=torch.Generator().manual_seed(0),
                              conditions=Conditions({"grippers": views}, {"held": held}))
    assert torch.equal(run(models[0]), run(models[1]))


def test_a_model_refuses_conditions_it_does_not_declare():
    model = WorldModel(config_with_actions(ACTION_DIM), device="cpu")
    frames = torch.randint(0, 256, (1, 1, SIZE, SIZE, 3), dtype=torch.uint8)
    with pytest.raises(ValueError, match="grippers given to a world model that is not conditioned on it"):
        model.rollout(frames, torch.zeros(1, 1, ACTION_DIM),
                      conditions=as_conditions(np.zeros((1, 2, 1, SIZE, SIZE, 3), np.uint8)))


def test_the_grasp_prior_declares_the_simulators_grasp_threshold():
    assert GraspPriorConfig().grasp_width == GRASP_WIDTH
    prior = GraspPrior(GraspPriorConfig(grasp_width=0.05))
    poses = np.zeros((1, 3, 8), np.float32)
    poses[0, :, [3, 7]] = 0.04  # closed under a 5 cm threshold, open under the simulator's 2 cm
    assert prior.held_cases(poses)[0].sum() == 6
    assert GraspPrior().held_cases(poses)[0].sum() == 0
