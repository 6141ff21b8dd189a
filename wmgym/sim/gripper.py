"""UMI-style parallel-jaw gripper: geometry, workspace limits, grasping.

Gripper frame (the pose's rotation columns): x is the direction the fingers open along,
y the fingers' depth, z points from the handle to the fingertips. The tool centre point (the
pose's position) sits between the fingertips, so a gripper pointing down with its TCP at
z = 0 touches the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FINGER_LENGTH = 0.05
FINGER_THICKNESS = 0.01
FINGER_DEPTH = 0.04  # soft UMI finger pads are wide: a pinch catches a few centimetres of edge
PALM_HEIGHT = 0.02
HANDLE_LENGTH = 0.09
HANDLE_HALF_WIDTH = 0.014
GRASP_WIDTH = 0.02  # a commanded width below this closes the jaws on whatever lies between them
WORKSPACE_LOW = np.array([-0.5, -0.45, 0.0])
WORKSPACE_HIGH = np.array([0.5, 0.45, 0.4])

# Pointing straight down, fingers opening along world x: columns (x, -y, -z) of the world.
DOWN = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])


@dataclass(frozen=True)
class GripperPart:
    """One box of the gripper in the world frame: centre (3,), rotation (3, 3), half extents (3,)."""

    center: np.ndarray
    rotation: np.ndarray
    half_extents: np.ndarray
    is_finger: bool


PART_IS_FINGER = (True, True, False, False)  # the parts of a gripper, in order: two fingers, palm, handle
_PALM_HALF_X = 0.045 + FINGER_THICKNESS
PART_HALF_EXTENTS = np.array([
    (FINGER_THICKNESS / 2, FINGER_DEPTH / 2, FINGER_LENGTH / 2), (FINGER_THICKNESS / 2, FINGER_DEPTH / 2, FINGER_LENGTH / 2),
    (_PALM_HALF_X, FINGER_DEPTH * 0.6, PALM_HEIGHT / 2), (HANDLE_HALF_WIDTH, HANDLE_HALF_WIDTH, HANDLE_LENGTH / 2),
])  # (4, 3) metres, in the gripper frame


def part_offsets(widths) -> np.ndarray:
    """Each part's centre in the gripper frame, (..., 4, 3), for jaw openings `widths` (...)."""
    widths = np.asarray(widths, dtype=np.float64)
    out = np.zeros(widths.shape + (4, 3))
    out[..., 0, 0] = -(widths / 2 + FINGER_THICKNESS / 2)
    out[..., 1, 0] = widths / 2 + FINGER_THICKNESS / 2
    out[..., :2, 2] = -FINGER_LENGTH / 2
    out[..., 2, 2] = -FINGER_LENGTH - PALM_HEIGHT / 2
    out[..., 3, 2] = -FINGER_LENGTH - PALM_HEIGHT - HANDLE_LENGTH / 2
    return out


def part_centers(poses: np.ndarray, widths) -> np.ndarray:
    """World centres (..., 4, 3) of the parts of grippers at `poses` (..., 4, 4) opened to `widths` (...).

    Written as sums of elementwise products (not a BLAS product), so a row's result does not
    depend on how many rows are computed at once: the simulator and a batch of grippers tracks agree bit for bit."""
    rotation, tcp = poses[..., None, :3, :3], poses[..., None, :3, 3]
    offsets = part_offsets(widths)[..., None, :]  # (..., 4, 1, 3)
    return tcp + (rotation * offsets).sum(-1)


def gripper_parts(pose: np.ndarray, width: float) -> list[GripperPart]:
    """Boxes of a gripper at `pose` (4, 4) opened to `width` metres: two fingers, palm, handle."""
    centers = part_centers(np.asarray(pose, dtype=np.float64), width)
    return [GripperPart(centers[k], pose[:3, :3], PART_HALF_EXTENTS[k].copy(), PART_IS_FINGER[k]) for k in range(4)]


_CORNER_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
_CORNER_OFFSETS = _CORNER_SIGNS[None] * PART_HALF_EXTENTS[:, None]  # (4, 8, 3) each part's corners about its centre


def limit_pose(pose: np.ndarray, width) -> np.ndarray:
    """Keep the TCP inside the workspace box and every part of the gripper above the table.

    This is the only place the simulator changes a commanded pose: positions outside
    `WORKSPACE_LOW`..`WORKSPACE_HIGH` are moved to the box, then the gripper is lifted until
    its lowest corner touches z = 0 (it cannot pass through the table).

    Batched: poses (..., 4, 4) and widths (...) give (..., 4, 4), each row as alone.
    """
    pose = np.array(pose, dtype=np.float64)
    pose[..., :3, 3] = np.clip(pose[..., :3, 3], WORKSPACE_LOW, WORKSPACE_HIGH)
    up = pose[..., None, None, 2, :3]  # (..., 1, 1, 3): the world z of each gripper axis
    centers_z = part_centers(pose, width)[..., 2]  # (..., 4)
    corners_z = centers_z[..., None] + (_CORNER_OFFSETS * up).sum(-1)  # (..., 4, 8)
    lowest = corners_z.min(axis=(-1, -2))
    pose[..., 2, 3] -= np.minimum(lowest, 0.0)
    return pose


def grasp_candidates(positions: np.ndarray, pose: np.ndarray, width: float) -> np.ndarray:
    """Indices of particles between the open jaws of a gripper at `pose` with opening `width`.

    A particle is caught when it lies between the fingers (|x| < width / 2 + a margin), within
    the fingers' depth, and no deeper than the fingers reach (from 1.5 cm beyond the tips to
    3 cm inside the jaws). Returns (k,) int indices, possibly empty.
    """
    local = (positions - pose[:3, 3]) @ pose[:3, :3]  # (n, 3) in the gripper frame
    margin = 0.006
    inside = (
        (np.abs(local[:, 0]) < max(width, GRASP_WIDTH) / 2 + margin)
        & (np.abs(local[:, 1]) < FINGER_DEPTH / 2 + margin)
        & (local[:, 2] > -0.03)
        & (local[:, 2] < 0.015)
    )
    return np.nonzero(inside)[0]


def grasp_offsets(positions: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Caught particles' coordinates in the gripper frame, squeezed to the closed jaws: (k, 3)."""
    local = (positions - pose[:3, 3]) @ pose[:3, :3]
    local[:, 0] *= 0.2
    return local
