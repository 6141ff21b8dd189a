"""Tests for wmgym.actions: layout constants, rot6d, poses, round trips, validation."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from wmgym.actions import (
    ACTION_DIM,
    ACTION_HIGH,
    ACTION_LAYOUT,
    ACTION_LOW,
    HAND_ACTION_DIM,
    IDENTITY_HAND_ROT6D,
    MAX_POSITION_DELTA,
    MAX_WIDTH,
    actions_from_poses,
    apply_hand_action,
    axis_angle_to_matrix,
    hand_action_from_poses,
    identity_action,
    is_within_bounds,
    matrix_to_axis_angle,
    matrix_to_pose,
    matrix_to_rot6d,
    pose_to_matrix,
    poses_from_actions,
    rot6d_to_matrix,
    validate_action,
)


def random_rotations(n, seed=0):
    return Rotation.random(n, random_state=seed).as_matrix()


def random_trajectory(T, seed):
    """(T+1, 4, 4) poses doing a random walk with small steps, as a gripper would."""
    rng = np.random.default_rng(seed)
    rotvecs = np.cumsum(rng.normal(scale=0.2, size=(T + 1, 3)), axis=0)
    positions = rng.normal(scale=0.3, size=3) + np.cumsum(rng.normal(scale=0.03, size=(T + 1, 3)), axis=0)
    return pose_to_matrix(positions, axis_angle_to_matrix(rotvecs))


def test_constants():
    assert ACTION_DIM == 20 and HAND_ACTION_DIM == 10
    assert ACTION_LOW.shape == ACTION_HIGH.shape == (20,)
    assert ACTION_LOW.dtype == ACTION_HIGH.dtype == np.float32
    for h in (0, 10):
        np.testing.assert_allclose(ACTION_HIGH[h : h + 3], MAX_POSITION_DELTA)
        np.testing.assert_allclose(ACTION_LOW[h : h + 3], -MAX_POSITION_DELTA)
        assert np.all(ACTION_LOW[h + 3 : h + 9] == -1) and np.all(ACTION_HIGH[h + 3 : h + 9] == 1)
        assert ACTION_LOW[h + 9] == 0 and ACTION_HIGH[h + 9] == np.float32(MAX_WIDTH)
    np.testing.assert_array_equal(IDENTITY_HAND_ROT6D, [1, 0, 0, 0, 1, 0])
    assert IDENTITY_HAND_ROT6D.dtype == np.float32
    assert "left" in ACTION_LAYOUT and "right" in ACTION_LAYOUT and "\n" in ACTION_LAYOUT


def test_rot6d_round_trip():
    R = random_rotations(100)
    r6 = matrix_to_rot6d(R)
    assert r6.shape == (100, 6)
    # Column after column: [R00, R10, R20, R01, R11, R21].
    np.testing.assert_array_equal(r6[0], [R[0, 0, 0], R[0, 1, 0], R[0, 2, 0], R[0, 0, 1], R[0, 1, 1], R[0, 2, 1]])
    np.testing.assert_allclose(rot6d_to_matrix(r6), R, atol=1e-5)
    np.testing.assert_allclose(rot6d_to_matrix(IDENTITY_HAND_ROT6D), np.eye(3), atol=1e-7)


def test_gram_schmidt_orthonormalises_perturbed_input():
    rng = np.random.default_rng(1)
    r6 = matrix_to_rot6d(random_rotations(50, seed=2)) + rng.normal(scale=0.3, size=(50, 6))
    r6[:, :3] *= 2.5  # also wrong norm
    R = rot6d_to_matrix(r6)
    assert R.shape == (50, 3, 3)
    np.testing.assert_allclose(np.swapaxes(R, -1, -2) @ R, np.broadcast_to(np.eye(3), (50, 3, 3)), atol=1e-10)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-10)
    a1 = r6[:, :3] / np.linalg.norm(r6[:, :3], axis=-1, keepdims=True)
    np.testing.assert_allclose(R[:, :, 0], a1, atol=1e-10)  # first column keeps its direction
    # The second column stays in the plane of a1, a2 on a2's side.
    assert np.all(np.sum(R[:, :, 1] * r6[:, 3:], axis=-1) > 0)


def test_rot6d_degenerate_raises():
    with pytest.raises(ValueError):
        rot6d_to_matrix([0, 0, 0, 0, 1, 0])
    with pytest.raises(ValueError):
        rot6d_to_matrix([1, 0, 0, 2, 0, 0])
    with pytest.raises(ValueError):
        rot6d_to_matrix(np.zeros(5))


def test_pose_matrix_round_trip():
    rng = np.random.default_rng(3)
    p, R = rng.normal(size=(4, 7, 3)), random_rotations(28, seed=4).reshape(4, 7, 3, 3)
    T = pose_to_matrix(p, R)
    assert T.shape == (4, 7, 4, 4)
    np.testing.assert_array_equal(T[..., 3, :], np.broadcast_to([0, 0, 0, 1], (4, 7, 4)))
    p2, R2 = matrix_to_pose(T)
    np.testing.assert_array_equal(p2, p)
    np.testing.assert_array_equal(R2, R)
    # A point in the gripper frame maps to world as R x + p.
    x = np.array([0.1, -0.2, 0.3, 1.0])
    np.testing.assert_allclose((T[1, 2] @ x)[:3], R[1, 2] @ x[:3] + p[1, 2])


def test_axis_angle_round_trip():
    rng = np.random.default_rng(5)
    axes = rng.normal(size=(3, 10, 3))
    v = axes / np.linalg.norm(axes, axis=-1, keepdims=True) * rng.uniform(0, np.pi - 1e-3, size=(3, 10, 1))
    R = axis_angle_to_matrix(v)
    assert R.shape == (3, 10, 3, 3)
    np.testing.assert_allclose(matrix_to_axis_angle(R), v, atol=1e-8)
    # pi/2 about z maps x to y.
    np.testing.assert_allclose(axis_angle_to_matrix([0, 0, np.pi / 2]) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    assert axis_angle_to_matrix(np.zeros((0, 3))).shape == (0, 3, 3)


def test_hand_action_is_in_gripper_frame():
    # Gripper at t rotated 90 deg about z; moving +y in world is +x in the gripper frame.
    Rz = axis_angle_to_matrix([0, 0, np.pi / 2])
    pose_t = pose_to_matrix([1.0, 2.0, 3.0], Rz)
    pose_n = pose_to_matrix([1.0, 2.05, 3.0], Rz)
    a = hand_action_from_poses(pose_t, pose_n, 0.04)
    assert a.shape == (10,) and a.dtype == np.float32
    np.testing.assert_allclose(a[:3], [0.05, 0, 0], atol=1e-7)
    np.testing.assert_allclose(a[3:9], IDENTITY_HAND_ROT6D, atol=1e-7)
    assert a[9] == np.float32(0.04)
    pose_back, w = apply_hand_action(pose_t, a)
    np.testing.assert_allclose(pose_back, pose_n, atol=1e-6)
    assert w == pytest.approx(0.04)


def test_actions_poses_round_trip():
    for seed in range(5):
        T = 16
        lp, rp = random_trajectory(T, seed), random_trajectory(T, seed + 100)
        rng = np.random.default_rng(seed)
        lw, rw = rng.uniform(0, MAX_WIDTH, size=T + 1), rng.uniform(0, MAX_WIDTH, size=T + 1)
        actions = actions_from_poses(lp, rp, lw, rw)
        assert actions.shape == (T, 20) and actions.dtype == np.float32
        assert is_within_bounds(actions)  # small steps stay inside the action space
        lp2, rp2, widths = poses_from_actions(lp[0], rp[0], actions, left_width0=lw[0], right_width0=rw[0])
        assert lp2.shape == rp2.shape == (T + 1, 4, 4) and widths.shape == (T + 1, 2)
        np.testing.assert_allclose(lp2, lp, atol=1e-5)
        np.testing.assert_allclose(rp2, rp, atol=1e-5)
        np.testing.assert_allclose(widths, np.stack([lw, rw], axis=-1), atol=1e-5)


def test_poses_from_actions_default_start_width():
    a = np.stack([identity_action(0.03, 0.07)] * 3)
    _, _, widths = poses_from_actions(np.eye(4), np.eye(4), a)
    np.testing.assert_allclose(widths, np.broadcast_to([0.03, 0.07], (4, 2)), atol=1e-7)
    with pytest.raises(ValueError):
        poses_from_actions(np.eye(4), np.eye(4), np.zeros((0, 20)))


def test_identity_action_holds_still():
    a = identity_action(0.02, 0.05)
    assert a.shape == (20,) and a.dtype == np.float32
    lp, rp = random_trajectory(0, 7)[0], random_trajectory(0, 8)[0]
    lp2, rp2, widths = poses_from_actions(lp, rp, a[None], left_width0=0.02, right_width0=0.05)
    np.testing.assert_allclose(lp2[1], lp, atol=1e-7)
    np.testing.assert_allclose(rp2[1], rp, atol=1e-7)
    np.testing.assert_allclose(widths[1], [0.02, 0.05], atol=1e-7)
    # And the poses of a still gripper give back the identity action.
    back = actions_from_poses(np.stack([lp, lp]), np.stack([rp, rp]), [0.02, 0.02], [0.05, 0.05])
    np.testing.assert_allclose(back[0], a, atol=1e-6)


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (np.zeros(19), "(19,)"),
        (np.zeros((20, 3)), "(20, 3)"),
        (np.float32(1.0), "()"),
        (["a"] * 20, "dtype"),
    ],
)
def test_validate_action_rejects_bad_shape_and_type(bad, fragment):
    with pytest.raises(ValueError) as exc:
        validate_action(bad)
    assert ACTION_LAYOUT in str(exc.value)
    assert fragment in str(exc.value)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_validate_action_rejects_non_finite(value):
    a = identity_action(0.01, 0.01)
    a[4] = value
    with pytest.raises(ValueError) as exc:
        validate_action(a)
    msg = str(exc.value)
    assert ACTION_LAYOUT in msg and "non-finite values at indices 4" in msg
    batch = np.zeros((2, 3, 20))
    batch[1, 2, 17] = value
    with pytest.raises(ValueError, match=r"non-finite values at indices \(1, 2, 17\)"):
        validate_action(batch)


def test_validate_action_accepts_and_does_not_clip():
    out = validate_action([0.5] * 20)  # list input, out of bounds
    assert out.dtype == np.float32 and out.shape == (20,)
    np.testing.assert_array_equal(out, 0.5)  # not clipped
    assert not is_within_bounds(out)
    assert is_within_bounds(identity_action(0.0, MAX_WIDTH))
    assert not is_within_bounds(identity_action(0.0, MAX_WIDTH + 0.01))
    assert validate_action(np.zeros((4, 5, 20), dtype=np.float64)).dtype == np.float32
    with pytest.raises(ValueError):
        validate_action(np.full(20, 1e39))  # overflows float32 to inf


def test_batched_hand_actions():
    T = 6
    lp = random_trajectory(T, 11)
    w = np.linspace(0.0, 0.08, T + 1)
    # Batch over 2 x T pairs at once, compare with the per-step result.
    pt = np.stack([lp[:-1], lp[:-1]])
    pn = np.stack([lp[1:], lp[1:]])
    a = hand_action_from_poses(pt, pn, np.stack([w[1:], w[1:]]))
    assert a.shape == (2, T, 10) and a.dtype == np.float32
    for t in range(T):
        np.testing.assert_allclose(a[1, t], hand_action_from_poses(lp[t], lp[t + 1], w[t + 1]), atol=1e-7)
    nxt, widths = apply_hand_action(pt, a)
    assert nxt.shape == (2, T, 4, 4) and widths.shape == (2, T)
    np.testing.assert_allclose(nxt, pn, atol=1e-5)
    R = rot6d_to_matrix(matrix_to_rot6d(random_rotations(12).reshape(3, 4, 3, 3)))
    assert R.shape == (3, 4, 3, 3)
