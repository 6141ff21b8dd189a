"""The shipped bundle's frames for a fixed seed and actions, bit for bit (issue 37: a redesign of
how the world model is conditioned must not change what it draws).

The golden file `golden/shipped_frames.npz` was written at commit 8b06231 (frames identical to
fc49846's) by `python tests/test_shipped_frames.py --write`, on this project's 2-core CPU machine:
`gym.make_vec("WMFold-v0", num_envs=4, device="cpu")`, `reset(seed=7)`, then `STEPS` actions
from `actions()`, which move both grippers and close them at step 3 (so the grasp prior's draws
are part of it). It holds the observations (STEPS + 1, 4, 64, 64, 3) uint8 and the rewards and
judge verdicts of every step. The denoiser computes in float32 here (the bundle's default,
"auto", is bfloat16 on CPUs that have it, whose frames depend on the CPU's bfloat16 kernels).
"""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import wmgym  # noqa: F401  (registers WMFold-v0)
from wmgym.actions import POSITION_DIMS, WIDTH_DIMS, identity_action

GOLDEN = Path(__file__).parent / "golden" / "shipped_frames.npz"
STEPS, NUM_ENVS = 6, 4


def actions() -> np.ndarray:
    """(STEPS, NUM_ENVS, 20): small random moves; both grippers close from step 3 on."""
    rng = np.random.default_rng(0)
    out = np.tile(identity_action(0.08, 0.08), (STEPS, NUM_ENVS, 1))
    out[..., POSITION_DIMS] = rng.uniform(-0.03, 0.03, (STEPS, NUM_ENVS, len(POSITION_DIMS)))
    out[3:, :, WIDTH_DIMS] = 0.0
    return out


def rollout() -> dict[str, np.ndarray]:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        envs = gym.make_vec("WMFold-v0", num_envs=NUM_ENVS, device="cpu", precision="fp32")
        observations, _ = envs.reset(seed=7)
        frames, rewards, success = [observations], [], []
        for action in actions():
            observations, reward, terminated, _, _ = envs.step(action)
            frames.append(observations)
            rewards.append(reward)
            success.append(terminated)
    finally:
        torch.set_num_threads(threads)
    return {"frames": np.stack(frames), "rewards": np.stack(rewards), "success": np.stack(success)}


def test_shipped_bundle_draws_the_same_frames_for_a_fixed_seed_and_actions():
    golden, now = np.load(GOLDEN), rollout()
    differ = now["frames"] != golden["frames"]
    assert not differ.any(), (f"{int(differ.sum())} pixel values differ (max {int(np.abs(now['frames'].astype(int) - golden['frames']).max())}), "
                              f"first at step {int(np.argwhere(differ)[0][0])}")
    np.testing.assert_array_equal(now["success"], golden["success"])
    np.testing.assert_allclose(now["rewards"], golden["rewards"], rtol=0, atol=1e-6)


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    GOLDEN.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN, **rollout())
    print(f"wrote {GOLDEN}")
