"""The grasp prior: close events, the per-frame grasp state it gives a held-conditioned world
model, training on a store's grasp state, and the world model carrying it in its directory."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wmgym.conditioning import model_conditions
from wmgym.data.generate import GenerateConfig, generate
from wmgym.data.store import EpisodeStore
from wmgym.envs.bundle import DEFAULT_BUNDLE
from wmgym.model.grasp_prior import GraspPrior, GraspPriorConfig, close_events, event_features
from wmgym.model.world_model import WorldModel
from wmgym.sim.gripper import GRASP_WIDTH
from wmgym.sim.gripper_track import pose_vectors
from wmgym.train.grasp_prior import TrainGraspPriorConfig, read_events, train_grasp_prior
from wmgym.train.wm_build import with_held_conditioning

from conftest import tiny_world_model

pytestmark = pytest.mark.usefixtures("one_thread")

OPEN, SHUT = 0.06, 0.01


def poses_with_widths(left, right) -> np.ndarray:
    """(t, 8) pose vectors with the given widths and distinct positions per frame."""
    t = len(left)
    poses = np.zeros((t, 8), np.float32)
    poses[:, 0] = np.linspace(-0.1, 0.1, t)
    poses[:, 4] = np.linspace(0.1, -0.1, t)
    poses[:, 3], poses[:, 7] = left, right
    return poses


def test_close_events_are_the_runs_of_closed_frames_of_each_hand():
    left = [OPEN, SHUT, SHUT, OPEN, OPEN, SHUT]
    right = [OPEN, OPEN, SHUT, SHUT, SHUT, OPEN]
    events = close_events(np.stack([left, right], axis=1))
    assert events == [(0, 1, 3), (1, 2, 5), (0, 5, 6)]
    assert close_events(np.full((4, 2), GRASP_WIDTH)) == []  # at the threshold the jaws are still open
    with pytest.raises(ValueError, match=r"\(t, 2\)"):
        close_events(np.zeros(4))


def test_event_features_read_the_window_before_the_event_and_pad_at_the_start():
    poses = poses_with_widths([OPEN] * 5, [OPEN] * 5)
    features = event_features(poses, frame=3, hand=1, window=2)
    np.testing.assert_array_equal(features, np.concatenate([poses[2], poses[3], [0, 1]]))
    padded = event_features(poses, frame=0, hand=0, window=3)
    np.testing.assert_array_equal(padded, np.concatenate([poses[0], poses[0], poses[0], [1, 0]]))


def test_frame_held_is_the_events_probability_while_closed_zero_while_open_and_causal():
    torch.manual_seed(0)
    prior = GraspPrior(GraspPriorConfig(window=2, hidden=8, feature_mean=[0.0] * 18, feature_std=[1.0] * 18))
    left = [OPEN, SHUT, SHUT, OPEN, OPEN, SHUT, SHUT]
    right = [OPEN, OPEN, OPEN, SHUT, SHUT, SHUT, OPEN]
    poses = np.stack([poses_with_widths(left, right), poses_with_widths(right, left)])  # (2, 7, 8)
    held = prior.frame_held(poses)
    assert held.shape == (2, 7, 2) and ((held >= 0) & (held <= 1)).all()
    closed = torch.from_numpy(poses[..., [3, 7]] < GRASP_WIDTH)
    assert (held[~closed] == 0).all() and (held[closed] > 0).all()
    p_first = torch.sigmoid(prior(torch.from_numpy(event_features(poses[0], 1, 0, 2))[None]))[0]
    torch.testing.assert_close(held[0, 1:3, 0], p_first.expand(2))  # the event's probability over its run
    assert held[0, 1, 0] != held[0, 5, 0]  # each closing is its own event
    for t in range(1, 8):  # frame s depends only on frames <= s
        torch.testing.assert_close(prior.frame_held(poses[:, :t]), held[:, :t])
    drawn = prior.frame_held(poses, sample=True, generator=torch.Generator().manual_seed(0))
    assert set(drawn.unique().tolist()) <= {0.0, 1.0} and (drawn[~closed] == 0).all()
    with pytest.raises(ValueError, match=r"\(b, t, 8\)"):
        prior.frame_held(poses[0])


def test_held_cases_are_every_closing_held_or_none_weighted_by_the_product_of_the_event_probabilities():
    torch.manual_seed(0)
    prior = GraspPrior(GraspPriorConfig(window=2, hidden=8, feature_mean=[0.0] * 18, feature_std=[1.0] * 18))
    left = [OPEN, SHUT, SHUT, OPEN, OPEN, SHUT, SHUT]
    right = [OPEN, OPEN, OPEN, SHUT, SHUT, SHUT, OPEN]
    never = [OPEN] * 7
    poses = np.stack([poses_with_widths(left, right), poses_with_widths(never, never)])  # (2, 7, 8)
    held, missed, p_all = prior.held_cases(poses)
    closed = torch.from_numpy(poses[..., [3, 7]] < GRASP_WIDTH).float()
    torch.testing.assert_close(held, closed)  # 1 exactly while closed
    assert missed.shape == held.shape and (missed == 0).all()
    p = prior.frame_held(poses)
    events = close_events(poses[0][:, [3, 7]])
    assert len(events) == 3
    expected = torch.tensor(float(np.prod([p[0, first, hand].item() for hand, first, _ in events])))
    torch.testing.assert_close(p_all[0], expected)  # the product over the three closings
    assert 0 < p_all[0] < min(p[0, first, hand] for hand, first, _ in events)
    assert p_all[1] == 1  # no closing: the held and missed states are the same
    torch.testing.assert_close(prior.held_cases(torch.from_numpy(poses))[2], p_all)  # tensors as arrays


@pytest.fixture(scope="module")
def proposal_store(tmp_path_factory):
    """Proposal episodes (1 cm noise) at 16x16: some grasps catch the cloth, some miss."""
    path = tmp_path_factory.mktemp("grasp") / "proposals.zarr"
    generate(GenerateConfig(out=str(path), episodes=30, resolution=16, kinds="G", workers=1, show_progress=False))
    return path


def test_read_events_label_each_closing_with_the_stores_grasp_state(proposal_store):
    features, held = read_events(str(proposal_store), "all", window=2)
    store = EpisodeStore.open(proposal_store)
    expected = []
    for i in range(store.num_episodes):
        episode = store.read_episode(i)
        poses = pose_vectors(episode["eef_pos"], episode["gripper_width"])
        for hand, first, _ in close_events(episode["gripper_width"]):
            expected.append((event_features(poses, first, hand, 2), episode["held_particles"][first, hand] > 0))
    assert len(held) == len(expected) > 20
    np.testing.assert_array_equal(features, np.stack([f for f, _ in expected]))
    np.testing.assert_array_equal(held, [h for _, h in expected])
    assert 0 < held.mean() < 1


def test_train_grasp_prior_fits_the_close_events_and_saves_a_loadable_prior(proposal_store, tmp_path):
    out = train_grasp_prior(TrainGraspPriorConfig(data=(str(proposal_store),), out=str(tmp_path / "prior"), epochs=200,
                                                  batch_size=64, show_progress=False))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_auc"] > 0.85  # an MLP fits its few train events (the val split here is a handful)
    assert metrics["train_events"] + metrics["val_events"] == len(read_events(str(proposal_store), "all", 2)[1])
    loaded = GraspPrior.from_pretrained(out)
    features, _ = read_events(str(proposal_store), "train", 2)
    trained_again = train_grasp_prior(TrainGraspPriorConfig(data=(str(proposal_store),), out=str(tmp_path / "again"),
                                                            epochs=200, batch_size=64, show_progress=False))
    torch.testing.assert_close(loaded(torch.from_numpy(features)), GraspPrior.from_pretrained(trained_again)(torch.from_numpy(features)))
    with pytest.raises(FileNotFoundError, match="train-grasp-prior"):
        GraspPrior.from_pretrained(tmp_path / "nothing")


def test_a_held_conditioned_world_model_carries_its_prior_and_draws_the_grasp_state_from_it(tmp_path):
    model = with_held_conditioning(tiny_world_model(condition_views=("grippers",)))
    views = np.zeros((2, 5, 64, 64, 3), np.uint8)
    poses = np.stack([poses_with_widths([OPEN, OPEN, SHUT, SHUT, OPEN], [OPEN] * 5)] * 2)
    with pytest.raises(ValueError, match="no grasp prior"):
        model_conditions(model, views, poses)
    given = np.zeros((2, 5, 2), np.float32)
    np.testing.assert_array_equal(model_conditions(model, views, poses, held=given).vectors["held"].numpy(), given)
    torch.manual_seed(0)
    model.grasp_prior = GraspPrior(GraspPriorConfig(hidden=8, feature_mean=[0.0] * 18, feature_std=[1.0] * 18))
    assert len(model.state_dict()) == len(model.denoiser.state_dict()) + len(model.codec.state_dict())  # not a submodule
    extra = model_conditions(model, views, poses)
    np.testing.assert_array_equal(extra.vectors["held"].numpy(), model.grasp_prior.frame_held(poses).numpy())
    assert {*extra.views, *extra.vectors} == {"grippers", "held"}
    frames = model.rollout(np.zeros((2, 1, 64, 64, 3), np.uint8), np.zeros((2, 4, 20), np.float32),
                           generator=torch.Generator().manual_seed(0), conditions=extra)
    assert frames.shape == (2, 4, 64, 64, 3)
    model.save_pretrained(tmp_path / "wm")
    loaded = WorldModel.from_pretrained(tmp_path / "wm", device="cpu")
    np.testing.assert_array_equal(loaded.grasp_prior.frame_held(poses).numpy(), extra.vectors["held"].numpy())
    with pytest.raises(ValueError, match="serves a held-conditioned"):
        tiny_world_model().grasp_prior = model.grasp_prior


HELD_CHECKPOINT = DEFAULT_BUNDLE / "world_model"  # the shipped model is the held-conditioned one (stage 5)


def test_the_shipped_world_model_loads_with_its_prior_and_imagines_held_and_missed_grasps_differently(tmp_path):
    path = tmp_path / "demo.zarr"
    generate(GenerateConfig(out=str(path), episodes=2, resolution=64, kinds="D", workers=1, show_progress=False))
    store = EpisodeStore.open(str(path), mode="r")
    episodes = [store.read_episode(i) for i in range(2)]
    model = WorldModel.from_pretrained(HELD_CHECKPOINT, device="cpu").eval()
    assert model.is_held_conditioned and model.grasp_prior is not None
    stack = lambda name: np.stack([e[name] for e in episodes])
    poses = np.stack([pose_vectors(e["eef_pos"], e["gripper_width"]) for e in episodes])
    closed = stack("gripper_width") < GRASP_WIDTH  # (2, T + 1, 2)
    assert closed.any(axis=(1, 2)).all()  # the demonstrator closes in every episode
    prior = model.grasp_prior.frame_held(torch.from_numpy(poses)).numpy()
    assert (prior[~closed] == 0).all() and (prior[closed] > 0).all() and (prior[closed] < 1).all()
    last = {}
    for name, held in (("held", closed.astype(np.float32)), ("missed", np.zeros(closed.shape, np.float32))):
        extra = model_conditions(model, stack("grippers"), poses, held=held)
        with torch.no_grad():
            frames = model.rollout(stack("camera")[:, :1], stack("actions"), generator=torch.Generator().manual_seed(0),
                                   conditions=extra)
        last[name] = np.asarray(frames[:, -1], np.float64)
    # docs/model_card.md, "Training history": flipping the grasp state moves the last imagined frame by 2.0/255 on average
    assert np.abs(last["held"] - last["missed"]).mean() > 0.5
