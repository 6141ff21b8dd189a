"""How fast WMFold-v0 imagines: env steps per second of a batched vector env.

Used by `wmgym eval` (its `env_steps_per_s` and quality-speed curve).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from wmgym.actions import ACTION_HIGH


def timed(function: Callable[[], object], repeats: int) -> float:
    """Best wall time (seconds) of `repeats` calls of `function`, after one warm-up call."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    function()  # warm-up: allocations, kernel selection, lazy loading
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_flops_per_second(device: str = "cpu", size: int = 1024, repeats: int = 10) -> float:
    """FLOP/s of a dense float32 (size x size) matmul on `device`, after a warm-up: the yardstick
    the benchmarks measure a denoiser's achieved FLOP/s against, in the same process."""
    import torch

    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    a @ b
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def random_actions(steps: int, num_envs: int, seed: int = 0) -> np.ndarray:
    """Random in-bound actions float32 (steps, num_envs, 20): half the position and rotation
    range, both jaws half open."""
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-0.5, 0.5, size=(steps, num_envs, 20)).astype(np.float32) * ACTION_HIGH
    actions[..., 9] = actions[..., 19] = 0.05
    return actions


def vector_env_episode(num_envs: int, steps: int, checkpoint=None, device: str = "auto", seed: int = 0, **env_kwargs):
    """A `gym.make_vec("WMFold-v0")` and a function that resets it and steps it `steps` times
    with `random_actions`; returns (function, envs)."""
    import gymnasium as gym  # WMFold-v0 is registered: importing this module ran wmgym/__init__.py

    envs = gym.make_vec("WMFold-v0", num_envs=num_envs, checkpoint=checkpoint, device=device,
                        max_episode_steps=steps, **env_kwargs)
    actions = random_actions(steps, num_envs, seed)

    def episode():
        envs.reset(seed=seed)
        for t in range(steps):
            envs.step(actions[t])

    return episode, envs


def env_steps_per_s(num_envs: int = 16, steps: int = 16, repeats: int = 2, checkpoint=None, device: str = "auto",
                    **env_kwargs) -> float:
    """Imagined env steps per second (num_envs * steps / best episode time) of a WMFold-v0
    vector env stepping random actions; `env_kwargs` go to `gym.make_vec` (e.g. num_steps)."""
    episode, envs = vector_env_episode(num_envs, steps, checkpoint, device, **env_kwargs)
    try:
        return num_envs * steps / timed(episode, repeats)
    finally:
        envs.close()
