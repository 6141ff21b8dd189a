"""20-D bimanual actions from a real robot's absolute end-effector poses (`wmgym import --actions eef-pose`).

Dimension legend: T rows of an episode's state, S state values, K kept frames (every `stride`-th
row: K = ceil(T / stride)), K - 1 actions.

A dataset's state holds, per arm, an absolute end-effector pose -- xyz (metres) and a rotation
(Euler angles with a declared convention, a quaternion with a declared order, or an axis-angle
rotation vector; radians unless declared in degrees) -- and a gripper value with a declared
range and direction. Three small declared specs say how to read them (the first two live in
`wmgym.data.robot_specs`):

- `RotationSpec`: the rotation's kind and convention. There is no default Euler convention
  (datasets rarely state theirs and a wrong one silently rotates every action); Bridge's
  `[roll, pitch, yaw]` fits scipy's extrinsic "xyz" best (`BRIDGE_ROTATION`).
- `GripperSpec`: the gripper value's range [lo, hi] and which end means open; mapped linearly
  to an opening width in metres, 0 (closed) .. `max_width` (open, at most `MAX_WIDTH`), clipped.
- `EefPoseLayout`: which state columns hold each arm's xyz, rotation and gripper, by index or by
  name (`EefPoseLayout.bridge()`, `EefPoseLayout.umi(...)`, `EefPoseLayout.from_names(...)`).

`bimanual_actions` converts an episode with the convention of `wmgym.actions` (per hand:
position at k+1 in the gripper frame at k, 6-D relative rotation R_k^T R_{k+1}, absolute width
at k+1), exactly what `actions.actions_from_poses` computes from the kept frames' poses, so
`actions.poses_from_actions` from the first kept pose rolls the actions back out to the kept
poses. With a `stride`, each action is recomputed from the poses of kept frames k*stride and
(k+1)*stride; it is never a sum of the per-row actions (relative positions and rotations do not
add: each is expressed in a different gripper frame).

One arm or two:
- a single arm drives the LEFT hand ([0:10]); the right hand is PARKED: it holds
  `PARKED_RIGHT_POSE` (identity rotation at the origin of the dataset's frame) at
  `PARKED_WIDTH` (= MAX_WIDTH, fully open) throughout, so every right half of an action is
  `identity_action`'s: zero position delta, rotation [1, 0, 0, 0, 1, 0], width PARKED_WIDTH.
  Roll such actions out with `poses_from_actions(left_pose0, PARKED_RIGHT_POSE, actions,
  left_width0, PARKED_WIDTH)`.
- two arms (`EefPoseLayout(left, right)`) drive the left and the right hand.

Position deltas beyond +-MAX_POSITION_DELTA (possible at large strides or fast motions) are
clipped by default, with a warning, and the clipped actions are reported in
`EefActions.clipped` (the roll-out then no longer reaches the recorded poses); `clip=False`
raises instead. Rotations need no clipping (6-D entries always lie in [-1, 1]); widths are
clipped to [0, max_width] by `GripperSpec`.

The dataset's end-effector frame is taken as the gripper frame as it is: position deltas are
expressed in whatever axes the dataset's tool frame has.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np

from wmgym.actions import (
    ACTION_DIM,
    MAX_POSITION_DELTA,
    MAX_WIDTH,
    POSITION_DIMS,
    actions_from_poses,
    pose_to_matrix,
)
from wmgym.data.robot_specs import (  # noqa: F401  (the presets too: this module is the one entry point for eef-pose actions)
    BRIDGE_GRIPPER,
    BRIDGE_ROTATION,
    UMI_GRIPPER,
    UMI_ROTATION,
    GripperSpec,
    RotationSpec,
    shown,
)

PARKED_RIGHT_POSE = np.eye(4)
"""(4, 4) the parked right hand's pose when a single arm drives the left hand: identity rotation
at the origin of the dataset's frame. It never moves (read-only)."""
PARKED_RIGHT_POSE.flags.writeable = False
PARKED_WIDTH = MAX_WIDTH
"""The parked right hand's width (metres): fully open, MAX_WIDTH."""

