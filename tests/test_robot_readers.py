"""Readers of real robot datasets (`wmgym import`'s input): LeRobot v2.1 and v3.0, UMI zarr.

Samples: tests/data/bridge_lerobot_2ep (LeRobot v2.1, 2 episodes of Bridge, 3 H.264 cameras),
tests/data/g1_lerobot_6f (LeRobot v2.1, 6 frames of a Unitree G1 episode, AV1 480x640, names as a
list in a list), both cut from ../shared/realdata by tests/data/make_samples.py; a LeRobot v3.0
dataset and UMI ReplayBuffers (directory and .zarr.zip) are built here from them / from noise.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")  # the readers' optional dependencies (not in wmgym's core requirements)
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("imagecodecs")

from wmgym.data.lerobot import open_lerobot
from wmgym.data.robot_data import RobotDataError
from wmgym.data.umi import open_umi

DATA = Path(__file__).parent / "data"
BRIDGE = DATA / "bridge_lerobot_2ep"
G1 = DATA / "g1_lerobot_6f"
BRIDGE_CAMERAS = [f"observation.images.image_{c}" for c in range(3)]
BRIDGE_TASKS = ["put cup from counter or drying rack into sink", "flip pot upright which is in sink"]


def decode_all(path) -> np.ndarray:
    """Every frame of a video file, uint8 (T, H, W, 3), decoded here independently of the reader."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])])


def bridge_video(episode: int, camera: int) -> Path:
    return BRIDGE / f"videos/chunk-000/observation.images.image_{camera}/episode_{episode:06d}.mp4"


def bridge_table(episode: int) -> pa.Table:
    return pq.read_table(BRIDGE / f"data/chunk-000/episode_{episode:06d}.parquet")


def as_matrix(table: pa.Table, name: str) -> np.ndarray:
    return np.array(table.column(name).to_pylist(), dtype=np.float32)


