"""The arrays of an episode store (`wmgym.data.store.EpisodeStore`) and the records it holds.

Layout (N frames over E episodes; an episode of T actions has T + 1 frames):

    data/camera0_rgb                 (N, H, W, 3) uint8    the camera view (UMI's name for camera 0)
    data/static_scene_rgb            (N, H, W, 3) uint8    start state without grippers
    data/grippers_rgb                (N, H, W, 3) uint8    grippers alone on black
    data/robot{0,1}_eef_pos          (N, 3) float32        robot0 = left, robot1 = right
    data/robot{0,1}_eef_rot_axis_angle (N, 3) float32
    data/robot{0,1}_gripper_width    (N, 1) float32
    data/action                      (N, 20) float32       layout of `wmgym.actions`
    data/task_id                     (N,) int16
    data/score                       (N,) float32
    data/robot{0,1}_held_particles   (N,) int16            cloth particles the gripper holds (optional)
    meta/episode_ends                (E,) int64            cumulative frame counts (UMI)
    meta/episode_task_id (int16), meta/episode_seed (int64), meta/episode_kind (int8, index
    into `EPISODE_KINDS`), meta/episode_noise (float32), meta/episode_success (bool): (E,)
    meta/goal_rgb                    (E, H, W, 3) uint8
    root attrs: format_version, height, width, tasks, episode_captions, goal_captions

A robot store (`wmgym import`, root attribute source: "robot"; `EpisodeStore.create_robot`)
holds real robot episodes in the same frame of reference, fewer arrays:

    data/camera0_rgb                 (N, H, W, 3) uint8    the camera a world model predicts
    data/action                      (N, A) float32        the dataset's actions or converted ones
    data/timestamp                   (N,) float64          seconds from the episode's start
    data/task_id                     (N,) int16
    data/state                       (N, S) float32        optional
    meta/episode_ends, meta/episode_task_id, meta/episode_source_index (E,)
    root attrs: source, format_version, height, width, tasks (task texts), action_names,
    state_names (or null), episode_captions and goal_captions (the task text of each episode),
    import (what `wmgym import` read and chose)

`robot{0,1}_held_particles` (the simulator's grasp state, `EpisodeRecord.held_particles`) is
optional: stores made before it was recorded lack it, still open, and take new episodes
without it; a store that has it needs it in every record appended.

`task_id` indexes the store's own `tasks` list (read names, not ids, when mixing stores).
UMI keeps one action per frame, so row T of each episode's `data/action` -- its last frame --
is padding: a "hold" action (zero position delta, identity rot6d [1, 0, 0, 0, 1, 0], the
current widths at indices 9 and 19). `read_episode` drops it; `WindowDataset` never uses it.
"""

from __future__ import annotations

import numpy as np

from wmgym.data.chunks import checksummed_codecs
from wmgym.outputs import OutputKind
from wmgym.sim.episode import EPISODE_KINDS, EpisodeRecord

FORMAT_VERSION = 1
CHUNK_FRAMES = 64  # image chunks hold ~64 frames (~780 KiB raw at 64x64)
CHUNK_ROWS = 4096  # chunks of the small per-frame arrays
CHUNK_EPISODES = 1 << 16  # per-episode scalars: one chunk, so a commit is one file
HOLD_ROT6D = np.array([1, 0, 0, 0, 1, 0], np.float32)

IMAGE = "image"  # marker for trailing shape (H, W, 3)
# name -> (dtype, trailing shape)
FRAME_ARRAYS: dict[str, tuple[str, object]] = {
    "camera0_rgb": ("uint8", IMAGE),
    "static_scene_rgb": ("uint8", IMAGE),
    "grippers_rgb": ("uint8", IMAGE),
    "robot0_eef_pos": ("float32", (3,)),
    "robot0_eef_rot_axis_angle": ("float32", (3,)),
    "robot0_gripper_width": ("float32", (1,)),
    "robot1_eef_pos": ("float32", (3,)),
    "robot1_eef_rot_axis_angle": ("float32", (3,)),
    "robot1_gripper_width": ("float32", (1,)),
    "action": ("float32", (20,)),
    "task_id": ("int16", ()),
    "score": ("float32", ()),
}
# Present in stores made since they were recorded; older stores open and append without them.
OPTIONAL_FRAME_ARRAYS: dict[str, tuple[str, object]] = {
    "robot0_held_particles": ("int16", ()),
    "robot1_held_particles": ("int16", ()),
}
EPISODE_ARRAYS: dict[str, tuple[str, object]] = {
    "episode_task_id": ("int16", ()),
    "episode_seed": ("int64", ()),
    "episode_kind": ("int8", ()),
    "episode_noise": ("float32", ()),
    "episode_success": ("bool", ()),
    "goal_rgb": ("uint8", IMAGE),
}
# Every array: zstd as before, then a crc32c checksum of each chunk; and every chunk written,
# even an all-zero one (zarr skips those by default, so a lost file would read as zeros).
CHECKED = {"compressors": checksummed_codecs(), "config": {"write_empty_chunks": True}}
ROBOT_FRAME_ARRAYS: dict[str, tuple[str, object]] = {
    "camera0_rgb": ("uint8", IMAGE),
    "action": ("float32", "action_dim"),
    "timestamp": ("float64", ()),
    "task_id": ("int16", ()),
}
"""The per-frame arrays of a robot store (`wmgym import`): the one camera a world model predicts,
the dataset's actions (any size, `action_names`), timestamps; "state" (`state_names`) is optional."""
ROBOT_OPTIONAL_FRAME_ARRAYS: dict[str, tuple[str, object]] = {"state": ("float32", "state_dim")}
ROBOT_EPISODE_ARRAYS: dict[str, tuple[str, object]] = {
    "episode_task_id": ("int16", ()),
    "episode_source_index": ("int64", ()),
}
SOURCES = ("simulator", "robot")
"""What a store holds (root attribute "source"; stores made before it are "simulator")."""
ATTR_LISTS = ("episode_captions", "goal_captions")
EPISODE_STORE = OutputKind("episode store", ("zarr.json",))  # what --overwrite may replace
ROOT_ATTRS = ("format_version", "height", "width", "tasks") + ATTR_LISTS


