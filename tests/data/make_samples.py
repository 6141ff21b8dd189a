"""Rebuild the LeRobot samples in tests/data from the full datasets in ../shared/realdata.

    python tests/data/make_samples.py [REALDATA]   (REALDATA: default /work/shared/realdata)

- bridge_lerobot_2ep/: episodes 0 and 1 of bridge_lerobot (LeRobot v2.1, 3 cameras of 64x64
  H.264, 7-D state and action, 10 frames each): files copied byte for byte, meta/ rewritten for
  two episodes and their two tasks.
- g1_lerobot_6f/: the first 6 frames of episode 0 of g1_lerobot (LeRobot v2.1, one 480x640 AV1
  camera, 26-D state and action whose info.json names are a list in a list): the video's first
  6 packets remuxed into a new mp4 without re-encoding (every packet of that AV1 stream is one
  shown frame and the first is a keyframe, so they decode to the original's first 6 frames
  exactly), the parquet table cut to its first 6 rows, meta/ rewritten.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import av
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent


def write_meta(src: Path, dst: Path, lengths: dict[int, int], tasks: dict[int, str], episode_tasks: dict[int, list[str]]) -> None:
    info = json.loads((src / "meta" / "info.json").read_text())
    info.update(total_episodes=len(lengths), total_frames=sum(lengths.values()), total_tasks=len(tasks),
                total_videos=len(lengths) * sum(ft["dtype"] == "video" for ft in info["features"].values()),
                splits={"train": f"0:{len(lengths)}"})
    (dst / "meta").mkdir(parents=True, exist_ok=True)
    (dst / "meta" / "info.json").write_text(json.dumps(info, indent=4) + "\n")
    (dst / "meta" / "episodes.jsonl").write_text(
        "".join(json.dumps({"episode_index": e, "tasks": episode_tasks[e], "length": n}) + "\n" for e, n in lengths.items()))
    (dst / "meta" / "tasks.jsonl").write_text("".join(json.dumps({"task_index": k, "task": t}) + "\n" for k, t in tasks.items()))


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def bridge(realdata: Path) -> None:
    src, dst = realdata / "bridge_lerobot", HERE / "bridge_lerobot_2ep"
    shutil.rmtree(dst, ignore_errors=True)
    episodes = {row["episode_index"]: row for row in jsonl(src / "meta" / "episodes.jsonl")}
    all_tasks = {row["task_index"]: row["task"] for row in jsonl(src / "meta" / "tasks.jsonl")}
    keep = [0, 1]
    used = set()
    for e in keep:
        table = pq.read_table(src / f"data/chunk-000/episode_{e:06d}.parquet")
        used |= set(table.column("task_index").to_pylist())
        for file in [f"data/chunk-000/episode_{e:06d}.parquet",
                     *(f"videos/chunk-000/observation.images.image_{c}/episode_{e:06d}.mp4" for c in range(3))]:
            (dst / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / file, dst / file)
    assert used == {0, 1}, used  # the two episodes' task indices are 0 and 1: tasks.jsonl keeps those two
    write_meta(src, dst, {e: episodes[e]["length"] for e in keep}, {k: all_tasks[k] for k in sorted(used)},
               {e: episodes[e]["tasks"] for e in keep})


def g1(realdata: Path, frames: int = 6) -> None:
    src, dst = realdata / "g1_lerobot", HERE / "g1_lerobot_6f"
    shutil.rmtree(dst, ignore_errors=True)
    data = "data/chunk-000/episode_000000.parquet"
    video = "videos/chunk-000/observation.images.cam_high/episode_000000.mp4"
    (dst / data).parent.mkdir(parents=True)
    (dst / video).parent.mkdir(parents=True)
    table = pq.read_table(src / data).slice(0, frames)
    pq.write_table(table, dst / data)
    with av.open(str(src / video)) as inp, av.open(str(dst / video), "w") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream, opaque=True)
        for n, packet in enumerate(inp.demux(stream)):
            if n == frames or packet.size == 0:
                break
            assert n or packet.is_keyframe
            packet.stream = copy
            out.mux(packet)
    episodes = jsonl(src / "meta" / "episodes.jsonl")
    write_meta(src, dst, {0: frames}, {0: jsonl(src / "meta" / "tasks.jsonl")[0]["task"]}, {0: episodes[0]["tasks"]})


if __name__ == "__main__":
    realdata = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/shared/realdata")
    bridge(realdata)
    g1(realdata)
