"""The grippers alone: `GripperTrack(s)` reproduce the simulator's grippers view from a start state and actions, a batch of rows as each row alone."""

import numpy as np
import pytest

from wmgym.actions import identity_action
from wmgym.sim.episode import EpisodeSpec, run_episode, start_gripper_state
from wmgym.sim.gripper_track import GripperState, GripperTrack, GripperTracks, gripper_views
from wmgym.sim.world import WorldConfig


@pytest.mark.parametrize("kind", ["demo", "perturbed", "random"])
def test_views_equal_the_simulators_bit_for_bit(kind):
    spec = EpisodeSpec("fold_half", seed=11, kind=kind, noise=0.02, horizon=8)
    record = run_episode(spec)
    views = gripper_views([start_gripper_state(spec)], record.actions[None])
    assert views.shape == (1, 9, 64, 64, 3) and views.dtype == np.uint8
    np.testing.assert_array_equal(views[0], record.grippers)
    assert len({v.tobytes() for v in views[0]}) > 1  # the grippers moved


def test_track_state_follows_the_simulators_poses():
    spec = EpisodeSpec("fold_left_sleeve", seed=3, kind="demo", horizon=6)
    record = run_episode(spec)
    track = GripperTrack(start_gripper_state(spec))
    for action in record.actions:
        track.step(action)
    np.testing.assert_allclose(track.state.poses[:, :3, 3], record.eef_pos[-1], atol=1e-6)
    np.testing.assert_allclose(track.state.widths, record.gripper_width[-1], atol=1e-6)


def test_hold_still_keeps_the_view_and_bad_input_is_rejected():
    state = start_gripper_state(EpisodeSpec("fold_half", seed=0, horizon=1))
    hold = np.tile(identity_action(0.08, 0.08), (1, 3, 1))
    views = gripper_views([state], hold)
    assert all(np.array_equal(v, views[0, 0]) for v in views[0])
    with pytest.raises(ValueError, match=r"poses \(2, 4, 4\)"):
        GripperState(np.eye(4), np.zeros(2))
    with pytest.raises(ValueError, match="actions must be"):
        gripper_views([state], hold[0])
    with pytest.raises(ValueError, match="shape"):
        GripperTrack(state).step(np.zeros(7, np.float32))


@pytest.mark.parametrize("moving", [False, True])
def test_a_batch_of_rows_moves_and_renders_each_row_as_alone(moving):
    config = WorldConfig(is_camera_moving=moving, camera_period=3)
    specs = [EpisodeSpec("fold_half", seed=s, kind=k, horizon=5) for s, k in [(1, "uniform"), (2, "random"), (3, "uniform"), (4, "demo")]]
    records = [run_episode(spec) for spec in specs]
    states = [start_gripper_state(spec) for spec in specs]
    actions = np.stack([r.actions for r in records])  # uniform actions jump and turn: workspace and table limits bite
    batched, poses = gripper_views(states, actions, config, with_poses=True)
    for i in range(len(specs)):
        alone, alone_poses = gripper_views([states[i]], actions[i: i + 1], config, with_poses=True)
        np.testing.assert_array_equal(batched[i], alone[0])
        np.testing.assert_array_equal(poses[i], alone_poses[0])
    if not moving:  # the simulator's own view and poses
        np.testing.assert_array_equal(batched, np.stack([r.grippers for r in records]))
        np.testing.assert_array_equal(poses[..., :3], np.stack([r.eef_pos[:, 0] for r in records]))

    tracks = GripperTracks(states[:2], config)  # rows restart on their own, and render in any order
    tracks.step(actions[:2, 0])
    tracks.restart([1], [states[3]])
    np.testing.assert_array_equal(tracks.render([1, 0]), np.stack([batched[3, 0], batched[0, 1]]))
    np.testing.assert_array_equal(tracks.pose_vectors([1]), poses[3, :1])
    with pytest.raises(ValueError, match="one action per row"):
        tracks.step(actions[:3, 0])
