"""Policies that act the same way in SimFold-v0 and in WMFold-v0, for policy evaluation.

Dimension legend: b episodes acted on together, T steps, H x W frames.

An evaluation episode begins at a `Start` (task, seed): the simulator state that
`EpisodeSpec(task, seed)` draws, whose first frame the world model also starts from. A
`Policy` is reset with the batch's starts and first frames, then maps a batch of current
frames to a batch of actions, one step at a time; it sees nothing else of the world it acts
in, so the same policy object runs in either. Open-loop policies (`SequencePolicy`) plan the
whole action sequence at reset: the scripted demonstrator (privileged: it plans from the
simulator's start state, as a teleoperator sees the real scene) and the data's random
behaviour, so both worlds receive exactly the same actions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from wmgym.actions import ACTION_DIM, ACTION_LAYOUT


@dataclass(frozen=True)
class Start:
    """Where an evaluation episode begins: the state `EpisodeSpec(task, seed)` draws."""

    task: str
    seed: int


class Policy(ABC):
    """Acts on b episodes at once from frames alone.

    Attributes:
        name: a short label for reports.
    """

    name: str = "policy"

    @abstractmethod
    def reset(self, starts: list[Start], frames: np.ndarray) -> None:
        """Begin b episodes: `starts` (b) and their first frames uint8 (b, H, W, 3)."""

    @abstractmethod
    def act(self, observations: np.ndarray, step: int) -> np.ndarray:
        """Current frames uint8 (b, H, W, 3) at step `step` (0-based) -> actions float32 (b, 20)."""


class SequencePolicy(Policy):
    """An open-loop policy: `plan` makes every episode's action sequence at reset."""

    def __init__(self, horizon: int = 16):
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.horizon = horizon
        self.actions: np.ndarray | None = None  # (b, T, 20)

    @abstractmethod
    def plan(self, starts: list[Start], frames: np.ndarray) -> np.ndarray:
        """-> float32 (b, T, 20) action sequences."""

    def reset(self, starts: list[Start], frames: np.ndarray) -> None:
        actions = np.asarray(self.plan(starts, frames), dtype=np.float32)
        if actions.shape != (len(starts), self.horizon, ACTION_DIM):
            raise ValueError(f"plan() must return (b={len(starts)}, T={self.horizon}, {ACTION_DIM}), got {actions.shape}\n{ACTION_LAYOUT}")
        self.actions = actions

    def act(self, observations: np.ndarray, step: int) -> np.ndarray:
        if self.actions is None:
            raise RuntimeError("call reset() before act()")
        if len(observations) != len(self.actions) or not 0 <= step < self.horizon:
            raise ValueError(f"act() takes the {len(self.actions)} episodes' frames and a step in [0, {self.horizon}), "
                             f"got {len(observations)} frames at step {step}")
        return self.actions[:, step]


class SimulatorBehaviourPolicy(SequencePolicy):
    """The behaviours `wmgym generate` records, replayed open loop: "demo" (the scripted
    demonstrator with key-pose noise `noise`, metres), "perturbed" (with random jolts),
    "random" (the data's random behaviour) or "replay" (the demonstrator's actions for another
    start state). Plans with the simulator's state at the start."""

    def __init__(self, kind: str = "demo", noise: float = 0.0, horizon: int = 16, name: str | None = None):
        from wmgym.sim.episode import EPISODE_KINDS

        super().__init__(horizon)
        if kind not in EPISODE_KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {EPISODE_KINDS}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.kind, self.noise = kind, noise
        self.name = name or (f"scripted noise {noise:g}" if kind == "demo" else kind)

    def plan(self, starts: list[Start], frames: np.ndarray) -> np.ndarray:
        from wmgym.sim.episode import EpisodeSpec, run_episode

        h, w = frames.shape[1:3]
        return np.stack([run_episode(EpisodeSpec(s.task, s.seed, self.kind, self.noise, h, w, self.horizon)).actions
                         for s in starts])


class ActionSequencesPolicy(SequencePolicy):
    """Given action sequences float32 (b, T, 20), e.g. a planner's output; the batch must match."""

    def __init__(self, actions: np.ndarray, name: str = "given actions"):
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 3 or actions.shape[2] != ACTION_DIM:
            raise ValueError(f"actions must be (b, T, {ACTION_DIM}), got {actions.shape}\n{ACTION_LAYOUT}")
        super().__init__(actions.shape[1])
        self.given, self.name = actions, name

    def plan(self, starts: list[Start], frames: np.ndarray) -> np.ndarray:
        if len(starts) != len(self.given):
            raise ValueError(f"{len(self.given)} action sequences for {len(starts)} episodes")
        return self.given


class SB3Policy(Policy):
    """A stable-baselines3 model acting on frames (closed loop; deterministic by default).

    `to_env_actions` maps the model's actions to env actions, e.g. `WMFoldVecEnv.to_env_actions`
    for a model trained on the adapter's normalised action space. `n_stack` > 1: the model acts
    on the last `n_stack` frames stacked on the channel axis exactly as SB3's
    `VecFrameStack(venv, n_stack, channels_order="last")` stacks them (its own
    `StackedObservations`: oldest first, zero frames before the episode's first).
    """

    def __init__(self, model, to_env_actions=None, deterministic: bool = True, name: str = "sb3", n_stack: int = 1):
        if n_stack < 1:
            raise ValueError(f"n_stack must be >= 1, got {n_stack}")
        self.model, self.to_env_actions, self.deterministic, self.name = model, to_env_actions, deterministic, name
        self.n_stack, self.stack = n_stack, None

    @classmethod
    def for_adapter(cls, model, binary_gripper: bool = False, deterministic: bool = True, name: str = "sb3") -> "SB3Policy":
        """A model trained on `WMFoldVecEnv`'s normalised actions (frame-stacked or not): its actions go
        through `from_normalized_actions(binary_gripper=...)`, and n_stack is its observation space's
        channels / 3 (channels last, the adapter's, or first, SB3's transposed copy)."""
        from functools import partial

        from wmgym.envs.sb3 import from_normalized_actions

        shape = model.observation_space.shape
        return cls(model, partial(from_normalized_actions, binary_gripper=binary_gripper), deterministic, name,
                   n_stack=max(1, min(shape[0], shape[-1]) // 3))

    def reset(self, starts: list[Start], frames: np.ndarray) -> None:
        self.stack = None  # the first act() (step 0, given the first frames) starts the stacks

    def stacked(self, observations: np.ndarray, step: int) -> np.ndarray:
        """The current frames (b, H, W, C) -> (b, H, W, n_stack * C), pushed onto the episodes' stacks."""
        if self.n_stack == 1:
            return observations
        from gymnasium import spaces
        from stable_baselines3.common.vec_env.stacked_observations import StackedObservations

        observations = np.asarray(observations)
        if step == 0 or self.stack is None or self.stack.stacked_obs.shape[0] != len(observations):
            space = spaces.Box(0, 255, observations.shape[1:], observations.dtype)
            self.stack = StackedObservations(len(observations), self.n_stack, space, channels_order="last")
            return self.stack.reset(observations).copy()
        stacked, _ = self.stack.update(observations, np.zeros(len(observations), dtype=bool), [{} for _ in observations])
        return stacked.copy()

    def act(self, observations: np.ndarray, step: int) -> np.ndarray:
        actions, _ = self.model.predict(self.stacked(observations, step), deterministic=self.deterministic)
        actions = np.asarray(actions, dtype=np.float32)
        return self.to_env_actions(actions) if self.to_env_actions is not None else actions
