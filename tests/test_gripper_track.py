"""The grippers alone: `GripperTrack` reproduces the simulator's grippers view from a start state and actions."""

import numpy as np
import pytest

from wmgym.actions import identity_action
from wmgym.sim.episode import EpisodeSpec, run_episode, start_gripper_state
from wmgym.sim.gripper_track import GripperState, GripperTrack, gripper_views


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
