"""Training windows over episode stores (`WindowDataset`): shapes, alignment, views, poses,
grasp state, splits, several stores. Records come from `test_data.marked_record`."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from wmgym.data.batch import Window, WindowBatch
from wmgym.data.dataset import WindowDataset
from wmgym.data.store import EpisodeStore

from test_data import SIZE, TASKS, marked_record


@pytest.fixture
def marked_store(tmp_path):
    path = tmp_path / "marked.zarr"
    horizons = [4, 6, 5, 9, 4, 7, 5, 4, 8, 6]
    EpisodeStore.create(path, SIZE, SIZE, TASKS).append(
        [marked_record(e, h) for e, h in enumerate(horizons)])
    return path, horizons


def test_windows_have_documented_shapes_and_dtypes(marked_store):
    path, horizons = marked_store
    dataset = WindowDataset(path, num_actions=3, split="all")
    assert len(dataset) == sum(h - 3 + 1 for h in horizons)
    item = dataset[0]
    frames, actions = item.frames, item.actions
    assert frames.shape == (4, SIZE, SIZE, 3) and frames.dtype == torch.uint8
    assert actions.shape == (3, 20) and actions.dtype == torch.float32


def test_windows_stay_inside_one_episode_and_align_actions_with_frames(marked_store):
    path, horizons = marked_store
    dataset = WindowDataset(path, num_actions=4, split="all")
    starts_seen = set()
    for index in range(len(dataset)):
        item = dataset[index]
        frames, actions = item.frames, item.actions
        episode, start = int(frames[0, 0, 0, 1]), int(frames[0, 0, 0, 0])
        assert (frames[:, 0, 0, 1] == episode).all()  # one episode
        np.testing.assert_array_equal(frames[:, 0, 0, 0].numpy(), start + np.arange(5))
        np.testing.assert_array_equal(actions[:, 0].numpy(), 100 * episode + start + np.arange(4))
        starts_seen.add((episode, start))
    assert starts_seen == {(e, s) for e, h in enumerate(horizons) for s in range(h - 4 + 1)}


def test_windows_with_views_and_poses_end_with_each_frames_grippers_view_and_pose(marked_store):
    path, _ = marked_store
    store = EpisodeStore.open(path)
    dataset = WindowDataset(path, num_actions=3, split="all", views=("grippers",), poses=True)
    for index in (0, 7, len(dataset) - 1):
        item = dataset[index]
        frames, views, poses = item.frames, item.views["grippers"], item.vectors["poses"]
        episode, start = int(frames[0, 0, 0, 1]), int(frames[0, 0, 0, 0])
        assert list(item.views) == ["grippers"] and list(item.vectors) == ["poses"]
        assert views.shape == (4, SIZE, SIZE, 3) and poses.shape == (4, 8) and poses.dtype == torch.float32
        np.testing.assert_array_equal(views[:, 0, 0].numpy(), [[t, episode, 9] for t in range(start, start + 4)])
        record = store.read_record(episode)
        window = slice(start, start + 4)
        expected = np.concatenate([record.eef_pos[window, 0], record.gripper_width[window, :1],
                                   record.eef_pos[window, 1], record.gripper_width[window, 1:]], axis=1)
        np.testing.assert_array_equal(poses.numpy(), expected)
    only_poses = WindowDataset(path, num_actions=3, split="all", poses=True)[0]  # frames, actions, poses
    assert not only_poses.views and list(only_poses.vectors) == ["poses"]


def test_windows_with_held_end_with_each_frames_grasp_state_and_need_a_store_that_records_it(tmp_path):
    path = tmp_path / "held.zarr"
    records = [marked_record(e, h) for e, h in enumerate([4, 6, 5, 9])]
    for r in records:
        r.held_particles[::2, 0] = 0  # both states in every window
    EpisodeStore.create(path, SIZE, SIZE, TASKS).append(records)
    store = EpisodeStore.open(path)
    dataset = WindowDataset(path, num_actions=3, split="all", views=("grippers",), poses=True, held=True)
    for index in (0, 7, len(dataset) - 1):
        item = dataset[index]
        frames, held = item.frames, item.vectors["held"]
        assert list(item.views) == ["grippers"] and list(item.vectors) == ["poses", "held"]
        episode, start = int(frames[0, 0, 0, 1]), int(frames[0, 0, 0, 0])
        assert held.shape == (4, 2) and held.dtype == torch.float32
        expected = store.read_record(episode).held_particles[start: start + 4] > 0
        np.testing.assert_array_equal(held.numpy(), expected.astype(np.float32))
        assert 0 < expected.mean() < 1  # the fake grasp state has both values, so the comparison can fail
    old = EpisodeStore.create(tmp_path / "old.zarr", SIZE, SIZE, TASKS, has_held_particles=False)
    old.append([dataclasses.replace(marked_record(0, 4), held_particles=None)])
    with pytest.raises(ValueError, match="does not record the grippers' grasp state"):
        WindowDataset(tmp_path / "old.zarr", num_actions=3, split="all", held=True)


def test_a_loader_stacks_windows_into_a_batch_whose_conditions_are_named_by_the_dataset(marked_store):
    path, _ = marked_store
    dataset = WindowDataset(path, num_actions=3, split="all", views=("grippers", "static_scene"), poses=True, held=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, collate_fn=WindowBatch.collate)
    batch = next(iter(loader))
    assert isinstance(batch, WindowBatch)
    assert batch.frames.shape == (5, 4, SIZE, SIZE, 3) and batch.frames.dtype == torch.uint8
    assert batch.actions.shape == (5, 3, 20) and batch.actions.dtype == torch.float32
    conditions = batch.conditions
    assert list(conditions.views) == ["grippers", "static_scene"] and list(conditions.vectors) == ["poses", "held"]
    for name in conditions.views:
        assert conditions.views[name].shape == (5, 4, SIZE, SIZE, 3) and conditions.views[name].dtype == torch.uint8
    assert conditions.vectors["poses"].shape == (5, 4, 8) and conditions.vectors["held"].shape == (5, 4, 2)
    assert all(x.dtype == torch.float32 for x in conditions.vectors.values())
    for b in range(5):  # row b is item b, each condition under its own name
        item = dataset[b]
        assert torch.equal(batch.frames[b], item.frames) and torch.equal(batch.actions[b], item.actions)
        assert all(torch.equal(conditions.views[name][b], item.views[name]) for name in item.views)
        assert all(torch.equal(conditions.vectors[name][b], item.vectors[name]) for name in item.vectors)
    assert not torch.equal(conditions.views["grippers"], conditions.views["static_scene"])  # the names can tell them apart
    plain = next(iter(torch.utils.data.DataLoader(WindowDataset(path, num_actions=3, split="all"), batch_size=2,
                                                  collate_fn=WindowBatch.collate)))
    assert plain.conditions is None and plain.frames.shape == (2, 4, SIZE, SIZE, 3)


def test_windows_with_different_conditions_cannot_be_batched(marked_store):
    path, _ = marked_store
    with_poses = WindowDataset(path, num_actions=3, split="all", views=("grippers",), poses=True)[0]
    with_held = WindowDataset(path, num_actions=3, split="all", views=("grippers",), held=True)[0]
    with_scene = WindowDataset(path, num_actions=3, split="all", views=("static_scene",), poses=True)[0]
    plain = Window(with_poses.frames, with_poses.actions)
    for other in (with_held, with_scene, plain):
        with pytest.raises(ValueError, match="different conditions"):
            WindowBatch.collate([with_poses, other])
    with pytest.raises(ValueError, match="empty"):
        WindowBatch.collate([])


def test_train_and_val_are_disjoint_and_cover_all_episodes(marked_store):
    path, _ = marked_store
    train = WindowDataset(path, split="train", val_fraction=0.25, split_seed=3)
    val = WindowDataset(path, split="val", val_fraction=0.25, split_seed=3)
    assert len(val.episode_indices) == math.ceil(0.25 * 10)
    assert not set(train.episode_indices) & set(val.episode_indices)
    assert sorted([*train.episode_indices, *val.episode_indices]) == list(range(10))
    val_episodes = {int(val[i].frames[0, 0, 0, 1]) for i in range(len(val))}
    assert val_episodes == set(val.episode_indices.tolist())
    again = WindowDataset(path, split="val", val_fraction=0.25, split_seed=3)
    np.testing.assert_array_equal(again.episode_indices, val.episode_indices)


def test_val_gets_one_episode_of_two(tmp_path):
    path = tmp_path / "two.zarr"
    EpisodeStore.create(path, SIZE, SIZE, TASKS).append([marked_record(0, 4), marked_record(1, 4)])
    assert len(WindowDataset(path, split="val", val_fraction=0.01).episode_indices) == 1
    assert len(WindowDataset(path, split="train", val_fraction=0.01).episode_indices) == 1


def test_windows_with_views_carry_the_same_frames_grippers_view(marked_store):
    path, _ = marked_store
    dataset = WindowDataset(path, num_actions=3, split="all", views=("grippers",))
    for index in (0, len(dataset) // 2, len(dataset) - 1):
        item = dataset[index]
        frames, conditions = item.frames, item.views["grippers"]
        assert list(item.views) == ["grippers"] and not item.vectors
        assert conditions.shape == (4, SIZE, SIZE, 3) and conditions.dtype == torch.uint8
        np.testing.assert_array_equal(conditions[:, 0, 0, :2].numpy(), frames[:, 0, 0, :2].numpy())  # same (t, episode)
        assert (conditions[..., 2] == 9).all()
    with pytest.raises(ValueError, match="views must be among"):
        WindowDataset(path, views=("hands",))


def test_several_stores_are_split_each_on_its_own_and_joined(marked_store, tmp_path):
    path, horizons = marked_store
    extra = tmp_path / "extra.zarr"
    extra_horizons = [5, 4, 6, 4]
    EpisodeStore.create(extra, SIZE, SIZE, TASKS).append([marked_record(100 + e, h) for e, h in enumerate(extra_horizons)])
    for split in ("train", "val"):
        alone = WindowDataset(path, num_actions=3, split=split, val_fraction=0.25)
        joined = WindowDataset([path, extra], num_actions=3, split=split, val_fraction=0.25)
        extra_alone = WindowDataset(extra, num_actions=3, split=split, val_fraction=0.25)
        # adding a store leaves the first store's split as it was
        np.testing.assert_array_equal(joined.store_episodes[0], alone.episode_indices)
        np.testing.assert_array_equal(joined.store_episodes[1], extra_alone.episode_indices)
        assert len(joined) == len(alone) + len(extra_alone)
        episodes = {int(joined[i].frames[0, 0, 0, 1]) for i in range(len(joined))}
        assert episodes == {*alone.episode_indices.tolist(), *(100 + extra_alone.episode_indices).tolist()}
        for i in range(len(joined)):  # windows never cross from one store into the other
            frames = joined[i].frames
            assert len(set(frames[:, 0, 0, 1].tolist())) == 1
        assert joined.episode_lengths.sum() == len(joined.actions)


def test_stores_of_different_frame_sizes_cannot_be_joined(marked_store, tmp_path):
    path, _ = marked_store
    other = tmp_path / "other.zarr"
    EpisodeStore.create(other, 2 * SIZE, 2 * SIZE, TASKS)
    with pytest.raises(ValueError, match="holds no episodes"):
        WindowDataset([path, other])
    small = tmp_path / "small.zarr"
    record = marked_record(0, 4)
    big = dataclasses.replace(record, **{k: np.repeat(np.repeat(getattr(record, k), 2, 1), 2, 2)
                                         for k in ("camera", "static_scene", "grippers")},
                              goal_image=np.repeat(np.repeat(record.goal_image, 2, 0), 2, 1))
    EpisodeStore.create(small, 2 * SIZE, 2 * SIZE, TASKS).append([big, big])
    with pytest.raises(ValueError, match=f"{2 * SIZE}x{2 * SIZE} frames"):
        WindowDataset([path, small], split="all")
    with pytest.raises(ValueError, match="at least one episode store"):
        WindowDataset([])


def test_window_dataset_rejects_bad_arguments(marked_store):
    path, _ = marked_store
    with pytest.raises(ValueError, match="num_actions=5 exceeds.*4 actions"):
        WindowDataset(path, num_actions=5, split="all")
    with pytest.raises(ValueError, match="split must be one of"):
        WindowDataset(path, split="test")
