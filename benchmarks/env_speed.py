"""Imagined env steps per second of WMFold-v0 with 1, 4, 16 and 64 envs, and the env layer's overhead.

    python benchmarks/env_speed.py [--checkpoint DIR] [--envs 1 4 16 64] [--steps 16] [--threads 2]

In one run, for each batch size: (a) `gym.make_vec("WMFold-v0", num_envs=n)` at the bundle's
default settings (default reward and success judge) stepping random in-bound actions, (b) the
same with reward="none" and no judge, and (c) the bare `WorldModel.rollout` of the same batch
and horizon (for a world model conditioned on the grippers view, with the views of the bank's
first start driven by the same actions, rendered before the timing: rendering them is part of
the env layer's cost). Reports env steps/s (n * steps / seconds), the speed-up per env relative to one
env, and the env layer's overhead over the bare rollout, (b) / (c) - 1 (the generator alone)
and (a) / (c) - 1 (with the reward heads). Each figure is the best of `--repeats` runs after a
warm-up. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

from wmgym.eval.speed import random_actions, timed, vector_env_episode


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for n in args.envs:
        actions = random_actions(args.steps, n)

        def run_env(**kwargs):
            return vector_env_episode(n, args.steps, args.checkpoint, args.device, **kwargs)

        default_episode, envs = run_env()
        bare_episode, _ = run_env(reward="none", use_success_judge=False)
        model = envs.core.model
        start = torch.from_numpy(np.stack([envs.core.bundle.start_frames[0]] * n))[:, None]
        generator = torch.Generator(device=model.device)
        conditions = None
        if tuple(model.config.condition_views) == ("grippers",):  # rendered outside the timing: env-layer cost
            from wmgym.sim.gripper_track import gripper_views
            from wmgym.sim.world import WorldConfig

            conditions = gripper_views([envs.core.bundle.start_grippers[0]] * n, actions.transpose(1, 0, 2),
                                       WorldConfig(height=model.config.height, width=model.config.width))[:, :, None]

        def rollout():
            model.rollout(start, actions.transpose(1, 0, 2), generator=generator.manual_seed(0), conditions=conditions)

        t_default, t_bare_env, t_rollout = (timed(f, args.repeats) for f in (default_episode, bare_episode, rollout))
        rows.append({"envs": n, "steps_per_s": n * args.steps / t_default, "steps_per_s_no_reward": n * args.steps / t_bare_env,
                     "rollout_steps_per_s": n * args.steps / t_rollout, "overhead_generator": t_bare_env / t_rollout - 1,
                     "overhead_with_rewards": t_default / t_rollout - 1})
        print(f"{n} envs done", flush=True)
    one = rows[0]["steps_per_s"]
    print(f"\nmachine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, device {args.device}; "
          f"sampler steps {model.sampler.num_steps}, window {model.sampler.window_frames}\n")
    print("| envs | env steps/s (default) | throughput vs 1 env | env steps/s (no reward) | bare rollout steps/s "
          "| env overhead (generator) | env overhead (with rewards) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['envs']} | {r['steps_per_s']:.1f} | {r['steps_per_s'] / one:.1f}x | {r['steps_per_s_no_reward']:.1f} | "
              f"{r['rollout_steps_per_s']:.1f} | {100 * r['overhead_generator']:+.1f}% | {100 * r['overhead_with_rewards']:+.1f}% |")
    return rows


if __name__ == "__main__":
    main()
