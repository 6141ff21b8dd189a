"""The `wmgym` console script: each subcommand parses one config dataclass and calls one function."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import tyro

from wmgym.data.generate import GenerateConfig, generate
from wmgym.train.codec import TrainCodecConfig, train_codec
from wmgym.train.world_model import TrainWorldModelConfig, train_world_model


@dataclass
class ShowConfig:
    """Write one stored episode's three views (interaction | static scene | grippers) as a video."""

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
    frames = tile_views([ep["frames"], ep["static"], ep["grippers"]], scale=config.scale)
    path = write_video(frames, config.out, fps=config.fps)
    print(f"episode {config.episode} ({ep['task']}, {ep['kind']}): {ep['caption']} -> {path}")
    return str(path)


@dataclass
class RolloutConfig:
    """Roll out a policy in an environment and write the frames as a video."""

    out: str = "rollout.gif"
    """Output video (.gif, or .mp4 with imageio-ffmpeg installed)."""
    env: str = "SimFold-v0"
    """Registered environment id."""
    task: str = "fold_half"
    """Task to fold (one of wmgym.sim.tasks.TASKS)."""
    policy: str = "expert"
    """'expert' (the scripted demonstrator, SimFold-v0 only) or 'random'."""
    seed: int = 0
    """Seed passed to reset()."""
    resolution: int = 128
    """Square image size in pixels."""
    fps: float = 4.0
    """Frames per second of the video."""


def rollout(config: RolloutConfig) -> str:
    import gymnasium as gym
    import numpy as np

    import wmgym  # noqa: F401  (registers the environments)
    from wmgym.data.video import tile_views, write_video

    if config.policy not in ("expert", "random"):
        raise ValueError(f"policy must be 'expert' or 'random', got {config.policy!r}")
    env = gym.make(config.env, task=config.task, resolution=config.resolution)
    obs, info = env.reset(seed=config.seed)
    env.action_space.seed(config.seed)
    views = [env.unwrapped.views()]
    done = False
    while not done:
        action = env.unwrapped.expert_action() if config.policy == "expert" else env.action_space.sample()
        obs, reward, terminated, truncated, info = env.step(action)
        views.append(env.unwrapped.views())
        done = terminated or truncated
    stacked = [np.stack([v[name] for v in views]) for name in ("interaction", "static_scene", "grippers")]
    path = write_video(tile_views(stacked, scale=1), config.out, fps=config.fps)
    print(f"{config.env} {info['task']}: {len(views) - 1} steps, score {info['score']:.2f}, success {info['success']} -> {path}")
    return str(path)


COMMANDS = {"generate": (GenerateConfig, generate), "show": (ShowConfig, show), "rollout": (RolloutConfig, rollout),
            "train-codec": (TrainCodecConfig, train_codec), "train-wm": (TrainWorldModelConfig, train_world_model)}


def main(argv: list[str] | None = None) -> None:
    config = tyro.extras.subcommand_cli_from_dict({name: cls for name, (cls, _) in COMMANDS.items()}, args=argv)
    function = next(function for cls, function in COMMANDS.values() if isinstance(config, cls))
    try:
        function(config)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        # Bad input is the user's to fix: say what was wrong, without a traceback.
        sys.exit(f"wmgym: error: {error}")


if __name__ == "__main__":  # `accelerate launch -m wmgym.cli train-wm ...`
    main()
