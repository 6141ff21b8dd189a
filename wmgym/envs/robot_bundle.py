"""The robot bundle behind `wmgym/WorldModel-v0`: a world model trained on real robot data
(`wmgym import`, `wmgym train-wm`) with start and goal frames of held-out episodes.

Dimension legend: N start frames, H x W the model's (and the store's) frame size, A action values.

Layout of a robot bundle directory (no pickles, no simulator needed to make or read it):

    bundle.json          format_version, kind: "robot", height, width, camera (the dataset's camera
                         the model predicts), action_names (A names), fps (or null), tasks (the
                         store's task texts), num_start_frames (N), store (the robot store it came
                         from), start_episodes (the store's episode of each start), start_split
                         ("val" or, for a store without a validation split, "all"), val_fraction,
                         made_with
    world_model/         `WorldModel.save_pretrained` (config.json with the action spec,
                         denoiser.safetensors, codec.safetensors)
    start_frames.png     N start frames side by side, (H, N * W, 3): the first frame of each
                         held-out episode (the store's validation split, as `wmgym train-wm`
                         splits it: `wmgym.data.dataset.split_episodes(E, "val", val_fraction)`)
    goals.png            N goal frames side by side; goal i is the last frame of start i's episode
    start_tasks.json     N task texts: start i's episode's task

`make_robot_bundle` writes one under the writer rule of every output (`wmgym.outputs`): a new
directory, an empty one, or (with `overwrite`) a bundle to replace, atomically, holding a writer
lock meanwhile; anything else is refused, never deleted. `RobotBundle.load` reads one back.
A WMFold-v0 bundle (`wmgym.envs.bundle`) shares bundle.json's name and format_version but has no
`kind` (or another one); each loader refuses the other's bundle with a message saying which is which.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from wmgym.envs.bundle import BUNDLE_FILE, BUNDLE_KIND, FORMAT_VERSION, resolve_world_model
from wmgym.outputs import check_output, directory_written_atomically
from wmgym.writer_lock import WriterLock

ROBOT_KIND = "robot"
"""bundle.json's `kind` of a robot bundle (a WMFold-v0 bundle has none)."""
WORLD_MODEL_DIR = "world_model"
START_FILE, GOAL_FILE, TASKS_FILE = "start_frames.png", "goals.png", "start_tasks.json"

HOW_TO_MAKE = (
    "make one from a robot store with the project's commands:\n"
    "  wmgym import DATASET --out robot.zarr\n"
    "  wmgym train-wm --data robot.zarr --out runs/robot_wm\n"
    "  wmgym bundle --world-model runs/robot_wm --data robot.zarr --out robot_bundle\n"
    "then gym.make('wmgym/WorldModel-v0', checkpoint='robot_bundle')"
)


