"""`wmgym import`: a real robot dataset (LeRobot v2.1 / v3.0, UMI zarr) into a robot episode store.

Dimension legend: T frames of an episode, H x W pixels, A action values, S state values.

The reader (`wmgym.data.lerobot`, `wmgym.data.umi`) gives time-aligned episodes; this module
picks one camera, resizes and centre-crops its frames to the store's size without changing
their aspect, keeps every `stride`-th frame, takes the actions (the dataset's own vector, or
20-D bimanual actions recomputed from end-effector poses, `wmgym.data.robot_actions`) and
appends each episode to an `EpisodeStore.create_robot` store. Resumable: episodes already in
the store are skipped, and a store written with other settings is refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import tyro
from tqdm.auto import tqdm

from wmgym.data.robot_data import RobotDataError, RobotEpisode, RobotRecord

FORMATS = ("auto", "lerobot", "umi")
ACTION_MODES = ("native", "eef-pose")
MAX_TOKENS_SIDE = 64
"""The default frame size keeps H x W within 64 x 64 pixels (64 tokens of 8x8 patches)."""
SIZE_MULTIPLE = 16
"""Default frame sides are multiples of this, so patches of 8 or 16 and codecs that halve twice fit."""


@dataclass
class ImportConfig:
    """Import a real robot dataset (LeRobot v2.1 or v3.0 folder, UMI zarr directory or .zarr.zip) into an episode store for `wmgym train-wm`.

    By default the first camera, the dataset's own action vector and a frame size near 64x64
    that keeps the camera's aspect; what was chosen is printed. Resumable (`--resume`)."""

    source: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="SOURCE")]
    """The dataset: a LeRobot folder (meta/info.json), a UMI zarr directory or a .zarr.zip file."""
    out: str
    """The episode store to write."""
    format: str = "auto"
    """"auto" (from the files), "lerobot" or "umi"."""
    camera: str | None = None
    """The camera to import (None: the dataset's first)."""
    size: tuple[int, int] | None = None
    """Frame height and width in the store (None: the largest multiples of 16 within 64x64
    pixels whose aspect is nearest the camera's). Frames are resized to cover it and centre-cropped."""
    stride: int = 1
    """Keep every stride-th frame (a 30 fps dataset with stride 3 gives 10 fps). eef-pose actions are
    recomputed from the kept frames' poses; native actions are those of the kept rows (a delta
    command is not re-integrated over the stride)."""
    episodes: str | None = None
    """Episodes to import: "a:b" (a range), or "0,3,7" (None: all)."""
    actions: str = "native"
    """"native": the dataset's own action vector (any size); "eef-pose": 20-D bimanual actions
    recomputed from end-effector poses in the state (see the eef options)."""
    rotation: str | None = None
    """eef-pose: how the state holds each arm's rotation: "euler" (give --euler), "quaternion"
    (give --quaternion-order) or "axis-angle" (None: axis-angle for UMI; required otherwise)."""
    euler: str | None = None
    """eef-pose: the Euler convention in scipy's form: "xyz" extrinsic, "XYZ" intrinsic, ... (implies --rotation euler)."""
    quaternion_order: str | None = None
    """eef-pose: "xyzw" or "wxyz"."""
    arms: tuple[str, ...] = ("0:3/3:6/6",)
    """eef-pose: state columns of each arm as "position/rotation/gripper" (indices, "a:b" or names,
    e.g. "x,y,z/roll,pitch,yaw/gripper"); one arm drives the left hand and parks the right, two
    drive both. UMI's are found by name."""
    gripper_range: tuple[float, float] | None = None
    """eef-pose: the gripper value's range (LO HI); None: the value is a width in metres (UMI)."""
    gripper_high_means: str = "open"
    """eef-pose: what the gripper's high end means: "open" or "closed"."""
    resume: bool = False
    """Continue an interrupted import into the same store."""
    overwrite: bool = False
    """Replace an existing store."""
    show_progress: bool = True
    """Show a tqdm progress bar."""


