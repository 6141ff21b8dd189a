"""The `wmgym` console script: each subcommand parses one config dataclass and calls one function.

The config dataclasses are imported here without torch; the function that runs a command is
imported only when that command runs (`_when_run`), so `wmgym --help` and `wmgym <command> --help`
answer without importing torch (issue 37).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Annotated, Callable, Union

import tyro

from wmgym.data.generate import GenerateConfig
from wmgym.data.imagine import ImagineConfig
from wmgym.data.robot_import import ImportConfig
from wmgym.eval.fidelity_config import EvalConfig
from wmgym.eval.policies import EvalPoliciesConfig
from wmgym.eval.trust_config import TrustConfig
from wmgym.policies.plan_config import PlanConfig
from wmgym.train.codec import TrainCodecConfig
from wmgym.train.distill_config import DistillConfig
from wmgym.train.grasp_prior import TrainGraspPriorConfig
from wmgym.train.idm import TrainIDMConfig
from wmgym.train.lam import TrainLAMConfig
from wmgym.eval.lam_config import EvalLAMConfig
from wmgym.policies.latent_labels import LabelLAMConfig
from wmgym.train.judge_config import TrainJudgeConfig
from wmgym.train.lpips_calibration import TrainLPIPSConfig
from wmgym.train.policy import TrainPolicyConfig
from wmgym.train.videoclip import TrainVideoCLIPConfig
from wmgym.train.wm_config import TrainWorldModelConfig
from wmgym.writer_lock import WriterLockError

DESCRIPTION = ("A learned simulator for bimanual cloth folding: generate episodes in the cloth simulator (or import "
               "a real robot's LeRobot or UMI data), train a world model and its reward models on them, bundle them as "
               "the WMFold-v0 environment, then measure it against the simulator and plan or train policies in it.")


def _when_run(target: str) -> Callable:
    """The function "module:name", imported when the command runs rather than when the CLI starts."""
    module, name = target.split(":")

    def run(config):
        return getattr(importlib.import_module(module), name)(config)

    run.__name__ = run.__qualname__ = name
    return run


@dataclass
class ShowConfig:
    """Write one stored episode's three views (camera | static scene | grippers) as a video."""

    data: str
    """Path of a zarr episode store written by `wmgym generate`."""
    out: str = "episode.gif"
    """Output video (.gif, or .mp4 with imageio-ffmpeg installed)."""
    episode: int = 0
    """Index of the episode in the store."""
    scale: int = 2
    """Integer upscaling of each view."""
    fps: float = 4.0
    """Frames per second of the video."""


def show(config: ShowConfig) -> str:
    from wmgym.data.store import EpisodeStore
    from wmgym.data.video import tile_views, write_video

    store = EpisodeStore.open(config.data)
    if not 0 <= config.episode < store.num_episodes:
        raise ValueError(f"episode {config.episode} out of range: the store holds {store.num_episodes} episodes")
    ep = store.read_episode(config.episode)
    frames = tile_views([ep["camera"], ep["static"], ep["grippers"]], scale=config.scale)
    path = write_video(frames, config.out, fps=config.fps)
    print(f"episode {config.episode} ({ep['task']}, {ep['kind']}): {ep['caption']} -> {path}")
    return str(path)


@dataclass
class RolloutConfig:
    """Roll out a policy in an environment and write the frames as a video.

    In WMFold-v0 the world model starts from SimFold-v0's first frame and receives the same
    actions; the video shows simulator | world model side by side.
    """

    out: str = "rollout.gif"
    """Output video (.gif, or .mp4 with imageio-ffmpeg installed)."""
    env: str = "SimFold-v0"
    """Registered environment id: SimFold-v0 or WMFold-v0."""
    task: str = "fold_half"
    """Task to fold (one of wmgym.sim.tasks.TASKS)."""
    policy: str = "expert"
    """'expert' (the scripted demonstrator, run in SimFold-v0) or 'random'."""
    seed: int = 0
    """Seed passed to reset()."""
    resolution: int | None = None
    """Square image size in pixels (default: 128 for SimFold-v0, the model's for WMFold-v0)."""
    checkpoint: str | None = None
    """WMFold-v0 bundle directory (default: the shipped one)."""
    device: str = "auto"
    """WMFold-v0 device ('auto': CUDA when available)."""
    fps: float = 4.0
    """Frames per second of the video."""


