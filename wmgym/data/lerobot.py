"""Read LeRobot datasets (codebase versions v2.1 and v3.0) as time-aligned `RobotEpisode`s.

Dimension legend: T frames (table rows) of an episode, H x W pixels, S state values, A action values.

Written by hand, without the `lerobot` package (it pins old torch and numpy): the metadata
(`meta/info.json`, `meta/episodes.jsonl` / `meta/tasks.jsonl` for v2.1, `meta/episodes/*/*.parquet`
/ `meta/tasks.parquet` for v3.0) is read with json and pyarrow, the tables with pyarrow, and the
videos are decoded with PyAV (H.264, AV1 through dav1d, ...). Only what a world model import
needs is read: cameras, `observation.state`, `action`, `timestamp` and `task_index`.

Layouts (as LeRobot writes them, `lerobot/datasets/utils.py` and the v2.1 -> v3.0 conversion):

- v2.1: one parquet file and one mp4 per camera per episode, at the paths of info.json's
  `data_path` / `video_path` templates (`episode_chunk` = episode_index // `chunks_size`).
  Each video starts at 0 s.
- v3.0: data files `data/chunk-XXX/file-XXX.parquet` hold many episodes (rows
  `dataset_from_index` .. `dataset_to_index` of the whole dataset); video files
  `videos/<key>/chunk-XXX/file-XXX.mp4` hold many episodes one after the other, an episode's
  frames starting at its `videos/<key>/from_timestamp`. Each episode's row in
  `meta/episodes/chunk-XXX/file-XXX.parquet` names its files (`data/chunk_index`,
  `data/file_index`, `videos/<key>/chunk_index`, `videos/<key>/file_index`). `meta/tasks.parquet`
  is a pandas frame whose index is the task text and whose column is `task_index`.

Frames are matched to rows by time, as LeRobot does: row t of the table, with its `timestamp`,
gets the video frame whose presentation time (plus the episode's `from_timestamp` in v3.0) is
nearest, and that frame must lie within `tolerance_s` (LeRobot's default 1e-4 s) of it. A video
that ends before the table does, or frames whose times do not match the table's, are errors
(`RobotDataError`), never silently shifted frames. Image features (dtype "image", PNG or JPEG
bytes in the parquet table) are decoded with Pillow.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wmgym.data.robot_data import RobotDataError, RobotDatasetInfo, RobotEpisode

SUPPORTED_VERSIONS = ("v2.1", "v3.0")
DEFAULT_TOLERANCE_S = 1e-4
"""LeRobot's default `tolerance_s`: how far a frame's time may be from its row's timestamp."""
STATE_KEY = "observation.state"
ACTION_KEY = "action"
CAMERA_DTYPES = ("video", "image")


def open_lerobot(path, tolerance_s: float = DEFAULT_TOLERANCE_S) -> "LeRobotDataset":
    """A reader of the LeRobot dataset folder `path` (v2.1 or v3.0). RobotDataError for a folder
    that is not a LeRobot dataset, or of another codebase version."""
    return LeRobotDataset(path, tolerance_s=tolerance_s)


@dataclass
class _Episode:
    """Where one episode lives. `rows`: for v3.0, the episode's (from, to) rows of the dataset."""

    index: int
    length: int
    tasks: list[str]
    data_file: Path
    videos: dict[str, tuple[Path, float]] = field(default_factory=dict)  # key -> (file, from_timestamp)
    rows: tuple[int, int] | None = None