def open_dataset(source: str, format: str = "auto"):
    """A reader of `source` (`.info`, `.read_episode(i, cameras)`, `len`); RobotDataError for a
    format it cannot tell or read."""
    path = Path(source)
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if not path.exists():
        raise FileNotFoundError(f"no dataset at {path}")
    if format == "auto":
        if (path / "meta" / "info.json").is_file():
            format = "lerobot"
        elif path.name.endswith(".zarr.zip") or (path / ".zgroup").is_file() or (path / "zarr.json").is_file():
            format = "umi"
        else:
            raise RobotDataError(f"{path} is not a dataset wmgym can import: expected a LeRobot folder "
                                 "(meta/info.json), a UMI zarr directory (.zgroup) or a .zarr.zip file")
    if format == "lerobot":
        from wmgym.data.lerobot import open_lerobot

        return open_lerobot(path)
    from wmgym.data.umi import open_umi

    return open_umi(path)


def default_size(height: int, width: int) -> tuple[int, int]:
    """The store's frame size for a camera of `height` x `width`: the camera's own size when it
    fits in 64x64 pixels with sides that are multiples of 8; else the multiples of 16 within
    64x64 pixels whose aspect is nearest the camera's, the largest of those."""
    if height * width <= MAX_TOKENS_SIDE**2 and height % 8 == 0 and width % 8 == 0:
        return height, width
    aspect = height / width
    sides = range(SIZE_MULTIPLE, 4 * MAX_TOKENS_SIDE + 1, SIZE_MULTIPLE)
    fits = [(h, w) for h in sides for w in sides if h * w <= MAX_TOKENS_SIDE**2]
    return min(fits, key=lambda s: (round(abs(math.log(s[0] / s[1] / aspect)), 3), -s[0] * s[1]))


