"""Robot stores (`wmgym import`'s output): real robot episodes of any action size in the episode
store, read back exactly, windowed for training, and the import's choices of frame size,
cropping and episodes."""

from __future__ import annotations

import numpy as np
import pytest

from wmgym.data.dataset import WindowDataset
from wmgym.data.robot_data import RobotRecord
from wmgym.data.robot_import import default_size, parse_episodes, resize_and_crop
from wmgym.data.store import EpisodeStore

NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]


def record(index: int, frames: int, task: str = "put the cup in the sink", size=(16, 24), state: bool = True) -> RobotRecord:
    rng = np.random.default_rng(index)
    return RobotRecord(camera=rng.integers(0, 256, (frames, *size, 3), dtype=np.uint8),
                       actions=rng.normal(size=(frames, len(NAMES))).astype(np.float32),
                       timestamps=np.arange(frames) / 5.0, task=task, source_index=100 + index,
                       state=rng.normal(size=(frames, 7)).astype(np.float32) if state else None)


def robot_store(path, records, state: bool = True, size=(16, 24)) -> EpisodeStore:
    store = EpisodeStore.create_robot(path, *size, tasks=["put the cup in the sink"], action_names=NAMES,
                                      state_names=[f"s{i}" for i in range(7)] if state else None,
                                      attrs={"camera": "observation.images.image_0"})
    store.append(records)
    store.close()
    return EpisodeStore.open(path)


def test_a_robot_store_reads_back_what_was_appended(tmp_path):
    records = [record(0, 6), record(1, 9, task="flip the pot"), record(2, 4)]
    store = robot_store(tmp_path / "r.zarr", records)
    assert store.is_robot and store.action_names == NAMES and store.state_names == [f"s{i}" for i in range(7)]
    assert store.tasks == ("put the cup in the sink", "flip the pot")  # a new task text is added
    assert store.camera == "observation.images.image_0" and not store.has_held_particles
    for i, rec in enumerate(records):
        episode = store.read_episode(i)
        np.testing.assert_array_equal(episode["camera"], rec.camera)
        np.testing.assert_array_equal(episode["actions"], rec.actions[:-1])  # the padding row dropped
        np.testing.assert_array_equal(episode["state"], rec.state)
        np.testing.assert_array_equal(episode["timestamps"], rec.timestamps)
        assert episode["task"] == rec.task and episode["source_index"] == rec.source_index
    with pytest.raises(ValueError, match="robot store"):
        store.read_record(0)


def test_a_robot_store_without_a_state_and_a_bad_record_is_refused(tmp_path):
    store = robot_store(tmp_path / "r.zarr", [record(0, 5, state=False)], state=False)
    assert store.state_names is None and store.read_episode(0)["state"] is None
    with EpisodeStore.open(tmp_path / "r.zarr", mode="a") as writer:
        wrong = record(1, 5, state=False)
        wrong.actions = wrong.actions[:, :6]
        with pytest.raises(ValueError, match=r"actions has shape \(5, 6\), expected \(5, 7\)"):
            writer.append([wrong])
        short = record(2, 1, state=False)
        with pytest.raises(ValueError, match="at least 2"):
            writer.append([short])


def test_an_interrupted_robot_append_is_cut_back_on_reopen(tmp_path):
    path = tmp_path / "r.zarr"
    robot_store(path, [record(0, 5)])
    with EpisodeStore.open(path, mode="a") as writer:  # data written, the commit never made
        writer._write_episode_ends = lambda start, ends: None
        writer.append([record(1, 7)])
    with EpisodeStore.open(path, mode="a") as reopened:
        assert reopened.num_episodes == 1 and reopened.root["data/camera0_rgb"].shape[0] == 5
        reopened.append([record(1, 7)])
    assert EpisodeStore.open(path).num_frames == 12


def test_windows_over_a_robot_store_carry_its_actions_and_names(tmp_path):
    records = [record(i, 6) for i in range(4)]
    robot_store(tmp_path / "r.zarr", records)
    windows = WindowDataset(tmp_path / "r.zarr", num_actions=3, split="all")
    assert windows.action_names == NAMES and windows.camera == "observation.images.image_0"
    first = windows[0]
    assert first.frames.shape == (4, 16, 24, 3) and first.actions.shape == (3, 7)
    np.testing.assert_array_equal(first.actions.numpy(), records[0].actions[:3])
    with pytest.raises(ValueError, match="real robot data"):
        WindowDataset(tmp_path / "r.zarr", num_actions=3, split="all", views=("grippers",))


