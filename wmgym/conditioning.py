"""Building a world model's `Conditions`: the one module that knows where each condition of a
frame comes from (issue 37), above the simulator (`wmgym.sim`) and the model (`wmgym.model`).

Dimension legend: n clips (episodes, candidates, env rows), t frames, T actions, c context
frames, H x W pixels, k grasp cases.

What a model takes (`takes_grippers_view`, `is_pose_conditioned`, `is_held_conditioned`):
    view "grippers"   the grippers alone on black, pixel-aligned with the camera
    vector "poses"    (8,) each gripper's tool-centre xyz and width, left then right
    vector "held"     (2,) whether each gripper holds cloth (1/0, or a probability)

Where they come from:
    `conditions_of_records`     store records (`EpisodeRecord`s): the simulator's own views,
                                poses and grasp state (`wmgym imagine`)
    `WindowBatch.collate`       a `WindowDataset`'s named `Window`s as one `WindowBatch`
                                (`wmgym.data.batch`; training and validation)
    `track_conditions`          start `GripperState`s driven by actions: the grippers are pure
                                kinematics of the actions (`wmgym.sim.gripper_track`), so their
                                view and poses are the simulator's bit for bit (`wmgym eval`,
                                IDM metrics)
    `candidate_conditions`      a planner's candidates: the context frames' states, then each
                                candidate's actions from the newest one
    `GripperConditions`         the environment's rows, one frame at a time

The grasp state, which the simulator decides once per closing and nothing in imagination
observes, is sampled here only, with `wmgym.model.grasp_prior.GraspPrior`:
    "store"        the simulator's (held_particles > 0), where a store records it
    "probability"  the prior's probability of each closing catching, over the closed run
    "sample"       each closing drawn held (1) or missed (0) with that probability; batched
                   (`grasp_states`) or frame by frame as an environment steps (`GraspDraws`)
    "expectation"  two cases per clip, every closing held and none, weighted by the prior's
                   probability that all of the clip's closings catch (`GraspPrior.held_cases`)
"""

from __future__ import annotations

import numpy as np
import torch

from wmgym.model.conditions import Conditions
from wmgym.model.grasp_prior import WIDTH_COLUMNS
from wmgym.sim.gripper import GRASP_WIDTH
from wmgym.sim.gripper_track import GripperState, GripperTracks, gripper_views, pose_vectors
from wmgym.sim.world import WorldConfig

GRASP_MODES = ("store", "probability", "sample", "expectation")


# ---------------------------------------------------------------- what a model takes
def takes_grippers_view(world_model) -> bool:
    """True when `world_model` is conditioned on the grippers view (`config.condition_views ==
    ("grippers",)`), False for an unconditioned one (or a stand-in without `config.condition_views`).

    ValueError for any other condition views: the grippers view is the only one rendered
    from actions alone (the static scene would need the simulator's cloth).
    """
    views = tuple(getattr(getattr(world_model, "config", None), "condition_views", None) or ())
    if views not in ((), ("grippers",)):
        raise ValueError(f"only the 'grippers' condition view can be rendered from actions (or none); "
                         f"the world model is conditioned on {views}")
    return views == ("grippers",)


def is_pose_conditioned(world_model) -> bool:
    """True when `world_model` takes the grippers' pose vector of every frame (the "poses" vector;
    declared in `WorldModelConfig.condition_vectors`); False for any other model or stand-in."""
    return bool(getattr(world_model, "is_pose_conditioned", False))


def is_held_conditioned(world_model) -> bool:
    """True when `world_model` takes the grippers' grasp state of every frame (the "held" vector;
    declared in `WorldModelConfig.condition_vectors`); False for any other model."""
    return bool(getattr(world_model, "is_held_conditioned", False))


def needs_grippers(world_model) -> bool:
    """True when imagining with `world_model` needs the grippers' states: it is conditioned on
    their view, their pose, or their grasp state (drawn from the poses by its grasp prior)."""
    return takes_grippers_view(world_model) or is_pose_conditioned(world_model) or is_held_conditioned(world_model)


