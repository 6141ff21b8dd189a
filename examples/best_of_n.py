"""Best-of-N action ranking in imagination with LPIPS to the goal image, executed in the simulator.

    python examples/best_of_n.py --task fold_half --n 16 [--checkpoint DIR] [--lpips-offline | --lpips-calibrated]

N candidate action sequences (the scripted demonstrator's plan plus Gaussian noise) are rolled
out together in one batched `WMFold-v0` vector env from the simulator's start frame; the
candidate whose last imagined frame is closest to the goal image (LPIPS) is executed in
`SimFold-v0`, beside one candidate picked at random. Without the LPIPS trunk weights
(see the README) pass --lpips-calibrated for the bundle's LPIPS trained on the simulator's
fold score, or --lpips-offline for the uncalibrated offline fallback.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch

import wmgym  # noqa: F401
from wmgym.actions import ACTION_HIGH, ACTION_LOW
from wmgym.policies.mpc import make_reward_head
from wmgym.rewards.lpips_head import LPIPSHead


def nominal_plan(task: str, seed: int, horizon: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start frame, goal image, the demonstrator's actions (horizon, 20)) for `seed`."""
    sim = gym.make("SimFold-v0", task=task, resolution=size, horizon=horizon).unwrapped
    frame, _ = sim.reset(seed=seed)
    goal = sim.world.render_goal()
    actions = []
    for _ in range(horizon):
        actions.append(sim.expert_action())
        if any(sim.step(actions[-1])[2:4]):
            break
    actions += [actions[-1]] * (horizon - len(actions))  # hold the last action
    return frame, goal, np.stack(actions)


def execute(task: str, seed: int, actions: np.ndarray, size: int) -> tuple[float, bool]:
    sim = gym.make("SimFold-v0", task=task, resolution=size, horizon=len(actions)).unwrapped
    sim.reset(seed=seed)
    for action in actions:
        _, _, terminated, truncated, info = sim.step(action)
        if terminated or truncated:
            break
    return info["score"], info["success"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fold_half")
    parser.add_argument("--n", type=int, default=16, help="candidates, rolled out as one batch")
    parser.add_argument("--noise", type=float, default=0.02, help="std of the Gaussian added to the plan's positions (m)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--device", default="auto")
    scorer = parser.add_mutually_exclusive_group()
    scorer.add_argument("--lpips-offline", action="store_true", help="use LPIPS's offline fallback trunk (uncalibrated)")
    scorer.add_argument("--lpips-calibrated", action="store_true", help="use the bundle's LPIPS calibrated on the simulator")
    args = parser.parse_args(argv)

    envs = gym.make_vec("WMFold-v0", num_envs=args.n, checkpoint=args.checkpoint, device=args.device, task=args.task,
                        max_episode_steps=args.horizon, use_success_judge=False, reward="none")
    size = envs.single_observation_space.shape[0]
    frame, goal, plan = nominal_plan(args.task, args.seed, args.horizon, size)
    rng = np.random.default_rng(args.seed)
    candidates = np.repeat(plan[None], args.n, axis=0)
    noise = rng.normal(0.0, args.noise, size=candidates.shape)
    noise[..., 3:9] = noise[..., 13:19] = noise[..., 9] = noise[..., 19] = 0  # perturb positions only
    candidates = np.clip(candidates + noise, ACTION_LOW, ACTION_HIGH).astype(np.float32)
    candidates[0] = plan  # the unperturbed plan competes too
    envs.reset(seed=args.seed, options={"frame": frame})
    for t in range(args.horizon):
        observations = envs.step(candidates[:, t])[0]
    if args.lpips_calibrated:
        head = make_reward_head("lpips-calibrated", args.checkpoint, envs.core.device)
    else:
        head = LPIPSHead(allow_offline_fallback=args.lpips_offline, device=envs.core.device)
    distance = head.distance(torch.as_tensor(observations), torch.as_tensor(goal)).cpu().numpy()
    best, random_pick = int(np.argmin(distance)), int(rng.integers(args.n))
    result = {"best": best, "best_lpips": float(distance[best]), "random": random_pick}
    for name, index in (("best", best), ("random", random_pick)):
        score, success = execute(args.task, args.seed, candidates[index], size)
        result[f"{name}_sim_score"], result[f"{name}_sim_success"] = score, success
    print(f"{args.task}, N={args.n}: best-of-N candidate {best} (LPIPS {distance[best]:.3f}) scores {result['best_sim_score']:.2f} "
          f"in SimFold-v0 (success {result['best_sim_success']}); a random candidate scores {result['random_sim_score']:.2f}")
    return result


if __name__ == "__main__":
    main()
