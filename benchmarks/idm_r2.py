"""Inverse dynamics R² per action component on held-out simulator episodes and on world-model frames.

    python benchmarks/idm_r2.py --idm /work/runs/idm/model --episodes 300 --wm-episodes 48 \
        --world-model wmgym/assets/wmfold/world_model --out /work/runs/idm/r2.json

Held-out episodes are `plan_episodes(n, seed, TASKS, 64, 64, 16)` with master seed `--seed`
(default 2; the training store used master seed 1, so no start state is shared): the same mix
of demonstrations, perturbed demonstrations and random behaviour as the training data
(also scored per kind).
(a) simulator: the IDM on the simulator's frame pairs; (b) world model: the first
`--wm-episodes` of them rolled out by the world model from their first frame with their
actions, the IDM on the generated pairs, beside (a) on the same episodes. Components whose
true std is below 0.01 (the rotation-6D entries of a yaw-only rotation: R00, R11 ~ cos, R20,
R21 = 0) have ill-defined R²; they are listed and left out of the groups. Prints a Markdown
table and writes every figure to `--out` as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from wmgym.data.generate import plan_episodes
from wmgym.model.world_model import WorldModel
from wmgym.policies.idm import InverseDynamicsModel
from wmgym.policies.idm_metrics import COMPONENT_NAMES, idm_r2, idm_r2_on_world_model, simulate_episodes
from wmgym.sim.episode import start_gripper_state
from wmgym.sim.tasks import TASKS
from wmgym.train.checkpoint import write_text_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idm", required=True)
    parser.add_argument("--world-model", default=None)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--wm-episodes", type=int, default=48)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--num-steps", type=int, default=None, help="world-model sampler steps (default: its own)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    parser.add_argument("--table-from", default=None, help="print the table of a JSON written by --out, measure nothing")
    args = parser.parse_args()
    if args.table_from:
        print(table(json.loads(Path(args.table_from).read_text())))
        return
    if args.seed == 1:
        raise SystemExit("seed 1 is the training data's master seed; held-out episodes need another")
    torch.set_num_threads(args.threads)
    model = InverseDynamicsModel.from_pretrained(args.idm, device="cpu")
    tick = time.perf_counter()
    specs = plan_episodes(args.episodes, args.seed, TASKS, model.config.height, model.config.width, args.horizon)
    frames, actions = simulate_episodes(specs, show_progress=True)
    results = {"machine": f"{platform.processor() or platform.machine()}, {args.threads} thread(s)",
               "held_out": f"plan_episodes({args.episodes}, seed={args.seed}, TASKS, horizon={args.horizon})",
               "simulator": idm_r2(model, frames, actions)}
    kinds = sorted({spec.kind for spec in specs})
    results["simulator_by_kind"] = {kind: idm_r2(model, frames[mask], actions[mask]) for kind in kinds
                                    if (mask := np.array([spec.kind == kind for spec in specs])).sum() >= 2}
    print(f"simulated and scored {args.episodes} episodes in {time.perf_counter() - tick:.0f} s")
    if args.world_model:
        tick = time.perf_counter()
        world_model = WorldModel.from_pretrained(args.world_model, device="cpu")
        n = min(args.wm_episodes, args.episodes)
        results["world_model_episodes"] = idm_r2_on_world_model(
            model, world_model, episodes=(frames[:n], actions[:n]), num_steps=args.num_steps, show_progress=True,
            grippers=[start_gripper_state(spec) for spec in specs[:n]])  # used by a grippers-conditioned model only
        print(f"rolled out and scored {n} episodes in {time.perf_counter() - tick:.0f} s")
    if args.out:
        write_text_atomic(Path(args.out), json.dumps(results, indent=2))
    print(table(results))


def table(results: dict) -> str:
    columns = [("simulator", results["simulator"])]
    if "world_model_episodes" in results:
        wm = results["world_model_episodes"]
        columns += [(f"simulator (same {wm['num_episodes']})", wm["simulator"]), ("world model", wm["world_model"])]
    columns += [(f"sim: {kind} only", figures) for kind, figures in results.get("simulator_by_kind", {}).items()]

    def cell(figures: dict, name: str) -> str:
        value = figures["components"][name]
        text = "nan" if math.isnan(value) else f"{value:.3f}" if abs(value) < 1e3 else f"{value:.1e}"
        return text + (" †" if name in figures["ill_defined"] else "")

    lines = ["| | " + " | ".join(name for name, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for group in results["simulator"]["groups"]:
        lines.append(f"| **{group}** | " + " | ".join("nan" if math.isnan(c["groups"][group]) else f"{c['groups'][group]:.3f}"
                                                      for _, c in columns) + " |")
    for name in COMPONENT_NAMES:
        lines.append(f"| {name} | " + " | ".join(cell(c, name) for _, c in columns) + " |")
    lines.append("\n† ill-defined R²: the true values' std is below 0.01 in that column (left out of the groups); "
                 "nan: no variance at all, or no well-defined component in the group.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