class LeRobotDataset:
    """A LeRobot v2.1 or v3.0 dataset: `info`, `len()` episodes, `read_episode(i, cameras)`.

    Episode i is the i-th in the metadata's order of `episode_index` (LeRobot numbers them 0 .. N-1,
    so i is the dataset's own episode index).
    """

    def __init__(self, path, tolerance_s: float = DEFAULT_TOLERANCE_S):
        self.root = Path(path)
        self.tolerance_s = float(tolerance_s)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise RobotDataError(f"{self.root} is not a LeRobot dataset: no {info_path}")
        try:
            raw = json.loads(info_path.read_text())
        except (OSError, ValueError) as e:
            raise RobotDataError(f"{info_path}: cannot read it as JSON ({e})") from e
        if not isinstance(raw, dict) or not isinstance(raw.get("features"), dict):
            raise RobotDataError(f"{info_path}: not a LeRobot info.json (no 'features')")
        version = raw.get("codebase_version")
        if version not in SUPPORTED_VERSIONS:
            raise RobotDataError(f"{info_path}: codebase_version {version!r} is not supported; "
                                 f"supported: {', '.join(SUPPORTED_VERSIONS)}")
        for key in ("fps", "data_path"):
            if key not in raw:
                raise RobotDataError(f"{info_path}: no {key!r}")
        self.version = version
        self.raw_info = raw
        self.features: dict = raw["features"]
        self.fps = float(raw["fps"])
        self.cameras = [k for k, ft in self.features.items() if isinstance(ft, dict) and ft.get("dtype") in CAMERA_DTYPES]
        self.video_keys = [k for k in self.cameras if self.features[k]["dtype"] == "video"]
        if self.video_keys and not raw.get("video_path"):
            raise RobotDataError(f"{info_path}: video features {self.video_keys} but no 'video_path'")
        self.state_names = _names(self.features.get(STATE_KEY), "state")
        self.action_names = _names(self.features.get(ACTION_KEY), "action")
        if version == "v2.1":
            self.tasks, self.episodes = self._read_meta_v21()
        else:
            self.tasks, self.episodes = self._read_meta_v30()
        self._table_cache: tuple[tuple, object] | None = None  # (file, columns) -> table; v3.0 files hold many episodes

    # ----------------------------------------------------------------------------------------------
    # metadata

    def _read_meta_v21(self) -> tuple[dict[int, str], list[_Episode]]:
        tasks = {}
        tasks_path = self.root / "meta" / "tasks.jsonl"
        if tasks_path.is_file():
            for row in _jsonl(tasks_path):
                tasks[int(row["task_index"])] = str(row["task"])
        episodes_path = self.root / "meta" / "episodes.jsonl"
        if not episodes_path.is_file():
            raise RobotDataError(f"{self.root} is not a LeRobot v2.1 dataset: no {episodes_path}")
        rows = sorted(_jsonl(episodes_path), key=lambda r: int(r["episode_index"]))
        chunks_size = int(self.raw_info.get("chunks_size", 1000))
        episodes = []
        for row in rows:
            index = int(row["episode_index"])
            keys = dict(episode_chunk=index // chunks_size, episode_index=index)
            videos = {k: (self._path("video_path", video_key=k, **keys), 0.0) for k in self.video_keys}
            episodes.append(_Episode(index=index, length=int(row.get("length", -1)), tasks=[str(t) for t in row.get("tasks", [])],
                                     data_file=self._path("data_path", **keys), videos=videos))
        return tasks, episodes

    def _read_meta_v30(self) -> tuple[dict[int, str], list[_Episode]]:
        import pyarrow.parquet as pq

        tasks = {}
        tasks_path = self.root / "meta" / "tasks.parquet"
        if tasks_path.is_file():
            tasks = _read_tasks_parquet(tasks_path)
        files = sorted((self.root / "meta" / "episodes").glob("*/*.parquet"))
        if not files:
            raise RobotDataError(f"{self.root} is not a LeRobot v3.0 dataset: no meta/episodes/chunk-*/file-*.parquet")
        required = ["episode_index", "data/chunk_index", "data/file_index", "dataset_from_index", "dataset_to_index"]
        for key in self.video_keys:
            required += [f"videos/{key}/chunk_index", f"videos/{key}/file_index", f"videos/{key}/from_timestamp"]
        optional = ["length", "tasks"]
        rows = []
        for file in files:
            names = pq.read_schema(file).names
            missing = [c for c in required if c not in names]
            if missing:
                raise RobotDataError(f"{file}: missing column(s) {missing} of the LeRobot v3.0 episodes table")
            table = pq.read_table(file, columns=required + [c for c in optional if c in names]).to_pydict()
            rows += [{k: v[i] for k, v in table.items()} for i in range(len(table["episode_index"]))]
        rows.sort(key=lambda r: int(r["episode_index"]))
        episodes = []
        for row in rows:
            data_file = self._path("data_path", chunk_index=int(row["data/chunk_index"]), file_index=int(row["data/file_index"]))
            videos = {}
            for key in self.video_keys:
                file = self._path("video_path", video_key=key, chunk_index=int(row[f"videos/{key}/chunk_index"]),
                                  file_index=int(row[f"videos/{key}/file_index"]))
                videos[key] = (file, float(row[f"videos/{key}/from_timestamp"]))
            start, stop = int(row["dataset_from_index"]), int(row["dataset_to_index"])
            episodes.append(_Episode(index=int(row["episode_index"]), length=int(row.get("length") or stop - start),
                                     tasks=[str(t) for t in (row.get("tasks") or [])], data_file=data_file, videos=videos,
                                     rows=(start, stop)))
        return tasks, episodes

    def _path(self, template: str, **keys) -> Path:
        """A file of the dataset from info.json's `data_path` or `video_path` template."""
        try:
            return self.root / self.raw_info[template].format(**keys)
        except (KeyError, IndexError, ValueError) as e:
            raise RobotDataError(f"{self.root / 'meta' / 'info.json'}: {template} {self.raw_info[template]!r} does not take "
                                 f"{sorted(keys)} of a LeRobot {self.version} dataset ({e!r})") from e

    @property
    def info(self) -> RobotDatasetInfo:
        """The dataset's `RobotDatasetInfo` (format "lerobot-v2.1" or "lerobot-v3.0")."""
        task_texts = [self.tasks[k] for k in sorted(self.tasks)]
        if not task_texts:  # no tasks table: the episodes' own task lists, in order of appearance
            task_texts = list(dict.fromkeys(t for ep in self.episodes for t in ep.tasks))
        return RobotDatasetInfo(
            format=f"lerobot-{self.version}", path=str(self.root), fps=self.fps, cameras=list(self.cameras),
            camera_sizes={k: _camera_size(self.features[k]) for k in self.cameras}, num_episodes=len(self.episodes),
            episode_lengths=np.array([ep.length for ep in self.episodes], dtype=np.int64),
            state_names=self.state_names, action_names=self.action_names,
            robot_type=self.raw_info.get("robot_type"), tasks=task_texts)

    def __len__(self) -> int:
        return len(self.episodes)

    # ----------------------------------------------------------------------------------------------
    # episodes

    def read_episode(self, i: int, cameras: list[str] | None = None) -> RobotEpisode:
        """Episode i (0 <= i < len(self)), rows aligned in time.

        Returns a `RobotEpisode`: frames camera -> uint8 (T, H, W, 3) RGB for `cameras` (None: every
        camera of `info.cameras`), timestamps float64 (T,) from the episode's start, state float32
        (T, S) and action float32 (T, A) (None where the dataset has none), the task text of its
        first row. RobotDataError for a missing file or column, or a video that does not match
        the table (fewer frames, mismatched timestamps).
        """
        if not 0 <= i < len(self.episodes):
            raise IndexError(f"episode {i} out of range: {self.root} has {len(self.episodes)} episodes")
        cameras = list(self.cameras) if cameras is None else list(cameras)
        unknown = [c for c in cameras if c not in self.cameras]
        if unknown:
            raise ValueError(f"camera(s) {unknown} not in {self.root}; it has {self.cameras}")
        ep = self.episodes[i]
        image_cams = [c for c in cameras if self.features[c]["dtype"] == "image"]
        table = self._episode_table(ep, image_cams)
        file = ep.data_file
        if table.num_rows == 0:
            raise RobotDataError(f"{file}: no rows of episode {ep.index}")
        raw_ts = _column(table, "timestamp", file).to_numpy(zero_copy_only=False).astype(np.float64)
        state = _matrix(_column(table, STATE_KEY, file), STATE_KEY, file) if self.state_names is not None else None
        action = _matrix(_column(table, ACTION_KEY, file), ACTION_KEY, file) if self.action_names is not None else None
        for name, values, names in (("state", state, self.state_names), ("action", action, self.action_names)):
            if values is not None and values.shape[1] != len(names):
                raise RobotDataError(f"{file}: {name} rows have {values.shape[1]} values, info.json names {len(names)}")
        task = ep.tasks[0] if ep.tasks else ""
        if "task_index" in table.column_names:
            first = table.column("task_index")[0].as_py()
            if first is not None and int(first) in self.tasks:
                task = self.tasks[int(first)]
        frames = {}
        for cam in cameras:
            if cam in image_cams:
                frames[cam] = _decode_images(_column(table, cam, file), self.root, file, cam)
            else:
                video, offset = ep.videos[cam]
                frames[cam] = decode_video_at(video, offset + raw_ts, fps=self.fps, tolerance_s=self.tolerance_s)
        return RobotEpisode(index=i, frames=frames, timestamps=raw_ts - raw_ts[0], state=state, action=action, task=task)

    def _episode_table(self, ep: _Episode, image_cams: list[str]):
        """The episode's rows of the columns read (timestamp, task_index, state, action, image cameras)."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        file = ep.data_file
        if not file.is_file():
            raise RobotDataError(f"missing data file {file} (episode {ep.index})")
        try:
            names = pq.read_schema(file).names
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            raise RobotDataError(f"{file}: cannot read it as parquet ({e})") from e
        wanted = ["timestamp", "task_index", "episode_index", "index", STATE_KEY, ACTION_KEY, *image_cams]
        columns = tuple(c for c in wanted if c in names)  # missing required ones are named by _column
        if ep.rows is None:  # v2.1: the file is the episode
            return pq.read_table(file, columns=list(columns))
        key = (file, columns)
        if self._table_cache is None or self._table_cache[0] != key:
            self._table_cache = (key, pq.read_table(file, columns=list(columns)))
        table = self._table_cache[1]
        if "episode_index" in columns:
            mask = pc.equal(table.column("episode_index"), ep.index)
        elif "index" in columns:
            index = table.column("index")
            mask = pc.and_(pc.greater_equal(index, ep.rows[0]), pc.less(index, ep.rows[1]))
        else:
            raise RobotDataError(f"{file}: missing column 'episode_index' (and 'index') to find episode {ep.index}")
        return table.filter(mask)


# --------------------------------------------------------------------------------------------------
# video


def decode_video_at(path, times, fps: float, tolerance_s: float = DEFAULT_TOLERANCE_S) -> np.ndarray:
    """The frames of the video file `path` shown at `times` (float (T,) seconds of the file's
    presentation time, increasing): uint8 (T, H, W, 3) RGB.

    Decodes from the keyframe before times[0] to half a frame period past times[-1]; row t gets the
    frame whose presentation time is nearest times[t]. RobotDataError for a missing or undecodable
    file, a video that ends before the last time (fewer frames than rows), or a nearest frame more
    than `tolerance_s` from its time ("mismatched timestamps").
    """
    import av

    path = Path(path)
    times = np.asarray(times, dtype=np.float64)
    if not path.is_file():
        raise RobotDataError(f"missing video file {path}")
    half = 0.5 / fps
    start, stop = times[0] - half, times[-1] + half
    try:
        seek = start > 0
        got_times, got_frames, ended = _decode_window(path, start, stop, seek=seek)
        if seek and (not got_times or got_times[0] > times[0] + tolerance_s):  # the seek may have overshot: from the start
            got_times, got_frames, ended = _decode_window(path, start, stop, seek=False)
    except av.error.FFmpegError as e:
        raise RobotDataError(f"{path}: cannot decode the video ({e})") from e
    if len(got_times) < len(times) and ended:
        last = f"its last frame is at {got_times[-1]:.4f} s" if got_times else "it has no frame there"
        raise RobotDataError(f"{path}: the video has fewer frames than the table's rows: {len(got_times)} frames in "
                             f"[{max(start, 0):.4f}, {stop:.4f}] s for {len(times)} rows ({last}, the last row at "
                             f"{times[-1]:.4f} s)")
    if not got_times:
        raise RobotDataError(f"{path}: no frame in [{start:.4f}, {stop:.4f}] s for {len(times)} rows (mismatched timestamps)")
    frame_times = np.asarray(got_times)
    nearest = _nearest(frame_times, times)
    error = np.abs(frame_times[nearest] - times)
    worst = int(np.argmax(error))
    if error[worst] > tolerance_s:
        raise RobotDataError(f"{path}: mismatched timestamps: row {worst} at {times[worst]:.6f} s is {error[worst]:.6f} s "
                             f"from the nearest frame ({frame_times[nearest[worst]]:.6f} s; tolerance {tolerance_s:g} s); "
                             f"{len(got_times)} frames in the span for {len(times)} rows")
    return np.stack([got_frames[j] for j in nearest])


def _decode_window(path: Path, start: float, stop: float, seek: bool):
    """(times, RGB frames, ended) of the frames with presentation time in [start, stop];
    ended: the stream ended before `stop`."""
    import av

    times, frames = [], []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise RobotDataError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if seek:
            container.seek(max(0, int(math.floor(start / stream.time_base))), stream=stream, backward=True, any_frame=False)
        for n, frame in enumerate(container.decode(stream)):
            t = frame.time if frame.pts is not None else None
            if t is None:
                raise RobotDataError(f"{path}: frame {n} has no presentation time")
            if t < start:
                continue
            if t > stop:
                return times, frames, False
            times.append(float(t))
            frames.append(frame.to_ndarray(format="rgb24"))
    return times, frames, True


def _nearest(sorted_values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index into `sorted_values` of the value nearest each query."""
    order = np.argsort(sorted_values, kind="stable")
    values = sorted_values[order]
    right = np.clip(np.searchsorted(values, queries), 0, len(values) - 1)
    left = np.clip(right - 1, 0, len(values) - 1)
    pick = np.where(np.abs(values[left] - queries) <= np.abs(values[right] - queries), left, right)
    return order[pick]


# --------------------------------------------------------------------------------------------------
# tables and metadata


def _jsonl(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise RobotDataError(f"{path}: cannot read it as JSON lines ({e})") from e


def _read_tasks_parquet(path: Path) -> dict[int, str]:
    """task_index -> text of a v3.0 meta/tasks.parquet: a pandas frame with column `task_index`
    and the task text as its index (stored as a column named by the pandas metadata, usually
    `__index_level_0__`), or a plain `task` column."""
    import pyarrow.parquet as pq
    import pyarrow.types as pt

    table = pq.read_table(path)
    if "task_index" not in table.column_names:
        raise RobotDataError(f"{path}: missing column 'task_index'")
    text = "task" if "task" in table.column_names else None
    if text is None:
        meta = table.schema.pandas_metadata or {}
        text = next((c for c in meta.get("index_columns", []) if isinstance(c, str) and c in table.column_names), None)
    if text is None:
        text = next((f.name for f in table.schema if f.name != "task_index" and (pt.is_string(f.type) or pt.is_large_string(f.type))), None)
    if text is None:
        raise RobotDataError(f"{path}: no column of task texts")
    return {int(k): str(v) for k, v in zip(table.column("task_index").to_pylist(), table.column(text).to_pylist())}


def _column(table, name: str, file: Path):
    if name not in table.column_names:
        raise RobotDataError(f"{file}: missing column {name!r}")
    return table.column(name)


def _matrix(column, name: str, file: Path) -> np.ndarray:
    """A parquet column of fixed or variable-size lists (or scalars) -> float32 (T, D)."""
    import pyarrow.compute as pc
    import pyarrow.types as pt

    arr = column.combine_chunks()
    rows = len(arr)
    if arr.null_count:
        raise RobotDataError(f"{file}: column {name!r} has {arr.null_count} empty rows")
    while pt.is_list(arr.type) or pt.is_large_list(arr.type) or pt.is_fixed_size_list(arr.type):
        if not pt.is_fixed_size_list(arr.type) and len(arr) and len(set(pc.list_value_length(arr).to_pylist())) > 1:
            raise RobotDataError(f"{file}: column {name!r} has rows of different lengths")
        arr = arr.flatten()
    values = arr.to_numpy(zero_copy_only=False).astype(np.float32)
    if rows == 0 or values.size % rows:
        raise RobotDataError(f"{file}: column {name!r} has {values.size} values for {rows} rows")
    return values.reshape(rows, -1)


def _flat_names(raw) -> list:
    if isinstance(raw, dict):
        return [n for v in raw.values() for n in _flat_names(v)]
    if isinstance(raw, (list, tuple)):
        return [n for v in raw for n in _flat_names(v)]
    return [] if raw is None else [raw]


def _names(feature, prefix: str) -> list[str] | None:
    """A vector feature's value names: info.json's `names` as a flat list, a list in a list
    ([["a", "b"]], as some datasets write it) or a dict ({"motors": ["a", "b"]}); `<prefix>_<i>`
    where there are none or they do not match the shape. None where there is no such feature."""
    if not isinstance(feature, dict):
        return None
    size = int(np.prod(feature.get("shape") or [1]))
    names = [str(n) for n in _flat_names(feature.get("names"))]
    return names if len(names) == size else [f"{prefix}_{i}" for i in range(size)]


def _camera_size(feature: dict) -> tuple[int, int]:
    """(H, W) of a video or image feature: from the video info where written, else from `shape`
    read by its `names` (height, width, channel in any order; else HWC, or CHW where the first
    axis has 1, 3 or 4 values and the last does not)."""
    video = feature.get("info") or feature.get("video_info") or {}
    if "video.height" in video and "video.width" in video:
        return int(video["video.height"]), int(video["video.width"])
    shape = [int(s) for s in feature.get("shape", [])]
    names = feature.get("names")
    if isinstance(names, list) and len(names) == len(shape) and {"height", "width"} <= set(map(str, names)):
        return shape[names.index("height")], shape[names.index("width")]
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
        return shape[1], shape[2]
    if len(shape) >= 2:
        return shape[0], shape[1]
    raise RobotDataError(f"camera feature without a size: {feature}")


def _decode_images(column, root: Path, file: Path, name: str) -> np.ndarray:
    """An image feature's column (structs of PNG/JPEG `bytes`, or a `path` to the image) ->
    uint8 (T, H, W, 3) RGB."""
    from PIL import Image

    frames = []
    for row, item in enumerate(column.to_pylist()):
        data = item.get("bytes") if isinstance(item, dict) else item
        try:
            if data is None and isinstance(item, dict) and item.get("path"):
                image = Image.open(root / item["path"])
            elif data is None:
                raise RobotDataError(f"{file}: column {name!r} row {row} holds no image")
            else:
                image = Image.open(io.BytesIO(data))
            frames.append(np.asarray(image.convert("RGB")))
        except (OSError, ValueError) as e:
            if isinstance(e, RobotDataError):
                raise
            raise RobotDataError(f"{file}: column {name!r} row {row}: cannot decode the image ({e})") from e
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise RobotDataError(f"{file}: column {name!r} has images of different sizes {sorted(shapes)}")
    return np.stack(frames)