def resize_and_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (T, h, w, 3) -> (T, height, width, 3): scaled (area interpolation when shrinking) to
    cover the target, then centre-cropped, so the aspect is kept."""
    import cv2

    t, h, w = frames.shape[:3]
    if (h, w) == (height, width):
        return frames
    scale = max(height / h, width / w)
    size = (max(width, round(w * scale)), max(height, round(h * scale)))  # cv2 takes (w, h)
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = np.empty((t, height, width, 3), np.uint8)
    top, left = (size[1] - height) // 2, (size[0] - width) // 2
    for i, frame in enumerate(frames):
        out[i] = cv2.resize(frame, size, interpolation=method)[top: top + height, left: left + width]
    return out


def parse_episodes(spec: str | None, num_episodes: int) -> list[int]:
    """Episode indices of "a:b", "i,j,k" or None (all); ValueError naming what is out of range."""
    if spec is None:
        return list(range(num_episodes))
    try:
        if ":" in spec:
            start, stop = (int(x) if x else None for x in spec.split(":", 1))
            chosen = list(range(num_episodes))[slice(start, stop)]
        else:
            chosen = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"episodes must be 'a:b' or a comma-separated list of indices, got {spec!r}") from None
    bad = [i for i in chosen if not 0 <= i < num_episodes]
    if bad or not chosen:
        raise ValueError(f"episodes {spec!r} selects {'none' if not chosen else bad} of the dataset's {num_episodes}")
    return chosen


@dataclass
class ImportPlan:
    """What an import reads and writes (kept in the store's "import" attribute, compared on resume)."""

    source: str
    format: str
    camera: str
    camera_size: tuple[int, int]
    size: tuple[int, int]
    stride: int
    fps: float
    actions: str
    action_names: list[str]
    eef: dict | None
    state_names: list[str] | None
    episodes: list[int]

    def describe(self) -> str:
        """One paragraph of what was chosen, for the user."""
        h, w = self.camera_size
        return (f"importing {len(self.episodes)} episodes of {self.source} ({self.format}): camera {self.camera!r} "
                f"{h}x{w} -> {self.size[0]}x{self.size[1]} (aspect kept, centre crop), {self.fps:g} fps"
                f"{f' / stride {self.stride}' if self.stride > 1 else ''}, actions: {self.actions} "
                f"({len(self.action_names)} values: {', '.join(self.action_names)})")


def plan_import(config: ImportConfig, dataset) -> ImportPlan:
    """The `ImportPlan` of `config` for an opened dataset; ValueError for a choice it does not have."""
    info = dataset.info
    if config.stride < 1:
        raise ValueError(f"stride must be >= 1, got {config.stride}")
    if config.actions not in ACTION_MODES:
        raise ValueError(f"actions must be one of {ACTION_MODES}, got {config.actions!r}")
    if not info.cameras:
        raise RobotDataError(f"{info.path} has no camera to import")
    camera = config.camera or info.cameras[0]
    if camera not in info.cameras:
        raise ValueError(f"camera {camera!r} is not in {info.path}; it has {', '.join(info.cameras)}")
    size = tuple(config.size) if config.size is not None else default_size(*info.camera_sizes[camera])
    if len(size) != 2 or min(size) < 8:
        raise ValueError(f"size must be (height, width), each >= 8, got {config.size!r}")
    if config.actions == "native":
        if info.action_names is None:
            raise ValueError(f"{info.path} has no action vector ({info.format}); import it with --actions eef-pose")
        action_names = list(info.action_names)
        eef = None
    else:
        from wmgym.actions import ACTION_NAMES

        action_names = list(ACTION_NAMES)
        eef = _eef_settings(config, info)
        _eef_conversion(eef, info.state_names)  # ValueError now, before any episode is read
    return ImportPlan(source=str(Path(config.source).resolve()), format=info.format, camera=camera,
                      camera_size=tuple(info.camera_sizes[camera]), size=size, stride=config.stride, fps=info.fps / config.stride,
                      actions=config.actions, action_names=action_names, eef=eef, state_names=info.state_names,
                      episodes=parse_episodes(config.episodes, info.num_episodes))


def _eef_settings(config: ImportConfig, info) -> dict:
    """The eef-pose options of `config` as plain JSON (kept in the store; UMI's defaults filled in)."""
    rotation = config.rotation or ("euler" if config.euler else "axis-angle" if info.format.startswith("umi") else None)
    if rotation is None:
        raise ValueError("--actions eef-pose needs the state's rotation convention: --euler xyz (scipy's form; "
                         "uppercase for intrinsic), --rotation quaternion --quaternion-order xyzw|wxyz, "
                         "or --rotation axis-angle")
    if info.state_names is None:
        raise ValueError(f"{info.path} has no state vector to read end-effector poses from")
    arms = list(config.arms)
    if info.format.startswith("umi") and config.arms == ImportConfig.arms:
        arms = ["umi"] * sum(1 for n in info.state_names if n.startswith("robot") and n.endswith("gripper_width"))
    return {"rotation": rotation, "euler": config.euler, "quaternion_order": config.quaternion_order, "arms": arms,
            "gripper_range": None if config.gripper_range is None else [float(v) for v in config.gripper_range],
            "gripper_high_means": config.gripper_high_means}


def _eef_conversion(eef: dict, state_names) -> tuple:
    """(layout, rotation, gripper) of `bimanual_actions` for the plan's eef settings; ValueError for bad ones."""
    from wmgym.data.robot_actions import ArmColumns, EefPoseLayout, GripperSpec, RotationSpec

    rotation = RotationSpec(eef["rotation"], convention=eef["euler"], order=eef["quaternion_order"])
    if not 1 <= len(eef["arms"]) <= 2:
        raise ValueError(f"--arms takes one or two arms, got {eef['arms']}")
    if eef["arms"][0] == "umi":
        layout = EefPoseLayout.umi(len(eef["arms"]), state_names)
    else:
        parts = [arm.split("/") for arm in eef["arms"]]
        if any(len(p) != 3 for p in parts):
            raise ValueError(f"each --arms entry is 'position/rotation/gripper' columns, got {eef['arms']}")
        arms = [ArmColumns.from_names(state_names, *p) for p in parts]
        layout = EefPoseLayout(arms[0], arms[1] if len(arms) == 2 else None, state_names)
    layout.check(len(state_names), rotation)
    low_high = eef["gripper_range"]
    gripper = GripperSpec.metres() if low_high is None else GripperSpec(low_high[0], low_high[1], eef["gripper_high_means"])
    return layout, rotation, gripper


def episode_record(episode: RobotEpisode, plan: ImportPlan) -> RobotRecord:
    """One read episode as the store keeps it: the plan's camera resized, every stride-th row,
    the plan's actions (one a frame; the last row is padding)."""
    rows = np.arange(0, episode.num_frames, plan.stride)
    if len(rows) < 2:
        raise RobotDataError(f"episode {episode.index} of {plan.source} has {episode.num_frames} frames, fewer than "
                             f"two after stride {plan.stride}")
    camera = resize_and_crop(episode.frames[plan.camera][rows], *plan.size)
    if plan.actions == "native":
        if episode.action is None:
            raise RobotDataError(f"episode {episode.index} of {plan.source} has no action vector")
        actions = episode.action[rows].astype(np.float32)  # the command issued at each kept row
    else:
        if episode.state is None:
            raise RobotDataError(f"episode {episode.index} of {plan.source} has no state to read poses from")
        from wmgym.actions import identity_action
        from wmgym.data.robot_actions import bimanual_actions

        converted = bimanual_actions(episode.state, *_eef_conversion(plan.eef, plan.state_names), stride=plan.stride)
        last = converted.actions[-1]
        actions = np.concatenate([converted.actions, identity_action(last[9], last[19])[None]])  # + the padding hold
    state = None if episode.state is None else episode.state[rows].astype(np.float32)
    timestamps = episode.timestamps[rows].astype(np.float64) - float(episode.timestamps[0])
    return RobotRecord(camera=camera, actions=actions, timestamps=timestamps, task=episode.task,
                       source_index=episode.index, state=state)


def import_dataset(config: ImportConfig) -> Path:
    """Import `config.source` into the robot store `config.out` (see `ImportConfig`); returns its path.
    Holds the store's writer lock throughout; prints what it chose."""
    from wmgym.data.store import EpisodeStore

    if config.resume and config.overwrite:
        raise ValueError("pass at most one of resume and overwrite")
    out = Path(config.out)
    if out.exists() and not (config.resume or config.overwrite):
        raise FileExistsError(f"{out} already exists; pass --resume to continue it or --overwrite to replace it")
    dataset = open_dataset(config.source, config.format)
    plan = plan_import(config, dataset)
    print(plan.describe())
    recorded = json.loads(json.dumps(asdict(plan)))  # as the store's JSON attribute reads back
    if config.resume and out.exists():
        store = EpisodeStore.open(out, mode="a")
        if dict(store.attrs.get("import", {})) != recorded:
            store.close()
            raise ValueError(f"cannot resume {out}: it was imported with other settings; use --overwrite or a new path")
    else:
        store = EpisodeStore.create_robot(out, *plan.size, tasks=dataset.info.tasks, action_names=plan.action_names,
                                          state_names=plan.state_names, overwrite=config.overwrite,
                                          attrs={"import": recorded, "camera": plan.camera, "fps": plan.fps})
    with store:
        done = store.num_episodes
        with tqdm(total=len(plan.episodes), initial=done, desc="import", unit="episode",
                  disable=not config.show_progress) as progress:
            for index in plan.episodes[done:]:
                store.append([episode_record(dataset.read_episode(index, cameras=[plan.camera]), plan)])
                progress.update(1)
        print(f"wrote {store.num_episodes} episodes, {store.num_frames} frames of {plan.size[0]}x{plan.size[1]} to {out}")
    return out