def select_columns(spec, state_names: Sequence[str] | None = None) -> tuple[int, ...]:
    """State column indices from a spec: an int, a name, a range "a:b", a slice, comma-separated
    text ("x,y,z" or "0,1,2"), or a sequence of ints and names. Names need `state_names`.

    ValueError for a name not in `state_names`, a negative index or an empty selection.
    """
    if isinstance(spec, slice):
        if spec.stop is None or (spec.start or 0) < 0 or spec.stop < 0:
            raise ValueError(f"column slice needs non-negative bounds with a stop, got {spec}")
        out = tuple(range(spec.start or 0, spec.stop, spec.step or 1))
    elif isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        out = (int(spec),)
    elif isinstance(spec, str):
        text = spec.strip()
        if "," in text:
            return _nonempty(sum((select_columns(p, state_names) for p in text.split(",")), ()), spec)
        if state_names is not None and text in state_names:
            out = (list(state_names).index(text),)
        elif re.fullmatch(r"\d+:\d+", text):
            a, b = map(int, text.split(":"))
            out = tuple(range(a, b))
        elif re.fullmatch(r"\d+", text):
            out = (int(text),)
        elif state_names is None:
            raise ValueError(f"state column {text!r} is a name, but the dataset's state has no names; give indices")
        else:
            raise ValueError(f"no state column named {text!r}; the state's columns are {list(state_names)}")
    elif isinstance(spec, Sequence) or isinstance(spec, np.ndarray):
        out = sum((select_columns(p if isinstance(p, str) else int(p), state_names) for p in spec), ())
    else:
        raise ValueError(f"cannot read state columns from {spec!r}")
    if any(i < 0 for i in out):
        raise ValueError(f"state column indices must be >= 0, got {spec!r}")
    return _nonempty(out, spec)


def _nonempty(out: tuple[int, ...], spec) -> tuple[int, ...]:
    if not out:
        raise ValueError(f"state column spec {spec!r} selects no column")
    return out


@dataclass(frozen=True)
class ArmColumns:
    """One arm's state columns.

    Attributes:
        position: 3 column indices of x, y, z (metres).
        rotation: 3 (euler, axis-angle) or 4 (quaternion) column indices, in the order the
            `RotationSpec` reads them.
        gripper: the gripper value's column index.

    Any column spec of `select_columns` is accepted and resolved to indices (names need
    `ArmColumns.from_names`). ValueError for a wrong count or a column used twice.
    """

    position: tuple[int, ...]
    rotation: tuple[int, ...]
    gripper: int

    def __post_init__(self):
        position = select_columns(self.position)
        rotation = select_columns(self.rotation)
        gripper = select_columns(self.gripper)
        if len(position) != 3:
            raise ValueError(f"an arm's position takes 3 state columns (x, y, z), got {position}")
        if len(rotation) not in (3, 4):
            raise ValueError(f"an arm's rotation takes 3 (euler, axis-angle) or 4 (quaternion) state columns, "
                             f"got {rotation}")
        if len(gripper) != 1:
            raise ValueError(f"an arm's gripper takes 1 state column, got {gripper}")
        object.__setattr__(self, "position", position)
        object.__setattr__(self, "rotation", rotation)
        object.__setattr__(self, "gripper", gripper[0])
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"an arm's state columns must all differ, got position {position}, rotation "
                             f"{rotation}, gripper {gripper[0]}")

    @classmethod
    def from_names(cls, state_names: Sequence[str], position, rotation, gripper) -> "ArmColumns":
        """Columns from names (or any `select_columns` spec) resolved against `state_names`."""
        return cls(select_columns(position, state_names), select_columns(rotation, state_names),
                   select_columns(gripper, state_names))

    @property
    def columns(self) -> tuple[int, ...]:
        """All 7 or 8 columns: position, rotation, gripper."""
        return self.position + self.rotation + (self.gripper,)