def write_mp4(path: Path, frames: np.ndarray, fps: int, gop: int = 5) -> None:
    """H.264 (libx264, yuv420p), frame k shown at k / fps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.gop_size = gop
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())


def copy_bridge(tmp_path) -> Path:
    root = tmp_path / "bridge"
    shutil.copytree(BRIDGE, root)
    return root


# ------------------------------------------------------------------------------------------------
# LeRobot v2.1


def test_lerobot_v21_rows_match_the_table_and_independently_decoded_video():
    ds = open_lerobot(BRIDGE)
    info = ds.info
    assert (info.format, info.fps, info.robot_type, len(ds), info.num_episodes) == ("lerobot-v2.1", 5.0, "widowx", 2, 2)
    assert info.cameras == BRIDGE_CAMERAS
    assert info.camera_sizes == {c: (64, 64) for c in BRIDGE_CAMERAS}
    assert info.episode_lengths.tolist() == [10, 10] and info.episode_lengths.dtype == np.int64
    assert info.state_names == ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
    assert info.action_names == ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
    assert info.tasks == BRIDGE_TASKS
    for e in (0, 1):
        ep = ds.read_episode(e)
        table = bridge_table(e)
        assert ep.index == e and ep.task == BRIDGE_TASKS[e] and ep.num_frames == 10
        assert sorted(ep.frames) == BRIDGE_CAMERAS
        for c, cam in enumerate(BRIDGE_CAMERAS):
            assert ep.frames[cam].dtype == np.uint8 and ep.frames[cam].shape == (10, 64, 64, 3)
            np.testing.assert_array_equal(ep.frames[cam], decode_all(bridge_video(e, c)))
        assert ep.state.dtype == np.float32 and ep.action.dtype == np.float32
        np.testing.assert_array_equal(ep.state, as_matrix(table, "observation.state"))
        np.testing.assert_array_equal(ep.action, as_matrix(table, "action"))
        assert ep.timestamps.dtype == np.float64
        np.testing.assert_allclose(ep.timestamps, np.arange(10) / 5.0, atol=1e-6)
    one = ds.read_episode(1, cameras=["observation.images.image_2"])
    assert list(one.frames) == ["observation.images.image_2"]
    with pytest.raises(ValueError, match="not in"):
        ds.read_episode(0, cameras=["wrist"])
    with pytest.raises(IndexError):
        ds.read_episode(2)


def test_lerobot_v21_av1_camera_and_names_nested_in_a_list():
    ds = open_lerobot(G1)
    info = ds.info
    assert info.robot_type == "Unitree_G1_Inspire" and info.fps == 30.0
    assert info.cameras == ["observation.images.cam_high"] and info.camera_sizes["observation.images.cam_high"] == (480, 640)
    names = json.loads((G1 / "meta/info.json").read_text())["features"]["observation.state"]["names"]
    assert len(names) == 1 and len(names[0]) == 26  # a list in a list, as the G1 dataset writes it
    assert info.state_names == names[0] and info.action_names == names[0]
    assert info.state_names[:2] == ["kLeftShoulderPitch", "kLeftShoulderRoll"]
    ep = ds.read_episode(0)
    frames = ep.frames["observation.images.cam_high"]
    assert frames.shape == (6, 480, 640, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, decode_all(G1 / "videos/chunk-000/observation.images.cam_high/episode_000000.mp4"))
    assert ep.state.shape == (6, 26) and ep.action.shape == (6, 26)
    np.testing.assert_allclose(ep.timestamps, np.arange(6) / 30.0, atol=1e-6)
    assert ep.task == "Pick up the yellow bottle on the table."


def test_lerobot_names_as_a_dict_or_absent(tmp_path):
    root = copy_bridge(tmp_path)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.state"]["names"] = {"motors": ["a", "b", "c", "d", "e", "f", "g"]}
    info["features"]["action"]["names"] = None
    (root / "meta/info.json").write_text(json.dumps(info))
    ds = open_lerobot(root)
    assert ds.info.state_names == list("abcdefg")
    assert ds.info.action_names == [f"action_{i}" for i in range(7)]


def test_lerobot_image_features_decode_to_the_stored_pixels(tmp_path):
    """dtype "image": PNG bytes in the parquet table, decoded to the same pixels."""
    from PIL import Image

    root = copy_bridge(tmp_path)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.images.png"] = {"dtype": "image", "shape": [64, 64, 3], "names": ["height", "width", "channel"]}
    (root / "meta/info.json").write_text(json.dumps(info))
    rng = np.random.default_rng(0)
    pictures = {}
    for e in (0, 1):
        pictures[e] = rng.integers(0, 256, (10, 64, 64, 3), dtype=np.uint8)
        blobs = []
        for picture in pictures[e]:
            buffer = io.BytesIO()
            Image.fromarray(picture).save(buffer, format="PNG")
            blobs.append({"bytes": buffer.getvalue(), "path": None})
        file = root / f"data/chunk-000/episode_{e:06d}.parquet"
        table = pq.read_table(file)
        column = pa.array(blobs, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        pq.write_table(table.append_column("observation.images.png", column), file)
    ds = open_lerobot(root)
    assert ds.info.cameras[-1] == "observation.images.png" and ds.info.camera_sizes["observation.images.png"] == (64, 64)
    ep = ds.read_episode(1)
    np.testing.assert_array_equal(ep.frames["observation.images.png"], pictures[1])
    np.testing.assert_array_equal(ep.frames["observation.images.image_0"], decode_all(bridge_video(1, 0)))


# ------------------------------------------------------------------------------------------------
# LeRobot v3.0, built from the v2.1 sample as LeRobot's v2.1 -> v3.0 conversion lays it out


@pytest.fixture(scope="module")
def lerobot_v30(tmp_path_factory) -> Path:
    """Both episodes in one data file; cameras 0 and 1 in one video file each (episode 1 from
    2.0 s); camera 2 in two video files (file-000, file-001), each episode from 0 s."""
    root = tmp_path_factory.mktemp("v30") / "bridge_v30"
    info = json.loads((BRIDGE / "meta/info.json").read_text())
    info.update(codebase_version="v3.0", data_path="data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
                video_path="videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
                data_files_size_in_mb=100, video_files_size_in_mb=500)
    for key in ("total_chunks", "total_videos"):
        info.pop(key)
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(pa.concat_tables([bridge_table(0), bridge_table(1)]), root / "data/chunk-000/file-000.parquet")
    videos = {}
    for c, cam in enumerate(BRIDGE_CAMERAS):
        frames = [decode_all(bridge_video(e, c)) for e in (0, 1)]
        if c < 2:
            write_mp4(root / f"videos/{cam}/chunk-000/file-000.mp4", np.concatenate(frames), fps=5)
            videos[cam] = [(0, 0.0), (0, 2.0)]
        else:
            for e in (0, 1):
                write_mp4(root / f"videos/{cam}/chunk-000/file-{e:03d}.mp4", frames[e], fps=5)
            videos[cam] = [(0, 0.0), (1, 0.0)]
    # meta/tasks.parquet as pandas writes LeRobot's frame: the task text is the (unnamed) index
    pandas_meta = {"index_columns": ["__index_level_0__"], "column_indexes": [], "columns": [
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
        {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}]}
    tasks = pa.table({"task_index": pa.array([0, 1], pa.int64()), "__index_level_0__": BRIDGE_TASKS})
    pq.write_table(tasks.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}), root / "meta/tasks.parquet")
    rows = []
    for e in (0, 1):
        row = {"episode_index": e, "tasks": [BRIDGE_TASKS[e]], "length": 10, "data/chunk_index": 0, "data/file_index": 0,
               "dataset_from_index": 10 * e, "dataset_to_index": 10 * e + 10}
        for cam in BRIDGE_CAMERAS:
            file, start = videos[cam][e]
            row.update({f"videos/{cam}/chunk_index": 0, f"videos/{cam}/file_index": file,
                        f"videos/{cam}/from_timestamp": start, f"videos/{cam}/to_timestamp": start + 2.0})
        row.update({"stats/action/mean": [0.0] * 7, "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        rows.append(row)
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    return root


def test_lerobot_v30_episodes_found_in_shared_data_and_video_files(lerobot_v30):
    ds = open_lerobot(lerobot_v30)
    info = ds.info
    assert (info.format, info.fps, len(ds)) == ("lerobot-v3.0", 5.0, 2)
    assert info.cameras == BRIDGE_CAMERAS and info.tasks == BRIDGE_TASKS
    assert info.episode_lengths.tolist() == [10, 10]
    assert info.state_names == open_lerobot(BRIDGE).info.state_names
    v21 = open_lerobot(BRIDGE)
    for e in (1, 0):  # episode 1 first: seeking into the middle of a file, then back
        ep = ds.read_episode(e)
        table = bridge_table(e)
        assert ep.index == e and ep.task == BRIDGE_TASKS[e] and ep.num_frames == 10
        np.testing.assert_array_equal(ep.state, as_matrix(table, "observation.state"))
        np.testing.assert_array_equal(ep.action, as_matrix(table, "action"))
        np.testing.assert_allclose(ep.timestamps, np.arange(10) / 5.0, atol=1e-6)
        for c, cam in enumerate(BRIDGE_CAMERAS):
            file = lerobot_v30 / f"videos/{cam}/chunk-000/file-{(e if c == 2 else 0):03d}.mp4"
            whole = decode_all(file)
            expected = whole[10 * e:10 * e + 10] if c < 2 else whole
            np.testing.assert_array_equal(ep.frames[cam], expected)
            # the re-encoded frames are near the v2.1 ones, and nearer them than their neighbours
            original = v21.read_episode(e, cameras=[cam]).frames[cam].astype(float)
            error = np.abs(ep.frames[cam] - original).mean()
            shifted = np.abs(ep.frames[cam][1:] - original[:-1]).mean()
            assert error < 4 and error < shifted


def test_lerobot_v30_missing_episodes_column_is_named(lerobot_v30, tmp_path):
    root = tmp_path / "v30"
    shutil.copytree(lerobot_v30, root)
    file = root / "meta/episodes/chunk-000/file-000.parquet"
    pq.write_table(pq.read_table(file).drop_columns(["videos/observation.images.image_1/from_timestamp"]), file)
    with pytest.raises(RobotDataError, match=r"file-000\.parquet.*videos/observation.images.image_1/from_timestamp"):
        open_lerobot(root)


# ------------------------------------------------------------------------------------------------
# LeRobot errors


def test_lerobot_refuses_other_folders_and_versions(tmp_path):
    with pytest.raises(RobotDataError, match="not a LeRobot dataset"):
        open_lerobot(tmp_path)
    root = copy_bridge(tmp_path)
    info = json.loads((root / "meta/info.json").read_text())
    info["codebase_version"] = "v2.0"
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(RobotDataError, match=r"info\.json.*'v2\.0' is not supported; supported: v2\.1, v3\.0"):
        open_lerobot(root)


def test_lerobot_missing_column_is_named(tmp_path):
    root = copy_bridge(tmp_path)
    file = root / "data/chunk-000/episode_000000.parquet"
    pq.write_table(pq.read_table(file).drop_columns(["observation.state"]), file)
    ds = open_lerobot(root)
    with pytest.raises(RobotDataError, match=r"episode_000000\.parquet: missing column 'observation.state'"):
        ds.read_episode(0)
    assert ds.read_episode(1).state.shape == (10, 7)


def test_lerobot_video_shorter_than_table_is_refused(tmp_path):
    root = copy_bridge(tmp_path)
    video = root / "videos/chunk-000/observation.images.image_0/episode_000000.mp4"
    write_mp4(video, decode_all(video)[:7], fps=5)
    with pytest.raises(RobotDataError, match=r"episode_000000\.mp4: the video has fewer frames than the table's rows: 7 frames .* 10 rows"):
        open_lerobot(root).read_episode(0)


def test_lerobot_mismatched_timestamps_are_refused(tmp_path):
    root = copy_bridge(tmp_path)
    file = root / "data/chunk-000/episode_000001.parquet"
    table = pq.read_table(file)
    shifted = pa.array(np.asarray(table.column("timestamp")) + np.float32(0.05), pa.float32())  # a quarter of a frame late
    pq.write_table(table.set_column(table.schema.get_field_index("timestamp"), "timestamp", shifted), file)
    ds = open_lerobot(root)
    with pytest.raises(RobotDataError, match=r"episode_000001\.mp4: mismatched timestamps"):
        ds.read_episode(1)
    # within a looser tolerance the same frames are found
    ep = open_lerobot(root, tolerance_s=0.06).read_episode(1)
    np.testing.assert_array_equal(ep.frames["observation.images.image_0"], decode_all(bridge_video(1, 0)))


def test_lerobot_missing_video_is_named(tmp_path):
    root = copy_bridge(tmp_path)
    video = root / "videos/chunk-000/observation.images.image_1/episode_000001.mp4"
    video.unlink()
    ds = open_lerobot(root)
    with pytest.raises(RobotDataError, match=r"missing video file .*image_1/episode_000001\.mp4"):
        ds.read_episode(1)
    assert ds.read_episode(1, cameras=["observation.images.image_0"]).num_frames == 10


# ------------------------------------------------------------------------------------------------
# UMI


UMI_LENGTHS = (3, 4)
UMI_CODEC_CONFIG = {"id": "imagecodecs_jpegxl", "level": 99, "effort": None, "distance": None, "lossless": None,
                    "decodingspeed": None, "photometric": None, "planar": None, "usecontainer": None, "index": None,
                    "keeporientation": None, "numthreads": 1}
"""The compressor config UMI's own JpegXl codec class (diffusion_policy/codecs/imagecodecs_numcodecs.py) writes."""


