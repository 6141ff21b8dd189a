"""The 20-D bimanual action: layout, 6-D rotations, relative poses, bounds, validation.

This module is the single source of truth for what an action means; it imports nothing else
from wmgym so every other part (sim, data, envs, policies) can depend on it without cycles.
Poses are 4x4 homogeneous matrices mapping gripper-frame coordinates to world coordinates.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

ACTION_DIM = 20
HAND_ACTION_DIM = 10
ACTION_LAYOUT = """\
action: 20 float32 numbers, left gripper [0:10] then right gripper [10:20]; per gripper:
  [0:3]  position of the gripper at t+1 expressed in the gripper frame at t (metres)
  [3:9]  rotation from t to t+1 as 6-D: first two columns of the relative rotation matrix
         R_t^T R_{t+1}, column after column: [R00, R10, R20, R01, R11, R21]
  [9]    gripper opening width at t+1 (metres, absolute)
shape (20,) for one step or (..., 20) for a batch."""

ACTION_NAMES = tuple(f"{hand}_{part}" for hand in ("left", "right")
                     for part in ("dx", "dy", "dz", "r00", "r10", "r20", "r01", "r11", "r21", "width"))
"""The 20 components' names, in order (written into a world model's config as its action spec)."""

POSITION_DIMS = np.array([0, 1, 2, 10, 11, 12])
"""The two hands' position deltas in the 20-D action."""
WIDTH_DIMS = np.array([9, 19])
"""The two hands' gripper widths in the 20-D action."""
FREE_DIMS = np.concatenate([POSITION_DIMS, WIDTH_DIMS])
"""Positions and widths: the dimensions planners and proposal episodes perturb (rotations are not)."""
for _dims in (POSITION_DIMS, WIDTH_DIMS, FREE_DIMS):
    _dims.flags.writeable = False

MAX_POSITION_DELTA = 0.12  # metres per step per axis
MAX_WIDTH = 0.09  # metres; UMI-style parallel gripper fully open
IDENTITY_HAND_ROT6D = np.array([1, 0, 0, 0, 1, 0], dtype=np.float32)

_HAND_LOW = np.array([-MAX_POSITION_DELTA] * 3 + [-1.0] * 6 + [0.0], dtype=np.float32)
_HAND_HIGH = np.array([MAX_POSITION_DELTA] * 3 + [1.0] * 6 + [MAX_WIDTH], dtype=np.float32)
ACTION_LOW = np.concatenate([_HAND_LOW, _HAND_LOW])
ACTION_HIGH = np.concatenate([_HAND_HIGH, _HAND_HIGH])



def clip_to_bounds(actions: np.ndarray) -> np.ndarray:
    """A copy of (..., 20) with positions and widths clipped to the bounds; rotations are left as they are."""
    out = actions.copy()
    out[..., FREE_DIMS] = np.clip(out[..., FREE_DIMS], ACTION_LOW[FREE_DIMS], ACTION_HIGH[FREE_DIMS])
    return out


# Below this norm a column carries no direction; Gram-Schmidt would divide by ~0.
_DEGENERATE_EPS = 1e-8


def _check_last_dims(name: str, x: np.ndarray, dims: tuple[int, ...]) -> None:
    if x.ndim < len(dims) or x.shape[x.ndim - len(dims):] != dims:
        want = "(..., " + ", ".join(map(str, dims)) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {x.shape}")


def rot6d_to_matrix(r6) -> np.ndarray:
    """6-D rotation (..., 6) -> rotation matrix (..., 3, 3) by Gram-Schmidt (Zhou et al. 2019).

    r6 = [a1, a2] (two 3-vectors, the intended first and second columns). A non-orthonormal
    input is orthonormalised, never rejected: b1 = a1/|a1|, b2 = a2 - (b1.a2) b1 normalised,
    b3 = b1 x b2. Raises ValueError for non-finite values, a zero-norm a1 or an a2 parallel
    to a1, because those define no rotation.
    """
    r6 = np.asarray(r6, dtype=np.float64)
    _check_last_dims("rot6d_to_matrix", r6, (6,))
    if not np.all(np.isfinite(r6)):
        raise ValueError("rot6d_to_matrix: input contains non-finite values")
    a1, a2 = r6[..., 0:3], r6[..., 3:6]
    first_is_zero, second_is_degenerate = _degenerate_columns(r6)
    if np.any(first_is_zero):
        raise ValueError("rot6d_to_matrix: first column has zero norm (degenerate 6-D rotation)")
    if np.any(second_is_degenerate):
        raise ValueError(
            "rot6d_to_matrix: second column is zero or parallel to the first (degenerate 6-D rotation)"
        )
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    u2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = u2 / np.linalg.norm(u2, axis=-1, keepdims=True)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-1)  # stack as columns


