"""The folding scene: cloth physics + two grippers + fisheye camera, stepped by 20-D actions.

`FoldWorld` combines `cloth` (physics), `gripper` (geometry, grasping) and `render` (pixels);
`SimFold-v0` and dataset generation both drive it, so a dataset frame and an environment
observation are the same function of the same state.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.spatial.transform import Rotation

from wmgym.actions import apply_hand_action, check_rotations, validate_action
from wmgym.sim.camera import FisheyeCamera
from wmgym.sim.cloth import ClothMesh, ClothSim, ClothState, ShirtShape, make_shirt_mesh
from wmgym.sim.gripper import (DOWN, GRASP_WIDTH, PART_HALF_EXTENTS, PART_IS_FINGER, grasp_candidates, grasp_offsets,
                               limit_pose, part_centers)
from wmgym.sim.render import Box, Renderer, make_table_texture
from wmgym.sim.tasks import TASKS, ShirtFrame, Task, fold_score, goal_positions, make_task

OPEN_WIDTH = 0.08
# Below this TCP height an interpolated pose may reach the table; above it no gripper part can
# (the handle, the longest part, ends 0.16 m from the TCP).
TABLE_CHECK_HEIGHT = 0.17
HOME_POSITIONS = np.array([[-0.24, -0.26, 0.16], [0.24, -0.26, 0.16]])
_FINGER_COLORS = ((235, 125, 40), (40, 175, 195))  # left orange, right teal: tell the hands apart
_BODY_COLORS = ((85, 80, 75), (70, 78, 92))
_FINGER_PARTS = tuple(part for part, is_finger in enumerate(PART_IS_FINGER) if is_finger)


def move_grippers(poses: np.ndarray, widths: np.ndarray, action, substeps: int, after_hand=None):
    """Move grippers through 20-D actions, in place; a generator yielding after each substep.

    The only gripper kinematics of the simulator (`FoldWorld.step` runs its cloth substeps at
    the yields; `GripperTracks` runs none): each hand's target pose is its action applied to its
    pose, limited to the workspace and the table; the pose then moves there over `substeps`
    linear/geodesic steps (re-limited near the table) and the width linearly. Vectorised over
    any leading batch shape (the rows of a vector env move in one call), with every row's
    result independent of the others (the simulator moves a batch of one).

    Args:
        poses: (..., 2, 4, 4) float gripper poses, updated in place.
        widths: (..., 2) float jaw openings (metres), updated in place.
        action: (..., 20) actions (the layout of docs/design.md, "Actions").
        after_hand: called with the hand index after each substep, both hands moved (one pair
            of grippers only: poses (2, 4, 4)).
    """
    action = validate_action(action)
    batch = poses.shape[:-3]
    if poses.shape[-3:] != (2, 4, 4) or widths.shape != batch + (2,) or action.shape != batch + (20,):
        raise ValueError(f"move_grippers takes poses (..., 2, 4, 4), widths (..., 2) and actions (..., 20) of one batch "
                         f"shape, got {poses.shape}, {widths.shape} and {action.shape}")
    if after_hand is not None and batch:
        raise ValueError("after_hand is for one pair of grippers (poses (2, 4, 4))")
    check_rotations(action)
    targets, target_widths = apply_hand_action(poses, action.reshape(*batch, 2, 10))
    target_widths = np.clip(target_widths, 0.0, OPEN_WIDTH + 0.01)
    targets = limit_pose(targets, target_widths)
    relative = np.swapaxes(poses[..., :3, :3], -1, -2) @ targets[..., :3, :3]
    rotvecs = Rotation.from_matrix(relative.reshape(-1, 3, 3)).as_rotvec().reshape(*batch, 2, 3)
    start_poses, start_widths = poses.copy(), widths.copy()
    for s in range(1, substeps + 1):
        f = s / substeps
        poses[..., :3, 3] = (1 - f) * start_poses[..., :3, 3] + f * targets[..., :3, 3]
        poses[..., :3, :3] = start_poses[..., :3, :3] @ _rodrigues(f * rotvecs)
        widths[...] = (1 - f) * start_widths + f * target_widths
        low = poses[..., 2, 3] < TABLE_CHECK_HEIGHT  # a turning gripper near the table
        if low.any():
            poses[low] = limit_pose(poses[low], widths[low])
        if after_hand is not None:
            for hand in range(2):
                after_hand(hand)
        yield


def gripper_boxes(poses: np.ndarray, widths: np.ndarray) -> list[Box]:
    """The renderer's boxes of both grippers at `poses` (2, 4, 4) opened to `widths` (2,)."""
    return [Box(c, r, h, np.array(k)) for c, r, h, k in zip(*gripper_box_arrays(poses, widths))]


