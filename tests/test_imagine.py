"""Specs of `wmgym imagine`: a store re-drawn by the world model, ground truth kept."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import as_conditions
from wmgym.data.generate import GenerateConfig, generate
from wmgym.data.imagine import ImagineConfig, imagine_store
from wmgym.data.store import EpisodeStore

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "sim.zarr"
    generate(GenerateConfig(out=str(path), episodes=3, resolution=64, horizon=4, workers=1, show_progress=False))
    return path


def test_imagined_store_keeps_ground_truth_and_redraws_frames(tiny_bundle, source, tmp_path):
    out = imagine_store(ImagineConfig(data=str(source), out=str(tmp_path / "wm.zarr"), checkpoint=str(tiny_bundle),
                                      batch_size=2, device="cpu"))
    sim, wm = EpisodeStore.open(source), EpisodeStore.open(out)
    assert wm.num_episodes == sim.num_episodes == 3
    for i in range(3):
        a, b = sim.read_episode(i), wm.read_episode(i)
        for key in ("actions", "score", "static", "grippers", "held_particles"):
            np.testing.assert_array_equal(a[key], b[key])
        assert (a["success"], a["caption"], a["task"]) == (b["success"], b["caption"], b["task"])
        np.testing.assert_array_equal(a["camera"][0], b["camera"][0])  # the start frame is the simulator's
        assert not np.array_equal(a["camera"][1:], b["camera"][1:])  # the rest the model drew


def test_a_store_without_held_particles_is_imagined_into_one_without_them(tiny_bundle, source, tmp_path):
    """A source made before the grasp state was recorded (its two arrays removed here)."""
    import shutil

    old = tmp_path / "old.zarr"
    shutil.copytree(source, old)
    store = EpisodeStore.open(old, mode="a")
    for robot in (0, 1):
        del store.root[f"data/robot{robot}_held_particles"]
    out = imagine_store(ImagineConfig(data=str(old), out=str(tmp_path / "wm.zarr"), checkpoint=str(tiny_bundle),
                                      batch_size=2, device="cpu"))
    wm = EpisodeStore.open(out)
    assert wm.num_episodes == 3 and not wm.has_held_particles and wm.read_episode(0)["held_particles"] is None


def test_imagine_resumes_to_the_same_store(tiny_bundle, source, tmp_path):
    config = ImagineConfig(data=str(source), out=str(tmp_path / "a.zarr"), checkpoint=str(tiny_bundle), batch_size=2, device="cpu")
    imagine_store(config)
    partial = ImagineConfig(**{**config.__dict__, "out": str(tmp_path / "b.zarr"), "max_episodes": 2})
    imagine_store(partial)
    imagine_store(ImagineConfig(**{**partial.__dict__, "max_episodes": None, "resume": True}))
    straight, resumed = EpisodeStore.open(tmp_path / "a.zarr"), EpisodeStore.open(tmp_path / "b.zarr")
    assert resumed.num_episodes == 3
    for i in range(3):
        np.testing.assert_array_equal(straight.read_episode(i)["camera"], resumed.read_episode(i)["camera"])
    with pytest.raises(FileExistsError):
        imagine_store(config)


def test_a_grippers_conditioned_model_draws_from_the_stores_grippers_views(tiny_grippers_bundle, source, tmp_path):
    import torch

    from wmgym.model.world_model import WorldModel

    out = imagine_store(ImagineConfig(data=str(source), out=str(tmp_path / "wm.zarr"), checkpoint=str(tiny_grippers_bundle),
                                      batch_size=2, device="cpu", max_episodes=2))
    sim, wm = EpisodeStore.open(source), EpisodeStore.open(out)
    eps, imagined = [sim.read_episode(i) for i in range(2)], [wm.read_episode(i) for i in range(2)]
    for a, b in zip(eps, imagined):
        np.testing.assert_array_equal(a["grippers"], b["grippers"])
        assert not np.array_equal(a["camera"][1:], b["camera"][1:])
    # exactly the rollout conditioned on the store's grippers views (batch 0's generator), not on other views
    model = WorldModel.from_pretrained(tiny_grippers_bundle / "world_model", device="cpu")
    context = np.stack([e["camera"][:1] for e in eps])
    actions = np.stack([e["actions"] for e in eps])
    views = np.stack([e["grippers"] for e in eps])[:, :, None]  # (2, T+1, 1, H, W, 3)
    for conditions, same in ((views, True), (np.zeros_like(views), False)):
        frames = model.rollout(context, actions, generator=torch.Generator().manual_seed(0),
                               conditions=as_conditions(conditions)).numpy()
        assert np.array_equal(frames, np.stack([b["camera"][1:] for b in imagined])) == same


def test_a_pose_conditioned_model_draws_from_the_stores_gripper_poses(tiny_pose_bundle, source, tmp_path):
    import torch

    from wmgym.model.world_model import WorldModel
    from wmgym.sim.gripper_track import pose_vectors

    out = imagine_store(ImagineConfig(data=str(source), out=str(tmp_path / "wm.zarr"), checkpoint=str(tiny_pose_bundle),
                                      batch_size=2, device="cpu", max_episodes=2))
    store = EpisodeStore.open(source)
    eps, imagined = [store.read_episode(i) for i in range(2)], [EpisodeStore.open(out).read_episode(i) for i in range(2)]
    model = WorldModel.from_pretrained(tiny_pose_bundle / "world_model", device="cpu")
    context = np.stack([e["camera"][:1] for e in eps])
    actions = np.stack([e["actions"] for e in eps])
    views = np.stack([e["grippers"] for e in eps])[:, :, None]
    poses = np.stack([pose_vectors(e["eef_pos"], e["gripper_width"]) for e in eps])  # (2, T+1, 8)
    for given, same in ((poses, True), (poses + 0.05, False)):  # exactly the store's poses, not others
        frames = model.rollout(context, actions, generator=torch.Generator().manual_seed(0),
                               conditions=as_conditions(views, given)).numpy()
        assert np.array_equal(frames, np.stack([b["camera"][1:] for b in imagined])) == same


def test_held_prior_draws_the_grasp_as_the_env_does_where_store_keeps_the_simulators():
    """`held="store"` copies the simulator's grasp state; `held="prior"` draws each closing from
    the grasp prior (here p(held) ~ 1 and ~ 0), whatever the simulator recorded."""
    from types import SimpleNamespace

    import torch

    from conftest import tiny_grasp_prior
    from wmgym.conditioning import held_of_records

    T1 = 6
    widths = np.full((T1, 2), 0.08, np.float32)
    widths[2:5, 0] = 0.0  # the left gripper closes over frames 2..4; the right stays open
    record = SimpleNamespace(eef_pos=np.zeros((T1, 2, 3), np.float32), gripper_width=widths,
                             held_particles=np.zeros((T1, 2), np.int32))  # the simulator: a miss
    closed = np.zeros((T1, 2), np.float32)
    closed[2:5, 0] = 1.0
    for bias, expected in ((20.0, closed), (-20.0, np.zeros_like(closed))):
        model = SimpleNamespace(grasp_prior=tiny_grasp_prior(bias))
        np.testing.assert_array_equal(held_of_records(model, [record]), np.zeros((1, T1, 2)))  # the store's miss
        np.testing.assert_array_equal(held_of_records(model, [record], torch.Generator().manual_seed(0)), expected[None])
    with pytest.raises(ValueError, match="grasp prior"):
        held_of_records(SimpleNamespace(grasp_prior=None), [record], torch.Generator())


def test_imagine_with_held_prior_rolls_out_the_priors_draws(tiny_held_bundle, source, tmp_path):
    import torch

    from wmgym.conditioning import held_of_records
    from wmgym.model.world_model import WorldModel

    config = ImagineConfig(data=str(source), out=str(tmp_path / "wm.zarr"), checkpoint=str(tiny_held_bundle), batch_size=3,
                           device="cpu", held="prior")
    out = imagine_store(config)
    store = EpisodeStore.open(source)
    records = [store.read_record(i) for i in range(3)]
    model = WorldModel.from_pretrained(tiny_held_bundle / "world_model", device="cpu")
    context = np.stack([r.camera[:1] for r in records])
    actions = np.stack([r.actions for r in records])
    views = np.stack([r.grippers for r in records])[:, :, None]
    drawn = held_of_records(model, records, torch.Generator().manual_seed(0))  # batch 0's grasp draws
    frames = model.rollout(context, actions, generator=torch.Generator().manual_seed(0),
                           conditions=as_conditions(views, held=drawn)).numpy()
    imagined = EpisodeStore.open(out)
    np.testing.assert_array_equal(frames, np.stack([imagined.read_episode(i)["camera"][1:] for i in range(3)]))
    np.testing.assert_array_equal(imagined.read_episode(0)["held_particles"], store.read_episode(0)["held_particles"])
    assert imagined.attrs["imagined_by"]["held"] == "prior"
    with pytest.raises(ValueError, match="held must be"):
        imagine_store(ImagineConfig(**{**config.__dict__, "held": "sim", "out": str(tmp_path / "x.zarr")}))
