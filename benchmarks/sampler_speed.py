"""Sampler speed: time per generated frame vs horizon, KV cache on and off, in one run.

    python benchmarks/sampler_speed.py --json sampler.json            # default model size, ~5 min on 2 cores
    python benchmarks/sampler_speed.py --horizons 1 4 --repeats 1     # quick check
    python benchmarks/sampler_speed.py --grippers                     # conditioned on the grippers view

Reports, for a randomly initialised model of the default size (speed does not depend on
the weights): seconds per generated frame at each horizon with the cache on and off, the
cached/recompute speed-up, whether cached time per frame stays flat (within 1.5x) from
horizon 4 to 32 with the sliding window, the denoiser's achieved FLOP/s during cached
generation as a fraction of this machine's dense fp32 matmul FLOP/s measured in the same
run, and the KV-cache memory at horizons 16 and 64. With --grippers the model is conditioned on
the grippers view, and each rollout gets realistic views (a simulator start state's grippers
under random in-bound actions), rendered before the timing.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from wmgym.eval.speed import matmul_flops_per_second
from wmgym.model.kv_cache import KVCache
from wmgym.model.world_model import SamplerDefaults, WorldModel, WorldModelConfig


def grippers_views(model, horizon: int):
    """None for an unconditioned model; else uint8 (1, horizon + 1, 1, H, W, 3): a simulator start
    state's grippers view under random in-bound actions."""
    if not model.config.condition_views:
        return None
    from wmgym.eval.speed import random_actions
    from wmgym.sim.episode import EpisodeSpec, start_gripper_state
    from wmgym.sim.gripper_track import gripper_views
    from wmgym.sim.world import WorldConfig

    h, w = model.config.height, model.config.width
    state = start_gripper_state(EpisodeSpec("fold_half", seed=0, horizon=1, height=h, width=w))
    return gripper_views([state], random_actions(horizon, 1).transpose(1, 0, 2), WorldConfig(height=h, width=w))[:, :, None]


def time_rollout(model, frames, actions, use_cache: bool, repeats: int) -> float:
    conditions = grippers_views(model, actions.shape[1])  # rendered outside the timing
    best = float("inf")
    for r in range(repeats):
        start = time.perf_counter()
        model.rollout(frames, actions, generator=torch.Generator().manual_seed(r), use_cache=use_cache, conditions=conditions)
        best = min(best, time.perf_counter() - start)
    return best / actions.shape[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--horizons", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--num-steps", type=int, default=8, help="denoising steps per frame")
    parser.add_argument("--window", type=int, default=16, help="KV-cache window in frames")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many rollouts")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--grippers", action="store_true", help="condition the model on the grippers view")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = WorldModelConfig(sampler=asdict(SamplerDefaults(num_steps=args.num_steps, window_frames=args.window)))
    model = WorldModel(config, device="cpu").eval()
    if args.grippers:
        from wmgym.train.wm_build import with_condition_views

        model = with_condition_views(model, ("grippers",)).eval()
    dcfg = model.denoiser.config
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(1, 1, config.height, config.width, 3), dtype=np.uint8)
    rows = []
    for horizon in args.horizons:
        actions = rng.normal(size=(1, horizon, 20)).astype(np.float32) * 0.02
        cached = time_rollout(model, frames, actions, True, args.repeats)
        recompute = time_rollout(model, frames, actions, False, args.repeats)
        rows.append({"horizon": horizon, "cached_s_per_frame": cached, "recompute_s_per_frame": recompute, "speedup": recompute / cached})
        print(f"horizon {horizon:3d}: cached {cached * 1e3:8.1f} ms/frame, recompute {recompute * 1e3:8.1f} ms/frame, x{recompute / cached:.1f}")
    # Achieved FLOP/s of the denoiser while generating with the cache (16 frames).
    actions = rng.normal(size=(1, 16, 20)).astype(np.float32) * 0.02
    with FlopCounterMode(display=False) as counter:
        model.rollout(frames, actions, generator=torch.Generator().manual_seed(0), conditions=grippers_views(model, 16))
    flops = counter.get_total_flops()
    seconds = time_rollout(model, frames, actions, True, args.repeats) * 16
    peak = matmul_flops_per_second()
    # KV-cache memory: fill a cache to the horizon through the model's own write pass.
    memory = {}
    for horizon in (16, 64):
        cache = KVCache(dcfg.depth, dcfg.tokens_per_frame, args.window, keep_first_frame=True)
        z = torch.zeros(1, 1, dcfg.latent_channels, dcfg.latent_height, dcfg.latent_width)
        spatial = dcfg.condition_channels - dcfg.vector_dim  # the views' latents; the rest is the per-frame vector
        maps = torch.zeros(1, 1, spatial, dcfg.latent_height, dcfg.latent_width) if spatial else None
        vectors = torch.zeros(1, 1, dcfg.vector_dim) if dcfg.vector_dim else None
        with torch.no_grad():
            for _ in range(horizon):
                model.denoiser(z, torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, dcfg.action_dim), maps, vectors, cache=cache,
                              write_cache=True)
        memory[horizon] = cache.num_bytes()
    by_h = {r["horizon"]: r for r in rows}
    flat = [by_h[h]["cached_s_per_frame"] for h in by_h if 4 <= h <= 32]
    result = {
        "benchmark": "sampler_speed",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "threads": torch.get_num_threads()},
        "model": {"parameters": sum(p.numel() for p in model.denoiser.parameters()), "denoiser": asdict(dcfg), "num_steps": args.num_steps, "window": args.window,
                  "condition_views": list(model.config.condition_views)},
        "rows": rows,
        "speedup_at_16": by_h[16]["speedup"] if 16 in by_h else None,
        "cached_flatness_4_to_32": max(flat) / min(flat) if len(flat) > 1 else None,
        "denoiser_flops_per_second": flops / seconds,
        "dense_matmul_flops_per_second": peak,
        "fraction_of_matmul_peak": flops / seconds / peak,
        "kv_cache_bytes": memory,
    }
    print(f"speed-up at horizon 16: x{result['speedup_at_16']}; cached max/min per-frame time over horizons 4-32: {result['cached_flatness_4_to_32']}")
    print(f"denoiser {flops / seconds / 1e9:.2f} GFLOP/s = {result['fraction_of_matmul_peak']:.1%} of dense matmul {peak / 1e9:.1f} GFLOP/s")
    print(f"KV cache: {memory[16] / 2**20:.2f} MiB at horizon 16, {memory[64] / 2**20:.2f} MiB at 64 (window {args.window})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
