"""The episode store: simulated episodes in UMI's ReplayBuffer layout, in a zarr (v3) directory.

The arrays of both kinds of store (simulator and robot), their shapes and the records they
hold are in `wmgym.data.store_layout`.

Integrity (issue 36): every array's chunks carry a crc32c checksum, and every chunk is written,
even an all-zero one, so a changed byte fails its read and a missing chunk file of a committed
row is always damage; `open` checks that those chunk files exist (no data read) and refuses a
store that lacks some, any read error names the store, the array and the episodes, and `wmgym verify` reads every
chunk. Stores written before have no checksums and may legitimately lack all-zero chunks of
small arrays: see `wmgym.data.chunks` for what counts as damage there.

One writer at a time: `create` and `open(mode="a")` take the store's `WriterLock` before they
change anything and hold it until `close()` (or the end of a `with` block); readers take none.

Atomicity: `append` writes every data and per-episode array first and `meta/episode_ends`
last; that write is the commit. zarr's LocalStore writes each file atomically (temporary file
then rename). Rows past the commit point are invisible to readers and are cut off when the
store is opened with mode="a", so an interrupted run loses at most the batch in flight and
never duplicates an episode.
"""

from __future__ import annotations

import errno
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import zarr

from wmgym.data.chunks import check_chunk_files, naming_damage
from wmgym.data.store_reads import BulkReads
from wmgym.data.store_layout import (ATTR_LISTS, CAMERA_KEY, CHECKED, CHUNK_EPISODES, CHUNK_FRAMES, CHUNK_ROWS, EPISODE_ARRAYS,
                                     EPISODE_STORE, FORMAT_VERSION, FRAME_ARRAYS, IMAGE, OPTIONAL_FRAME_ARRAYS,
                                     ROBOT_EPISODE_ARRAYS, ROBOT_FRAME_ARRAYS, ROBOT_OPTIONAL_FRAME_ARRAYS, ROOT_ATTRS,
                                     SOURCES, array_tail, check_robot_record, check_simulator_record, hold_action)
from wmgym.outputs import check_output
from wmgym.sim.episode import EPISODE_KINDS, EpisodeRecord, EpisodeSpec
from wmgym.writer_lock import WriterLock

