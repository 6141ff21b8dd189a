"""The grippers alone: their motion under 20-D actions and their pixel-aligned view, no cloth.

A world model conditioned on the grippers view (the Dexterous World Models seed's hand
conditioning) needs that view for every frame it generates. The grippers' motion is pure
kinematics of the actions (the cloth never pushes a gripper), so `GripperTrack` reproduces
the simulator's grippers view exactly from a start `GripperState` and the actions, at a
fraction of a simulator step's cost: `FoldWorld` and `GripperTrack` share `move_grippers`
and `gripper_boxes`, and the renderer draws the same boxes on black.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from wmgym.sim.camera import FisheyeCamera
from wmgym.sim.render import Renderer
from wmgym.sim.world import FoldWorld, WorldConfig, gripper_boxes, move_grippers


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


class GripperTrack:
    """Steps the grippers of one episode by actions and renders their view, as `FoldWorld` would.

    Args:
        state: the grippers at the episode's first frame.
        config: the scene settings of the simulator that made the episode (resolution, camera,
            substeps); the default is `SimFold-v0`'s at 64x64.
    """

    def __init__(self, state: GripperState, config: WorldConfig = WorldConfig()):
        self.config = config
        self.poses, self.widths = state.poses.copy(), state.widths.copy()
        self.step_count = 0

    @property
    def state(self) -> GripperState:
        return GripperState(self.poses.copy(), self.widths.copy())

    def step(self, action) -> None:
        """Move the grippers through one 20-D action (ValueError for a bad one, as the simulator)."""
        for _ in move_grippers(self.poses, self.widths, action, self.config.substeps):
            pass
        self.step_count += 1

    def render(self) -> np.ndarray:
        """(H, W, 3) uint8: the grippers alone on black, pixel-aligned with the camera view."""
        renderer = _renderer(self.config)
        camera = _camera(self.config)
        if self.config.is_camera_moving:
            camera = camera.moved((self.step_count % self.config.camera_period) / self.config.camera_period)
        renderer.set_camera(camera)
        return renderer.render(None, None, None, None, gripper_boxes(self.poses, self.widths), draw_table=False)


def gripper_views(states, actions, config: WorldConfig | None = None, with_poses: bool = False):
    """The grippers view of every frame of b episodes: uint8 (b, T + 1, H, W, 3).

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
    for i, state in enumerate(states):
        track = GripperTrack(state, config)
        out[i, 0], poses[i, 0] = track.render(), state.vector()
        for t, action in enumerate(actions[i]):
            track.step(action)
            out[i, t + 1], poses[i, t + 1] = track.render(), pose_vector(track.poses, track.widths)
    return (out, poses) if with_poses else out
