"""A random policy in WMFold-v0 beside the simulator, written to a video.

    python examples/random_rollout.py --out random_rollout.gif [--checkpoint DIR] [--seed 0]

Both environments start from the same state (the simulator's `state()` is handed to the
world model through `reset(options={"start": ...})`) and receive the same random actions;
the video shows simulator | world model, side by side.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch

import wmgym  # noqa: F401  (registers SimFold-v0 and WMFold-v0)
from wmgym.data.video import tile_views, write_video
from wmgym.image_metrics import psnr_from_mse


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="random_rollout.gif", help="output video (.gif, or .mp4 with imageio-ffmpeg)")
    parser.add_argument("--checkpoint", default=None, help="bundle directory (default: the shipped one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    world_model = gym.make("WMFold-v0", checkpoint=args.checkpoint, device=args.device, max_episode_steps=args.steps,
                           use_success_judge=False, reward="none")
    size = world_model.observation_space.shape[0]
    sim = gym.make("SimFold-v0", resolution=size, horizon=args.steps)
    sim_frame, _ = sim.reset(seed=args.seed)
    # The simulator's frame and grippers (the grippers: for a conditioned model) as the model's start.
    model_frame, _ = world_model.reset(seed=args.seed, options={"start": sim.unwrapped.state()})
    sim.action_space.seed(args.seed)
    sim_frames, model_frames = [sim_frame], [model_frame]
    for _ in range(args.steps):
        action = sim.action_space.sample()
        sim_frames.append(sim.step(action)[0])
        model_frames.append(world_model.step(action)[0])
    sim_frames, model_frames = np.stack(sim_frames), np.stack(model_frames)
    mse = np.mean((sim_frames[1:].astype(np.float64) - model_frames[1:]) ** 2)
    psnr = float(psnr_from_mse(torch.tensor(mse)))
    path = write_video(tile_views([sim_frames, model_frames], scale=max(1, 128 // size)), args.out, fps=4)
    print(f"simulator | world model, {args.steps} random steps, PSNR {psnr:.1f} dB -> {path}")
    return str(path)


if __name__ == "__main__":
    main()