class EpisodeStore(BulkReads):
    """Append-only episode store; see the module docstring for the layout and the commit rule.

    Use `EpisodeStore.create` or `EpisodeStore.open`, not the constructor. A writer (mode "a")
    holds the store's lock until `close()`; `with EpisodeStore.open(path, mode="a") as store:`
    closes it on the way out.
    """

    def __init__(self, root: zarr.Group, path: Path, mode: str, lock: WriterLock | None = None):
        self.root, self.path, self.mode = root, path, mode
        self.height = int(root.attrs["height"])
        self.width = int(root.attrs["width"])
        self.tasks = tuple(root.attrs["tasks"])
        self.source = root.attrs.get("source", "simulator")
        if self.source not in SOURCES:
            raise ValueError(f"episode store {path} is malformed: source must be one of {SOURCES}, got {self.source!r}")
        self._ends = np.zeros(0, np.int64)
        self._lock = lock

    def close(self) -> None:
        """Stop writing: release the writer's lock (reads still work; appends are refused)."""
        if self._lock is not None:
            self._lock.release()
            self._lock, self.mode = None, "closed"

    def __enter__(self) -> "EpisodeStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(cls, path, height: int, width: int, tasks, overwrite: bool = False,
               attrs: dict | None = None, has_held_particles: bool = True) -> "EpisodeStore":
        """Make an empty store at `path` (extra JSON `attrs` are kept beside the required ones);
        `has_held_particles=False` makes one without `robot{0,1}_held_particles`, for episodes
        copied from a store made before they were recorded. Takes the store's writer lock first
        (WriterLockError while another writer holds it: nothing is deleted); `overwrite`
        replaces only an episode store or an empty directory."""
        path = Path(path)
        if height < 1 or width < 1 or not tasks:
            raise ValueError(f"need height, width >= 1 and at least one task, got "
                             f"height={height}, width={width}, tasks={tasks!r}")
        lock = WriterLock(path, "episode store").acquire()
        with _released_on_error(lock, path):
            root = cls._create_root(path, overwrite)
            cls._create_arrays(root, height, width, tasks, attrs, has_held_particles)
        return cls(root, path, "a", lock)

    @classmethod
    def create_robot(cls, path, height: int, width: int, tasks, action_names, state_names=None,
                     overwrite: bool = False, attrs: dict | None = None) -> "EpisodeStore":
        """Make an empty robot store (`wmgym import`): camera frames (H, W, 3), actions of
        len(`action_names`) values, timestamps and, with `state_names`, a state of that many
        values; `tasks` are the dataset's task texts. Locking and `overwrite` as `create`."""
        path = Path(path)
        if height < 1 or width < 1:
            raise ValueError(f"need height, width >= 1, got height={height}, width={width}")
        if not action_names or not all(isinstance(n, str) for n in action_names):
            raise ValueError(f"a robot store needs the names of its action values, got {action_names!r}")
        tasks = list(tasks) or [""]
        lock = WriterLock(path, "episode store").acquire()
        with _released_on_error(lock, path):
            root = cls._create_root(path, overwrite)
            root.attrs.update({**(attrs or {}), "source": "robot", "format_version": FORMAT_VERSION,
                               "height": int(height), "width": int(width), "tasks": tasks,
                               "action_names": list(action_names),
                               "state_names": None if state_names is None else list(state_names),
                               "episode_captions": [], "goal_captions": []})
            sizes = {"action_dim": len(action_names), "state_dim": 0 if state_names is None else len(state_names)}
            frames = {**ROBOT_FRAME_ARRAYS, **(ROBOT_OPTIONAL_FRAME_ARRAYS if state_names is not None else {})}
            cls._create_specs(root, frames, ROBOT_EPISODE_ARRAYS, height, width, sizes)
        return cls(root, path, "a", lock)

    @staticmethod
    def _create_root(path: Path, overwrite: bool) -> zarr.Group:
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"episode store {path} already exists; pass --resume to "
                                      "continue it or --overwrite to replace it")
            if check_output(path, EPISODE_STORE, overwrite):  # refuses anything but a store
                shutil.rmtree(path)
        return zarr.open_group(path, mode="w")

    @staticmethod
    def _create_arrays(root: zarr.Group, height: int, width: int, tasks, attrs: dict | None,
                       has_held_particles: bool) -> None:
        root.attrs.update({**(attrs or {}), "format_version": FORMAT_VERSION,
                           "height": int(height), "width": int(width), "tasks": list(tasks),
                           "episode_captions": [], "goal_captions": []})
        frame_arrays = {**FRAME_ARRAYS, **(OPTIONAL_FRAME_ARRAYS if has_held_particles else {})}
        EpisodeStore._create_specs(root, frame_arrays, EPISODE_ARRAYS, height, width, {})

    @staticmethod
    def _create_specs(root: zarr.Group, frame_arrays: dict, episode_arrays: dict, height: int, width: int,
                      sizes: dict) -> None:
        """Empty arrays for `frame_arrays` (under data/) and `episode_arrays` (under meta/), and meta/episode_ends."""
        for group, specs, rows in (("data", frame_arrays, CHUNK_ROWS), ("meta", episode_arrays, CHUNK_EPISODES)):
            for name, (dtype, tail) in specs.items():
                image = tail is IMAGE
                tail = array_tail(tail, height, width, sizes)
                chunk = (CHUNK_FRAMES,) if image else (rows,)
                root.create_array(f"{group}/{name}", shape=(0, *tail), dtype=dtype,
                                  chunks=chunk + tail, **CHECKED)
        root.create_array("meta/episode_ends", shape=(0,), dtype="int64", chunks=(CHUNK_EPISODES,),
                          **CHECKED)

    @classmethod
    def open(cls, path, mode: str = "r", check_chunks: bool = True) -> "EpisodeStore":
        """Open a store for reading ("r") or appending ("a"); "a" takes the writer lock (see
        `close`) and drops uncommitted rows. Raises ValueError for a malformed store and, unless
        `check_chunks` is False, for missing chunk files of committed rows (one stat a chunk;
        `wmgym verify` reads the data too)."""
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise FileNotFoundError(f"no episode store at {path} (expected a zarr group "
                                    "directory made by EpisodeStore.create)")
        lock = WriterLock(path, "episode store").acquire() if mode == "a" else None
        with _released_on_error(lock, path):
            root = zarr.open_group(path, mode="r" if mode == "r" else "r+")
            missing = [key for key in ROOT_ATTRS if key not in root.attrs]
            if missing:
                raise ValueError(f"episode store {path} is malformed: missing attribute {missing[0]!r}")
            store = cls(root, path, mode, lock)
            store.validate()
            if check_chunks:
                check_chunk_files(root, store.episode_ends, path)
            if mode == "a":
                store._drop_uncommitted()
        return store

    # ------------------------------------------------------------------ reading
    @property
    def num_episodes(self) -> int:
        return len(self._ends)

    @property
    def num_frames(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def episode_ends(self) -> np.ndarray:
        return self._ends.copy()

    @property
    def is_robot(self) -> bool:
        """True for a store of real robot data (`wmgym import`), False for a simulator store."""
        return self.source == "robot"

    @property
    def action_names(self) -> list[str] | None:
        """Names of the action values: a robot store's own, or None (a simulator store's are
        `wmgym.actions.ACTION_NAMES`)."""
        return list(self.root.attrs["action_names"]) if self.is_robot else None

    @property
    def camera(self) -> str:
        """The name of the camera whose frames `data/camera0_rgb` holds: "camera" (the simulator's),
        or the dataset's camera a robot store was imported from (root attribute "camera")."""
        return str(self.root.attrs.get("camera", "camera"))

    @property
    def state_names(self) -> list[str] | None:
        """Names of a robot store's state values (None: no state, or a simulator store)."""
        names = self.root.attrs.get("state_names") if self.is_robot else None
        return None if names is None else list(names)

    def _specs(self) -> tuple[dict, dict, dict]:
        """(frame arrays, optional frame arrays, episode arrays) of this store's kind, with their tails."""
        if self.is_robot:
            sizes = {"action_dim": len(self.root.attrs["action_names"]), "state_dim": len(self.state_names or ())}
            frames, optional, episodes = ROBOT_FRAME_ARRAYS, ROBOT_OPTIONAL_FRAME_ARRAYS, ROBOT_EPISODE_ARRAYS
        else:
            sizes, frames, optional, episodes = {}, FRAME_ARRAYS, OPTIONAL_FRAME_ARRAYS, EPISODE_ARRAYS
        resolve = lambda specs: {name: (dtype, array_tail(tail, self.height, self.width, sizes)) for name, (dtype, tail) in specs.items()}
        return resolve(frames), resolve(optional), resolve(episodes)

    @property
    def has_held_particles(self) -> bool:
        """Whether the store records the grippers' grasp state (`robot{0,1}_held_particles`)."""
        return all(f"data/{name}" in self.root for name in OPTIONAL_FRAME_ARRAYS)

    @property
    def attrs(self) -> dict:
        return dict(self.root.attrs)

    def episode_slice(self, i: int) -> slice:
        """Frame rows of committed episode `i` (negative indices count from the end)."""
        if not -self.num_episodes <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range for a store of {self.num_episodes}")
        i %= self.num_episodes
        return slice(int(self._ends[i - 1]) if i else 0, int(self._ends[i]))

    def read_episode(self, i: int) -> dict:
        """Episode `i` as numpy arrays: camera/static/grippers (T+1, H, W, 3) uint8, actions
        (T, 20) (the padding row dropped), score (T+1,), eef_pos and eef_rot_axis_angle
        (T+1, 2, 3), gripper_width (T+1, 2), held_particles (T+1, 2) int16 (None in a store
        without it), goal_rgb (H, W, 3), and caption, goal_caption, task, task_id, seed, kind,
        noise, success."""
        if self.is_robot:
            return self._read_robot_episode(i)
        rows = self.episode_slice(i)
        i %= self.num_episodes
        data = lambda name: self._read(f"data/{name}", rows)
        meta = {name: self._read(f"meta/{name}", slice(i, i + 1))[0] for name in EPISODE_ARRAYS}
        both = lambda name: np.stack([data(f"robot{r}_{name}") for r in (0, 1)], axis=1)
        attrs, task_id = self.root.attrs, int(meta["episode_task_id"])
        return {
            "camera": data(CAMERA_KEY), "static": data("static_scene_rgb"),
            "grippers": data("grippers_rgb"), "actions": data("action")[:-1],
            "score": data("score"), "eef_pos": both("eef_pos"),
            "eef_rot_axis_angle": both("eef_rot_axis_angle"),
            "gripper_width": both("gripper_width")[..., 0],  # (T+1, 2)
            "held_particles": both("held_particles") if self.has_held_particles else None,  # (T+1, 2)
            "goal_rgb": meta["goal_rgb"], "caption": attrs["episode_captions"][i],
            "goal_caption": attrs["goal_captions"][i], "task": self.tasks[task_id],
            "task_id": task_id, "seed": int(meta["episode_seed"]),
            "kind": EPISODE_KINDS[int(meta["episode_kind"])],
            # shortest decimal of the float32, so 0.02 reads back as 0.02, not 0.0199999995
            "noise": float(str(meta["episode_noise"])),
            "success": bool(meta["episode_success"]),
        }

    def _read_robot_episode(self, i: int) -> dict:
        """`read_episode` of a robot store: camera (T, H, W, 3) uint8, actions (T-1, A) (the
        padding row dropped), state (T, S) or None, timestamps (T,), task, caption, goal_caption,
        task_id, source_index."""
        rows = self.episode_slice(i)
        i %= self.num_episodes
        data = lambda name: self._read(f"data/{name}", rows)
        task_id = int(self._read("meta/episode_task_id", slice(i, i + 1))[0])
        attrs = self.root.attrs
        return {"camera": data(CAMERA_KEY), "actions": data("action")[:-1],
                "state": data("state") if self.state_names is not None else None,
                "timestamps": data("timestamp"), "task": self.tasks[task_id], "task_id": task_id,
                "caption": attrs["episode_captions"][i], "goal_caption": attrs["goal_captions"][i],
                "source_index": int(self._read("meta/episode_source_index", slice(i, i + 1))[0])}

    def _read(self, key: str, rows: slice) -> np.ndarray:
        """Rows `rows` of array `key`; a decode error becomes a ValueError naming the store,
        the array, the episodes and the damaged chunk (`wmgym.data.chunks.naming_damage`)."""
        array = self.root[key]
        with naming_damage(array, rows, self.path, self._ends):
            return array[rows]

    def read_record(self, i: int) -> EpisodeRecord:
        """Episode `i` as the `EpisodeRecord` that was appended (task_id: index into `tasks`).
        A simulator store's only: a robot store has no simulator records (use `read_episode`)."""
        if self.is_robot:
            raise ValueError(f"{self.path} is a robot store (wmgym import): its episodes are not simulator "
                             "records; read them with read_episode")
        ep = self.read_episode(i)
        spec = EpisodeSpec(task=ep["task"], seed=ep["seed"], kind=ep["kind"], noise=ep["noise"],
                           height=self.height, width=self.width, horizon=len(ep["actions"]))
        return EpisodeRecord(
            spec=spec, task_id=ep["task_id"], camera=ep["camera"], static_scene=ep["static"],
            grippers=ep["grippers"], eef_pos=ep["eef_pos"],
            eef_rot_axis_angle=ep["eef_rot_axis_angle"], gripper_width=ep["gripper_width"],
            actions=ep["actions"], score=ep["score"], success=ep["success"],
            caption=ep["caption"], goal_caption=ep["goal_caption"], goal_image=ep["goal_rgb"],
            held_particles=ep["held_particles"])

    # ------------------------------------------------------------------ checking
    def validate(self) -> None:
        """Check keys, dtypes, shapes and that every array covers the committed episodes.

        Rows past the commit point (an interrupted append) are allowed; missing ones are not.
        Raises ValueError naming the missing key or the mismatched array and its length.
        """
        where = f"episode store {self.path} is malformed"
        arrays = {}
        frame_specs, optional_specs, episode_specs = self._specs()
        optional = {f"data/{name}" for name in optional_specs}
        present = [key for key in sorted(optional) if key in self.root]
        if present and len(present) != len(optional) and not self.is_robot:
            raise ValueError(f"{where}: has {present} but not {sorted(optional - set(present))}")
        if self.is_robot and (self.state_names is not None) != ("data/state" in self.root):
            raise ValueError(f"{where}: attribute state_names and array data/state come together")
        for group, specs in (("data", {**frame_specs, **optional_specs}),
                             ("meta", {**episode_specs, "episode_ends": ("int64", ())})):
            for name, (dtype, tail) in specs.items():
                key = f"{group}/{name}"
                if key in optional and key not in self.root:
                    continue
                if key not in self.root:
                    raise ValueError(f"{where}: missing array {key!r}")
                arr = self.root[key]
                if arr.dtype != np.dtype(dtype) or tuple(arr.shape[1:]) != tail:
                    raise ValueError(f"{where}: {key} should be (n, *{tail}) {dtype}, found "
                                     f"{tuple(arr.shape)} {arr.dtype}")
                arrays[key] = arr
        ends_array = arrays["meta/episode_ends"]
        with naming_damage(ends_array, slice(0, ends_array.shape[0]), self.path):
            ends = self._committed_ends(ends_array[:])
        num_frames = int(ends[-1]) if len(ends) else 0
        for key, arr in arrays.items():
            need = num_frames if key.startswith("data/") else len(ends)
            if arr.shape[0] < need:
                raise ValueError(f"{where}: {key} has length {arr.shape[0]}, but meta/episode_ends "
                                 f"commits {need} {'frames' if need == num_frames else 'episodes'}")
        for key in ATTR_LISTS:
            if len(self.root.attrs[key]) < len(ends):
                raise ValueError(f"{where}: attribute {key!r} has length "
                                 f"{len(self.root.attrs[key])}, need {len(ends)} episodes")
        with naming_damage(arrays["meta/episode_task_id"], slice(0, len(ends)), self.path, ends):
            task_ids = arrays["meta/episode_task_id"][: len(ends)]
        if len(ends) and not (0 <= task_ids.min() and task_ids.max() < len(self.tasks)):
            raise ValueError(f"{where}: meta/episode_task_id outside [0, {len(self.tasks)})")
        self._ends = ends

    def _committed_ends(self, ends: np.ndarray) -> np.ndarray:
        """The committed prefix of meta/episode_ends: strictly increasing positive values.

        A commit interrupted between zarr's resize and its chunk write leaves a tail of fill
        zeros (we zero the tail before every shrink, so no stale values hide there)."""
        bad = np.flatnonzero(np.diff(np.concatenate([[0], ends])) <= 0)
        if len(bad) == 0:
            return ends
        k = int(bad[0])
        if ends[k] != 0:
            raise ValueError(f"episode store {self.path} is malformed: meta/episode_ends is not "
                             f"strictly increasing at index {k} ({ends[max(k - 1, 0)]} -> {ends[k]})")
        return ends[:k]

    def _array(self, key: str) -> zarr.Array:
        """Array `key` for writing: every chunk written, even an all-zero one (see `CHECKED`);
        zarr keeps that setting per opened array, not in the store."""
        return self.root[key].with_config({"write_empty_chunks": True})

    def _drop_uncommitted(self) -> None:
        """Cut every array and attribute list back to the committed episodes."""
        for partial in self.path.rglob("*.partial"):  # temp files of an interrupted write
            partial.unlink(missing_ok=True)
        num_episodes, num_frames = self.num_episodes, self.num_frames
        frame_specs, optional_specs, episode_specs = self._specs()
        for name in (*frame_specs, *(name for name in optional_specs if f"data/{name}" in self.root)):
            self._resize(self._array(f"data/{name}"), num_frames)
        for name in episode_specs:
            self._resize(self._array(f"meta/{name}"), num_episodes)
        ends = self._array("meta/episode_ends")
        if ends.shape[0] > num_episodes:
            ends[num_episodes:] = 0  # keep the commit-detection invariant (see _committed_ends)
            self._resize(ends, num_episodes)
        lists = {key: list(self.root.attrs[key]) for key in ATTR_LISTS}
        if any(len(v) > num_episodes for v in lists.values()):
            self.root.attrs.update({key: v[:num_episodes] for key, v in lists.items()})

    @staticmethod
    def _resize(arr, length: int) -> None:
        if arr.shape[0] != length:
            arr.resize((length, *arr.shape[1:]))

    # ------------------------------------------------------------------ writing
    def append(self, records: list[EpisodeRecord]) -> None:
        """Append whole episodes; data first, `meta/episode_ends` last (the commit)."""
        if self.mode != "a":
            raise ValueError(f"episode store {self.path} is {'closed' if self.mode == 'closed' else 'open read-only'}; "
                             "open it with mode='a' to append")
        if not records:
            return
        if self.is_robot:
            return self._append_robot(records)
        for record in records:
            check_simulator_record(self, record)
        lengths = np.array([r.num_frames for r in records], np.int64)
        task_ids = [self.tasks.index(r.spec.task) for r in records]
        hold = [hold_action(r.gripper_width[-1]) for r in records]
        frame_blocks = {
            CAMERA_KEY: [r.camera for r in records],
            "static_scene_rgb": [r.static_scene for r in records],
            "grippers_rgb": [r.grippers for r in records],
            "action": [np.concatenate([r.actions, h[None]]) for r, h in zip(records, hold)],
            "task_id": [np.full(r.num_frames, t) for r, t in zip(records, task_ids)],
            "score": [r.score for r in records],
        }
        for robot in (0, 1):
            frame_blocks[f"robot{robot}_eef_pos"] = [r.eef_pos[:, robot] for r in records]
            frame_blocks[f"robot{robot}_eef_rot_axis_angle"] = [
                r.eef_rot_axis_angle[:, robot] for r in records]
            frame_blocks[f"robot{robot}_gripper_width"] = [
                r.gripper_width[:, robot, None] for r in records]
            if self.has_held_particles:
                frame_blocks[f"robot{robot}_held_particles"] = [r.held_particles[:, robot] for r in records]
        episode_blocks = {
            "episode_task_id": task_ids, "episode_seed": [r.spec.seed for r in records],
            "episode_kind": [EPISODE_KINDS.index(r.spec.kind) for r in records],
            "episode_noise": [r.spec.noise for r in records],
            "episode_success": [bool(r.success) for r in records],
            "goal_rgb": [r.goal_image for r in records],
        }
        self._write_blocks(frame_blocks, episode_blocks, [r.caption for r in records],
                           [r.goal_caption for r in records], lengths)

    def _append_robot(self, records) -> None:
        """`append` of `RobotRecord`s to a robot store; a task text not yet in the store is added."""
        for record in records:
            check_robot_record(self, record)
        new_tasks = [t for t in dict.fromkeys(r.task for r in records) if t not in self.tasks]
        if new_tasks:  # before the data: a task id never points past the list
            self.tasks = (*self.tasks, *new_tasks)
            self.root.attrs["tasks"] = list(self.tasks)
        task_ids = [self.tasks.index(r.task) for r in records]
        frame_blocks = {CAMERA_KEY: [r.camera for r in records], "action": [r.actions for r in records],
                        "timestamp": [r.timestamps for r in records],
                        "task_id": [np.full(r.num_frames, t) for r, t in zip(records, task_ids)]}
        if self.state_names is not None:
            frame_blocks["state"] = [r.state for r in records]
        episode_blocks = {"episode_task_id": task_ids, "episode_source_index": [r.source_index for r in records]}
        captions = [r.task for r in records]
        self._write_blocks(frame_blocks, episode_blocks, captions, captions,
                           np.array([r.num_frames for r in records], np.int64))

    def _write_blocks(self, frame_blocks: dict, episode_blocks: dict, captions: list, goal_captions: list,
                      lengths: np.ndarray) -> None:
        """Write the new episodes' arrays and caption lists, then commit them (`_write_episode_ends`)."""
        n0, e0 = self.num_frames, self.num_episodes
        for group, blocks, start, stack in (("data", frame_blocks, n0, np.concatenate),
                                            ("meta", episode_blocks, e0, np.stack)):
            for name, parts in blocks.items():
                arr = self._array(f"{group}/{name}")
                values = stack([np.asarray(p) for p in parts]).astype(arr.dtype, copy=False)
                self._resize(arr, start + len(values))
                arr[start:] = values
        self.root.attrs.update({
            "episode_captions": list(self.root.attrs["episode_captions"])[:e0] + list(captions),
            "goal_captions": list(self.root.attrs["goal_captions"])[:e0] + list(goal_captions),
        })
        new_ends = n0 + np.cumsum(lengths)
        self._write_episode_ends(e0, new_ends)
        self._ends = np.concatenate([self._ends, new_ends])

    def _write_episode_ends(self, start: int, new_ends: np.ndarray) -> None:
        """The commit point: once these entries are on disk the episodes exist."""
        arr = self._array("meta/episode_ends")
        if arr.shape[0] > start + len(new_ends):  # left by a failed append in this process
            arr[start:] = 0
        self._resize(arr, start + len(new_ends))
        arr[start:] = new_ends


@contextmanager
def _released_on_error(lock: WriterLock | None, path: Path):
    """Release a writer's `lock` if the block fails; an output the writer cannot write (read-only,
    or a path under a regular file) becomes one PermissionError naming the store."""
    try:
        yield
    except BaseException as error:
        if lock is None:
            raise
        lock.release()
        if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR):
            raise PermissionError(f"cannot write episode store {path}: {error.strerror} "
                                  f"({error.filename or path})") from error
        raise