@pytest.mark.parametrize("camera, expected", [((64, 64), (64, 64)), ((48, 80), (48, 80)), ((480, 640), (48, 64)),
                                               ((720, 1280), (48, 80)), ((256, 256), (64, 64)), ((60, 60), (64, 64))])
def test_the_default_frame_size_keeps_the_aspect_within_64x64_pixels(camera, expected):
    assert default_size(*camera) == expected


def test_resize_and_crop_keeps_the_aspect():
    frames = np.zeros((2, 40, 100, 3), np.uint8)
    frames[:, :, 40:60] = 255  # a centred vertical bar, 20% of the width
    out = resize_and_crop(frames, 16, 16)  # scaled to 16x40 (not squeezed to 16x16), the middle 16 columns kept
    assert out.shape == (2, 16, 16, 3)
    bright = np.flatnonzero(out[0, 8, :, 0] > 127)
    assert 7 <= len(bright) <= 9 and abs(bright.mean() - 7.5) <= 0.5  # the 20 px bar is 8 px wide, centred


def test_episode_selection():
    assert parse_episodes(None, 3) == [0, 1, 2]
    assert parse_episodes("1:3", 5) == [1, 2] and parse_episodes("0,4", 5) == [0, 4]
    with pytest.raises(ValueError, match="selects"):
        parse_episodes("7", 5)
    with pytest.raises(ValueError, match="a:b"):
        parse_episodes("one", 5)


def test_a_world_model_trains_on_a_robot_store_with_its_action_spec(tmp_path):
    import torch

    from wmgym.model.world_model import WorldModel
    from wmgym.train.wm_config import TrainWorldModelConfig
    from wmgym.train.world_model import train_world_model

    robot_store(tmp_path / "r.zarr", [record(i, 8) for i in range(6)])
    run = train_world_model(TrainWorldModelConfig(
        data=str(tmp_path / "r.zarr"), out=str(tmp_path / "run"), steps=2, batch_size=4, width=32, depth=1, num_heads=2,
        patch_size=4, warmup_steps=1, checkpoint_every=2, log_every=1, validate_every=100, val_batches=1, num_steps=2,
        device="cpu"))
    model = WorldModel.from_pretrained(run / "model", device="cpu")  # train_world_model returns the last checkpoint
    spec = model.config.features()
    assert spec["action"]["dim"] == 7 and spec["action"]["names"] == NAMES
    assert spec["camera"] == {"observation.images.image_0": (16, 24, 3)} and spec["vectors"] == {}
    frames = torch.zeros(1, 1, 16, 24, 3, dtype=torch.uint8)
    assert model.rollout(frames, torch.zeros(1, 2, 7), generator=torch.Generator().manual_seed(0)).shape == (1, 2, 16, 24, 3)


def test_a_codec_trains_on_a_robot_stores_camera(tmp_path):
    import json

    from wmgym.train.codec import TrainCodecConfig, load_codec, train_codec

    robot_store(tmp_path / "r.zarr", [record(i, 6) for i in range(6)])
    out = train_codec(TrainCodecConfig(data=str(tmp_path / "r.zarr"), out=str(tmp_path / "codec"), steps=2, batch_size=4,
                                       block_out_channels=(8, 8), norm_num_groups=4, latent_channels=2, val_frames=4,
                                       checkpoint_every=2, device="cpu"))
    saved = json.loads((out / "config.json").read_text())
    assert tuple(saved["training"]["config"]["views"]) == ("camera0_rgb",)  # a robot store has one image array
    last = saved["training"]["val"][-1]
    assert 0 < last["psnr_downsample"] < 100 and 0 < last["psnr"] < 100  # the codec beside plain downsampling
    assert load_codec(out).encode(torch_frames(2)).shape[-2:] == (8, 12)  # 16x24 halved once


def torch_frames(n: int):
    import torch

    return torch.zeros(n, 3, 16, 24)
