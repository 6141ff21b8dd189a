"""Building a world model for a training run: the data statistics a new model is made with,
and extending a loaded model with new conditions (condition views, the grippers' pose) so
that it starts out computing exactly what it did."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from wmgym.data.dataset import WindowDataset
from wmgym.model.world_model import WorldModel
from wmgym.model.world_model_config import HELD_VECTOR, pose_vector_spec

POSE_DIM = 8
"""WMFold-v0's "poses" vector: each gripper's tool-centre xyz and width (`wmgym.data.dataset.POSE_KEYS`)."""
HELD_DIM = HELD_VECTOR["size"]
"""WMFold-v0's "held" vector: whether the left, the right gripper holds cloth (`wmgym.data.dataset.HELD_KEYS`)."""


def with_condition_views(model: WorldModel, views) -> WorldModel:
    """A copy of an unconditioned `model` that also takes the pixel-aligned `views`.

    Every weight is copied; the new condition input projection is zero-initialised, so the
    returned model computes exactly what `model` did until it is trained.
    """
    if model.config.condition_views or model.is_pose_conditioned or model.is_held_conditioned:
        what = tuple(model.config.condition_views) + (("pose",) if model.is_pose_conditioned else ()) \
            + (("held",) if model.is_held_conditioned else ())
        raise ValueError(f"the model is already conditioned on {what}; cannot switch to {tuple(views)}")
    denoiser = {**model.config.denoiser, "condition_channels": len(views) * model.codec.latent_channels}
    config = dataclasses.replace(model.config, denoiser=denoiser, condition_views=tuple(views))
    out = WorldModel(config, device=model.device)
    missing, unexpected = out.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not key.startswith("denoiser.condition_in.") for key in missing):
        raise RuntimeError(f"unexpected weight layout: missing {missing}, unexpected {unexpected}")
    return out


def with_pose_conditioning(model: WorldModel, mean, std, pose_input: str = "embedding") -> WorldModel:
    """A copy of `model` that also takes the grippers' pose vector of every frame (`POSE_DIM`
    values, standardised with `mean` and `std`).

    The pose is passed as `POSE_DIM` condition channels after the views' (constant over the
    latent grid). With `pose_input="embedding"` the denoiser reads them once per frame into a
    new MLP added to the frame's conditioning vector (`DenoiserConfig.vector_dim`); with
    "channels" they get new columns of the condition input projection. Either new path ends in
    zeros and every other weight is copied, so the returned model computes exactly what `model`
    did until it is trained.
    """
    if model.is_pose_conditioned:
        raise ValueError("the model is already pose-conditioned")
    if model.is_held_conditioned:
        raise ValueError("add the pose before the grasp state: the model is already held-conditioned")
    if pose_input not in ("embedding", "channels"):
        raise ValueError(f"pose_input must be 'embedding' or 'channels', got {pose_input!r}")
    if len(mean) != POSE_DIM or len(std) != POSE_DIM or min(std) <= 0:
        raise ValueError(f"need {POSE_DIM} pose means and {POSE_DIM} positive stds, got {list(mean)}, {list(std)}")
    dcfg = model.config.denoiser
    denoiser = {**dcfg, "condition_channels": dcfg["condition_channels"] + POSE_DIM,
                "vector_dim": POSE_DIM if pose_input == "embedding" else 0}
    config = dataclasses.replace(model.config, denoiser=denoiser, condition_vectors={"poses": pose_vector_spec(mean, std)})
    out = WorldModel(config, device=model.device)
    state = dict(model.state_dict())
    if pose_input == "embedding":
        new = lambda key: key.startswith("denoiser.vector_embed.")
    else:
        weight = out.state_dict()["denoiser.condition_in.weight"].clone()  # zeros: (width, channels * patch^2)
        if "denoiser.condition_in.weight" in state:  # the views' columns come first (patches are channel-major)
            old = state["denoiser.condition_in.weight"]
            weight[:, : old.shape[1]] = old
        state["denoiser.condition_in.weight"] = weight
        new = lambda key: key == "denoiser.condition_in.bias"
    missing, unexpected = out.load_state_dict(state, strict=False)
    if unexpected or not all(new(key) for key in missing):
        raise RuntimeError(f"unexpected weight layout: missing {missing}, unexpected {unexpected}")
    return out


def with_held_conditioning(model: WorldModel) -> WorldModel:
    """A copy of `model` that also takes the grippers' grasp state of every frame (`HELD_DIM`
    values in [0, 1], `WorldModel.is_held_conditioned`).

    The state joins the frame vector the denoiser's `vector_embed` reads, after the pose if the
    model has it: a model without a frame vector gets a new embedding whose output layer is
    zero; a pose-embedding model's first layer gets `HELD_DIM` zero columns. Every other weight
    is copied, so the returned model computes exactly what `model` did until it is trained.
    """
    if model.is_held_conditioned:
        raise ValueError("the model is already held-conditioned")
    dcfg = model.config.denoiser
    vector_dim = dcfg.get("vector_dim", 0)  # configs saved before the embedding route lack it
    if model.is_pose_conditioned and not vector_dim:
        raise ValueError("the model reads its pose through constant channels (pose_input='channels'); the grasp state "
                         "needs the frame-vector embedding (a model made with --pose-input embedding)")
    denoiser = {**dcfg, "condition_channels": dcfg["condition_channels"] + HELD_DIM, "vector_dim": vector_dim + HELD_DIM}
    vectors = {**model.config.condition_vectors, "held": dict(HELD_VECTOR)}
    out = WorldModel(dataclasses.replace(model.config, denoiser=denoiser, condition_vectors=vectors), device=model.device)
    state = dict(model.state_dict())
    if vector_dim:  # extend the embedding's first layer by zero columns for the new inputs
        key = "denoiser.vector_embed.0.weight"
        weight = state[key]
        state[key] = torch.cat([weight, weight.new_zeros(weight.shape[0], HELD_DIM)], dim=1)
    missing, unexpected = out.load_state_dict(state, strict=False)
    if unexpected or not all(key.startswith("denoiser.vector_embed.") for key in missing):
        raise RuntimeError(f"unexpected weight layout: missing {missing}, unexpected {unexpected}")
    return out


def pose_statistics(train_set: WindowDataset) -> tuple[list, list]:
    """Mean and std (>= 1e-3) of the train split's pose vectors."""
    poses = train_set.poses.numpy().astype(np.float64)
    return poses.mean(0).tolist(), np.maximum(poses.std(0), 1e-3).tolist()


def action_statistics(train_set: WindowDataset) -> tuple[list, list, list, list]:
    """Mean, std (>= 1e-3), min and max of the train split's actions, the padding row of each episode left out."""
    lengths = train_set.episode_lengths
    is_padding = np.zeros(int(lengths.sum()), bool)
    is_padding[np.cumsum(lengths) - 1] = True
    actions = train_set.actions.numpy()[~is_padding].astype(np.float64)  # (N - E, 20)
    return actions.mean(0).tolist(), np.maximum(actions.std(0), 1e-3).tolist(), actions.min(0).tolist(), actions.max(0).tolist()