@dataclass(frozen=True)
class EefPoseLayout:
    """Which state columns hold the arms' end-effector poses and grippers.

    Attributes:
        left: the arm that drives the left hand (a single-arm dataset's only arm).
        right: the arm that drives the right hand, or None: the right hand is parked
            (`PARKED_RIGHT_POSE`, `PARKED_WIDTH`).
        state_names: the state's column names where known (only for messages).
    """

    left: ArmColumns
    right: ArmColumns | None = None
    state_names: tuple[str, ...] | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.right is not None:
            shared = set(self.left.columns) & set(self.right.columns)
            if shared:
                raise ValueError(f"the left and right arms share state columns {sorted(shared)}")
        if self.state_names is not None:
            object.__setattr__(self, "state_names", tuple(self.state_names))

    @property
    def num_arms(self) -> int:
        return 1 if self.right is None else 2

    @classmethod
    def from_names(cls, state_names: Sequence[str], left: Sequence, right: Sequence | None = None) -> "EefPoseLayout":
        """A layout from (position, rotation, gripper) column specs per arm, names resolved
        against `state_names`; e.g. Bridge's
        `from_names(names, left=(["x", "y", "z"], ["roll", "pitch", "yaw"], "gripper"))`."""
        arms = [None if arm is None else ArmColumns.from_names(state_names, *arm) for arm in (left, right)]
        return cls(arms[0], arms[1], tuple(state_names))

    @classmethod
    def bridge(cls) -> "EefPoseLayout":
        """Bridge (WidowX) state [x, y, z, roll, pitch, yaw, gripper]; read with BRIDGE_ROTATION and BRIDGE_GRIPPER."""
        return cls(ArmColumns((0, 1, 2), (3, 4, 5), 6), None, ("x", "y", "z", "roll", "pitch", "yaw", "gripper"))

    @classmethod
    def umi(cls, num_robots: int = 1, state_names: Sequence[str] | None = None) -> "EefPoseLayout":
        """UMI: per robot r, eef_pos (3), eef_rot_axis_angle (3), gripper_width (1); read with
        UMI_ROTATION and UMI_GRIPPER. Robot 0 drives the left hand, robot 1 the right.

        With `state_names`, the columns are found by name: those called `robot{r}_eef_pos`,
        `robot{r}_eef_rot_axis_angle`, `robot{r}_gripper_width`, or those names followed by
        "_<i>", ".<...>" or "[<i>]", in the order they appear. Without, the state is taken to be
        the robots' 7 values one robot after the other (columns 7r .. 7r+6)."""
        if num_robots not in (1, 2):
            raise ValueError(f"a UMI layout has 1 or 2 robots, got {num_robots}")
        arms = []
        for r in range(num_robots):
            if state_names is None:
                arms.append(ArmColumns(tuple(range(7 * r, 7 * r + 3)), tuple(range(7 * r + 3, 7 * r + 6)), 7 * r + 6))
                continue
            found = []
            for key, count in (("eef_pos", 3), ("eef_rot_axis_angle", 3), ("gripper_width", 1)):
                prefix = f"robot{r}_{key}"
                pattern = re.compile(re.escape(prefix) + r"(_\d+|\..*|\[\d+\])?")
                cols = [i for i, n in enumerate(state_names) if pattern.fullmatch(n)]
                if len(cols) != count:
                    raise ValueError(f"UMI layout: expected {count} state columns named {prefix}, found "
                                     f"{[state_names[i] for i in cols]} in {list(state_names)}")
                found.append(tuple(cols))
            arms.append(ArmColumns(found[0], found[1], found[2][0]))
        return cls(arms[0], arms[1] if num_robots == 2 else None,
                   None if state_names is None else tuple(state_names))

    def check(self, num_state: int, rotation: RotationSpec) -> None:
        """ValueError unless every column exists in a state of `num_state` values and each arm
        has as many rotation columns as `rotation` reads."""
        for name, arm in (("left", self.left), ("right", self.right)):
            if arm is None:
                continue
            missing = [c for c in arm.columns if c >= num_state]
            if missing:
                raise ValueError(f"{name} arm: state columns {missing} do not exist; the state has {num_state} values")
            if len(arm.rotation) != rotation.size:
                raise ValueError(f"{name} arm: a {rotation.kind} rotation takes {rotation.size} state columns, "
                                 f"the layout gives {len(arm.rotation)} ({arm.rotation})")


class ArmTrajectories(NamedTuple):
    """Poses and widths of the hands over T frames (`poses_from_state`).

    left_poses: (T, 4, 4) float64; right_poses: (T, 4, 4) or None (a single arm);
    left_widths: (T,) float64 metres; right_widths: (T,) or None.
    """

    left_poses: np.ndarray
    right_poses: np.ndarray | None
    left_widths: np.ndarray
    right_widths: np.ndarray | None


class EefActions(NamedTuple):
    """`bimanual_actions`' result.

    actions: float32 (K - 1, 20); row k moves the hands from kept frame k to kept frame k + 1.
    rows: int64 (K,) the state rows kept: 0, stride, 2*stride, ... (< T).
    clipped: int64 (n,) indices of the actions whose position delta was clipped to
        +-MAX_POSITION_DELTA (empty when none was).
    """

    actions: np.ndarray
    rows: np.ndarray
    clipped: np.ndarray


def _pair(gripper) -> tuple[GripperSpec, GripperSpec]:
    if isinstance(gripper, GripperSpec):
        return gripper, gripper
    left, right = gripper
    if not (isinstance(left, GripperSpec) and isinstance(right, GripperSpec)):
        raise ValueError(f"gripper must be a GripperSpec or a (left, right) pair of them, got {gripper!r}")
    return left, right