GRIPPER_BOX_COLORS = np.array([_FINGER_COLORS[hand] if finger else _BODY_COLORS[hand]
                               for hand in range(2) for finger in PART_IS_FINGER], np.float64)  # (8, 3)


def gripper_box_arrays(poses: np.ndarray, widths: np.ndarray):
    """The grippers' boxes as arrays, for rows of grippers at `poses` (..., 2, 4, 4) opened to
    `widths` (..., 2): centres (..., 8, 3), rotations (..., 8, 3, 3), half extents (8, 3) and
    colours (8, 3) (left hand's four parts, then the right's; `Renderer.render_boxes` draws them)."""
    centers = part_centers(poses, widths).reshape(*poses.shape[:-3], 8, 3)
    rotations = np.repeat(poses[..., :3, :3], 4, axis=-3)
    return centers, rotations, np.tile(PART_HALF_EXTENTS, (2, 1)), GRIPPER_BOX_COLORS


@dataclass(frozen=True)
class WorldConfig:
    """Scene settings.

    Attributes:
        height, width: image size in pixels (any size >= 16; 64x64 by default).
        substeps: physics substeps per action.
        step_seconds: simulated time per action.
        settle_substeps: substeps run at reset so the crumpled start state comes to rest.
        crumple: amplitude (metres) of the random start crumples; 0 gives a flat shirt.
        is_camera_moving: if True the camera follows a small orbit, one period per `camera_period`
            steps; the static-scene view is re-rendered from the moving camera every step.
        camera_period: steps per camera orbit.
        camera_position, camera_look_at, camera_fov_deg: the fisheye camera's placement (metres)
            and field of view across the image's shorter side.
        supersample: render at this multiple of the resolution, then area-downsample.
    """

    height: int = 64
    width: int = 64
    substeps: int = 10
    step_seconds: float = 0.2
    settle_substeps: int = 40
    crumple: float = 0.012
    is_camera_moving: bool = False
    camera_period: int = 16
    supersample: int = 2
    camera_position: tuple[float, float, float] = (0.0, -0.32, 0.52)
    camera_look_at: tuple[float, float, float] = (0.0, 0.0, 0.0)
    camera_fov_deg: float = 100.0


NUM_TABLE_TEXTURES = 64


@lru_cache(maxsize=NUM_TABLE_TEXTURES)
def _table_texture(index: int) -> np.ndarray:
    """One of a fixed bank of table textures, cached: making one costs a good share of simulating an episode."""
    return make_table_texture(np.random.default_rng([7, index]))


