"""Tests for wmgym.data.robot_actions: absolute end-effector poses -> 20-D bimanual actions."""

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from wmgym.actions import (
    ACTION_HIGH,
    ACTION_LOW,
    MAX_POSITION_DELTA,
    MAX_WIDTH,
    actions_from_poses,
    apply_hand_action,
    identity_action,
    is_within_bounds,
    pose_to_matrix,
    poses_from_actions,
)
from wmgym.data.robot_actions import (
    BRIDGE_GRIPPER,
    BRIDGE_ROTATION,
    PARKED_RIGHT_POSE,
    PARKED_WIDTH,
    UMI_GRIPPER,
    UMI_ROTATION,
    ArmColumns,
    EefPoseLayout,
    GripperSpec,
    RotationSpec,
    bimanual_actions,
    poses_from_state,
    select_columns,
)

BRIDGE_EPISODE = (Path(__file__).resolve().parents[2] / "shared" / "realdata" / "bridge_lerobot" / "data"
                  / "chunk-000" / "episode_000000.parquet")
TOL = 1e-5


def smooth_arm(T, seed, step=0.02):
    """A smooth random arm trajectory: (rotations (T,) Rotation, positions (T, 3), gripper in [0, 1] (T,))."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, T)[:, None]
    positions = rng.normal(scale=0.2, size=3) + np.cumsum(rng.normal(scale=step, size=(T, 3)), axis=0)
    rotvecs = rng.normal(scale=0.5, size=3) + np.sin(2 * np.pi * t * rng.uniform(0.5, 1.5, size=3)) * rng.normal(size=3)
    gripper = 0.5 + 0.5 * np.sin(7 * t[:, 0] + seed)
    return Rotation.from_rotvec(rotvecs), positions, gripper


def encode(rot: Rotation, spec: RotationSpec) -> np.ndarray:
    """Rotations as `spec` stores them (T, 3 or 4)."""
    if spec.kind == "euler":
        return rot.as_euler(spec.convention, degrees=spec.degrees)
    if spec.kind == "axis-angle":
        v = rot.as_rotvec()
        return np.rad2deg(v) if spec.degrees else v
    q = rot.as_quat()  # xyzw
    return q if spec.order == "xyzw" else q[:, [3, 0, 1, 2]]


def arm_state(arm, spec):
    rot, positions, gripper = arm
    return np.concatenate([positions, encode(rot, spec), gripper[:, None]], axis=1)


def true_poses(arm):
    rot, positions, _ = arm
    return pose_to_matrix(positions, rot.as_matrix())


def roll_out(actions, left0, right0, lw0, rw0):
    return poses_from_actions(left0, right0, actions, left_width0=lw0, right_width0=rw0)


@pytest.mark.parametrize("stride", [1, 3])
def test_single_arm_round_trip_and_parked_right_hand(stride):
    arm = smooth_arm(40, seed=1)
    state = arm_state(arm, BRIDGE_ROTATION)
    actions, rows, clipped = bimanual_actions(state, EefPoseLayout.bridge(), BRIDGE_ROTATION, BRIDGE_GRIPPER, stride)
    K = -(-40 // stride)
    assert actions.dtype == np.float32 and actions.shape == (K - 1, 20)
    np.testing.assert_array_equal(rows, np.arange(0, 40, stride))
    assert len(clipped) == 0 and is_within_bounds(actions)
    poses = true_poses(arm)[rows]
    widths = BRIDGE_GRIPPER.widths(arm[2])[rows]
    left, right, w = roll_out(actions, poses[0], PARKED_RIGHT_POSE, widths[0], PARKED_WIDTH)
    np.testing.assert_allclose(left, poses, atol=TOL)
    np.testing.assert_allclose(w[:, 0], widths, atol=TOL)
    # The parked right hand: exactly identity_action's right half, so it never moves.
    np.testing.assert_array_equal(actions[:, 10:], np.broadcast_to(identity_action(0, PARKED_WIDTH)[10:], (K - 1, 10)))
    np.testing.assert_allclose(right, np.broadcast_to(PARKED_RIGHT_POSE, right.shape), atol=1e-12)
    np.testing.assert_allclose(w[:, 1], PARKED_WIDTH)


@pytest.mark.parametrize("stride", [1, 2])
def test_two_arms_round_trip(stride):
    left_arm, right_arm = smooth_arm(30, seed=2), smooth_arm(30, seed=3)
    # A distracting column first, then the right arm (quaternion wxyz), then the left arm.
    spec = RotationSpec("quaternion", order="wxyz")
    state = np.concatenate([np.full((30, 1), 123.0), arm_state(right_arm, spec), arm_state(left_arm, spec)], axis=1)
    layout = EefPoseLayout(left=ArmColumns((9, 10, 11), (12, 13, 14, 15), 16),
                           right=ArmColumns((1, 2, 3), (4, 5, 6, 7), 8))
    grip = GripperSpec(0.0, 1.0, "closed", max_width=0.08)
    actions, rows, clipped = bimanual_actions(state, layout, spec, grip, stride)
    assert actions.shape == (len(rows) - 1, 20) and len(clipped) == 0 and is_within_bounds(actions)
    lp, rp = true_poses(left_arm)[rows], true_poses(right_arm)[rows]
    lw, rw = grip.widths(left_arm[2])[rows], grip.widths(right_arm[2])[rows]
    left, right, w = roll_out(actions, lp[0], rp[0], lw[0], rw[0])
    np.testing.assert_allclose(left, lp, atol=TOL)
    np.testing.assert_allclose(right, rp, atol=TOL)
    np.testing.assert_allclose(w, np.stack([lw, rw], axis=1), atol=TOL)
    # The same as actions_from_poses of the kept poses, and poses_from_state reads them.
    np.testing.assert_allclose(actions, actions_from_poses(lp, rp, lw, rw), atol=1e-6)
    traj = poses_from_state(state, layout, spec, grip)
    np.testing.assert_allclose(traj.left_poses, true_poses(left_arm), atol=1e-12)
    np.testing.assert_allclose(traj.right_widths, grip.widths(right_arm[2]), atol=1e-12)


SPECS = [
    RotationSpec("euler", convention="xyz"),
    RotationSpec("euler", convention="XYZ"),
    RotationSpec("euler", convention="ZYX"),
    RotationSpec("euler", convention="zyz"),
    RotationSpec("euler", convention="xyz", degrees=True),
    RotationSpec("quaternion", order="xyzw"),
    RotationSpec("quaternion", order="wxyz"),
    RotationSpec("axis-angle"),
    RotationSpec("axis-angle", degrees=True),
]


def test_every_rotation_kind_gives_the_same_actions():
    arm = smooth_arm(25, seed=4)
    results = []
    for spec in SPECS:
        layout = EefPoseLayout(ArmColumns((0, 1, 2), tuple(range(3, 3 + spec.size)), 3 + spec.size))
        results.append(bimanual_actions(arm_state(arm, spec), layout, spec, BRIDGE_GRIPPER).actions)
    for spec, a in zip(SPECS[1:], results[1:]):
        np.testing.assert_allclose(a, results[0], atol=1e-6, err_msg=str(spec))
    # A quaternion's sign does not matter.
    q = arm_state(arm, SPECS[5])
    q[::2, 3:7] *= -1
    flipped = bimanual_actions(q, EefPoseLayout(ArmColumns((0, 1, 2), (3, 4, 5, 6), 7)), SPECS[5], BRIDGE_GRIPPER)
    np.testing.assert_allclose(flipped.actions, results[0], atol=1e-6)
    # But the convention does: extrinsic xyz angles read as intrinsic XYZ give other actions.
    wrong = bimanual_actions(arm_state(arm, SPECS[0]), EefPoseLayout.bridge(), SPECS[1], BRIDGE_GRIPPER).actions
    assert np.abs(wrong - results[0]).max() > 1e-2


def test_stride_recomputes_over_the_stride_instead_of_summing():
    arm = smooth_arm(31, seed=5, step=0.01)
    state = arm_state(arm, BRIDGE_ROTATION)
    layout = EefPoseLayout.bridge()
    strided = bimanual_actions(state, layout, BRIDGE_ROTATION, BRIDGE_GRIPPER, stride=3)
    subsampled = bimanual_actions(state[::3], layout, BRIDGE_ROTATION, BRIDGE_GRIPPER, stride=1)
    np.testing.assert_array_equal(strided.actions, subsampled.actions)
    np.testing.assert_array_equal(strided.rows, np.arange(0, 31, 3))
    fine = bimanual_actions(state, layout, BRIDGE_ROTATION, BRIDGE_GRIPPER).actions
    # Composing the three per-row actions reaches the strided action's pose ...
    pose = np.eye(4)
    for a in fine[0:3, :10]:
        pose, _ = apply_hand_action(pose, a)
    reached = actions_from_poses(np.stack([np.eye(4), pose]), np.stack([np.eye(4)] * 2), [0, 0], [0, 0])[0]
    np.testing.assert_allclose(reached[:9], strided.actions[0, :9], atol=1e-5)
    # ... but summing them does not: neither the rotation nor the position delta adds.
    summed = fine[0:3].sum(axis=0)
    assert np.abs(summed[3:9] - strided.actions[0, 3:9]).max() > 1e-2
    assert np.abs(summed[0:3] - strided.actions[0, 0:3]).max() > 1e-4


@pytest.mark.parametrize("T, stride, rows", [(10, 3, [0, 3, 6, 9]), (11, 3, [0, 3, 6, 9]), (12, 3, [0, 3, 6, 9]),
                                             (13, 3, [0, 3, 6, 9, 12]), (1, 1, [0]), (4, 9, [0]), (5, 4, [0, 4])])
def test_kept_rows_and_action_count(T, stride, rows):
    state = arm_state(smooth_arm(T, seed=6), BRIDGE_ROTATION)
    actions, kept, _ = bimanual_actions(state, EefPoseLayout.bridge(), BRIDGE_ROTATION, BRIDGE_GRIPPER, stride)
    np.testing.assert_array_equal(kept, rows)
    assert len(kept) == -(-T // stride) and actions.shape == (len(rows) - 1, 20) and actions.dtype == np.float32


def test_gripper_range_and_direction():
    np.testing.assert_allclose(BRIDGE_GRIPPER.widths([0.0, 0.5, 1.0, 1.0008, -0.2]),
                               [0, 0.045, MAX_WIDTH, MAX_WIDTH, 0])
    closed_hi = GripperSpec(0.0, 255.0, "closed")
    np.testing.assert_allclose(closed_hi.widths([0.0, 255.0, 51.0]), [MAX_WIDTH, 0.0, 0.8 * MAX_WIDTH])
    np.testing.assert_allclose(GripperSpec(-1, 1, "open", max_width=0.08).widths([-1, 0, 1, 3]), [0, 0.04, 0.08, 0.08])
    np.testing.assert_allclose(UMI_GRIPPER.widths([0.0, 0.05, 0.2, -0.01]), [0.0, 0.05, MAX_WIDTH, 0.0])
    # The action carries the width of the frame it reaches.
    arm = smooth_arm(6, seed=7)
    state = arm_state(arm, BRIDGE_ROTATION)
    state[:, 6] = [1.0, 1.0, 0.5, 0.0, 0.0, 1.0008]
    actions = bimanual_actions(state, EefPoseLayout.bridge(), BRIDGE_ROTATION, BRIDGE_GRIPPER).actions
    np.testing.assert_allclose(actions[:, 9], [MAX_WIDTH, 0.045, 0, 0, MAX_WIDTH], atol=1e-7)
    with pytest.raises(ValueError, match="non-finite"):
        BRIDGE_GRIPPER.widths([0.5, np.nan])
    with pytest.raises(ValueError, match="lo < hi"):
        GripperSpec(1.0, 0.0, "open")
    with pytest.raises(ValueError, match="lo < hi"):
        GripperSpec(0.0, np.inf, "open")
    with pytest.raises(ValueError, match="hi_means"):
        GripperSpec(0.0, 1.0, "up")
    with pytest.raises(ValueError, match="max_width"):
        GripperSpec(0.0, 1.0, "open", max_width=0.2)


def test_rotation_spec_errors():
    for convention in (None, ""):
        with pytest.raises(ValueError) as e:
            RotationSpec("euler", convention=convention)
        assert str(e.value) == "the rotation convention must be given (e.g. --euler xyz)"
    with pytest.raises(ValueError, match="rotation kind must be one of euler, quaternion, axis-angle"):
        RotationSpec("matrix")
    for bad in ("xy", "xyzx", "xYz", "abc", "xxy"):
        with pytest.raises(ValueError, match="convention"):
            RotationSpec("euler", convention=bad)
    with pytest.raises(ValueError, match="quaternion order must be given"):
        RotationSpec("quaternion")
    with pytest.raises(ValueError, match="quaternion order must be given"):
        RotationSpec("quaternion", order="wzyx")
    with pytest.raises(ValueError, match="euler rotations only"):
        RotationSpec("axis-angle", convention="xyz")
    with pytest.raises(ValueError, match="quaternions only"):
        RotationSpec("euler", convention="xyz", order="xyzw")
    with pytest.raises(ValueError, match="zero norm at rows 1"):
        RotationSpec("quaternion", order="xyzw").matrices([[0, 0, 0, 1], [0, 0, 0, 0]])


def test_layout_and_column_errors():
    state = arm_state(smooth_arm(5, seed=8), BRIDGE_ROTATION)
    with pytest.raises(ValueError, match=r"columns \[7\] do not exist; the state has 7 values"):
        bimanual_actions(state, EefPoseLayout(ArmColumns((0, 1, 2), (3, 4, 5), 7)), BRIDGE_ROTATION, BRIDGE_GRIPPER)
    with pytest.raises(ValueError, match="quaternion rotation takes 4 state columns"):
        bimanual_actions(state, EefPoseLayout.bridge(), RotationSpec("quaternion", order="xyzw"), BRIDGE_GRIPPER)
    with pytest.raises(ValueError, match="must all differ"):
        ArmColumns((0, 1, 2), (2, 3, 4), 5)
    with pytest.raises(ValueError, match="position takes 3"):
        ArmColumns((0, 1), (2, 3, 4), 5)
    with pytest.raises(ValueError, match=">= 0"):
        ArmColumns((-1, 1, 2), (3, 4, 5), 6)
    with pytest.raises(ValueError, match="share state columns"):
        EefPoseLayout(ArmColumns((0, 1, 2), (3, 4, 5), 6), ArmColumns((6, 7, 8), (9, 10, 11), 12))
    names = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
    with pytest.raises(ValueError, match="no state column named 'grip'"):
        EefPoseLayout.from_names(names, left=(["x", "y", "z"], ["roll", "pitch", "yaw"], "grip"))
    with pytest.raises(ValueError, match="has no names"):
        ArmColumns(("x", "y", "z"), (3, 4, 5), 6)
    with pytest.raises(ValueError, match="stride"):
        bimanual_actions(state, EefPoseLayout.bridge(), BRIDGE_ROTATION, BRIDGE_GRIPPER, stride=0)
    with pytest.raises(ValueError, match=r"\(T, S\)"):
        bimanual_actions(state[0], EefPoseLayout.bridge(), BRIDGE_ROTATION, BRIDGE_GRIPPER)
    with pytest.raises(ValueError, match="T >= 1"):
        bimanual_actions(state[:0], EefPoseLayout.bridge(), BRIDGE_ROTATION, BRIDGE_GRIPPER)


def test_non_finite_state_values():
    state = arm_state(smooth_arm(6, seed=9), BRIDGE_ROTATION)
    layout = EefPoseLayout.from_names(["x", "y", "z", "roll", "pitch", "yaw", "gripper", "extra"],
                                      left=("x,y,z", ["roll", "pitch", "yaw"], "gripper"))
    state = np.concatenate([state, np.full((6, 1), np.nan)], axis=1)  # an unused column may be NaN
    ok = bimanual_actions(state, layout, BRIDGE_ROTATION, BRIDGE_GRIPPER)
    assert np.isfinite(ok.actions).all()
    state[2, 4] = np.inf
    with pytest.raises(ValueError, match=r"non-finite values at row 2 column 4 \(pitch\)"):
        bimanual_actions(state, layout, BRIDGE_ROTATION, BRIDGE_GRIPPER)
    # A bad row that the stride drops does not matter.
    assert bimanual_actions(state, layout, BRIDGE_ROTATION, BRIDGE_GRIPPER, stride=4).actions.shape == (1, 20)
    state[2, 4] = 0.0
    state[5, 6] = np.nan
    with pytest.raises(ValueError, match=r"row 5 column 6 \(gripper\)"):
        bimanual_actions(state, layout, BRIDGE_ROTATION, BRIDGE_GRIPPER)


def test_large_position_deltas_are_clipped_with_a_warning_or_refused():
    arm = smooth_arm(8, seed=10, step=0.01)
    state = arm_state(arm, BRIDGE_ROTATION)
    state[5:, 0] += 0.5  # a jump of half a metre between rows 4 and 5
    with pytest.warns(UserWarning, match="1 of 7 actions move a hand more than MAX_POSITION_DELTA"):
        result = bimanual_actions(state, EefPoseLayout.bridge(), BRIDGE_ROTATION, BRIDGE_GRIPPER)
    np.testing.assert_array_equal(result.clipped, [4])
    assert is_within_bounds(result.actions)
    assert np.abs(result.actions[4, :3]).max() == pytest.approx(MAX_POSITION_DELTA)
    with pytest.raises(ValueError, match="smaller stride"):
        bimanual_actions(state, EefPoseLayout.bridge(), BRIDGE_ROTATION, BRIDGE_GRIPPER, clip=False)


def test_column_specs_and_presets():
    names = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
    assert select_columns("0:3") == (0, 1, 2) and select_columns(slice(3, 6)) == (3, 4, 5)
    assert select_columns("x,y,z", names) == (0, 1, 2) and select_columns(["yaw", 6], names) == (5, 6)
    assert select_columns(np.int64(4)) == (4,) and select_columns("6") == (6,)
    bridge = EefPoseLayout.from_names(names, left=(["x", "y", "z"], ["roll", "pitch", "yaw"], "gripper"))
    assert bridge == EefPoseLayout.bridge() and bridge.num_arms == 1
    umi_names = ([f"robot0_eef_pos_{i}" for i in range(3)] + [f"robot0_eef_rot_axis_angle_{i}" for i in range(3)]
                 + ["robot0_gripper_width"] + [f"robot1_eef_pos_{i}" for i in range(3)]
                 + [f"robot1_eef_rot_axis_angle_{i}" for i in range(3)] + ["robot1_gripper_width"])
    assert EefPoseLayout.umi(2, umi_names) == EefPoseLayout.umi(2)
    assert EefPoseLayout.umi(2).right == ArmColumns((7, 8, 9), (10, 11, 12), 13)
    shuffled = umi_names[7:] + umi_names[:7]  # robot 1 first: found by name
    assert EefPoseLayout.umi(2, shuffled).left == ArmColumns((7, 8, 9), (10, 11, 12), 13)
    with pytest.raises(ValueError, match="robot1_eef_pos"):
        EefPoseLayout.umi(2, umi_names[:7])
    # UMI's own encoding (axis-angle, width in metres) round-trips for two robots.
    left_arm, right_arm = smooth_arm(12, seed=11), smooth_arm(12, seed=12)
    state = np.concatenate([arm_state(a, UMI_ROTATION) for a in (left_arm, right_arm)], axis=1)
    state[:, [6, 13]] *= 0.08  # widths in metres
    actions = bimanual_actions(state, EefPoseLayout.umi(2), UMI_ROTATION, UMI_GRIPPER).actions
    left, right, _ = roll_out(actions, true_poses(left_arm)[0], true_poses(right_arm)[0], None, None)
    np.testing.assert_allclose(left, true_poses(left_arm), atol=TOL)
    np.testing.assert_allclose(right, true_poses(right_arm), atol=TOL)
    np.testing.assert_allclose(actions[:, [9, 19]], state[1:, [6, 13]], atol=1e-7)


@pytest.mark.skipif(not BRIDGE_EPISODE.is_file(), reason=f"no Bridge sample at {BRIDGE_EPISODE}")
@pytest.mark.parametrize("stride", [1, 2, 4])
def test_real_bridge_states_convert_within_bounds_and_round_trip(stride):
    pq = pytest.importorskip("pyarrow.parquet")
    state = np.asarray(pq.read_table(BRIDGE_EPISODE, columns=["observation.state"]).column(0).to_pylist(),
                       dtype=np.float32)
    assert state.shape[1] == 7
    layout = EefPoseLayout.bridge()
    actions, rows, clipped = bimanual_actions(state, layout, BRIDGE_ROTATION, BRIDGE_GRIPPER, stride)
    assert actions.shape == (len(rows) - 1, 20) and len(clipped) == 0
    assert np.all(actions >= ACTION_LOW) and np.all(actions <= ACTION_HIGH)
    traj = poses_from_state(state[rows], layout, BRIDGE_ROTATION, BRIDGE_GRIPPER)
    left, right, w = roll_out(actions, traj.left_poses[0], PARKED_RIGHT_POSE, traj.left_widths[0], PARKED_WIDTH)
    np.testing.assert_allclose(left, traj.left_poses, atol=TOL)
    np.testing.assert_allclose(w[:, 0], traj.left_widths, atol=TOL)
    np.testing.assert_allclose(right, np.broadcast_to(PARKED_RIGHT_POSE, right.shape))
    # The gripper reads about 1.0008 (open): the width is MAX_WIDTH. The hand moves, mm to cm a step.
    np.testing.assert_allclose(actions[:, 9], MAX_WIDTH, atol=1e-7)
    assert 1e-4 < np.abs(actions[:, :3]).max() < 0.05
