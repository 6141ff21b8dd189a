"""How well an inverse dynamics model reads actions back from frames: R² per action component.

Dimension legend: n episodes, T actions per episode (T + 1 frames), H x W frames.

R² of component k over transitions i: 1 - sum_i (p_ik - a_ik)^2 / sum_i (a_ik - mean_k a)^2.
A group's R² (position, rotation, width; per hand and over both) pools the sums of its
components: 1 - sum SSE / sum SST. A component whose true values barely vary (std below
`min_std`, raw units) has an ill-defined R²: its SST is ~0, so any tiny error reads as a
huge negative R² (or 0/0 = nan when exactly constant). In this simulator the grippers only
yaw, so the rotation-6D entries R20 and R21 are exactly 0 and R00, R11 = cos(yaw) are
within ~0.006 of 1: they are reported, listed under `ill_defined`, and left out of the
groups. `r2_scores` returns plain floats (nan where undefined), JSON-ready.

`idm_r2` scores simulator (or any recorded) frames; `idm_r2_on_world_model` rolls a world
model from the simulator's start frames with the simulator's actions and scores the IDM on
the generated pairs: if the world model obeys the actions, the IDM reads them back (a second,
independent measure of controllability), and the gap to the same episodes' simulator R²
says how much it does not. A world model conditioned on the grippers view is given the
episodes' own grippers views (rendered from their start `GripperState`s and actions).
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from wmgym.actions import ACTION_DIM, ACTION_LAYOUT
from wmgym.sim.episode import simulate_episodes  # noqa: F401  (re-exported: callers import it from here)

_HAND_NAMES = ("dx", "dy", "dz", "r00", "r10", "r20", "r01", "r11", "r21", "width")
COMPONENT_NAMES = tuple(f"{hand}_{name}" for hand in ("left", "right") for name in _HAND_NAMES)
_GROUP_SLICES = {"position": slice(0, 3), "rotation": slice(3, 9), "width": slice(9, 10)}
GROUPS = {f"{hand}_{group}": list(range(offset + s.start, offset + s.stop))
          for hand, offset in (("left", 0), ("right", 10)) for group, s in _GROUP_SLICES.items()}
GROUPS.update({group: GROUPS[f"left_{group}"] + GROUPS[f"right_{group}"] for group in _GROUP_SLICES})


def r2_scores(predicted, actions, min_std: float = 1e-2) -> dict:
    """R² of predicted actions (N, 20) against true actions (N, 20), per component and group.

    Returns a dict: `components` {name: R²}, `groups` {group: pooled R² over its well-defined
    components}, `ill_defined` [names whose true std < `min_std`], `std` {name: true std},
    `num_transitions`. nan where a value is undefined (no variance, or no components left).
    """
    predicted = np.asarray(predicted, np.float64)
    actions = np.asarray(actions, np.float64)
    if predicted.shape != actions.shape or actions.ndim != 2 or actions.shape[1] != ACTION_DIM:
        raise ValueError(f"predicted and actions must both be (N, {ACTION_DIM}), got {predicted.shape} and "
                         f"{actions.shape}\n{ACTION_LAYOUT}")
    if len(actions) < 2:
        raise ValueError(f"R² needs at least 2 transitions, got {len(actions)}")
    if not (np.all(np.isfinite(predicted)) and np.all(np.isfinite(actions))):
        raise ValueError("predicted and actions must be finite (an action-free store's actions are NaN)")
    sse = ((predicted - actions) ** 2).sum(0)  # (20,)
    sst = ((actions - actions.mean(0)) ** 2).sum(0)  # (20,)
    std = actions.std(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.nan)
    well_defined = std >= min_std
    groups = {}
    for group, indices in GROUPS.items():
        kept = [k for k in indices if well_defined[k]]
        groups[group] = float(1.0 - sse[kept].sum() / sst[kept].sum()) if kept else float("nan")
    return {"components": {name: float(value) for name, value in zip(COMPONENT_NAMES, r2)},
            "groups": groups,
            "ill_defined": [name for name, ok in zip(COMPONENT_NAMES, well_defined) if not ok],
            "std": {name: float(value) for name, value in zip(COMPONENT_NAMES, std)},
            "num_transitions": int(len(actions))}


def _check_episodes(frames, actions) -> tuple[np.ndarray, np.ndarray]:
    frames, actions = np.asarray(frames), np.asarray(actions, np.float32)
    if frames.ndim != 5 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (n, T+1, H, W, 3) episodes, got {frames.dtype} {frames.shape}")
    if actions.shape != (frames.shape[0], frames.shape[1] - 1, ACTION_DIM):
        raise ValueError(f"actions must be (n={frames.shape[0]}, T={frames.shape[1] - 1}, {ACTION_DIM}) for frames "
                         f"{frames.shape}, got {actions.shape}\n{ACTION_LAYOUT}")
    return frames, actions


def idm_predictions(model, frames) -> np.ndarray:
    """IDM actions float32 (n, T, 20) for every transition of episodes' frames uint8 (n, T+1, H, W, 3)
    (`InverseDynamicsModel.predict_transitions`: a future window stays in its episode)."""
    frames = np.asarray(frames)
    n, t1 = frames.shape[:2]
    rows = (np.arange(n)[:, None] * t1 + np.arange(t1 - 1)).ravel()  # (n * T,) in the flattened frames
    last_rows = np.repeat(np.arange(n) * t1 + t1 - 1, t1 - 1)
    return model.predict_transitions(frames.reshape(-1, *frames.shape[2:]), rows, last_rows).reshape(n, t1 - 1, ACTION_DIM)


def idm_r2(model, frames, actions, min_std: float = 1e-2) -> dict:
    """R² (`r2_scores`) of `model` on episodes: frames uint8 (n, T+1, H, W, 3), actions float32 (n, T, 20)."""
    frames, actions = _check_episodes(frames, actions)
    return r2_scores(idm_predictions(model, frames).reshape(-1, ACTION_DIM), actions.reshape(-1, ACTION_DIM), min_std)


def idm_r2_on_world_model(model, world_model, specs=None, episodes=None, *, grippers=None, batch_size: int = 16,
                          seed: int = 0, num_steps: int | None = None, min_std: float = 1e-2, show_progress: bool = False) -> dict:
    """R² of the IDM on world-model frames made with the simulator's actions, beside its R² on the simulator's frames.

    Give either `specs` (`EpisodeSpec`s, simulated here) or `episodes` = (frames uint8
    (n, T+1, H, W, 3), actions float32 (n, T, 20)). The world model starts from each episode's
    first frame and is driven by its actions (`WorldModel.rollout`, `batch_size` episodes per
    call, generator seeded with `seed`, `num_steps` sampler steps or the checkpoint's); the IDM
    then reads the actions back from the pairs (o_0, g_1), (g_1, g_2), ... of generated frames g.

    A world model conditioned on the grippers view (`config.condition_views == ("grippers",)`)
    is also given each episode's grippers view of every frame: with `specs` they are rendered
    here (`start_gripper_state` and the actions, bit for bit the simulator's); with `episodes`
    pass `grippers`: uint8 (n, T+1, H, W, 3) views, or n `GripperState`s at the episodes'
    first frames (ValueError without it). `grippers` is ignored for an unconditioned model.

    Returns {"world_model": r2_scores on generated frames, "simulator": r2_scores on the same
    episodes' simulator frames, "num_episodes": n}.
    """
    import torch

    if (specs is None) == (episodes is None):
        raise ValueError("give exactly one of specs and episodes")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    specs = None if specs is None else list(specs)
    frames, actions = simulate_episodes(specs, show_progress) if episodes is None else episodes
    frames, actions = _check_episodes(frames, actions)
    size = (world_model.config.height, world_model.config.width)
    if frames.shape[2:4] != size:
        raise ValueError(f"frames are {frames.shape[2]}x{frames.shape[3]}, the world model makes {size[0]}x{size[1]}")
    conditions = _rollout_conditions(world_model, specs, grippers, frames, actions)  # Conditions (n, T+1) or None
    generator = torch.Generator(device=world_model.device).manual_seed(seed)
    generated = []
    for start in tqdm(range(0, len(frames), batch_size), desc="world-model rollouts", disable=not show_progress):
        extra = {} if conditions is None else {"conditions": conditions.rows(slice(start, start + batch_size))}
        rolled = world_model.rollout(frames[start: start + batch_size, :1], actions[start: start + batch_size],
                                     num_steps=num_steps, generator=generator, **extra)  # (b, T, H, W, 3)
        generated.append(rolled.cpu().numpy())
    imagined = np.concatenate([frames[:, :1], np.concatenate(generated)], axis=1)  # (n, T+1, H, W, 3)
    return {"world_model": idm_r2(model, imagined, actions, min_std), "simulator": idm_r2(model, frames, actions, min_std),
            "num_episodes": int(len(frames))}


def _rollout_conditions(world_model, specs, grippers, frames: np.ndarray, actions: np.ndarray):
    """`rollout`'s `Conditions` (n, T+1) of every frame (the grippers view for a model conditioned
    on it, the poses for a pose-conditioned one, `wmgym.conditioning`); None for a model without
    either."""
    from wmgym.conditioning import is_pose_conditioned, takes_grippers_view, track_conditions
    from wmgym.model.conditions import Conditions
    from wmgym.sim.gripper_track import GripperState
    from wmgym.sim.world import WorldConfig

    wants_views, wants_poses = takes_grippers_view(world_model), is_pose_conditioned(world_model)
    if not (wants_views or wants_poses):
        return None
    scene = WorldConfig(height=frames.shape[2], width=frames.shape[3])
    if grippers is None and specs is not None:
        from wmgym.sim.episode import start_gripper_state

        grippers = [start_gripper_state(spec) for spec in specs]
    if grippers is None:
        raise ValueError("the world model is conditioned on the grippers view: with episodes=, pass grippers= (the "
                         "episodes' grippers views uint8 (n, T+1, H, W, 3), or their GripperStates at the first frame)")
    if isinstance(grippers, (list, tuple)) and all(isinstance(g, GripperState) for g in grippers):
        if len(grippers) != len(frames):
            raise ValueError(f"grippers must hold one GripperState per episode ({len(frames)}), got {len(grippers)}")
        return track_conditions(world_model, grippers, actions, scene)
    if wants_poses:
        raise ValueError("the world model is conditioned on the grippers' pose: pass grippers= as the episodes' "
                         "GripperStates at the first frame (views alone do not give the pose)")
    views = np.asarray(grippers)
    if views.dtype != np.uint8 or views.shape != frames.shape:
        raise ValueError(f"grippers views must be uint8 {frames.shape} like the frames (or n GripperStates), "
                         f"got {views.dtype} {views.shape}")
    return Conditions(views={"grippers": views})
