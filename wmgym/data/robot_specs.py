"""How a real robot's dataset stores an end-effector rotation and a gripper value: the declared
specs `wmgym import --actions eef-pose` reads them with (`wmgym.data.robot_actions` turns them
into 20-D bimanual actions).

- `RotationSpec`: the rotation's kind and convention. There is no default Euler convention
  (datasets rarely state theirs and a wrong one silently rotates every action); Bridge's
  `[roll, pitch, yaw]` fits scipy's extrinsic "xyz" best (`BRIDGE_ROTATION`).
- `GripperSpec`: the gripper value's range [lo, hi] and which end means open; mapped linearly
  to an opening width in metres, 0 (closed) .. `max_width` (open, at most `MAX_WIDTH`), clipped.

Dimension legend: T rows of an episode's state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from wmgym.actions import MAX_WIDTH

ROTATION_KINDS = ("euler", "quaternion", "axis-angle")
QUATERNION_ORDERS = ("xyzw", "wxyz")
GRIPPER_DIRECTIONS = ("open", "closed")

_EULER_MESSAGE = "the rotation convention must be given (e.g. --euler xyz)"


@dataclass(frozen=True)
class RotationSpec:
    """How a state's rotation columns read.

    Attributes:
        kind: "euler" (3 angles), "quaternion" (4 values) or "axis-angle" (3: a rotation vector,
            axis times angle).
        convention: euler only, required: scipy's sequence of 3 axes, lowercase for extrinsic
            (rotations about the fixed frame's axes, e.g. "xyz": R = Rz(c) Ry(b) Rx(a) for
            angles [a, b, c]), uppercase for intrinsic (about the rotating axes, e.g. "XYZ").
        order: quaternion only, required: "xyzw" (scipy's, scalar last) or "wxyz" (scalar first).
        degrees: euler and axis-angle: angles in degrees rather than radians.

    The rotation maps end-effector coordinates to the dataset's (base) frame. ValueError for
    a kind, convention or order it does not know, or one missing.
    """

    kind: str
    convention: str | None = None
    order: str | None = None
    degrees: bool = False

    def __post_init__(self):
        if self.kind not in ROTATION_KINDS:
            raise ValueError(f"rotation kind must be one of {', '.join(ROTATION_KINDS)}, got {self.kind!r}")
        if self.kind == "euler":
            if not self.convention:
                raise ValueError(_EULER_MESSAGE)
            conv = self.convention
            if (len(conv) != 3 or not (set(conv) <= set("xyz") or set(conv) <= set("XYZ"))):
                raise ValueError(f"euler convention must be 3 axes, all lowercase (extrinsic, e.g. 'xyz') or all "
                                 f"uppercase (intrinsic, e.g. 'XYZ'), got {conv!r}")
            try:
                Rotation.from_euler(conv, [0.0, 0.0, 0.0])
            except ValueError as e:
                raise ValueError(f"euler convention {conv!r} is not one scipy accepts: {e}") from None
        elif self.convention is not None:
            raise ValueError(f"a convention is for euler rotations only, not {self.kind!r}")
        if self.kind == "quaternion":
            if self.order not in QUATERNION_ORDERS:
                raise ValueError(f"the quaternion order must be given: one of {', '.join(QUATERNION_ORDERS)}, "
                                 f"got {self.order!r}")
            if self.degrees:
                raise ValueError("degrees is for euler and axis-angle rotations, not quaternions")
        elif self.order is not None:
            raise ValueError(f"an order is for quaternions only, not {self.kind!r}")

    @property
    def size(self) -> int:
        """Number of state columns the rotation takes: 4 for a quaternion, else 3."""
        return 4 if self.kind == "quaternion" else 3

    def matrices(self, values) -> np.ndarray:
        """Rotation values (T, size) -> rotation matrices (T, 3, 3) float64.

        ValueError for a wrong shape, non-finite values or a zero quaternion. Quaternions are
        normalised (their sign does not matter)."""
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != self.size:
            raise ValueError(f"{self.kind} rotation values: expected shape (T, {self.size}), got {v.shape}")
        check_finite(v, f"{self.kind} rotation values")
        if len(v) == 0:
            return np.zeros((0, 3, 3))
        if self.kind == "euler":
            return Rotation.from_euler(self.convention, v, degrees=self.degrees).as_matrix()
        if self.kind == "axis-angle":
            return Rotation.from_rotvec(np.deg2rad(v) if self.degrees else v).as_matrix()
        q = v if self.order == "xyzw" else v[:, [1, 2, 3, 0]]
        zero = np.linalg.norm(q, axis=1) < 1e-12
        if zero.any():
            rows = np.flatnonzero(zero)
            raise ValueError(f"quaternion of zero norm at rows {shown(rows)}: it defines no rotation")
        return Rotation.from_quat(q).as_matrix()


BRIDGE_ROTATION = RotationSpec("euler", convention="xyz")
"""Bridge (WidowX) `[roll, pitch, yaw]`: the source states no convention; extrinsic "xyz" fits best."""
UMI_ROTATION = RotationSpec("axis-angle")
"""UMI `eef_rot_axis_angle`: a rotation vector in radians."""


@dataclass(frozen=True)
class GripperSpec:
    """How a gripper value maps to an opening width in metres.

    Attributes:
        lo, hi: the dataset's gripper range (lo < hi).
        hi_means: "open" when `hi` is the fully open end, "closed" when it is the closed end.
        max_width: the width (metres) of the fully open end, 0 < max_width <= MAX_WIDTH.

    width = max_width * u (hi_means "open") or max_width * (1 - u) ("closed"), where
    u = (value - lo) / (hi - lo) clipped to [0, 1]: values past the range clip to its ends.
    """

    lo: float
    hi: float
    hi_means: str
    max_width: float = MAX_WIDTH

    def __post_init__(self):
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.lo < self.hi):
            raise ValueError(f"gripper range must be finite with lo < hi, got [{self.lo}, {self.hi}]")
        if self.hi_means not in GRIPPER_DIRECTIONS:
            raise ValueError(f"gripper hi_means must be 'open' or 'closed' (what the range's hi end is), "
                             f"got {self.hi_means!r}")
        if not (0.0 < self.max_width <= MAX_WIDTH):
            raise ValueError(f"gripper max_width must be in (0, {MAX_WIDTH}] metres, got {self.max_width}")

    @classmethod
    def metres(cls, max_width: float = MAX_WIDTH) -> "GripperSpec":
        """A gripper value that already is the width in metres (UMI's gripper_width): identity
        on [0, max_width], clipped to it."""
        return cls(0.0, max_width, "open", max_width)

    def widths(self, values) -> np.ndarray:
        """Gripper values (...) -> widths (...) float64 metres in [0, max_width]; ValueError for
        non-finite values."""
        v = np.asarray(values, dtype=np.float64)
        check_finite(v, "gripper values")
        u = np.clip((v - self.lo) / (self.hi - self.lo), 0.0, 1.0)
        return self.max_width * (u if self.hi_means == "open" else 1.0 - u)


BRIDGE_GRIPPER = GripperSpec(0.0, 1.0, "open")
"""Bridge (WidowX) gripper in [0, 1], 1 = open (values slightly above 1 clip to open)."""
UMI_GRIPPER = GripperSpec.metres()
"""UMI `gripper_width`: already metres."""


def check_finite(v: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(v)
    if bad.any():
        idx = np.argwhere(bad)
        shown = ", ".join(str(tuple(int(i) for i in ix)) for ix in idx[:8]) + (" ..." if len(idx) > 8 else "")
        raise ValueError(f"{what} contain non-finite values at {shown}")


def shown(indices, limit: int = 8) -> str:
    indices = [int(i) for i in indices]
    return ", ".join(map(str, indices[:limit])) + (" ..." if len(indices) > limit else "")