@dataclass
class RobotBundle:
    """A loaded robot bundle's small parts (the world model is loaded by whoever needs it).

    Attributes:
        directory: where it lives.
        height, width: frame size of the world model (= the store's).
        camera: the dataset's camera whose frames the model predicts.
        action_names: the A action values' names, in order.
        fps: frames per second of the store's episodes (None where unknown).
        tasks: the store's task texts.
        start_frames: uint8 (N, H, W, 3), the first frames of held-out episodes.
        goals: uint8 (N, H, W, 3); goal i is the last frame of start i's episode.
        start_tasks: N task texts, start i's episode's.
        start_episodes: N store episode indices, start i's episode.
        store: the path of the robot store the banks came from (as given to `make_robot_bundle`).
        made_with: free text (the commands that made the model).
    """

    directory: Path
    height: int
    width: int
    camera: str
    action_names: list[str]
    fps: float | None
    tasks: list[str]
    start_frames: np.ndarray
    goals: np.ndarray
    start_tasks: list[str]
    start_episodes: list[int]
    store: str
    made_with: str = ""

    @property
    def world_model_dir(self) -> Path:
        return self.directory / WORLD_MODEL_DIR

    @property
    def num_starts(self) -> int:
        return len(self.start_frames)

    def nearest_start(self, frame: np.ndarray) -> int:
        """Index of the start frame closest (mean squared pixel error) to `frame` uint8 (H, W, 3)."""
        diff = self.start_frames.astype(np.float32) - frame.astype(np.float32)[None]
        return int(np.argmin((diff**2).mean(axis=(1, 2, 3))))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "RobotBundle":
        """Read a robot bundle. FileNotFoundError for a missing directory or file, ValueError for a
        damaged one or for a WMFold-v0 bundle (which `gym.make("WMFold-v0", checkpoint=...)` reads)."""
        if directory is None:
            raise FileNotFoundError(f"wmgym/WorldModel-v0 needs a robot bundle (checkpoint=DIR); none is shipped; {HOW_TO_MAKE}")
        directory = Path(directory)
        path = directory / BUNDLE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no robot bundle at {directory} (no {BUNDLE_FILE}); {HOW_TO_MAKE}")
        meta = _read_json(path, dict)
        if meta.get("kind") != ROBOT_KIND:
            if meta.get("kind") is None and isinstance(meta.get("tasks"), dict):
                raise ValueError(f"{directory} is a WMFold-v0 bundle (simulator start banks), not a robot bundle: open it with "
                                 f"gym.make('WMFold-v0', checkpoint={str(directory)!r}), or {HOW_TO_MAKE}")
            raise ValueError(f"{path}: kind {meta.get('kind')!r}, expected {ROBOT_KIND!r} (a robot bundle); {HOW_TO_MAKE}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: format_version {meta.get('format_version')!r}, this wmgym reads {FORMAT_VERSION}")
        try:
            height, width, n = int(meta["height"]), int(meta["width"]), int(meta["num_start_frames"])
            camera, names, tasks = str(meta["camera"]), [str(x) for x in meta["action_names"]], [str(t) for t in meta["tasks"]]
            fps = None if meta.get("fps") is None else float(meta["fps"])
            episodes = [int(i) for i in meta["start_episodes"]]
            if n < 1 or height < 1 or width < 1 or not names or len(episodes) != n:
                raise ValueError("need height, width, num_start_frames >= 1, action names and one start episode per start")
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"{path}: missing or malformed field ({type(error).__name__}: {error}); expected height, width, "
                             "num_start_frames (integers), camera, action_names, tasks, start_episodes; remake the bundle "
                             "with `wmgym bundle --data STORE`") from None
        if not (directory / WORLD_MODEL_DIR / "config.json").is_file():
            raise FileNotFoundError(f"robot bundle {directory} has no {WORLD_MODEL_DIR}/config.json; remake it with `wmgym bundle`")
        start_tasks = _read_json(directory / TASKS_FILE, list)
        if len(start_tasks) != n or not all(isinstance(t, str) for t in start_tasks):
            raise ValueError(f"{directory / TASKS_FILE}: expected a list of {n} task texts, got {len(start_tasks)} entries")
        return cls(directory, height, width, camera, names, fps, tasks, read_strip(directory / START_FILE, n, height, width),
                   read_strip(directory / GOAL_FILE, n, height, width), start_tasks, episodes, str(meta.get("store", "")),
                   str(meta.get("made_with", "")))


def make_robot_bundle(out: str | os.PathLike, world_model: str | os.PathLike, data: str | os.PathLike,
                      num_start_frames: int = 64, val_fraction: float = 0.1, overwrite: bool = False, made_with: str = "",
                      num_steps: int | None = None, guidance_scale: float | None = None) -> Path:
    """Assemble a robot bundle directory atomically: copy the model, take the start and goal frames
    of held-out episodes of the robot store.

    Args:
        out: the bundle directory to write: new, an empty directory, or (with `overwrite`) a bundle
            to replace; anything else there is refused (FileExistsError), never deleted.
        world_model: a `WorldModel.save_pretrained` directory, a training checkpoint directory
            holding `model/`, or a `wmgym train-wm` run directory (its newest checkpoint).
        data: the robot store (`wmgym import`) the model was trained on; its frame size (H, W) and
            action count A must be the model's (ValueError otherwise).
        num_start_frames: N, at most; the store's validation episodes (`split_episodes(E, "val",
            val_fraction)`, as `wmgym train-wm` holds them out), the first N of them in index order
            (all of them when there are fewer). A store without a validation split (one episode,
            or `val_fraction` 0) gives its first N episodes, and bundle.json says "start_split": "all".
        val_fraction: the split's validation fraction (`wmgym train-wm`'s, 0.1 by default).
        overwrite: replace an existing bundle at `out`.
        made_with: free text saved in bundle.json (the commands that made the model).
        num_steps, guidance_scale: sampler defaults written into the bundle's world model (None
            keeps the trained model's).
    Returns:
        `out`.
    """
    from wmgym.data.dataset import split_episodes
    from wmgym.data.store import EpisodeStore
    from wmgym.model.config_checks import read_config_json
    from wmgym.model.model_files import CONFIG_FILE
    from wmgym.model.world_model_config import WorldModelConfig, check_sampler_arguments

    world_model = resolve_world_model(world_model)
    if isinstance(num_start_frames, bool) or not isinstance(num_start_frames, int) or num_start_frames < 1:
        raise ValueError(f"num_start_frames must be an int >= 1, got {num_start_frames!r}")
    check_sampler_arguments(num_steps, guidance_scale)
    store = EpisodeStore.open(data)
    if not store.is_robot:
        raise ValueError(f"{data} is a simulator episode store, not a robot store (`wmgym import`); a WMFold-v0 bundle "
                         "renders its start banks with the simulator: leave out --data (data=None) for one")
    raw = read_config_json(world_model / CONFIG_FILE)
    try:
        config = WorldModelConfig.from_dict(raw)
    except ValueError as error:
        raise ValueError(f"{world_model / CONFIG_FILE}: {error}") from None
    check_model_matches_store(config, store.height, store.width, store.action_names, f"world model {world_model}", f"store {data}")
    if store.num_episodes < 1:
        raise ValueError(f"robot store {data} holds no episodes")
    episodes = split_episodes(store.num_episodes, "val", val_fraction)
    split = "val"
    if len(episodes) == 0:
        episodes, split = np.arange(store.num_episodes), "all"
    episodes = [int(i) for i in episodes[:num_start_frames]]
    out = Path(out)
    with WriterLock(out, "bundle"):  # one writer at a time; checked and written under the lock
        check_output(out, BUNDLE_KIND, overwrite)
        starts, goals, tasks = [], [], []
        for i in episodes:
            episode = store.read_episode(i)
            starts.append(episode["camera"][0])
            goals.append(episode["camera"][-1])
            tasks.append(str(episode["task"]))
        fps = store.attrs.get("fps")
        if fps is None:  # a store made without it: the median frame interval of the first start episode
            steps = np.diff(store.read_episode(episodes[0])["timestamps"])
            fps = float(1.0 / np.median(steps)) if len(steps) and np.median(steps) > 0 else None
        meta = {"format_version": FORMAT_VERSION, "kind": ROBOT_KIND, "height": store.height, "width": store.width,
                "camera": store.camera, "action_names": store.action_names,
                "fps": None if fps is None or not math.isfinite(float(fps)) else float(fps), "tasks": list(store.tasks),
                "num_start_frames": len(episodes), "store": str(Path(data).resolve()), "start_episodes": episodes,
                "start_split": split, "val_fraction": val_fraction, "made_with": made_with}
        with directory_written_atomically(out, "bundle") as tmp:  # nothing half-written is left beside it
            shutil.copytree(world_model, tmp / WORLD_MODEL_DIR)
            overrides = {k: v for k, v in (("num_steps", num_steps), ("guidance_scale", guidance_scale)) if v is not None}
            if overrides:
                raw["sampler"] = {**raw.get("sampler", {}), **overrides}
                (tmp / WORLD_MODEL_DIR / CONFIG_FILE).write_text(json.dumps(raw, indent=2))
            write_strip(tmp / START_FILE, np.stack(starts))
            write_strip(tmp / GOAL_FILE, np.stack(goals))
            (tmp / TASKS_FILE).write_text(json.dumps(tasks, indent=2))
            (tmp / BUNDLE_FILE).write_text(json.dumps(meta, indent=2))
    return out


