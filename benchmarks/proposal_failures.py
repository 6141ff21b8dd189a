"""Which part of `wmgym plan`'s proposal noise makes proposals fail? Executed in the simulator only.

    python benchmarks/proposal_failures.py --starts 4 --n 16 --out proposal_failures.json   # ~5 min, one thread

For each task and start state (SimFold-v0 `reset(seed=s)`, s = seed .. seed+starts-1), n
proposals of the whole 16-step episode are drawn around the scripted demonstrator's sequence
as `wmgym plan` draws them (`sample_gaussian`, clipped), for several (position std, width std)
settings with the same noise draws, and each is executed open loop in a copy of the
simulator. Prints the success rate per task and setting.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import wmgym  # noqa: F401  (registers the environments)
from wmgym.policies.mpc import scripted_nominal
from wmgym.policies.planning import ProposalConfig, sample_gaussian
from wmgym.sim.tasks import TASKS
from wmgym.train.checkpoint import write_text_atomic

SETTINGS = {"position 1 cm, width 1 cm (wmgym plan)": (0.01, 0.01), "position 1 cm, width 0": (0.01, 0.0),
            "position 0, width 1 cm": (0.0, 0.01), "position 0.5 cm, width 0.5 cm": (0.005, 0.005)}


def main() -> None:
    from plan_ranking import simulate  # benchmarks/ is the script's directory

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=4)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--seed", type=int, default=100, help="first start state (outside plan_ranking's 0..7)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rates = {}
    for task in TASKS:
        env = gym.make("SimFold-v0", task=task, horizon=16)
        outcomes = {name: [] for name in SETTINGS}
        for s in range(args.seed, args.seed + args.starts):
            obs, _ = env.reset(seed=s)
            nominal = scripted_nominal(env, obs[None], 16)
            for name, (position_std, width_std) in SETTINGS.items():
                rng = np.random.default_rng([s, 1])  # the same draws for every setting
                candidates = sample_gaussian(nominal, ProposalConfig(position_std=position_std, width_std=width_std).std(), args.n, rng)
                outcomes[name] += [simulate(env, c)[0] for c in candidates]
        rates[task] = {name: float(np.mean(v)) for name, v in outcomes.items()}
    print("| task | " + " | ".join(SETTINGS) + " |")
    print("|---" * (len(SETTINGS) + 1) + "|")
    for task, row in rates.items():
        print(f"| {task} | " + " | ".join(f"{row[name]:.0%}" for name in SETTINGS) + " |")
    if args.out:
        write_text_atomic(Path(args.out), json.dumps({"args": vars(args), "success": rates}, indent=1))


if __name__ == "__main__":
    main()
