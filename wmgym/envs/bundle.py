"""The checkpoint bundle behind `WMFold-v0`: world model, text reward model, start and goal banks.

Layout of a bundle directory (docs/design.md, "Checkpoints"; no pickles):

    bundle.json          format_version, height, width, tasks {name: {"caption": str}},
                         num_start_frames, and how it was made (`made_with`)
    world_model/         `WorldModel.save_pretrained` (config.json with the action statistics,
                         denoiser.safetensors, codec.safetensors)
    videoclip/           `VideoCLIP.save_pretrained` (optional: text rewards and the success judge)
    lpips/               `wmgym train-lpips`'s config.json and model.safetensors (float16)
                         (optional: LPIPS calibrated on the simulator's fold score, the
                         "lpips-calibrated" goal-image reward)
    start_frames.png     N start frames side by side, (H, N * W, 3)
    goals_<task>.png     N goal images side by side; goal i is start frame i folded by <task>
    start_grippers.safetensors
                         the grippers at each start frame: poses (N, 2, 4, 4), widths (N, 2)
                         float64 (for world models conditioned on the grippers view; bundles
                         made before it existed lack it)
    judge.json           optional: the track judge (`wmgym train-judge`, `wmgym.rewards.track_judge`),
                         the success judge over VideoCLIP, the grippers' track and the grasp prior;
                         without it the env judges with VideoCLIP alone

`make_bundle` renders the banks with the reference simulator, so `reset` in `WMFold-v0`
starts from the same states `SimFold-v0` does (start frame i is `SimFold-v0`'s first
observation for `reset(seed=bank_seed + i)`). It writes a new bundle, or replaces an existing
one only when told to (`overwrite`), never anything else (`wmgym.outputs.check_output`),
holding a writer lock on the output meanwhile.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from safetensors.numpy import load_file, save_file

from wmgym.outputs import OutputKind, check_output, directory_written_atomically
from wmgym.writer_lock import WriterLock

FORMAT_VERSION = 1
BUNDLE_FILE = "bundle.json"
GRIPPERS_FILE = "start_grippers.safetensors"
JUDGE_FILE = "judge.json"  # `wmgym.rewards.track_judge.JUDGE_FILE` (not imported: this module stays light)
BUNDLE_KIND = OutputKind("bundle", (BUNDLE_FILE,))
DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "assets" / "wmfold"

HOW_TO_MAKE = (
    "make one with the project's commands:\n"
    "  wmgym generate --episodes 5248 --out data.zarr\n"
    "  wmgym train-wm --data data.zarr --out runs/wm\n"
    "  wmgym train-videoclip --data data.zarr --out runs/videoclip\n"
    "  wmgym bundle --world-model runs/wm --videoclip runs/videoclip --out my_bundle\n"
    "then gym.make('WMFold-v0', checkpoint='my_bundle')"
)


@dataclass
class Bundle:
    """A loaded bundle's small parts (the models are loaded by whoever needs them).

    Attributes:
        directory: where it lives.
        height, width: frame size of the world model.
        captions: task name -> instruction caption.
        start_frames: uint8 (N, H, W, 3).
        goals: task name -> uint8 (N, H, W, 3), goal i belongs to start frame i.
    """

    directory: Path
    height: int
    width: int
    captions: dict[str, str]
    start_frames: np.ndarray
    goals: dict[str, np.ndarray] = field(default_factory=dict)
    start_grippers: list | None = None
    """`GripperState` of each start frame (None: a bundle without start_grippers.safetensors)."""

    @property
    def world_model_dir(self) -> Path:
        return self.directory / "world_model"

    @property
    def videoclip_dir(self) -> Path | None:
        path = self.directory / "videoclip"
        return path if path.is_dir() else None

    @property
    def judge_file(self) -> Path | None:
        """The track judge's judge.json (None: judge with VideoCLIP alone); `TrackJudge.load` reads it."""
        path = self.directory / JUDGE_FILE
        return path if path.is_file() else None

    @property
    def lpips_dir(self) -> Path | None:
        path = self.directory / "lpips"
        return path if path.is_dir() else None

    @classmethod
    def load(cls, directory: str | os.PathLike | None = None) -> "Bundle":
        """Read a bundle (None: the default one shipped in `wmgym/assets/wmfold`)."""
        is_default = directory is None or str(directory) == "default"
        directory = DEFAULT_BUNDLE if is_default else Path(directory)
        if not (directory / BUNDLE_FILE).is_file():
            where = f"the default WMFold-v0 bundle is not installed at {directory}" if is_default else f"no bundle at {directory} (no {BUNDLE_FILE})"
            raise FileNotFoundError(f"{where}; {HOW_TO_MAKE}")
        path = directory / BUNDLE_FILE
        try:
            meta = json.loads(path.read_bytes())
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
            raise ValueError(f"{path} is not valid JSON ({error}); remake the bundle with `wmgym bundle`") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{path} must hold a JSON object, got {type(meta).__name__}")
        if meta.get("kind", "wmfold") != "wmfold":
            raise ValueError(f"{directory} is a {meta['kind']} bundle (wmgym bundle --data), not a WMFold-v0 bundle: "
                             f"open it with gym.make('wmgym/WorldModel-v0', checkpoint={str(directory)!r})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: format_version {meta.get('format_version')!r}, this wmgym reads {FORMAT_VERSION}")
        try:
            height, width, n = int(meta["height"]), int(meta["width"]), int(meta["num_start_frames"])
            captions = {task: str(entry["caption"]) for task, entry in meta["tasks"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"{path}: missing or malformed field ({type(error).__name__}: {error}); expected height, width, "
                             "num_start_frames (integers) and tasks {name: {\"caption\": str}}") from None
        read = lambda name: _read_strip(directory / name, n, height, width)
        goals = {task: read(f"goals_{task}.png") for task in captions}
        return cls(directory, height, width, captions, read("start_frames.png"), goals, _read_grippers(directory, n))

    def nearest_start(self, frame: np.ndarray) -> int:
        """Index of the bank's start frame closest (mean squared pixel error) to `frame` (H, W, 3)."""
        diff = self.start_frames.astype(np.float32) - frame.astype(np.float32)[None]
        return int(np.argmin((diff**2).mean(axis=(1, 2, 3))))


def make_bundle(out: str | os.PathLike, world_model: str | os.PathLike, videoclip: str | os.PathLike | None = None,
                num_start_frames: int = 64, bank_seed: int = 1_000_000, made_with: str = "",
                num_steps: int | None = None, guidance_scale: float | None = None,
                lpips: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Assemble a bundle directory atomically: copy the models, render the start and goal banks.

    Args:
        out: the bundle directory to write: new, an empty directory, or (with `overwrite`) a
            bundle to replace; anything else there is refused (FileExistsError), never deleted.
        world_model: a `WorldModel.save_pretrained` directory, a training checkpoint directory
            holding `model/`, or a `wmgym train-wm` run directory (its newest checkpoint).
        videoclip: a `VideoCLIP.save_pretrained` directory, or None.
        num_start_frames: N, states in the start bank.
        bank_seed: start frame i is SimFold-v0's reset(seed=bank_seed + i) (the default lies
            outside the seeds `wmgym generate` and the tests use).
        made_with: free text saved in bundle.json (the commands that made the models).
        num_steps, guidance_scale: sampler defaults written into the bundle's world model
            (None keeps the trained model's; choose them from `wmgym eval`'s quality-speed curve).
        lpips: a `wmgym train-lpips` directory (the "lpips-calibrated" reward), or None.
        overwrite: replace an existing bundle at `out`.
    """
    world_model = resolve_world_model(world_model)
    if videoclip is not None and not (Path(videoclip) / "config.json").is_file():
        raise FileNotFoundError(f"no VideoCLIP model at {videoclip} (expected config.json from VideoCLIP.save_pretrained)")
    if lpips is not None and not (Path(lpips) / "model.safetensors").is_file():
        raise FileNotFoundError(f"no calibrated LPIPS at {lpips} (expected model.safetensors from `wmgym train-lpips`)")
    if num_start_frames < 1:
        raise ValueError(f"num_start_frames must be >= 1, got {num_start_frames}")
    if (num_steps is not None and num_steps < 1) or (guidance_scale is not None and guidance_scale < 0):
        raise ValueError(f"need num_steps >= 1 and guidance_scale >= 0, got {num_steps} and {guidance_scale}")
    out = Path(out)
    with WriterLock(out, "bundle"):  # one writer at a time; checked and written under the lock
        check_output(out, BUNDLE_KIND, overwrite)
        return _write_bundle(out, world_model, videoclip, num_start_frames, bank_seed, made_with, num_steps,
                             guidance_scale, lpips)


def resolve_world_model(world_model: str | os.PathLike) -> Path:
    """The `WorldModel.save_pretrained` directory of a `wmgym train-wm` run directory (its newest
    checkpoint), a training checkpoint directory (its `model/`) or a saved model itself."""
    from wmgym.model.model_files import CONFIG_FILE

    world_model = Path(world_model)
    if (world_model / "latest").is_file():  # a `wmgym train-wm` run directory: its newest checkpoint
        world_model = world_model / "checkpoints" / (world_model / "latest").read_text().strip()
    if (world_model / "model" / CONFIG_FILE).is_file():  # a training checkpoint directory
        world_model = world_model / "model"
    if not (world_model / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"no world model at {world_model} (expected {CONFIG_FILE} from WorldModel.save_pretrained, "
                                "a checkpoint directory or a `wmgym train-wm` run directory)")
    return world_model


def _write_bundle(out: Path, world_model: Path, videoclip, num_start_frames: int, bank_seed: int, made_with: str,
                  num_steps: int | None, guidance_scale: float | None, lpips) -> Path:
    from wmgym.envs.sim_fold import SimFoldEnv
    from wmgym.model.world_model import CONFIG_FILE
    from wmgym.sim.gripper_track import GripperState
    from wmgym.sim.tasks import TASKS, make_task

    config = json.loads((world_model / CONFIG_FILE).read_text())
    height, width = int(config["height"]), int(config["width"])
    starts, goals, grippers = [], {task: [] for task in TASKS}, []
    for i in range(num_start_frames):
        for task in TASKS:  # the start state depends on the seed only; the goal on the task too
            env = SimFoldEnv(task=task, resolution=(height, width))
            frame, _ = env.reset(seed=bank_seed + i)
            if task == TASKS[0]:
                starts.append(frame)
                grippers.append(GripperState.of_world(env.world))
            elif not np.array_equal(frame, starts[-1]):
                raise RuntimeError("the simulator's start state depends on the task; the bank assumes it does not")
            goals[task].append(env.world.render_goal())
    with directory_written_atomically(out, "bundle") as tmp:  # nothing half-written is left beside it
        shutil.copytree(world_model, tmp / "world_model")
        overrides = {k: v for k, v in (("num_steps", num_steps), ("guidance_scale", guidance_scale)) if v is not None}
        if overrides:
            config["sampler"].update(overrides)
            (tmp / "world_model" / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        if videoclip is not None:
            shutil.copytree(videoclip, tmp / "videoclip")
        if lpips is not None:  # the model only (not a run's training state or logs), its weights in float16 to keep bundles small
            import safetensors.numpy

            (tmp / "lpips").mkdir()
            shutil.copy2(Path(lpips) / "config.json", tmp / "lpips" / "config.json")
            weights = safetensors.numpy.load_file(Path(lpips) / "model.safetensors")
            safetensors.numpy.save_file({k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in weights.items()},
                                        tmp / "lpips" / "model.safetensors")
        _write_strip(tmp / "start_frames.png", np.stack(starts))
        for task, images in goals.items():
            _write_strip(tmp / f"goals_{task}.png", np.stack(images))
        save_file({"poses": np.stack([g.poses for g in grippers]), "widths": np.stack([g.widths for g in grippers])},
                  tmp / GRIPPERS_FILE)
        meta = {"format_version": FORMAT_VERSION, "height": height, "width": width, "num_start_frames": num_start_frames,
                "bank_seed": bank_seed, "tasks": {task: {"caption": make_task(task).caption} for task in TASKS},
                "made_with": made_with}
        (tmp / BUNDLE_FILE).write_text(json.dumps(meta, indent=2))
    return out


def _read_grippers(directory: Path, n: int) -> list | None:
    from wmgym.sim.gripper_track import GripperState

    path = directory / GRIPPERS_FILE
    if not path.is_file():
        return None
    try:
        arrays = load_file(path)
    except Exception as error:  # safetensors raises its own error types for truncated or damaged files
        raise ValueError(f"{path} is not a readable safetensors file ({error}); remake the bundle with `wmgym bundle`") from None
    if set(arrays) != {"poses", "widths"} or arrays["poses"].shape != (n, 2, 4, 4) or arrays["widths"].shape != (n, 2):
        raise ValueError(f"{path}: expected poses ({n}, 2, 4, 4) and widths ({n}, 2), got "
                         f"{ {k: v.shape for k, v in arrays.items()} }")
    return [GripperState(p, w) for p, w in zip(arrays["poses"], arrays["widths"])]


def _write_strip(path: Path, frames: np.ndarray) -> None:
    """uint8 (N, H, W, 3) -> one PNG (H, N * W, 3)."""
    strip = np.concatenate(list(frames), axis=1)
    if not cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def _read_strip(path: Path, n: int, height: int, width: int) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"bundle file {path} is missing or not an image")
    if image.shape != (height, n * width, 3):
        raise ValueError(f"{path}: shape {image.shape}, expected ({height}, {n * width}, 3) for {n} frames of {height}x{width}")
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(rgb.reshape(height, n, width, 3).transpose(1, 0, 2, 3))
