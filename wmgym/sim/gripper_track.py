"""The grippers alone: their motion under 20-D actions and their pixel-aligned view, no cloth.

A world model conditioned on the grippers view (the Dexterous World Models seed's hand
conditioning) needs that view for every frame it generates. The grippers' motion is pure
kinematics of the actions (the cloth never pushes a gripper), so `GripperTrack` reproduces
the simulator's grippers view exactly from a start `GripperState` and the actions, at a
fraction of a simulator step's cost: `FoldWorld` and `GripperTracks` share `move_grippers`
and the gripper boxes, and the renderer draws the same boxes on black.

`GripperTracks` steps and renders b rows at once (one vectorised kinematics call and one
polygon computation per step; only the polygon fill runs per row), as a vector env, a
planner's candidates or an evaluation's episodes need; every row's numbers are computed
independently of the others, so a batch gives each row's frames bit for bit as a batch of one.
`GripperTrack` is one row of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from wmgym.sim.camera import FisheyeCamera
from wmgym.sim.render import Renderer
from wmgym.sim.world import FoldWorld, WorldConfig, gripper_box_arrays, move_grippers


@dataclass(frozen=True)
class GripperState:
    """Both grippers at one instant: poses (2, 4, 4) float64 (world frame, metres), widths (2,) float64."""

    poses: np.ndarray
    widths: np.ndarray

    def __post_init__(self):
        poses, widths = np.asarray(self.poses, dtype=np.float64), np.asarray(self.widths, dtype=np.float64)
        if poses.shape != (2, 4, 4) or widths.shape != (2,):
            raise ValueError(f"a GripperState has poses (2, 4, 4) and widths (2,), got {poses.shape} and {widths.shape}")
        if not (np.isfinite(poses).all() and np.isfinite(widths).all()):
            raise ValueError("GripperState poses and widths must be finite")
        object.__setattr__(self, "poses", poses)
        object.__setattr__(self, "widths", widths)

    @classmethod
    def of_world(cls, world: FoldWorld) -> "GripperState":
        """The grippers of a (reset) `FoldWorld`, copied."""
        return cls(world.poses.copy(), world.widths.copy())

    def vector(self) -> np.ndarray:
        """float32 (8,): each gripper's tool-centre xyz and width, left then right: the pose a
        pose-conditioned world model takes per frame (the store's `POSE_KEYS`, in order)."""
        return pose_vector(self.poses, self.widths)


def pose_vector(poses: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """float32 (8,) pose vector of poses (2, 4, 4) and widths (2,) (see `GripperState.vector`)."""
    return pose_vectors(np.asarray(poses)[:, :3, 3], widths)


def pose_vectors(positions: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """float32 (..., 8) pose vectors of tool-centre positions (..., 2, 3) and widths (..., 2),
    e.g. an `EpisodeRecord`'s `eef_pos` and `gripper_width`: left xyz, left width, right xyz, right width."""
    positions, widths = np.asarray(positions, np.float32), np.asarray(widths, np.float32)
    return np.concatenate([positions[..., 0, :], widths[..., 0:1], positions[..., 1, :], widths[..., 1:2]], axis=-1)


@lru_cache(maxsize=8)
def _camera(config: WorldConfig) -> FisheyeCamera:
    return FisheyeCamera(config.height, config.width, config.camera_position, config.camera_look_at,
                         fov_deg=config.camera_fov_deg)


@lru_cache(maxsize=8)
def _renderer(config: WorldConfig) -> Renderer:
    """One renderer per scene configuration: the grippers view draws no table, so any texture serves."""
    return Renderer(_camera(config), np.zeros((2, 2, 3), np.uint8), supersample=config.supersample)


class GripperTracks:
    """Steps the grippers of b episodes by actions and renders their views, as `FoldWorld` would.

    Args:
        states: b `GripperState`s, the grippers at each episode's first frame.
        config: the scene settings of the simulator that made the episodes (resolution, camera,
            substeps); the default is `SimFold-v0`'s at 64x64.
    """

    def __init__(self, states, config: WorldConfig = WorldConfig()):
        self.config = config
        self.poses = np.stack([s.poses for s in states]) if len(states) else np.zeros((0, 2, 4, 4))  # (b, 2, 4, 4)
        self.widths = np.stack([s.widths for s in states]) if len(states) else np.zeros((0, 2))  # (b, 2)
        self.step_counts = np.zeros(len(states), np.int64)

    def __len__(self) -> int:
        return len(self.poses)

    def restart(self, rows, states) -> None:
        """Start `rows` (indices) afresh from `states` (one `GripperState` each)."""
        for row, state in zip(rows, states):
            self.poses[row], self.widths[row], self.step_counts[row] = state.poses, state.widths, 0

    def state(self, row: int) -> GripperState:
        return GripperState(self.poses[row].copy(), self.widths[row].copy())

    def step(self, actions) -> None:
        """Move every row's grippers through its action (b, 20) (ValueError for a bad one, as the simulator)."""
        actions = np.asarray(actions)
        if actions.shape != (len(self), 20):
            raise ValueError(f"GripperTracks.step takes one action per row, ({len(self)}, 20), got {actions.shape}")
        if not len(self):
            return
        for _ in move_grippers(self.poses, self.widths, actions, self.config.substeps):
            pass
        self.step_counts += 1

    def render(self, rows=None) -> np.ndarray:
        """(r, H, W, 3) uint8: each of `rows`' (default all) grippers alone on black, pixel-aligned
        with the camera view."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, np.int64)
        out = np.empty((len(rows), self.config.height, self.config.width, 3), np.uint8)
        renderer = _renderer(self.config)
        phases = (self.step_counts[rows] % self.config.camera_period if self.config.is_camera_moving
                  else np.zeros(len(rows), np.int64))
        for phase in np.unique(phases):  # rows that see the same camera are drawn in one call
            which = np.nonzero(phases == phase)[0]
            camera = _camera(self.config)
            if self.config.is_camera_moving:
                camera = camera.moved(int(phase) / self.config.camera_period)
            renderer.set_camera(camera)
            centers, rotations, half_extents, colors = gripper_box_arrays(self.poses[rows[which]], self.widths[rows[which]])
            out[which] = renderer.render_boxes(centers, rotations, half_extents, colors)
        return out

    def pose_vectors(self, rows=None) -> np.ndarray:
        """float32 (r, 8): each of `rows`' (default all) pose vector (`GripperState.vector`)."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, np.int64)
        return pose_vectors(self.poses[rows, :, :3, 3], self.widths[rows])


class GripperTrack:
    """Steps the grippers of one episode by actions and renders their view, as `FoldWorld` would
    (one row of `GripperTracks`).

    Args:
        state: the grippers at the episode's first frame.
        config: as `GripperTracks`.
    """

    def __init__(self, state: GripperState, config: WorldConfig = WorldConfig()):
        self.tracks = GripperTracks([state], config)

    @property
    def config(self) -> WorldConfig:
        return self.tracks.config

    @property
    def poses(self) -> np.ndarray:
        """(2, 4, 4) the grippers' poses now."""
        return self.tracks.poses[0]

    @property
    def widths(self) -> np.ndarray:
        """(2,) the jaw openings now."""
        return self.tracks.widths[0]

    @property
    def step_count(self) -> int:
        return int(self.tracks.step_counts[0])

    @property
    def state(self) -> GripperState:
        return self.tracks.state(0)

    def step(self, action) -> None:
        """Move the grippers through one 20-D action (ValueError for a bad one, as the simulator)."""
        action = np.asarray(action)
        if action.shape != (20,):
            raise ValueError(f"a gripper step takes one action of shape (20,), got {action.shape}")
        self.tracks.step(action[None])

    def render(self) -> np.ndarray:
        """(H, W, 3) uint8: the grippers alone on black, pixel-aligned with the camera view."""
        return self.tracks.render()[0]


def gripper_views(states, actions, config: WorldConfig | None = None, with_poses: bool = False):
    """The grippers view of every frame of b episodes: uint8 (b, T + 1, H, W, 3), all b stepped
    and rendered together (`GripperTracks`).

    Args:
        states: b `GripperState`s, the grippers at each episode's first frame.
        actions: (b, T, 20) actions (T may be 0).
        config: scene settings; default `WorldConfig()` (64x64, `SimFold-v0`'s camera).
        with_poses: also return every frame's pose vector, float32 (b, T + 1, 8)
            (`GripperState.vector`), as a second value.
    """
    config = config or WorldConfig()
    actions = np.asarray(actions)
    if actions.ndim != 3 or actions.shape[0] != len(states) or actions.shape[2] != 20:
        raise ValueError(f"actions must be ({len(states)}, T, 20) for {len(states)} start states, got {actions.shape}")
    out = np.empty((len(states), actions.shape[1] + 1, config.height, config.width, 3), np.uint8)
    poses = np.empty((len(states), actions.shape[1] + 1, 8), np.float32)
    tracks = GripperTracks(states, config)
    out[:, 0], poses[:, 0] = tracks.render(), tracks.pose_vectors()
    for t in range(actions.shape[1]):
        tracks.step(actions[:, t])
        out[:, t + 1], poses[:, t + 1] = tracks.render(), tracks.pose_vectors()
    return (out, poses) if with_poses else out
