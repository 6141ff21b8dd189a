"""PPO trained only inside WMFold-v0 (N batched imagined envs), then evaluated in SimFold-v0.

    python examples/ppo_imagination.py --num-envs 16 --timesteps 20000 [--checkpoint DIR]

The policy sees only predicted frames and the VideoCLIP reward during training; the
evaluation runs it in the reference simulator and reports its success rate and mean score.
`wmgym train-policy` adds behaviour cloning and judge-filtered fine-tuning around this.
On a GPU the generator, reward heads and policy share the device.
"""

from __future__ import annotations

import argparse

from stable_baselines3 import PPO

from wmgym.envs.sb3 import WMFoldVecEnv
from wmgym.train.policy import evaluate_in_simulator


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fold_half")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--timesteps", type=int, default=20000)
    parser.add_argument("--n-steps", type=int, default=64, help="PPO rollout length per env")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--reward", default="videoclip")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    venv = WMFoldVecEnv(args.num_envs, checkpoint=args.checkpoint, task=args.task, reward=args.reward, device=args.device)
    venv.seed(args.seed)
    model = PPO("CnnPolicy", venv, n_steps=args.n_steps, batch_size=min(256, args.n_steps * args.num_envs), seed=args.seed,
                device=args.device if args.device != "auto" else "auto", verbose=0)
    model.learn(total_timesteps=args.timesteps, progress_bar=False)
    result = evaluate_in_simulator(model, args.task, args.eval_episodes, seed=10_000 + args.seed)
    print(f"PPO trained {model.num_timesteps} imagined steps on {args.num_envs} envs; in SimFold-v0 ({args.task}): "
          f"success {result['success_rate']:.0%}, mean score {result['mean_score']:.2f}")
    return result


if __name__ == "__main__":
    main()
