"""Read a UMI ReplayBuffer (zarr, as a directory or a .zarr.zip file) as time-aligned `RobotEpisode`s.

Dimension legend: N rows of the whole buffer, T frames of an episode, H x W pixels, R robots,
S = 7 R state values.

UMI (Universal Manipulation Interface, `scripts_slam_pipeline/07_generate_replay_buffer.py` and
`diffusion_policy/common/replay_buffer.py`) writes one zarr v2 group with zarr 2.x:

- `data/camera{i}_rgb`: uint8 (N, H, W, 3), one frame a chunk (1, H, W, 3), compressed with
  JPEG XL through imagecodecs' numcodecs codec (`imagecodecs_jpegxl`);
- `data/robot{r}_eef_pos` float32 (N, 3), `data/robot{r}_eef_rot_axis_angle` float32 (N, 3) (a
  rotation vector in radians), `data/robot{r}_gripper_width` float32 (N, 1) (metres), and
  `robot{r}_demo_start_pose` / `_demo_end_pose` (not read here);
- `meta/episode_ends`: int64 (E,), the row after each episode's last; episode e is rows
  episode_ends[e-1] .. episode_ends[e].

A .zarr.zip is that group in a zip file (UMI saves it with zarr's ZipStore, uncompressed).
There is no time array: frames are the GoPro's at 59.94 fps (UMI's `dataset_frequeny: 0 #59.94`),
so timestamps are row / fps, unless the buffer has a `data/timestamp` array (N,), which is used
(from each episode's first row) and gives the fps.

The state of each row is, robot after robot, eef_pos (3), eef_rot_axis_angle (3),
gripper_width (1), named `robot{r}_eef_pos.x` .. `.z`, `robot{r}_eef_rot_axis_angle.x` .. `.z`,
`robot{r}_gripper_width` (names that `wmgym.data.robot_actions.EefPoseLayout.umi` finds).
A UMI buffer has no action vector: actions come from the poses (`action` is None).

Zarr 3.x reads these v2 arrays itself once imagecodecs' JPEG XL codec is registered with numcodecs
(done here on opening). Written by hand, and why: the listing of the group's arrays (from the
store's keys, because zarr parses every array's metadata to list a group and so fails on one
codec config it cannot build), and a decoder of the camera arrays' chunks for when zarr cannot
build the codec from the array's stored config (a buffer written by an imagecodecs or a UMI codec
class whose parameters the installed imagecodecs does not take): the chunk bytes are read from the
store and decoded with `imagecodecs.jpegxl_decode`, which needs no parameters.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path

import numpy as np

from wmgym.data.robot_data import RobotDataError, RobotDatasetInfo, RobotEpisode

UMI_FPS = 59.94
"""The frame rate of UMI's GoPro recordings, used where a buffer has no `data/timestamp`."""
ROBOT_ARRAYS = (("eef_pos", 3), ("eef_rot_axis_angle", 3), ("gripper_width", 1))
JPEGXL_CODEC_ID = "imagecodecs_jpegxl"
_CAMERA = re.compile(r"camera(\d+)_rgb")
_ROBOT = re.compile(r"robot(\d+)_eef_pos")


def open_umi(path, fps: float | None = None) -> "UmiDataset":
    """A reader of the UMI ReplayBuffer at `path` (a zarr directory or a .zarr.zip file).
    `fps`: the recording's frame rate (None: from `data/timestamp` where there is one, else 59.94)."""
    return UmiDataset(path, fps=fps)


def register_jpegxl() -> None:
    """Register imagecodecs' JPEG XL codec (`imagecodecs_jpegxl`) with numcodecs, once, so zarr
    can decode UMI's camera arrays; a codec already registered under that id is kept."""
    import numcodecs

    if JPEGXL_CODEC_ID in numcodecs.registry.codec_registry:
        return
    from imagecodecs import numcodecs as imagecodecs_numcodecs

    codec = getattr(imagecodecs_numcodecs, "Jpegxl", None) or getattr(imagecodecs_numcodecs, "JpegXl")
    numcodecs.register_codec(codec)


