"""`WMFoldVecEnv`: WMFold-v0's batched generator as a stable-baselines3 `VecEnv`.

stable-baselines3 cannot consume a Gymnasium vector env, and wrapping N single envs in its
`DummyVecEnv` would run N generators one after another. This adapter drives the same
`ImaginedEpisodes` core as `WorldModelVectorEnv` (one batched, KV-cached denoiser pass per
sampling step for all envs) with SB3's conventions: same-step autoreset, the last frame of a
finished episode in `info["terminal_observation"]`, `info["TimeLimit.truncated"]`, NumPy
outputs, and a list of per-env info dicts.

Actions: SB3's policies assume a Box normalised to [-1, 1] (its env checker warns otherwise),
so by default the adapter's action space is `Box(-1, 1, (20,))`, centred on "hold still"
(`from_normalized_actions`): per hand, position deltas scale linearly onto +-0.12 m, the 6-D
rotation is the identity plus 0.4 x the action, clipped to the bounds (a new policy's zero mean is a valid rotation,
and no action in the box is a degenerate one), the width maps linearly onto 0..0.09 m.
`normalize_actions=False` exposes the raw bounds instead.

Binary gripper (`binary_gripper=True`, off by default): each hand's width command is thresholded
into open (`OPEN_WIDTH`, 0.08 m, the demonstrator's) or closed (0 m) at the middle of its range
(normalised width > 0, i.e. > 0.045 m: open), as robot-learning policies command parallel grippers.
A regressed width otherwise averages the bimodal demonstrations (0 or 0.08 m) to ~0.04 m, above
the simulator's grasp threshold (`wmgym.sim.gripper.GRASP_WIDTH`, 0.02 m), and never grasps.

Frame stacking: wrap the adapter in SB3's `VecFrameStack(venv, n_stack, channels_order="last")`;
`wmgym.policies.base.SB3Policy(n_stack=...)` and `wmgym.train.policy.load_demonstrations(n_stack=...)`
stack the same way (oldest frame first on the channel axis, zero frames before an episode's start).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from wmgym.actions import ACTION_DIM, ACTION_HIGH, ACTION_LOW, MAX_WIDTH, WIDTH_DIMS
from wmgym.envs.imagined import ImaginedEpisodes
from wmgym.sim.world import OPEN_WIDTH  # the binary gripper's open command: the demonstrator's (closed is 0)


ROTATION_SCALE = 0.4
"""Normalised rotation units: 6-D rotation = identity + ROTATION_SCALE * action. With 0.4 the first
column's first entry stays >= 0.6 and the second column's second entry >= 0.6 while the others stay
within +-0.4, so the two columns are never zero or parallel (Gram-Schmidt always defines a rotation)."""
_IS_ROTATION = np.tile((np.arange(10) >= 3) & (np.arange(10) < 9), 2)  # [3:9] and [13:19]
_IDENTITY = np.tile(np.array([0, 0, 0, 1, 0, 0, 0, 1, 0, 0], np.float32), 2)


def from_normalized_actions(actions: np.ndarray, binary_gripper: bool = False) -> np.ndarray:
    """Policy actions in [-1, 1] (..., 20) (clipped to it first) -> env actions: positions and
    widths linearly onto their bounds, rotations as identity + ROTATION_SCALE * action (the
    diagonal entries clipped at 1, the bound). With `binary_gripper`, each width is
    `OPEN_WIDTH` where its normalised value is > 0 and 0 (closed) elsewhere."""
    actions = np.clip(np.asarray(actions, dtype=np.float32), -1.0, 1.0)
    linear = ACTION_LOW + (actions + 1.0) * 0.5 * (ACTION_HIGH - ACTION_LOW)
    env = np.clip(np.where(_IS_ROTATION, _IDENTITY + ROTATION_SCALE * actions, linear), ACTION_LOW, ACTION_HIGH).astype(np.float32)
    if binary_gripper:
        widths = list(WIDTH_DIMS)
        env[..., widths] = np.where(actions[..., widths] > 0.0, OPEN_WIDTH, 0.0)
    return env


def binarize_widths(actions: np.ndarray) -> np.ndarray:
    """Env actions (..., 20) -> the same with each width snapped to `OPEN_WIDTH` (> MAX_WIDTH / 2) or 0,
    the binary gripper in env units (the threshold is normalised width 0)."""
    actions = np.array(actions, dtype=np.float32)
    widths = list(WIDTH_DIMS)
    actions[..., widths] = np.where(actions[..., widths] > 0.5 * MAX_WIDTH, OPEN_WIDTH, 0.0)
    return actions


def to_normalized_actions(actions: np.ndarray) -> np.ndarray:
    """Env actions (..., 20) -> [-1, 1] units, the inverse of `from_normalized_actions` (clipped to [-1, 1])."""
    actions = np.asarray(actions, dtype=np.float32)
    linear = 2.0 * (actions - ACTION_LOW) / (ACTION_HIGH - ACTION_LOW) - 1.0
    return np.clip(np.where(_IS_ROTATION, (actions - _IDENTITY) / ROTATION_SCALE, linear), -1.0, 1.0).astype(np.float32)


class WMFoldVecEnv(VecEnv):
    """N imagined WMFold-v0 envs as one SB3 VecEnv.

    Args:
        num_envs: N.
        normalize_actions: expose Box(-1, 1) and rescale (default), or the raw action bounds.
        binary_gripper: threshold each width command into open (`OPEN_WIDTH`) or closed (0), at
            normalised width 0 (raw: MAX_WIDTH / 2); off by default.
        **kwargs: `WorldModelVectorEnv`'s arguments (checkpoint, task, reward, num_steps,
            guidance_scale, max_episode_steps (default 16), resolution, device, ...).
    """

    def __init__(self, num_envs: int = 8, normalize_actions: bool = True, binary_gripper: bool = False, **kwargs):
        kwargs.setdefault("max_episode_steps", 16)
        self.core = ImaginedEpisodes(num_envs, **kwargs)
        self.normalize_actions, self.binary_gripper = normalize_actions, binary_gripper
        observation_space = spaces.Box(0, 255, (self.core.obs_height, self.core.obs_width, 3), np.uint8)
        if normalize_actions:
            action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        else:
            action_space = spaces.Box(ACTION_LOW, ACTION_HIGH, (ACTION_DIM,), np.float32)
        self.render_mode = "rgb_array"  # get_images() returns the current frames
        super().__init__(num_envs, observation_space, action_space)
        self._rng = np.random.default_rng()
        self._actions: np.ndarray | None = None
        self._observations: np.ndarray | None = None

    def to_env_actions(self, actions: np.ndarray) -> np.ndarray:
        """(N, 20) policy actions -> the env's 20-D layout (rescaled from [-1, 1] when normalising; clipped to it;
        widths made binary with `binary_gripper`)."""
        actions = np.asarray(actions, dtype=np.float32)
        if self.normalize_actions:
            return from_normalized_actions(actions, self.binary_gripper)
        return binarize_widths(actions) if self.binary_gripper else actions

    def reset(self):
        seed, options = self._seeds[0], self._options[0]
        if seed is not None:  # SB3 hands out seed + i per env; the first seeds the batch
            self._rng = np.random.default_rng(seed)
            self.core.generator.manual_seed(int(self._rng.integers(2**62)))
        self._observations = self.core.reset_rows(range(self.num_envs), self._rng, options or None).cpu().numpy()
        self.reset_infos = [{"task": task} for task in self.core.tasks]
        self._reset_seeds()
        self._reset_options()
        return self._observations.copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = self.to_env_actions(actions)

    def step_wait(self):
        if self._observations is None:
            raise RuntimeError("call reset() before step()")
        observations, terms, success, truncated = self.core.step(self._actions)
        observations = observations.cpu().numpy()
        terms = {name: value.float().cpu().numpy() for name, value in terms.items()}
        rewards = np.sum(list(terms.values()), axis=0).astype(np.float32) if terms else np.zeros(self.num_envs, np.float32)
        dones = success | truncated
        trust = self.core.trust.trust.cpu().numpy()
        infos: list[dict[str, Any]] = [self.core.with_trust(
            {"success": bool(success[i]), "task": self.core.tasks[i], "reward_terms": {k: float(v[i]) for k, v in terms.items()},
             "TimeLimit.truncated": bool(truncated[i] and not success[i])}, trust[i]) for i in range(self.num_envs)]
        rows = np.flatnonzero(dones)
        if rows.size:  # same-step autoreset: report the last frame, return the new start
            for i in rows:
                infos[i]["terminal_observation"] = observations[i].copy()
            observations[rows] = self.core.reset_rows(rows, self._rng).cpu().numpy()
        self._observations = observations
        return observations.copy(), rewards, dones, infos

    def close(self) -> None:
        self._observations = None

    def get_images(self):
        return [] if self._observations is None else list(self._observations)

    # SB3's attribute plumbing: all envs share one core, so attributes are the adapter's own.
    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        return [getattr(self, method_name)(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