def poses_from_state(state, layout: EefPoseLayout, rotation: RotationSpec,
                     gripper: GripperSpec | tuple[GripperSpec, GripperSpec]) -> ArmTrajectories:
    """Absolute end-effector poses and widths of every row of a state (T, S).

    Returns `ArmTrajectories`: left_poses (T, 4, 4) (gripper -> dataset frame), right_poses
    (T, 4, 4) or None (single arm), left_widths (T,) metres, right_widths (T,) or None.
    `gripper` is one spec for both arms or a (left, right) pair. ValueError for a state that
    is not 2-D, columns it lacks, or a non-finite value in a column the layout reads (the
    message names rows and columns); other columns are not looked at.
    """
    state = np.asarray(state)
    if state.ndim != 2:
        raise ValueError(f"state: expected shape (T, S), got {state.shape}")
    if state.dtype.kind not in "iuf":
        raise ValueError(f"state must be real numbers, got dtype {state.dtype}")
    state = state.astype(np.float64)
    layout.check(state.shape[1], rotation)
    grippers = _pair(gripper)
    out = []
    for arm, grip in zip((layout.left, layout.right), grippers):
        if arm is None:
            out.append((None, None))
            continue
        cols = list(arm.columns)
        bad = ~np.isfinite(state[:, cols])
        if bad.any():
            names = layout.state_names
            where = [f"row {r} column {cols[c]}" + (f" ({names[cols[c]]})" if names and cols[c] < len(names) else "")
                     for r, c in np.argwhere(bad)]
            raise ValueError(f"state has non-finite values at {', '.join(where[:8])}{' ...' if len(where) > 8 else ''}")
        poses = pose_to_matrix(state[:, list(arm.position)], rotation.matrices(state[:, list(arm.rotation)]))
        out.append((poses, grip.widths(state[:, arm.gripper])))
    return ArmTrajectories(out[0][0], out[1][0], out[0][1], out[1][1])


def bimanual_actions(state, layout: EefPoseLayout, rotation: RotationSpec,
                     gripper: GripperSpec | tuple[GripperSpec, GripperSpec], stride: int = 1, *,
                     parked_width: float = PARKED_WIDTH, clip: bool = True) -> EefActions:
    """20-D bimanual actions of one episode's state (T, S), keeping every `stride`-th row.

    The kept rows are 0, stride, 2*stride, ... < T: K = ceil(T / stride) frames, and K - 1
    actions (float32 (K - 1, 20); none when K == 1). Action k is
    `actions_from_poses` of the poses and widths at kept frames k and k + 1 -- recomputed over
    the stride, not summed from the per-row actions. A single-arm layout drives the left
    hand and parks the right one (zero position delta, identity rotation, width
    `parked_width`); a two-arm layout drives both. The width of action k is the width at
    kept frame k + 1; the width at frame 0 is `poses_from_state(...).left_widths[0]`.

    Position deltas beyond +-MAX_POSITION_DELTA are clipped (a warning; their indices in
    `EefActions.clipped`), or raise ValueError with clip=False. Other errors: see
    `poses_from_state`; a stride < 1 or an empty state.
    """
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    if not (0.0 <= parked_width <= MAX_WIDTH):
        raise ValueError(f"parked_width must be in [0, {MAX_WIDTH}] metres, got {parked_width}")
    state = np.asarray(state)
    if state.ndim != 2 or state.shape[0] == 0:
        raise ValueError(f"state: expected shape (T, S) with T >= 1, got {state.shape}")
    rows = np.arange(0, state.shape[0], int(stride), dtype=np.int64)
    traj = poses_from_state(state[rows], layout, rotation, gripper)
    right_poses, right_widths = traj.right_poses, traj.right_widths
    if right_poses is None:
        right_poses = np.broadcast_to(PARKED_RIGHT_POSE, (len(rows), 4, 4))
        right_widths = np.full(len(rows), float(parked_width))
    if len(rows) < 2:
        return EefActions(np.zeros((0, ACTION_DIM), np.float32), rows, np.zeros(0, np.int64))
    actions = actions_from_poses(traj.left_poses, right_poses, traj.left_widths, right_widths)
    over = np.abs(actions[:, POSITION_DIMS]) > np.float32(MAX_POSITION_DELTA)
    clipped = np.flatnonzero(over.any(axis=1)).astype(np.int64)
    if len(clipped):
        worst = float(np.abs(actions[:, POSITION_DIMS]).max())
        message = (f"{len(clipped)} of {len(actions)} actions move a hand more than MAX_POSITION_DELTA = "
                   f"{MAX_POSITION_DELTA} m along an axis in one step (up to {worst:.3f} m, at actions "
                   f"{shown(clipped)}, stride {stride})")
        if not clip:
            raise ValueError(message + "; use a smaller stride, or clip")
        warnings.warn(message + "; clipped, so rolling the actions out no longer reaches the recorded poses",
                      stacklevel=2)
        actions[:, POSITION_DIMS] = np.clip(actions[:, POSITION_DIMS], -MAX_POSITION_DELTA, MAX_POSITION_DELTA)
    return EefActions(actions, rows, clipped)
