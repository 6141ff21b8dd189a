"""Does a held-conditioned world model use its grasp state? Imagine the same episodes with their own and with the opposite grasp state.

    python benchmarks/held_sensitivity.py --world-model runs/wm_held/checkpoints/step_0007000/model \
        --data data/prop05_held.zarr data/prop10_held.zarr --per-store 48 --out runs/held_sensitivity.json   # ~2 min

For `--per-store` episodes of each store's val split (the split `train-wm` holds out, split
seed 0) whose grippers close at least once, the model imagines the whole episode from its first
frame (its actions, grippers views and poses) twice with the same sampler noise:
  - own: with the simulator's grasp state of each frame (`held_particles > 0`);
  - flipped: every closed run of each hand given the opposite (a missed grasp held, a held
    one missed); open frames stay 0.
Reported: the mean absolute change of the last imagined frame (0-255), the PSNR of each to the
simulator's last frame, the share of episodes whose own-state frame is the closer one, and
the AUC (over all episodes) of "the own-state frame is closer" (0.5: the state is ignored).
With the bundle's calibrated LPIPS: its distance to the goal of both last frames, split by
whether the episode's grasps held, so the table says whether "held" imagines nearer the goal.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from wmgym.conditioning import is_held_conditioned, model_conditions
from wmgym.data.dataset import split_episodes
from wmgym.data.store import EpisodeStore
from wmgym.envs.bundle import Bundle
from wmgym.model.world_model import WorldModel
from wmgym.rewards.lpips_head import LPIPSHead
from wmgym.sim.gripper import GRASP_WIDTH
from wmgym.sim.gripper_track import pose_vectors
from wmgym.train.checkpoint import write_text_atomic
from pose_sensitivity import psnr  # beside this file


def load(path: str, count: int, seed: int) -> list[dict]:
    """Up to `count` val episodes of `path` whose grippers close, chosen at random."""
    store = EpisodeStore.open(path, mode="r")
    if not store.has_held_particles:
        raise ValueError(f"{path} does not record the grasp state; regenerate it with the current `wmgym generate`")
    chosen = []
    for i in np.random.default_rng(seed).permutation(split_episodes(store.num_episodes, "val")):
        ep = store.read_episode(int(i))
        closed = ep["gripper_width"] < GRASP_WIDTH
        if not closed.any():
            continue
        own = (ep["held_particles"] > 0).astype(np.float32)
        chosen.append({"store": path, "index": int(i), "task": ep["task"], "success": bool(ep["success"]),
                       "held": bool(own.max(0)[closed.any(0)].all()), "frames": ep["frames"], "actions": ep["actions"],
                       "grippers": ep["grippers"], "goal": ep["goal_rgb"],
                       "poses": pose_vectors(ep["eef_pos"], ep["gripper_width"]), "own": own,
                       "flipped": np.where(closed, 1.0 - own, 0.0).astype(np.float32)})
        if len(chosen) == count:
            break
    return chosen


def last_frames(model: WorldModel, episodes: list[dict], key: str, seed: int, batch: int) -> np.ndarray:
    """uint8 (n, H, W, 3): each episode's last imagined frame with the grasp state `key`."""
    out = []
    for lo in range(0, len(episodes), batch):
        chunk = episodes[lo:lo + batch]
        stack = lambda name: np.stack([e[name] for e in chunk])
        extra = model_conditions(model, stack("grippers"), stack("poses"), held=stack(key))
        with torch.no_grad():
            frames = model.rollout(stack("frames")[:, :1], stack("actions"), generator=torch.Generator().manual_seed(seed + lo),
                                   conditions=extra)
        out.append(frames[:, -1].cpu().numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-model", required=True, help="a held-conditioned world-model directory")
    parser.add_argument("--data", nargs="+", required=True, help="stores that record the grasp state")
    parser.add_argument("--per-store", type=int, default=48)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lpips-calibrated", default=None, help="default: the shipped bundle's lpips/")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = WorldModel.from_pretrained(args.world_model, device="cpu").eval()
    if not is_held_conditioned(model):
        parser.error(f"{args.world_model} is not held-conditioned (train-wm --held-conditioning)")
    episodes = [e for path in args.data for e in load(path, args.per_store, args.seed)]
    own, flipped = (last_frames(model, episodes, key, args.seed, args.batch) for key in ("own", "flipped"))
    truth = np.stack([e["frames"][-1] for e in episodes])
    own_psnr, flipped_psnr = psnr(own, truth), psnr(flipped, truth)
    held = np.array([e["held"] for e in episodes])
    result = {"args": vars(args), "episodes": len(episodes), "held_share": float(held.mean()),
              "mean_abs_change": float(np.abs(own.astype(np.float64) - flipped).mean()),
              "psnr_own": float(own_psnr.mean()), "psnr_flipped": float(flipped_psnr.mean()),
              "own_closer_share": float((own_psnr > flipped_psnr).mean())}
    calibrated_dir = args.lpips_calibrated or Bundle.load(None).lpips_dir
    if calibrated_dir is not None:
        head = LPIPSHead(calibrated=calibrated_dir, device="cpu")
        goals = np.stack([e["goal"] for e in episodes])
        distance = lambda frames: np.array([-float(head.score(torch.from_numpy(f)[None, None], g))
                                            for f, g in zip(frames, goals)])
        d_own, d_flipped = distance(own), distance(flipped)
        # held episodes: own = held, flipped = missed; missed episodes the other way round
        d_held = np.where(held, d_own, d_flipped)
        d_missed = np.where(held, d_flipped, d_own)
        result.update({"goal_distance_held_state": float(d_held.mean()), "goal_distance_missed_state": float(d_missed.mean()),
                       "held_state_nearer_goal_share": float((d_held < d_missed).mean())})
    for name, value in result.items():
        if name != "args":
            print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    if args.out:
        write_text_atomic(Path(args.out), json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
