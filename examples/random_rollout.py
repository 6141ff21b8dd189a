"""A random policy in WMFold-v0 beside the simulator, written to a video.

    python examples/random_rollout.py --out random_rollout.gif [--checkpoint DIR] [--seed 0]

Both environments start from the same state (the simulator's `state()` is handed to the
world model through `reset(options={"start": ...})`) and receive the same random actions;
the video shows simulator | world model, side by side. Uniform random actions rotate the
grippers about every axis, which the training data never does: the world model does not read
such an action (`sampler.action_support`) and follows the grippers view it renders from it, and
`info["trust"]` says how far to believe each frame.
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
    sim_frames, model_frames, trust = [sim_frame], [model_frame], []
    for _ in range(args.steps):
        action = sim.action_space.sample()
        sim_frames.append(sim.step(action)[0])
        frame, *_, info = world_model.step(action)
        model_frames.append(frame)
        trust.append(info.get("trust"))  # absent for a world model without trust.json
    sim_frames, model_frames = np.stack(sim_frames), np.stack(model_frames)
    mse = np.mean((sim_frames[1:].astype(np.float64) - model_frames[1:]) ** 2)
    psnr = float(psnr_from_mse(torch.tensor(mse)))
    path = write_video(tile_views([sim_frames, model_frames], scale=max(1, 128 // size)), args.out, fps=4)
    said = "" if trust[0] is None else f", trust {trust[0]:.2f} at the first step, {trust[-1]:.2f} at the last"
    print(f"simulator | world model, {args.steps} random steps, PSNR {psnr:.1f} dB{said} -> {path}")
    return str(path)


if __name__ == "__main__":
    main()