class _RawStore:
    """The bytes under the keys of a zarr store, a directory or a zip file, read without zarr."""

    def __init__(self, path: Path):
        self.path = path
        self.zip = None
        if path.is_dir():
            return
        try:
            self.zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as e:
            raise RobotDataError(f"{path} is not a UMI zarr directory or .zarr.zip file ({e})") from e
        self.names = {n.lstrip("/") for n in self.zip.namelist()}

    def get(self, key: str) -> bytes | None:
        if self.zip is None:
            file = self.path / key
            return file.read_bytes() if file.is_file() else None
        return self.zip.read(key) if key in self.names else None

    def children(self, prefix: str) -> list[str]:
        """Names of the nodes right under `prefix` (a group's arrays and groups)."""
        if self.zip is None:
            folder = self.path / prefix
            return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        head = prefix.rstrip("/") + "/"
        return sorted({n[len(head):].split("/")[0] for n in self.names if n.startswith(head) and n.count("/") > head.count("/")})

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


class _JpegxlFrames:
    """A zarr v2 array of JPEG XL images chunked along its first axis only (UMI's cameras),
    read chunk by chunk from the store's bytes: `shape`, and `[start:stop]` -> uint8 rows."""

    def __init__(self, raw: _RawStore, key: str, meta: dict):
        self.raw, self.key = raw, key
        self.shape = tuple(int(s) for s in meta["shape"])
        self.chunks = tuple(int(c) for c in meta["chunks"])
        self.separator = meta.get("dimension_separator") or "."
        self.fill = meta.get("fill_value") or 0
        if np.dtype(meta["dtype"]) != np.uint8 or self.chunks[1:] != self.shape[1:] or meta.get("filters") \
                or meta.get("order", "C") != "C":
            raise RobotDataError(f"{raw.path}: {key}: cannot read a {meta['dtype']} array of chunks {self.chunks} "
                                 f"(shape {self.shape}, filters {meta.get('filters')}) by hand")

    def __getitem__(self, rows: slice) -> np.ndarray:
        import imagecodecs

        start, stop, _ = rows.indices(self.shape[0])
        out = np.empty((max(stop - start, 0), *self.shape[1:]), np.uint8)
        step = self.chunks[0]
        for c in range(start // step, math.ceil(stop / step)):
            key = f"{self.key}/" + self.separator.join([str(c)] + ["0"] * (len(self.shape) - 1))
            data = self.raw.get(key)
            if data is None:
                chunk = np.full(self.chunks, self.fill, np.uint8)
            else:
                try:
                    chunk = np.asarray(imagecodecs.jpegxl_decode(data)).reshape(self.chunks)
                except Exception as e:  # noqa: BLE001 - imagecodecs raises its own error types
                    raise RobotDataError(f"{self.raw.path}: {key}: cannot decode the JPEG XL chunk ({e})") from e
            lo, hi = max(start, c * step), min(stop, (c + 1) * step)
            out[lo - start:hi - start] = chunk[lo - c * step:hi - c * step]
        return out


class UmiDataset:
    """A UMI ReplayBuffer: `info`, `len()` episodes, `read_episode(i, cameras)`; `close()` (or use
    it as a context manager) releases a .zarr.zip file."""

    def __init__(self, path, fps: float | None = None):
        import zarr

        self.path = Path(path)
        if not self.path.exists():
            raise RobotDataError(f"no UMI dataset at {self.path}")
        register_jpegxl()
        self.raw = _RawStore(self.path)
        try:
            if self.raw.get(".zgroup") is not None:
                self.zarr_format = 2
            elif self.raw.get("zarr.json") is not None:
                self.zarr_format = 3
            else:
                raise RobotDataError(f"{self.path} is not a zarr group (no .zgroup or zarr.json)")
            if self.raw.zip is not None:
                self.store = zarr.storage.ZipStore(self.path, mode="r")
            else:
                self.store = zarr.storage.LocalStore(self.path, read_only=True)
            self.root = zarr.open_group(self.store, mode="r", zarr_format=self.zarr_format)
            names = self.raw.children("data")
            if "episode_ends" not in self.raw.children("meta"):
                raise RobotDataError(f"{self.path} is not a UMI ReplayBuffer: no meta/episode_ends")
            self.episode_ends = np.asarray(self._array("meta/episode_ends")[:], dtype=np.int64).reshape(-1)
            self.camera_keys = sorted((n for n in names if _CAMERA.fullmatch(n)), key=lambda n: int(_CAMERA.fullmatch(n)[1]))
            self.robots = sorted(int(_ROBOT.fullmatch(n)[1]) for n in names if _ROBOT.fullmatch(n))
            self._check(names)
            self.timestamp_key = "data/timestamp" if "timestamp" in names else None
            self._lowdim: dict[str, np.ndarray] | None = None
            self.fps = float(fps) if fps is not None else self._fps_from_timestamps()
        except BaseException:
            self.close()
            raise

    def _check(self, names: list[str]) -> None:
        ends = self.episode_ends
        if len(ends) == 0:
            raise RobotDataError(f"{self.path}: meta/episode_ends is empty (no episode)")
        if ends[0] <= 0 or np.any(np.diff(ends) <= 0):
            raise RobotDataError(f"{self.path}: meta/episode_ends is not increasing from above 0: {ends[:10].tolist()}...")
        if not self.robots:
            raise RobotDataError(f"{self.path}: no data/robot0_eef_pos (not a UMI ReplayBuffer?)")
        keys = list(self.camera_keys)
        for r in self.robots:
            for name, size in ROBOT_ARRAYS:
                key = f"robot{r}_{name}"
                if key not in names:
                    raise RobotDataError(f"{self.path}: missing array data/{key}")
                shape = self._array(f"data/{key}").shape
                if len(shape) not in (1, 2) or (shape[1] if len(shape) == 2 else 1) != size:
                    raise RobotDataError(f"{self.path}: data/{key} has shape {shape}, expected (N, {size})")
                keys.append(key)
        for key in self.camera_keys:
            shape = self._array(f"data/{key}").shape
            if len(shape) != 4 or shape[3] != 3:
                raise RobotDataError(f"{self.path}: data/{key} has shape {shape}, expected (N, H, W, 3)")
        for key in keys:
            rows = self._array(f"data/{key}").shape[0]
            if rows < ends[-1]:
                raise RobotDataError(f"{self.path}: data/{key} has {rows} rows, meta/episode_ends ends at {ends[-1]}")

    def _array(self, key: str):
        """The array at `key`: zarr's, or the hand reader where zarr cannot build its JPEG XL codec."""
        try:
            return self.root[key]
        except KeyError as e:
            raise RobotDataError(f"{self.path}: missing array {key}") from e
        except Exception as e:  # noqa: BLE001 - the codec's own error (TypeError, ValueError) for a config it cannot take
            meta = json.loads(self.raw.get(f"{key}/.zarray") or "null") if self.zarr_format == 2 else None
            if not meta or (meta.get("compressor") or {}).get("id") != JPEGXL_CODEC_ID:
                raise RobotDataError(f"{self.path}: cannot open {key} ({type(e).__name__}: {e})") from e
            return _JpegxlFrames(self.raw, key, meta)

    def _fps_from_timestamps(self) -> float:
        if self.timestamp_key is None:
            return UMI_FPS
        ts = np.asarray(self._array(self.timestamp_key)[: min(int(self.episode_ends[0]), 1000)], dtype=np.float64).reshape(-1)
        steps = np.diff(ts)
        steps = steps[steps > 0]
        return float(1.0 / np.median(steps)) if len(steps) else UMI_FPS

    @property
    def info(self) -> RobotDatasetInfo:
        """The buffer's `RobotDatasetInfo` (format "umi-zarr", no action names, no tasks)."""
        starts = np.concatenate([[0], self.episode_ends[:-1]])
        sizes = {k: tuple(int(s) for s in self._array(f"data/{k}").shape[1:3]) for k in self.camera_keys}
        return RobotDatasetInfo(format="umi-zarr", path=str(self.path), fps=self.fps, cameras=list(self.camera_keys),
                                camera_sizes=sizes, num_episodes=len(self.episode_ends),
                                episode_lengths=(self.episode_ends - starts).astype(np.int64),
                                state_names=self.state_names, action_names=None, robot_type=None, tasks=[])

    @property
    def state_names(self) -> list[str]:
        names = []
        for r in self.robots:
            names += [f"robot{r}_eef_pos.{a}" for a in "xyz"] + [f"robot{r}_eef_rot_axis_angle.{a}" for a in "xyz"]
            names.append(f"robot{r}_gripper_width")
        return names

    def __len__(self) -> int:
        return len(self.episode_ends)

    def _lowdim_arrays(self) -> dict[str, np.ndarray]:
        """The robots' arrays (and timestamps) read whole once: float32 (N, 3 or 1) each."""
        if self._lowdim is None:
            n = int(self.episode_ends[-1])
            keys = [f"robot{r}_{name}" for r in self.robots for name, _ in ROBOT_ARRAYS]
            self._lowdim = {k: np.asarray(self._array(f"data/{k}")[:n], dtype=np.float32).reshape(n, -1) for k in keys}
            if self.timestamp_key is not None:
                self._lowdim["timestamp"] = np.asarray(self._array(self.timestamp_key)[:n], dtype=np.float64).reshape(-1)
        return self._lowdim

    def read_episode(self, i: int, cameras: list[str] | None = None) -> RobotEpisode:
        """Episode i (0 <= i < len(self)): frames camera -> uint8 (T, H, W, 3) RGB for `cameras`
        (None: all), timestamps float64 (T,) from the episode's start, state float32 (T, 7 R) in
        `info.state_names` order, action None, task ""."""
        if not 0 <= i < len(self):
            raise IndexError(f"episode {i} out of range: {self.path} has {len(self)} episodes")
        cameras = list(self.camera_keys) if cameras is None else list(cameras)
        unknown = [c for c in cameras if c not in self.camera_keys]
        if unknown:
            raise ValueError(f"camera(s) {unknown} not in {self.path}; it has {self.camera_keys}")
        start = int(self.episode_ends[i - 1]) if i else 0
        stop = int(self.episode_ends[i])
        low = self._lowdim_arrays()
        state = np.concatenate([low[f"robot{r}_{name}"][start:stop] for r in self.robots for name, _ in ROBOT_ARRAYS], axis=1)
        if "timestamp" in low:
            timestamps = low["timestamp"][start:stop] - low["timestamp"][start]
        else:
            timestamps = np.arange(stop - start, dtype=np.float64) / self.fps
        frames = {}
        for cam in cameras:
            key = f"data/{cam}"
            try:
                frames[cam] = np.asarray(self._array(key)[start:stop], dtype=np.uint8)
            except RobotDataError:
                raise
            except Exception as e:  # noqa: BLE001 - a damaged chunk: name the array and the rows
                raise RobotDataError(f"{self.path}: cannot read {key} rows {start}..{stop} ({type(e).__name__}: {e})") from e
        return RobotEpisode(index=i, frames=frames, timestamps=timestamps, state=state.astype(np.float32), action=None, task="")

    def close(self) -> None:
        """Release the zip file (nothing to do for a directory)."""
        store = getattr(self, "store", None)
        if store is not None and hasattr(store, "close"):
            store.close()
        raw = getattr(self, "raw", None)
        if raw is not None:
            raw.close()

    def __enter__(self) -> "UmiDataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