def check_model_matches_store(config, height: int, width: int, action_names: list[str], model: str, store: str) -> None:
    """ValueError unless the world model's `WorldModelConfig` predicts (height, width) frames from
    len(action_names) action values (with those names, where it names them) and needs no
    condition views or vectors (a robot store has none to give)."""
    if (config.height, config.width) != (height, width):
        raise ValueError(f"{model} predicts {config.height}x{config.width} frames but {store} holds {height}x{width} "
                         "frames; bundle the model with the store it was trained on")
    if config.action_dim != len(action_names):
        raise ValueError(f"{model} takes {config.action_dim} action values but {store} has {len(action_names)} "
                         f"({', '.join(action_names)}); bundle the model with the store it was trained on")
    if config.action_names is not None and list(config.action_names) != list(action_names):
        raise ValueError(f"{model} names its actions {config.action_names} but {store} names them {list(action_names)}; "
                         "bundle the model with the store it was trained on")
    if config.condition_views or config.condition_vectors:
        raise ValueError(f"{model} is conditioned on {tuple(config.condition_views) + tuple(config.condition_vectors)}, "
                         "which real robot data does not give; wmgym/WorldModel-v0 serves action-only world models")


def write_strip(path: Path, frames: np.ndarray) -> None:
    """uint8 (N, H, W, 3) -> one PNG (H, N * W, 3)."""
    strip = np.concatenate(list(frames), axis=1)
    if not cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def read_strip(path: Path, n: int, height: int, width: int) -> np.ndarray:
    """One PNG (H, N * W, 3) -> uint8 (N, H, W, 3); errors name the file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    if image is None:
        raise FileNotFoundError(f"bundle file {path} is missing or not an image; remake the bundle with `wmgym bundle`")
    if image.shape != (height, n * width, 3):
        raise ValueError(f"{path}: shape {image.shape}, expected ({height}, {n * width}, 3) for {n} frames of {height}x{width}")
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(rgb.reshape(height, n, width, 3).transpose(1, 0, 2, 3))


def _read_json(path: Path, kind: type):
    if not path.is_file():
        raise FileNotFoundError(f"bundle file {path} is missing; remake the bundle with `wmgym bundle`")
    try:
        value = json.loads(path.read_bytes())
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path} is not valid JSON ({error}); remake the bundle with `wmgym bundle`") from None
    if not isinstance(value, kind):
        raise ValueError(f"{path} must hold a JSON {'object' if kind is dict else 'list'}, got {type(value).__name__}")
    return value