READ_BLOCK_FRAMES = 4096
"""Rows read from zarr at a time by `EpisodeStore.read_frames`."""
CAMERA_KEY = "camera0_rgb"
"""The array (under data/) of the camera frames, UMI's name for camera 0."""


def array_tail(tail, height: int, width: int, sizes: dict) -> tuple:
    """The trailing shape of an array spec: (H, W, 3) for an image, (n,) for a named size, else as given."""
    if tail is IMAGE:
        return (height, width, 3)
    if isinstance(tail, str):
        return (sizes[tail],)
    return tuple(tail)


def hold_action(widths: np.ndarray) -> np.ndarray:
    """The padding action of an episode's last frame: stay put, keep the widths."""
    action = np.zeros(20, np.float32)
    action[3:9] = action[13:19] = HOLD_ROT6D
    action[9], action[19] = widths
    return action


def check_simulator_record(store, record: EpisodeRecord) -> None:
    """Shapes and names of one `EpisodeRecord` against a simulator `store` (ValueError saying which)."""
    frames, horizon = record.num_frames, len(record.actions)
    image = (frames, store.height, store.width, 3)
    expected = {"camera": image, "static_scene": image, "grippers": image,
                "eef_pos": (frames, 2, 3), "eef_rot_axis_angle": (frames, 2, 3),
                "gripper_width": (frames, 2), "actions": (frames - 1, 20),
                "score": (frames,), "goal_image": image[1:]}
    if store.has_held_particles:
        if record.held_particles is None:
            raise ValueError(f"episode {record.spec} has no held_particles, which the store {store.path} "
                             "records; append it to a store made without them (or give the record its grasp state)")
        expected["held_particles"] = (frames, 2)
    for name, shape in expected.items():
        got = np.shape(getattr(record, name))
        if got != shape:
            raise ValueError(f"episode {record.spec}: {name} has shape {got}, expected "
                             f"{shape} (store is {store.height}x{store.width}, T={horizon})")
    if horizon < 1:
        raise ValueError(f"episode {record.spec} has no actions; need T >= 1")
    if record.spec.task not in store.tasks:
        raise ValueError(f"episode task {record.spec.task!r} is not one of the store's "
                         f"tasks {store.tasks}")
    if record.spec.kind not in EPISODE_KINDS:
        raise ValueError(f"episode kind {record.spec.kind!r} is not one of {EPISODE_KINDS}")


def check_robot_record(store, record) -> None:
    """Shapes of one `RobotRecord` against a robot `store` (ValueError saying which)."""
    frames = record.num_frames
    expected = {"camera": (frames, store.height, store.width, 3), "actions": (frames, len(store.action_names)),
                "timestamps": (frames,)}
    if store.state_names is not None:
        expected["state"] = (frames, len(store.state_names))
    for name, shape in expected.items():
        got = np.shape(getattr(record, name))
        if got != shape:
            raise ValueError(f"episode {record.source_index}: {name} has shape {got}, expected {shape} "
                             f"(store {store.path} is {store.height}x{store.width}, {len(store.action_names)} action values)")
    if frames < 2:
        raise ValueError(f"episode {record.source_index} has {frames} frame(s); an episode needs at least 2")
    if not (np.isfinite(record.actions).all() and (record.state is None or np.isfinite(record.state).all())):
        raise ValueError(f"episode {record.source_index} has non-finite actions or state")