def _rodrigues(rotvec: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) of axis-angle vectors (..., 3), elementwise in each row:
    I + sin(a) [k]x + (1 - cos(a)) (k k^T - I) for the unit axis k and angle a."""
    angle = np.sqrt((rotvec * rotvec).sum(-1))  # (...)
    small = angle < 1e-12
    k = rotvec / np.where(small, 1.0, angle)[..., None]
    sin, one_minus_cos = np.sin(angle)[..., None, None], (1 - np.cos(angle))[..., None, None]
    out = one_minus_cos * (k[..., :, None] * k[..., None, :])
    skew = sin * k[..., None, :]  # sin(a) k, placed into the cross-product matrix below
    out[..., 0, 1] -= skew[..., 0, 2]
    out[..., 0, 2] += skew[..., 0, 1]
    out[..., 1, 0] += skew[..., 0, 2]
    out[..., 1, 2] -= skew[..., 0, 0]
    out[..., 2, 0] -= skew[..., 0, 1]
    out[..., 2, 1] += skew[..., 0, 0]
    diagonal = 1 - one_minus_cos[..., 0, 0]  # cos(a)
    for i in range(3):
        out[..., i, i] += diagonal
    out[small] = np.eye(3)
    return out


def _shirt_colors(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    hue = rng.uniform(0.0, 1.0)
    front = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.45, 0.8), rng.uniform(0.7, 0.95))) * 255
    # The inside of the fabric: same dye, paler and darker, so a folded layer reads as a fold.
    back = np.array(colorsys.hsv_to_rgb(hue, 0.25, 0.5)) * 255
    return front.astype(np.uint8), back.astype(np.uint8)


class FoldWorld:
    """A t-shirt on a table, two grippers, one fisheye camera.

    State after `reset`: `positions` (n, 3) cloth particles, `poses` (2, 4, 4) gripper poses
    (left, right), `widths` (2,) openings. `step(action)` applies one 20-D action over
    `config.substeps` physics substeps; `views()` renders the three pixel-aligned views.
    """

    def __init__(self, config: WorldConfig = WorldConfig()):
        self.config = config
        self.camera = FisheyeCamera(  # validates the resolution
            config.height, config.width, config.camera_position, config.camera_look_at, fov_deg=config.camera_fov_deg
        )
        self.shape = ShirtShape()
        self.mesh: ClothMesh = make_shirt_mesh(self.shape)
        self.cloth = ClothSim(self.mesh)
        self.renderer: Renderer | None = None
        # One renderer per table texture, kept across resets: its table background (a remap of the
        # texture for the camera) is a pure function of the texture and the camera.
        self._renderers: dict[int, Renderer] = {}

    # ----------------------------------------------------------------- reset
    def reset(self, rng: np.random.Generator, task: str) -> None:
        """Sample a start state for `task` from `rng` and let the cloth settle."""
        self.task: Task = make_task(task, self.shape)
        self.frame = ShirtFrame(rng.uniform(-0.03, 0.03), rng.uniform(-0.01, 0.04), rng.uniform(-0.2, 0.2))
        rest_xy = self.mesh.rest_positions[:, :2]
        xy = self.frame.to_world(rest_xy + self._crumple_field(rng, rest_xy))
        z = np.full(len(xy), self.cloth.table_offset) + self.config.crumple * rng.uniform(0, 1, len(xy)) ** 4
        state = self.cloth.settle_state(np.column_stack([xy, z]))
        for _ in range(self.config.settle_substeps):
            previous = state.positions
            state = self.cloth.step(state, self.config.step_seconds / self.config.substeps)
            if np.abs(state.positions - previous).max() < 1e-7:  # at rest: static friction holds it
                break
        self.state = ClothState(state.positions, np.zeros_like(state.positions))
        self.start = self.state.positions.copy()
        self.goal = goal_positions(self.task, self.start, rest_xy, self.frame, self.cloth.thickness)
        self.front_color, self.back_color = _shirt_colors(rng)
        texture_index = int(rng.integers(NUM_TABLE_TEXTURES))
        if texture_index not in self._renderers:
            self._renderers[texture_index] = Renderer(self.camera, _table_texture(texture_index),
                                                      supersample=self.config.supersample)
        self.renderer = self._renderers[texture_index]
        self.renderer.set_camera(self.camera)  # a moving camera left it elsewhere
        home = HOME_POSITIONS + rng.uniform(-0.02, 0.02, size=(2, 3))
        yaw = Rotation.from_euler("z", self.frame.yaw).as_matrix()
        self.poses = np.stack([np.eye(4), np.eye(4)])
        for hand in range(2):
            self.poses[hand, :3, :3] = yaw @ DOWN
            self.poses[hand, :3, 3] = home[hand]
        self.widths = np.full(2, OPEN_WIDTH)
        self.held: list[tuple[np.ndarray, np.ndarray] | None] = [None, None]
        self.ever_grasped = [False, False]
        self.step_count = 0
        self._static_view: np.ndarray | None = None

    def _crumple_field(self, rng: np.random.Generator, xy: np.ndarray) -> np.ndarray:
        """Small smooth in-plane displacement (n, 2): a sum of three random plane waves."""
        out = np.zeros_like(xy)
        for _ in range(3):
            k = rng.normal(0, 12.0, size=2)
            phase = rng.uniform(0, 2 * np.pi)
            out += rng.normal(0, self.config.crumple / 2, size=2) * np.sin(xy @ k + phase)[:, None]
        return out

    # ------------------------------------------------------------------ step
    def step(self, action) -> None:
        """Apply one 20-D action (docs/design.md, "Actions") over `config.substeps` physics substeps."""
        dt = self.config.step_seconds / self.config.substeps
        for _ in move_grippers(self.poses, self.widths, action, self.config.substeps, after_hand=self._update_grasp):
            self.state = self.cloth.step(self.state, dt, *self._pins(), obstacles=self._finger_obstacles())
        self.step_count += 1

    def _update_grasp(self, hand: int) -> None:
        closed = self.widths[hand] < GRASP_WIDTH
        if closed and self.held[hand] is None:
            index = grasp_candidates(self.state.positions, self.poses[hand], self.widths[hand])
            other = self.held[1 - hand]
            if other is not None:
                index = np.setdiff1d(index, other[0])
            self.held[hand] = (index, grasp_offsets(self.state.positions[index], self.poses[hand]))
            self.ever_grasped[hand] |= len(index) > 0
        elif not closed and self.held[hand] is not None:
            self.held[hand] = None

    def _pins(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        index, targets = [], []
        for hand, held in enumerate(self.held):
            if held is not None and len(held[0]):
                pose = self.poses[hand]
                index.append(held[0])
                targets.append(held[1] @ pose[:3, :3].T + pose[:3, 3])
        if not index:
            return None, None
        return np.concatenate(index), np.concatenate(targets)

    def _finger_obstacles(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The fingers as `ClothSim.step`'s obstacles: the boxes of `gripper_parts`, both hands'
        centres computed at once (`part_centers` gives each row what it gives it alone)."""
        centers = part_centers(self.poses, self.widths)  # (2, 4, 3)
        return [(centers[hand, part], self.poses[hand, :3, :3], PART_HALF_EXTENTS[part])
                for hand in range(2) for part in _FINGER_PARTS]

    # ---------------------------------------------------------------- status
    @property
    def positions(self) -> np.ndarray:
        return self.state.positions

    @property
    def is_holding(self) -> bool:
        return any(h is not None and len(h[0]) for h in self.held)

    def score(self) -> float:
        return fold_score(self.state.positions, self.goal, self.start)

    def scores_for_all_tasks(self) -> dict[str, float]:
        """Score of the current state under every task's goal (from the same start state)."""
        rest_xy = self.mesh.rest_positions[:, :2]
        return {
            name: fold_score(
                self.state.positions,
                goal_positions(make_task(name, self.shape), self.start, rest_xy, self.frame, self.cloth.thickness),
                self.start,
            )
            for name in TASKS
        }

    def is_success(self) -> bool:
        """Score at the task's threshold with the cloth released (a held fold is not done)."""
        return self.score() >= self.task.success_threshold and not self.is_holding

    # ---------------------------------------------------------------- render
    def _boxes(self) -> list[Box]:
        return gripper_boxes(self.poses, self.widths)

    def _sync_camera(self) -> None:
        if self.config.is_camera_moving:
            t = (self.step_count % self.config.camera_period) / self.config.camera_period
            self.renderer.set_camera(self.camera.moved(t))
            self._static_view = None

    def views(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(camera, static_scene, grippers), each (H, W, 3) uint8, pixel-aligned."""
        self._sync_camera()
        faces = self.mesh.faces
        boxes = self._boxes()
        r = self.renderer
        camera, grippers = r.render_with_boxes_alone(self.state.positions, faces, self.front_color, self.back_color, boxes)
        if self._static_view is None:
            self._static_view = r.render(self.start, faces, self.front_color, self.back_color, [])
        return camera, self._static_view, grippers

    def render_goal(self) -> np.ndarray:
        """(H, W, 3) uint8: the goal configuration, no grippers, from the start camera."""
        self.renderer.set_camera(self.camera)
        image = self.renderer.render(self.goal, self.mesh.faces, self.front_color, self.back_color, [])
        self._sync_camera()
        return image