def make_umi(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A UMI ReplayBuffer in zarr v2 format: camera0_rgb (16x24, JPEG XL, one frame a chunk), two
    robots, two episodes; returns the arrays written."""
    import zarr
    from imagecodecs.numcodecs import Jpegxl

    rng = np.random.default_rng(seed)
    n = sum(UMI_LENGTHS)
    arrays = {"camera0_rgb": rng.integers(0, 256, (n, 16, 24, 3), dtype=np.uint8)}
    for r in (0, 1):
        arrays[f"robot{r}_eef_pos"] = rng.normal(size=(n, 3)).astype(np.float32)
        arrays[f"robot{r}_eef_rot_axis_angle"] = rng.normal(size=(n, 3)).astype(np.float32)
        arrays[f"robot{r}_gripper_width"] = rng.uniform(0, 0.08, (n, 1)).astype(np.float32)
        arrays[f"robot{r}_demo_start_pose"] = np.zeros((n, 6))
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    data, meta = root.create_group("data"), root.create_group("meta")
    for key, value in arrays.items():
        image = key == "camera0_rgb"
        array = data.create_array(key, shape=value.shape, dtype=value.dtype, chunks=(1, *value.shape[1:]) if image else value.shape,
                                  compressors=Jpegxl(level=99, lossless=True, numthreads=1) if image else "auto")
        array[:] = value
    meta.create_array("episode_ends", shape=(2,), dtype=np.int64)[:] = np.cumsum(UMI_LENGTHS)
    set_compressor(path, "camera0_rgb", UMI_CODEC_CONFIG)  # as UMI's own codec class writes it
    return arrays


def set_compressor(path: Path, key: str, config: dict) -> None:
    file = path / "data" / key / ".zarray"
    meta = json.loads(file.read_text())
    meta["compressor"] = config
    file.write_text(json.dumps(meta))


def zip_store(folder: Path, file: Path) -> Path:
    """The folder's keys in an uncompressed zip, as zarr's ZipStore writes a .zarr.zip."""
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as z:
        for item in sorted(folder.rglob("*")):
            if item.is_file():
                z.write(item, item.relative_to(folder).as_posix())
    return file


@pytest.fixture(scope="module")
def umi(tmp_path_factory):
    folder = tmp_path_factory.mktemp("umi") / "buffer.zarr"
    arrays = make_umi(folder)
    return folder, zip_store(folder, folder.parent / "buffer.zarr.zip"), arrays


def check_umi(ds, arrays):
    info = ds.info
    assert (info.format, info.num_episodes, len(ds), info.fps) == ("umi-zarr", 2, 2, 59.94)
    assert info.cameras == ["camera0_rgb"] and info.camera_sizes == {"camera0_rgb": (16, 24)}
    assert info.episode_lengths.tolist() == list(UMI_LENGTHS)
    assert info.action_names is None and info.tasks == [] and info.robot_type is None
    assert info.state_names[:7] == ["robot0_eef_pos.x", "robot0_eef_pos.y", "robot0_eef_pos.z", "robot0_eef_rot_axis_angle.x",
                                    "robot0_eef_rot_axis_angle.y", "robot0_eef_rot_axis_angle.z", "robot0_gripper_width"]
    assert len(info.state_names) == 14 and info.state_names[7] == "robot1_eef_pos.x"
    for e, (start, stop) in enumerate([(0, 3), (3, 7)]):
        ep = ds.read_episode(e)
        assert ep.index == e and ep.action is None and ep.task == "" and ep.num_frames == stop - start
        frames = ep.frames["camera0_rgb"]
        assert frames.dtype == np.uint8 and frames.shape == (stop - start, 16, 24, 3)
        np.testing.assert_array_equal(frames, arrays["camera0_rgb"][start:stop])  # lossless JPEG XL
        expected = np.concatenate([arrays[f"robot{r}_{k}"][start:stop] for r in (0, 1)
                                   for k in ("eef_pos", "eef_rot_axis_angle", "gripper_width")], axis=1)
        assert ep.state.dtype == np.float32
        np.testing.assert_array_equal(ep.state, expected)
        np.testing.assert_allclose(ep.timestamps, np.arange(stop - start) / 59.94)


def test_umi_directory_and_zip_read_back_exactly(umi):
    folder, zipped, arrays = umi
    check_umi(open_umi(folder), arrays)
    with open_umi(zipped) as ds:
        check_umi(ds, arrays)
    from wmgym.data.robot_actions import EefPoseLayout

    EefPoseLayout.umi(2, open_umi(folder).info.state_names)  # the names the eef-pose actions look for


def test_umi_frames_decoded_by_hand_when_zarr_cannot_build_the_codec(umi, tmp_path):
    """A camera array whose codec config the installed imagecodecs does not take is decoded by hand."""
    folder, _, arrays = umi
    copy = tmp_path / "buffer.zarr"
    shutil.copytree(folder, copy)
    set_compressor(copy, "camera0_rgb", {**UMI_CODEC_CONFIG, "extrasamples": None})
    check_umi(open_umi(copy), arrays)
    with open_umi(zip_store(copy, tmp_path / "buffer.zarr.zip")) as ds:
        check_umi(ds, arrays)


def test_umi_timestamps_and_fps_from_a_timestamp_array(tmp_path):
    import zarr

    folder = tmp_path / "buffer.zarr"
    make_umi(folder)
    stamps = 100.0 + np.arange(sum(UMI_LENGTHS)) / 30.0
    zarr.open_group(str(folder / "data"), mode="a", zarr_format=2).create_array("timestamp", shape=stamps.shape, dtype=np.float64)[:] = stamps
    ds = open_umi(folder)
    assert ds.info.fps == pytest.approx(30.0)
    np.testing.assert_allclose(ds.read_episode(1).timestamps, np.arange(4) / 30.0)
    assert open_umi(folder, fps=10).info.fps == 10


def test_umi_refuses_other_files_and_missing_arrays(tmp_path):
    with pytest.raises(RobotDataError, match="not a zarr group"):
        open_umi(tmp_path)
    bad = tmp_path / "bad.zarr.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(RobotDataError, match="bad.zarr.zip is not a UMI"):
        open_umi(bad)
    folder = tmp_path / "buffer.zarr"
    make_umi(folder)
    shutil.rmtree(folder / "data" / "robot1_gripper_width")
    with pytest.raises(RobotDataError, match="missing array data/robot1_gripper_width"):
        open_umi(folder)