def _degenerate_columns(r6: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finite 6-D rotations (..., 6) -> (first column ~zero (...), second column ~zero or parallel
    to the first (...)): the rotations Gram-Schmidt cannot orthonormalise."""
    a1, a2 = r6[..., 0:3], r6[..., 3:6]
    n1 = np.linalg.norm(a1, axis=-1)
    first_is_zero = n1 < _DEGENERATE_EPS
    b1 = a1 / np.where(first_is_zero, 1.0, n1)[..., None]
    u2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    # Compare against |a2| too so that a tiny but non-parallel a2 is still accepted.
    second_is_degenerate = np.linalg.norm(u2, axis=-1) < _DEGENERATE_EPS * np.maximum(1.0, np.linalg.norm(a2, axis=-1))
    return first_is_zero, second_is_degenerate & ~first_is_zero


def check_rotations(actions) -> None:
    """ValueError, before anything moves, if any row of finite actions (..., 20) has a 6-D rotation
    that defines no rotation (a zero first column, or a second column zero or parallel to it).

    The message names the rows and hands, shows the layout, and points at `identity_action`: the
    action of all zeros, the first "no-op" people try, is such a row (zero is not "no rotation").
    """
    hands = np.asarray(actions, dtype=np.float64).reshape(-1, 2, HAND_ACTION_DIM)  # (n, hand, 10)
    first_is_zero, second_is_degenerate = _degenerate_columns(hands[..., 3:9])
    bad = first_is_zero | second_is_degenerate  # (n, 2)
    if not bad.any():
        return
    where = [f"row {row} {('left [3:9]', 'right [13:19]')[hand]}" for row, hand in np.argwhere(bad)]
    shown = ", ".join(where[:8]) + (" ..." if len(where) > 8 else "")
    raise ValueError(
        f"degenerate 6-D rotation at {shown}: its first column is zero, or its second is zero or parallel to the "
        "first, which defines no rotation. To hold a gripper still, its rotation is [1, 0, 0, 0, 1, 0] (not zeros): "
        "wmgym.actions.identity_action(left_width, right_width) gives the whole no-op action.\n" + ACTION_LAYOUT
    )


def matrix_to_rot6d(R) -> np.ndarray:
    """Rotation matrix (..., 3, 3) -> 6-D rotation (..., 6): column 0 then column 1."""
    R = np.asarray(R)
    _check_last_dims("matrix_to_rot6d", R, (3, 3))
    return np.concatenate([R[..., :, 0], R[..., :, 1]], axis=-1)


def pose_to_matrix(position, rotation) -> np.ndarray:
    """Position (..., 3) and rotation (..., 3, 3) -> homogeneous pose (..., 4, 4), float64.

    Leading dimensions broadcast against each other.
    """
    p = np.asarray(position, dtype=np.float64)
    R = np.asarray(rotation, dtype=np.float64)
    _check_last_dims("pose_to_matrix position", p, (3,))
    _check_last_dims("pose_to_matrix rotation", R, (3, 3))
    batch = np.broadcast_shapes(p.shape[:-1], R.shape[:-2])
    T = np.zeros(batch + (4, 4))
    T[..., :3, :3] = R
    T[..., :3, 3] = p
    T[..., 3, 3] = 1.0
    return T


def matrix_to_pose(T) -> tuple[np.ndarray, np.ndarray]:
    """Homogeneous pose (..., 4, 4) -> (position (..., 3), rotation (..., 3, 3)), copies."""
    T = np.asarray(T, dtype=np.float64)
    _check_last_dims("matrix_to_pose", T, (4, 4))
    return T[..., :3, 3].copy(), T[..., :3, :3].copy()


def axis_angle_to_matrix(v) -> np.ndarray:
    """Axis-angle / rotation vector (..., 3) (radians) -> rotation matrix (..., 3, 3).

    The zarr episode store keeps rotations as rotation vectors, as UMI does.
    """
    v = np.asarray(v, dtype=np.float64)
    _check_last_dims("axis_angle_to_matrix", v, (3,))
    flat = v.reshape(-1, 3)
    # scipy wants at least one rotation; an empty batch maps to an empty batch.
    out = Rotation.from_rotvec(flat).as_matrix() if len(flat) else np.zeros((0, 3, 3))
    return out.reshape(v.shape[:-1] + (3, 3))


def matrix_to_axis_angle(R) -> np.ndarray:
    """Rotation matrix (..., 3, 3) -> axis-angle / rotation vector (..., 3), angle in [0, pi]."""
    R = np.asarray(R, dtype=np.float64)
    _check_last_dims("matrix_to_axis_angle", R, (3, 3))
    flat = R.reshape(-1, 3, 3)
    out = Rotation.from_matrix(flat).as_rotvec() if len(flat) else np.zeros((0, 3))
    return out.reshape(R.shape[:-2] + (3,))


def hand_action_from_poses(pose_t, pose_next, width_next) -> np.ndarray:
    """One gripper's action from its poses at t and t+1.

    pose_t, pose_next: (..., 4, 4); width_next: (...) metres. Returns (..., 10) float32:
    [R_t^T (p_next - p_t), rot6d(R_t^T R_next), width_next].
    """
    pos_t, R_t = matrix_to_pose(pose_t)
    pos_n, R_n = matrix_to_pose(pose_next)
    R_tT = np.swapaxes(R_t, -1, -2)
    delta = np.einsum("...ij,...j->...i", R_tT, pos_n - pos_t)  # express in the frame at t
    r6 = matrix_to_rot6d(R_tT @ R_n)
    w = np.asarray(width_next, dtype=np.float64)[..., None]
    batch = np.broadcast_shapes(delta.shape[:-1], r6.shape[:-1], w.shape[:-1])
    parts = [np.broadcast_to(x, batch + x.shape[-1:]) for x in (delta, r6, w)]
    return np.concatenate(parts, axis=-1).astype(np.float32)


def apply_hand_action(pose_t, hand_action) -> tuple[np.ndarray, np.ndarray]:
    """Apply one gripper's action: (..., 4, 4), (..., 10) -> (pose_next (..., 4, 4), width (...)).

    p_next = p_t + R_t @ delta, R_next = R_t @ rot6d_to_matrix(r6); a non-orthonormal r6 is
    orthonormalised (Gram-Schmidt), so the result is always a proper rotation.
    """
    pos_t, R_t = matrix_to_pose(pose_t)
    a = np.asarray(hand_action, dtype=np.float64)
    _check_last_dims("apply_hand_action", a, (HAND_ACTION_DIM,))
    pos_n = pos_t + np.einsum("...ij,...j->...i", R_t, a[..., 0:3])
    R_n = R_t @ rot6d_to_matrix(a[..., 3:9])
    return pose_to_matrix(pos_n, R_n), a[..., 9].copy()


def actions_from_poses(left_poses, right_poses, left_widths, right_widths) -> np.ndarray:
    """Episode actions from gripper trajectories.

    left_poses, right_poses: (T+1, 4, 4); left_widths, right_widths: (T+1,).
    Returns (T, 20) float32; row t moves the grippers from frame t to frame t+1.
    """
    lp, rp = np.asarray(left_poses), np.asarray(right_poses)
    lw, rw = np.asarray(left_widths), np.asarray(right_widths)
    n = lp.shape[0] if lp.ndim == 3 else -1
    if not (lp.shape == rp.shape == (n, 4, 4) and lw.shape == rw.shape == (n,) and n >= 1):
        raise ValueError(
            "actions_from_poses: expected poses (T+1, 4, 4) and widths (T+1,) with T+1 >= 1, got "
            f"left {lp.shape}, right {rp.shape}, widths {lw.shape}, {rw.shape}"
        )
    left = hand_action_from_poses(lp[:-1], lp[1:], lw[1:])
    right = hand_action_from_poses(rp[:-1], rp[1:], rw[1:])
    return np.concatenate([left, right], axis=-1).astype(np.float32)


def poses_from_actions(left_pose0, right_pose0, actions, left_width0=None, right_width0=None):
    """Roll actions (T, 20) out from start poses (4, 4); the inverse of actions_from_poses.

    Returns (left_poses (T+1, 4, 4), right_poses (T+1, 4, 4), widths (T+1, 2) [left, right]).
    Actions never encode the width at t=0, so left_width0/right_width0 give it; when None the
    gripper is taken to already hold the width of the first action (needs T >= 1).
    """
    actions = validate_action(actions).reshape(-1, ACTION_DIM)
    T = actions.shape[0]
    if T == 0 and (left_width0 is None or right_width0 is None):
        raise ValueError("poses_from_actions: with no actions, left_width0 and right_width0 are required")
    lw0 = actions[0, 9] if left_width0 is None else left_width0
    rw0 = actions[0, 19] if right_width0 is None else right_width0
    left = [np.asarray(left_pose0, dtype=np.float64)]
    right = [np.asarray(right_pose0, dtype=np.float64)]
    _check_last_dims("poses_from_actions left_pose0", left[0], (4, 4))
    _check_last_dims("poses_from_actions right_pose0", right[0], (4, 4))
    widths = np.empty((T + 1, 2))
    widths[0] = (lw0, rw0)
    for t in range(T):  # sequential: each pose is relative to the previous one
        pl, widths[t + 1, 0] = apply_hand_action(left[-1], actions[t, :HAND_ACTION_DIM])
        pr, widths[t + 1, 1] = apply_hand_action(right[-1], actions[t, HAND_ACTION_DIM:])
        left.append(pl)
        right.append(pr)
    return np.stack(left), np.stack(right), widths


def validate_action(action) -> np.ndarray:
    """Check an action (20,) or batch (..., 20) and return it as a float32 array.

    Raises ValueError (the message names ACTION_LAYOUT and the shape that came) for a wrong
    shape, a non-numeric type, or NaN/inf (`check_rotations` checks the 6-D rotations). It does NOT clip to ACTION_LOW/ACTION_HIGH: the
    bounds are enforced by the environments' action spaces (see is_within_bounds).
    """
    try:
        arr = np.asarray(action)
    except ValueError as e:  # ragged nested sequences
        raise ValueError(f"action could not be read as an array ({e}).\n{ACTION_LAYOUT}") from None
    if arr.dtype.kind not in "iuf":
        raise ValueError(
            f"action must be real numbers, got dtype {arr.dtype} with shape {arr.shape}.\n{ACTION_LAYOUT}"
        )
    if arr.ndim < 1 or arr.shape[-1] != ACTION_DIM:
        raise ValueError(
            f"action must have shape ({ACTION_DIM},) or (..., {ACTION_DIM}), got shape {arr.shape}.\n"
            f"{ACTION_LAYOUT}"
        )
    with np.errstate(over="ignore"):  # overflow becomes inf, reported just below
        out = arr.astype(np.float32)
    bad = ~np.isfinite(out)  # checked after the cast, so float64 overflow to inf is caught too
    if bad.any():
        idx = [tuple(int(i) for i in ix) if len(ix) > 1 else int(ix[0]) for ix in np.argwhere(bad)]
        shown = ", ".join(map(str, idx[:10])) + (" ..." if len(idx) > 10 else "")
        raise ValueError(
            f"action of shape {arr.shape} has non-finite values at indices {shown}.\n{ACTION_LAYOUT}"
        )
    return out


def is_within_bounds(action) -> bool:
    """True if every element of a valid action (20,) or (..., 20) lies in [ACTION_LOW, ACTION_HIGH]."""
    a = validate_action(action)
    return bool(np.all((a >= ACTION_LOW) & (a <= ACTION_HIGH)))


def identity_action(left_width: float, right_width: float) -> np.ndarray:
    """(20,) float32 action that holds both grippers still at the given widths (metres)."""
    hand = np.concatenate([np.zeros(3, np.float32), IDENTITY_HAND_ROT6D])
    return np.concatenate([hand, [left_width], hand, [right_width]]).astype(np.float32)