def _grasp_prior(world_model, why: str):
    prior = getattr(world_model, "grasp_prior", None)
    if prior is None:
        raise ValueError(f"this world model is conditioned on the grippers' grasp state, {why}, and it has no grasp prior "
                         "to draw it from (`wmgym train-grasp-prior --out <model dir>/grasp_prior`)")
    return prior


# ---------------------------------------------------------------- the grasp state
def grasp_states(world_model, poses: np.ndarray, mode: str = "probability", *, stored: np.ndarray | None = None,
                 generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The grasp state of n clips for a held-conditioned model, as k weighted cases.

    Args:
        poses: float (n, t, 8) the clips' pose vectors (`pose_vectors`).
        mode: one of `GRASP_MODES` (module docstring).
        stored: float or bool (n, t, 2), the simulator's grasp state, for "store".
        generator: a CPU torch.Generator for "sample".
    Returns:
        held float32 (k * n, t, 2), case after case, and weights float32 (k, n): one case of
        weight 1, or for "expectation" two (every closing held, then none).
    """
    if mode not in GRASP_MODES:
        raise ValueError(f"unknown grasp mode {mode!r}; expected one of {GRASP_MODES}")
    ones = np.ones((1, len(poses)), np.float32)
    if mode == "store":
        if stored is None:
            raise ValueError("grasp mode 'store' needs the stored grasp state")
        return np.ascontiguousarray(stored, dtype=np.float32), ones
    prior = _grasp_prior(world_model, f"grasp mode {mode!r} asks for its grasp prior")
    if mode == "expectation":
        held, missed, p_all = prior.held_cases(poses)
        p_all = p_all.numpy().astype(np.float32)
        return np.concatenate([held.numpy(), missed.numpy()]), np.stack([p_all, 1 - p_all])
    return prior.frame_held(poses, sample=mode == "sample", generator=generator).numpy(), ones


class GraspDraws:
    """The "sample" mode frame by frame, for b environment rows: when a hand closes, one uniform
    draw decides whether the whole closing holds (draw < the prior's probability of that closing,
    `GraspPrior.frame_held`), as the simulator decides once per closing.

    Args:
        world_model: the held-conditioned model; its `grasp_prior` is read at every draw.
        num_rows: b.
    """

    def __init__(self, world_model, num_rows: int):
        self.world_model = world_model
        self.pose_history: list[list[np.ndarray]] = [[] for _ in range(num_rows)]  # the prior reads the frames up to a closing
        self.draws = np.zeros((num_rows, 2))
        self.generator = np.random.default_rng(0)

    def restart(self, rows, rng: np.random.Generator) -> None:
        """New episodes in `rows`: their pose histories are cleared, and the draws of every row
        come from a generator seeded by one integer of `rng`."""
        for row in rows:
            self.pose_history[row] = []
        self.generator = np.random.default_rng(rng.integers(2**63 - 1))

    def held(self, rows, poses: np.ndarray) -> np.ndarray:
        """float32 (r, 2): each row's grasp state at its newest frame, whose pose vectors (r, 8)
        are `poses` (call once per new frame: it records them). 1 where a closed gripper's grasp
        was drawn to hold, else 0."""
        held = np.zeros((len(rows), 2), np.float32)
        for k, row in enumerate(rows):
            history = self.pose_history[row]
            history.append(poses[k])
            frames = np.stack(history)  # (t, 8)
            closed = frames[:, WIDTH_COLUMNS] < GRASP_WIDTH
            starts = closed[-1] & (~closed[-2] if len(frames) > 1 else True)  # (2,) a closing begins at this frame
            self.draws[row, starts] = self.generator.random(int(starts.sum()))
            if closed[-1].any():
                p = self.world_model.grasp_prior.frame_held(frames[None])[0, -1].numpy()  # (2,), 0 where open
                held[k] = closed[-1] & (self.draws[row] < p)
        return held


# ---------------------------------------------------------------- builders
def model_conditions(world_model, views: np.ndarray | None, poses: np.ndarray | None, held: np.ndarray | None = None,
                     grasp_mode: str = "probability", generator: torch.Generator | None = None) -> Conditions:
    """What `world_model` takes out of the grippers views uint8 (n, t, H, W, 3), their pose
    vectors float32 (n, t, 8) and their grasp state: the view if it is conditioned on it, the
    poses if it is pose-conditioned, and if it is held-conditioned `held` (n, t, 2) where given,
    else the grasp state `grasp_states(..., grasp_mode)` gives (one case). Empty for an
    unconditioned model."""
    out = Conditions(views={"grippers": views} if takes_grippers_view(world_model) else {},
                     vectors={"poses": poses} if is_pose_conditioned(world_model) else {})
    if is_held_conditioned(world_model):
        if held is None:
            held, _ = grasp_states(world_model, poses, grasp_mode, generator=generator)
        out.vectors["held"] = torch.from_numpy(np.ascontiguousarray(held, dtype=np.float32))
    return out


def conditions_of_records(world_model, records, grasp_mode: str = "store", generator: torch.Generator | None = None) -> Conditions:
    """Conditions (n, T+1) of n store records of one length (`EpisodeRecord`): their grippers
    views and pose vectors, and their grasp state: with "store", the simulator's where every
    record carries it, else the prior's probability; "sample" draws each closing with
    `generator` (as WMFold-v0 does)."""
    views = np.stack([r.grippers for r in records]) if takes_grippers_view(world_model) else None
    poses = np.stack([pose_vectors(r.eef_pos, r.gripper_width) for r in records])
    held = None
    if is_held_conditioned(world_model):
        held = held_of_records(world_model, records, generator if grasp_mode == "sample" else None)
    return model_conditions(world_model, views, poses, held)


def held_of_records(world_model, records, draws: torch.Generator | None = None) -> np.ndarray:
    """float32 (n, T+1, 2): the simulator's grasp state of the records' frames (held_particles > 0)
    when all of them carry it, else `world_model.grasp_prior`'s probabilities from their poses.
    With `draws` (a CPU generator), always the prior's: each closing drawn held (1) or missed (0)
    with its probability, as WMFold-v0 draws it."""
    if draws is None and all(r.held_particles is not None for r in records):
        return np.stack([r.held_particles > 0 for r in records]).astype(np.float32)
    why = "held='prior' asks for its grasp prior" if draws is not None else "the source store does not record it"
    _grasp_prior(world_model, why)
    poses = np.stack([pose_vectors(r.eef_pos, r.gripper_width) for r in records])
    return grasp_states(world_model, poses, "sample" if draws is not None else "probability", generator=draws)[0]


def track_conditions(world_model, states: list[GripperState], actions: np.ndarray, scene: WorldConfig,
                     simulated: np.ndarray | None = None, held: np.ndarray | None = None) -> Conditions:
    """Conditions (n, T+1) of n start `GripperState`s driven by actions (n, T, 20) in `scene`
    (`model_conditions`; a held-conditioned model gets `held` or its prior's probabilities).
    With `simulated` uint8 (n, T+1, H, W, 3), the simulator's own grippers view of the same
    episodes, RuntimeError unless the rendered views equal it."""
    views, poses = gripper_views(states, actions, scene, with_poses=True)
    if simulated is not None and not np.array_equal(views, simulated):
        raise RuntimeError("the grippers views rendered from the start states and actions differ from the simulator's")
    return model_conditions(world_model, views, poses, held)


def candidate_conditions(world_model, states: list[GripperState], candidates: np.ndarray, size: tuple[int, int],
                         grasp_mode: str = "probability") -> tuple[Conditions, np.ndarray]:
    """What `world_model.rollout` needs besides frames and actions to imagine n candidates (n, T, 20)
    after c context frames (one `GripperState` each, oldest first; the candidates start from the
    newest): Conditions (k * n, c + T) and weights float32 (k, n) of the grasp cases
    (`grasp_states`: one case unless `grasp_mode` is "expectation" and the model held-conditioned,
    then every closing held, then none)."""
    views, poses = _candidate_views_and_poses(states, candidates, size)
    if not is_held_conditioned(world_model):
        return model_conditions(world_model, views, poses), np.ones((1, len(candidates)), np.float32)
    held, weights = grasp_states(world_model, poses, grasp_mode)
    cases = len(weights)
    repeat = lambda a: np.concatenate([a] * cases) if cases > 1 else a
    return model_conditions(world_model, repeat(views), repeat(poses), held=held), weights


def _candidate_views_and_poses(states: list[GripperState], candidates: np.ndarray, size: tuple[int, int]):
    """Grippers views uint8 (n, c + T, H, W, 3) and pose vectors float32 (n, c + T, 8) of the
    c context states and each candidate's T frames after them (from the newest state)."""
    scene = WorldConfig(height=int(size[0]), width=int(size[1]))
    n = len(candidates)
    future, future_poses = gripper_views([states[-1]] * n, candidates, scene, with_poses=True)  # newest context frame first
    past = GripperTracks(states[:-1], scene).render().reshape(-1, *size, 3)
    past_poses = np.array([state.vector() for state in states[:-1]], np.float32).reshape(-1, 8)
    stack = lambda old, new: np.ascontiguousarray(np.concatenate([np.broadcast_to(old[None], (n, *old.shape)), new], axis=1))
    return stack(past, future), stack(past_poses, future_poses)  # c + T frames


class GripperConditions:
    """The conditions of b environment rows, one frame at a time: the rows' `GripperTracks`
    (each row restarted from a `GripperState`, all stepped by the rows' actions in one call)
    render their views and give their poses, and a held-conditioned model's grasp state is drawn
    by `GraspDraws`.

    Args:
        world_model: the model the conditions are for.
        num_rows: b.
        scene: the simulator settings the tracks render with.
    """

    def __init__(self, world_model, num_rows: int, scene: WorldConfig):
        self.takes_view = takes_grippers_view(world_model)
        self.takes_poses = is_pose_conditioned(world_model)
        self.takes_held = is_held_conditioned(world_model)
        self.is_needed = self.takes_view or self.takes_poses or self.takes_held
        self.scene = scene
        resting = GripperState(np.stack([np.eye(4)] * 2), np.zeros(2))  # until `restart` gives each row its start
        self.tracks = GripperTracks([resting] * num_rows, scene)
        self.grasp = GraspDraws(world_model, num_rows) if self.takes_held else None

    def restart(self, rows, states: list[GripperState], rng: np.random.Generator) -> Conditions:
        """Start `rows` from `states`; returns their first frames' Conditions (r, 1)."""
        self.tracks.restart(rows, states)
        if self.grasp is not None:
            self.grasp.restart(rows, rng)
        return self.newest(rows)

    def step(self, actions: np.ndarray) -> Conditions:
        """Move every row's grippers by its action (b, 20); returns the new frames' Conditions (b, 1)."""
        self.tracks.step(actions)
        return self.newest(range(len(self.tracks)))

    def newest(self, rows) -> Conditions:
        """Conditions (r, 1) of each row's newest frame (call once per new frame: the grasp
        draws record its pose)."""
        views, vectors = {}, {}
        rows = list(rows)
        poses = self.tracks.pose_vectors(rows)
        if self.takes_held:
            vectors["held"] = self.grasp.held(rows, poses)[:, None]
        if self.takes_view:
            views["grippers"] = self.tracks.render(rows)[:, None]
        if self.takes_poses:
            vectors["poses"] = poses[:, None]
        return Conditions(views, vectors)