def rollout(config: RolloutConfig) -> str:
    import gymnasium as gym
    import numpy as np
    import torch

    import wmgym  # noqa: F401  (registers the environments)
    from wmgym.data.video import VIEW_NAMES, tile_views, write_video
    from wmgym.image_metrics import psnr_from_mse

    if config.policy not in ("expert", "random"):
        raise ValueError(f"policy must be 'expert' or 'random', got {config.policy!r}")
    if config.env not in ("SimFold-v0", "WMFold-v0"):
        raise ValueError(f"env must be 'SimFold-v0' or 'WMFold-v0', got {config.env!r}")
    model = None
    if config.env == "WMFold-v0":
        model = gym.make("WMFold-v0", checkpoint=config.checkpoint, task=config.task, device=config.device, max_episode_steps=-1)
    size = config.resolution or (model.observation_space.shape[0] if model else 128)
    env = gym.make("SimFold-v0", task=config.task, resolution=size)
    obs, info = env.reset(seed=config.seed)
    env.action_space.seed(config.seed)
    views = [env.unwrapped.views()]
    predicted = []
    if model is not None:  # the simulator's frame and grippers (for a conditioned model)
        predicted.append(model.reset(seed=config.seed, options={"start": env.unwrapped.state()})[0])
    done = False
    while not done:
        action = env.unwrapped.expert_action() if config.policy == "expert" else env.action_space.sample()
        obs, reward, terminated, truncated, info = env.step(action)
        views.append(env.unwrapped.views())
        if model is not None:
            frame, _, _, _, model_info = model.step(action)
            predicted.append(frame)
        done = terminated or truncated
    if model is None:
        stacked = [np.stack([v[name] for v in views]) for name in VIEW_NAMES]
        path = write_video(tile_views(stacked, scale=1), config.out, fps=config.fps)
        print(f"{config.env} {info['task']}: {len(views) - 1} steps, score {info['score']:.2f}, success {info['success']} -> {path}")
        return str(path)
    sim_frames, model_frames = np.stack([v["camera"] for v in views]), np.stack(predicted)
    psnr = float(psnr_from_mse(torch.tensor(np.mean((sim_frames[1:].astype(np.float64) - model_frames[1:]) ** 2))))
    path = write_video(tile_views([sim_frames, model_frames], scale=max(1, 128 // size)), config.out, fps=config.fps)
    print(f"SimFold-v0 | WMFold-v0, {info['task']}, {len(views) - 1} {config.policy} steps: simulator score {info['score']:.2f} "
          f"(success {info['success']}), world-model judge says success {model_info['success']}, PSNR {psnr:.1f} dB -> {path}")
    return str(path)


@dataclass
class BundleConfig:
    """Assemble a checkpoint bundle: WMFold-v0's (world model, VideoCLIP, simulator start and goal banks) or, with
    --data, a robot bundle for wmgym/WorldModel-v0 (world model, start and goal frames of held-out robot episodes)."""

    world_model: str
    """A `wmgym train-wm` run directory (its newest checkpoint), a checkpoint directory, or a saved model."""
    out: str
    """Bundle directory to write: new, empty, or an existing bundle with --overwrite (anything else is
    refused, never deleted); wmgym/assets/wmfold is the shipped default."""
    videoclip: str | None = None
    """A `wmgym train-videoclip` output directory (text rewards and the success judge)."""
    lpips: str | None = None
    """A `wmgym train-lpips` output directory (the simulator-calibrated LPIPS, reward "lpips-calibrated")."""
    num_start_frames: int = 64
    """States in the start bank (WMFold-v0: start frame i is SimFold-v0's reset(seed=bank_seed + i); with --data: at
    most this many of the store's validation episodes)."""
    bank_seed: int = 1_000_000
    """Seed of the first bank state."""
    made_with: str = ""
    """Free text saved in bundle.json: the commands that trained the models."""
    num_steps: int | None = None
    """Sampler steps per frame saved as the bundle's default (None: the trained model's); see `wmgym eval`'s curve."""
    guidance_scale: float | None = None
    """Action guidance saved as the bundle's default (None: the trained model's)."""
    overwrite: bool = False
    """Replace an existing bundle at --out (atomically: the old one stays whole until the new one is complete)."""
    data: str | None = None
    """A robot store (`wmgym import`) the world model was trained on: makes a robot bundle for wmgym/WorldModel-v0,
    its start and goal frames the first and last frames of the store's validation episodes (at most --num-start-frames;
    --videoclip, --lpips and --bank-seed are WMFold-v0's and refused with it). A simulator store is refused: without
    --data the WMFold-v0 bundle renders its banks with the simulator."""
    val_fraction: float = 0.1
    """With --data: the fraction of the store's episodes held out, as `wmgym train-wm --val-fraction` held them out."""


def bundle(config: BundleConfig) -> str:
    from wmgym.envs.bundle import make_bundle

    if config.data is not None:
        from wmgym.envs.robot_bundle import make_robot_bundle

        wmfold_only = [name for name, given in (("--videoclip", config.videoclip is not None), ("--lpips", config.lpips is not None),
                                                ("--bank-seed", config.bank_seed != 1_000_000)) if given]
        if wmfold_only:
            raise ValueError(f"{', '.join(wmfold_only)}: WMFold-v0 bundle options, not for a robot bundle (--data)")
        path = make_robot_bundle(config.out, config.world_model, config.data, num_start_frames=config.num_start_frames,
                                 val_fraction=config.val_fraction, overwrite=config.overwrite, made_with=config.made_with, num_steps=config.num_steps,
                                 guidance_scale=config.guidance_scale)
        print(f"robot bundle -> {path} (gym.make('wmgym/WorldModel-v0', checkpoint={str(path)!r}))")
        return str(path)
    path = make_bundle(config.out, config.world_model, config.videoclip, config.num_start_frames, config.bank_seed, config.made_with,
                       config.num_steps, config.guidance_scale, config.lpips, overwrite=config.overwrite)
    print(f"bundle -> {path}")
    return str(path)


@dataclass
class VerifyConfig:
    """Read every chunk of an episode store; exit non-zero naming each damaged array and the episodes it hits."""

    store: Annotated[str, tyro.conf.arg(metavar="STORE"), tyro.conf.Positional]
    """Path of a zarr episode store (`wmgym generate`, `wmgym imagine`)."""
    show_progress: bool = True
    """Show a progress bar over the store's chunks."""


def verify(config: VerifyConfig) -> None:
    from wmgym.data.verify import verify_store

    report = verify_store(config.store, show_progress=config.show_progress)
    print("\n".join(report.lines()))
    if not report.is_intact:
        raise ValueError(report.summary())


COMMANDS = {"generate": (GenerateConfig, _when_run("wmgym.data.generate:generate")),
            "import": (ImportConfig, _when_run("wmgym.data.robot_import:import_dataset")), "show": (ShowConfig, show),
            "rollout": (RolloutConfig, rollout),
            "train-codec": (TrainCodecConfig, _when_run("wmgym.train.codec:train_codec")),
            "train-wm": (TrainWorldModelConfig, _when_run("wmgym.train.world_model:train_world_model")),
            "distill": (DistillConfig, _when_run("wmgym.train.distill:distill")),
            "train-videoclip": (TrainVideoCLIPConfig, _when_run("wmgym.train.videoclip:train_videoclip")),
            "bundle": (BundleConfig, bundle), "eval": (EvalConfig, _when_run("wmgym.eval.fidelity:evaluate")),
            "eval-policies": (EvalPoliciesConfig, _when_run("wmgym.eval.policies:evaluate_policies")),
            "calibrate-trust": (TrustConfig, _when_run("wmgym.eval.trust:calibrate_trust")),
            "train-policy": (TrainPolicyConfig, _when_run("wmgym.train.policy:train_policy")),
            "plan": (PlanConfig, _when_run("wmgym.policies.mpc:plan")),
            "train-idm": (TrainIDMConfig, _when_run("wmgym.train.idm:train_idm")),
            "train-lam": (TrainLAMConfig, _when_run("wmgym.train.lam:train_lam")),
            "eval-lam": (EvalLAMConfig, _when_run("wmgym.eval.lam:evaluate_lam")),
            "label-lam": (LabelLAMConfig, _when_run("wmgym.policies.latent_labels:label_with_lam")),
            "train-lpips": (TrainLPIPSConfig, _when_run("wmgym.train.lpips_calibration:train_lpips")),
            "imagine": (ImagineConfig, _when_run("wmgym.data.imagine:imagine_store")),
            "train-grasp-prior": (TrainGraspPriorConfig, _when_run("wmgym.train.grasp_prior:train_grasp_prior")),
            "train-judge": (TrainJudgeConfig, _when_run("wmgym.train.judge:train_judge")),
            "verify": (VerifyConfig, verify)}
"""Subcommand -> (the config dataclass its arguments fill, the function that runs it)."""


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    is_listing = not args or args[0] not in COMMANDS  # `wmgym --help` lists each command by its docstring's first line
    choices = [Annotated[cls, tyro.conf.subcommand(name, description=cls.__doc__.split("\n")[0] if is_listing else None)]
               for name, (cls, _) in COMMANDS.items()]
    config = tyro.cli(Union[tuple(choices)], prog="wmgym", description=DESCRIPTION, args=args)
    function = next(function for cls, function in COMMANDS.values() if isinstance(config, cls))
    try:
        function(config)
    except (ValueError, FileExistsError, FileNotFoundError, PermissionError, WriterLockError) as error:
        # Bad input (or another writer at work) is the user's to fix: say what was wrong, without a traceback.
        sys.exit(f"wmgym: error: {error}")


if __name__ == "__main__":  # `accelerate launch -m wmgym.cli train-wm ...`
    main()
