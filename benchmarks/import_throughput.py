"""Import throughput of `wmgym import`, frames per second for each source format on this machine.

    python benchmarks/import_throughput.py [--shared ../shared] [--umi-frames 2000]

Formats measured:
    - LeRobot v2.1, H.264: ../shared/realdata/bridge_lerobot (25 episodes x 10 frames, 64x64);
    - LeRobot v2.1, AV1: ../shared/realdata/g1_lerobot (3 episodes, 765 frames, 480x640 -> 48x64);
    - LeRobot v3.0, H.264: the Bridge episodes rewritten here in v3.0's layout (one data file, one
      video file per camera holding every episode back to back, as LeRobot's converter writes them);
    - UMI zarr v2, JPEG-XL: a store written here in UMI's layout (224x224 frames as UMI records
      them, one frame a chunk, lossy JPEG-XL at distance 1), one robot, episodes of 200 frames.
Each import writes a fresh store in a temporary directory with default options; the time
includes opening, decoding, resizing and writing (one process, as `wmgym import` runs).
Prints one JSON line per format.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from wmgym.data.robot_import import ImportConfig, import_dataset
from wmgym.data.store import EpisodeStore


def write_umi(path: Path, frames: int, episode_frames: int = 200, size: int = 224) -> None:
    """A UMI ReplayBuffer (zarr v2) of smooth random images, JPEG-XL compressed as UMI stores them."""
    import zarr
    from imagecodecs.numcodecs import Jpegxl

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (8, 8, 3)).astype(np.float32)
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    data, meta = root.create_group("data"), root.create_group("meta")
    camera = data.create_array("camera0_rgb", shape=(frames, size, size, 3), dtype=np.uint8, chunks=(1, size, size, 3),
                               compressors=Jpegxl(level=None, distance=1.0, numthreads=1))
    import cv2

    for t in range(frames):
        shift = np.roll(base, t % 8, axis=1)
        camera[t] = np.clip(cv2.resize(shift, (size, size), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 4, (size, size, 3)),
                            0, 255).astype(np.uint8)
    for name, width in (("robot0_eef_pos", 3), ("robot0_eef_rot_axis_angle", 3), ("robot0_gripper_width", 1)):
        data.create_array(name, shape=(frames, width), dtype=np.float32)[:] = rng.normal(0, 0.01, (frames, width)).cumsum(0)
    meta.create_array("episode_ends", shape=(frames // episode_frames,), dtype=np.int64)[:] = \
        np.arange(1, frames // episode_frames + 1) * episode_frames


def write_lerobot_v30(source: Path, out: Path) -> None:
    """Rewrite a LeRobot v2.1 dataset in v3.0's layout: meta/info.json, meta/tasks.parquet (the task
    text as pandas' index, as LeRobot writes it), meta/episodes/chunk-000/file-000.parquet, one data
    file, and per camera one H.264 video of every episode back to back."""
    import av
    import pyarrow as pa
    import pyarrow.parquet as pq

    info = json.loads((source / "meta/info.json").read_text())
    episodes = [json.loads(line) for line in (source / "meta/episodes.jsonl").read_text().splitlines() if line.strip()]
    tasks = [json.loads(line)["task"] for line in (source / "meta/tasks.jsonl").read_text().splitlines() if line.strip()]
    cameras = [k for k, f in info["features"].items() if f["dtype"] == "video"]
    fps = info["fps"]
    info.update(codebase_version="v3.0", data_path="data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
                video_path="videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4")
    (out / "meta/episodes/chunk-000").mkdir(parents=True)
    (out / "data/chunk-000").mkdir(parents=True)
    (out / "meta/info.json").write_text(json.dumps(info))
    tables = [pq.read_table(source / info_path(e["episode_index"])) for e in episodes]
    pq.write_table(pa.concat_tables(tables), out / "data/chunk-000/file-000.parquet")
    pandas = {"index_columns": ["__index_level_0__"], "column_indexes": [], "columns": [
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
        {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}]}
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "__index_level_0__": tasks})
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas)}), out / "meta/tasks.parquet")
    rows, offset, start = [], 0, 0.0
    for camera in cameras:
        (out / f"videos/{camera}/chunk-000").mkdir(parents=True)
        with av.open(str(out / f"videos/{camera}/chunk-000/file-000.mp4"), "w") as video:
            stream = video.add_stream("libx264", rate=fps)
            height, width = info["features"][camera]["shape"][:2]
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for e in episodes:
                with av.open(str(source / f"videos/chunk-000/{camera}/episode_{e['episode_index']:06d}.mp4")) as clip:
                    for frame in clip.decode(video=0):
                        video.mux(stream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")))
            video.mux(stream.encode())
    for e in episodes:
        row = {"episode_index": e["episode_index"], "tasks": e["tasks"], "length": e["length"], "data/chunk_index": 0,
               "data/file_index": 0, "dataset_from_index": offset, "dataset_to_index": offset + e["length"]}
        for camera in cameras:
            row.update({f"videos/{camera}/chunk_index": 0, f"videos/{camera}/file_index": 0,
                        f"videos/{camera}/from_timestamp": start, f"videos/{camera}/to_timestamp": start + e["length"] / fps})
        rows.append(row)
        offset, start = offset + e["length"], start + e["length"] / fps
    pq.write_table(pa.Table.from_pylist(rows), out / "meta/episodes/chunk-000/file-000.parquet")


def info_path(episode: int) -> str:
    return f"data/chunk-000/episode_{episode:06d}.parquet"


def measure(name: str, source: Path, out: Path, **options) -> dict:
    began = time.perf_counter()
    import_dataset(ImportConfig(source=str(source), out=str(out), show_progress=False, **options))
    seconds = time.perf_counter() - began
    store = EpisodeStore.open(out)
    return {"format": name, "source": str(source), "episodes": store.num_episodes, "frames": store.num_frames,
            "size": [store.height, store.width], "seconds": round(seconds, 2), "frames_per_s": round(store.num_frames / seconds, 1),
            "machine": f"{platform.machine()}, {platform.python_version()}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument("--umi-frames", type=int, default=2000)
    args = parser.parse_args()
    realdata = Path(args.shared) / "realdata"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = [measure("lerobot-v2.1 h264", realdata / "bridge_lerobot", tmp / "bridge.zarr"),
                   measure("lerobot-v2.1 av1", realdata / "g1_lerobot", tmp / "g1.zarr")]
        write_lerobot_v30(realdata / "bridge_lerobot", tmp / "bridge_v30")
        results.append(measure("lerobot-v3.0 h264", tmp / "bridge_v30", tmp / "bridge_v30.zarr"))
        write_umi(tmp / "umi.zarr", args.umi_frames)
        results.append(measure("umi zarr jpeg-xl", tmp / "umi.zarr", tmp / "umi_store.zarr", actions="eef-pose"))
    for result in results:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
