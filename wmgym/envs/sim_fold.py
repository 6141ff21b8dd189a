"""`SimFold-v0`: the reference cloth simulator as a Gymnasium environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from wmgym.actions import ACTION_HIGH, ACTION_LAYOUT, ACTION_LOW, validate_action
from wmgym.sim.demonstrator import DemoParams, ScriptedDemonstrator
from wmgym.sim.gripper_track import GripperState
from wmgym.sim.tasks import TASKS
from wmgym.sim.world import FoldWorld, WorldConfig


def _resolution(resolution) -> tuple[int, int]:
    if isinstance(resolution, (int, np.integer)) and not isinstance(resolution, bool):
        return int(resolution), int(resolution)
    try:
        height, width = resolution
        return int(height), int(width)
    except (TypeError, ValueError):
        raise ValueError(f"resolution must be an int or a (height, width) pair, got {resolution!r}") from None


@dataclass(frozen=True)
class StartState:
    """A `SimFold-v0` state a `WMFold-v0` episode can start from (`SimFoldEnv.state()`,
    `reset(options={"start": state})`): the camera frame uint8 (H, W, 3) and the grippers'
    poses and widths, which a world model conditioned on the grippers needs."""

    frame: np.ndarray
    grippers: GripperState


class SimFoldEnv(gym.Env):
    """## Description
    A t-shirt lies on a table; two UMI-style parallel grippers fold it, seen by a fixed
    fisheye camera. Physics is position-based dynamics (`wmgym.sim.cloth`), the ground truth
    the learned `WMFold-v0` is measured against.

    ## Action Space
    `Box(ACTION_LOW, ACTION_HIGH, (20,), float32)`, left gripper then right, 10 numbers each:
    position at t+1 in the gripper frame at t (metres, |.| <= 0.12), the relative rotation as
    6-D (first two columns; orthonormalised by Gram-Schmidt), the opening width at t+1
    (0..0.09 m; below 2 cm the jaws grasp what lies between them). Actions with a wrong
    shape, non-finite values or outside the bounds raise ValueError. The simulator keeps each
    gripper inside its workspace box and above the table (`wmgym.sim.gripper.limit_pose`).

    ## Observation Space
    `Box(0, 255, (H, W, 3), uint8)`: the RGB camera image (default 64x64).

    ## Rewards
    The improvement of the task's ground-truth score (in [0, 1], see `wmgym.sim.tasks`) over
    the step; `info["reward_terms"]` holds the named terms, which sum to the reward.

    ## Starting State
    Shirt position, yaw, crumples and colours, table texture and gripper home poses are drawn
    from the seed; the cloth is settled before the first observation.

    ## Episode End
    Terminated when the score reaches the task's success threshold with the cloth released;
    truncated after `horizon` steps (default 16, long enough for the scripted demonstrator).

    ## Arguments
    `task`: one of TASKS, or None to draw a task at every reset. `resolution`: int or (H, W).
    `horizon`: steps before truncation. `render_mode`: None or "rgb_array".
    `expert_noise`: noise of `expert_action()` (metres). `is_camera_moving`: small camera orbit.

    `info` carries `score`, `success`, `task`, `left_pose` / `right_pose` (4x4 world poses),
    `widths` (2,) and `reward_terms`.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 5}

    def __init__(
        self,
        task: str | None = "fold_half",
        resolution: int | tuple[int, int] = 64,
        horizon: int = 16,
        render_mode: str | None = None,
        expert_noise: float = 0.0,
        is_camera_moving: bool = False,
    ):
        if task is not None and task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)} or None")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if expert_noise < 0:
            raise ValueError(f"expert_noise must be >= 0, got {expert_noise}")
        height, width = _resolution(resolution)
        self.task = task
        self.horizon = horizon
        self.render_mode = render_mode
        self.expert_noise = expert_noise
        self.world = FoldWorld(WorldConfig(height=height, width=width, is_camera_moving=is_camera_moving))
        self.observation_space = spaces.Box(0, 255, (height, width, 3), np.uint8)
        self.action_space = spaces.Box(ACTION_LOW, ACTION_HIGH, (20,), np.float32)
        self._views: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        task = self.task if self.task is not None else TASKS[int(self.np_random.integers(len(TASKS)))]
        self.world.reset(self.np_random, task)
        self._expert = ScriptedDemonstrator(self.world, self.np_random, DemoParams(noise=self.expert_noise, grasp_offset=self.expert_noise), self.horizon)
        self._score = self.world.score()
        self._views = self.world.views()
        return self._views[0].copy(), self._info({"score_improvement": 0.0})

    def step(self, action):
        if self._views is None:
            raise RuntimeError("call reset() before step()")
        action = validate_action(action)
        if action.shape != (20,):
            raise ValueError(f"SimFold-v0 takes one action of shape (20,), got {action.shape}\n{ACTION_LAYOUT}")
        if not self.action_space.contains(action):
            bad = np.nonzero((action < ACTION_LOW) | (action > ACTION_HIGH))[0]
            raise ValueError(f"action outside the bounds at indices {bad.tolist()}: see SimFoldEnv.action_space\n{ACTION_LAYOUT}")
        self.world.step(action)
        score = self.world.score()
        terms = {"score_improvement": score - self._score}
        self._score = score
        self._views = self.world.views()
        terminated = self.world.is_success()
        truncated = self.world.step_count >= self.horizon and not terminated
        return self._views[0].copy(), float(sum(terms.values())), terminated, truncated, self._info(terms)

    def _info(self, terms: dict[str, float]) -> dict[str, Any]:
        w = self.world
        return {
            "score": float(self._score),
            "success": bool(w.is_success()),
            "task": w.task.name,
            "left_pose": w.poses[0].copy(),
            "right_pose": w.poses[1].copy(),
            "widths": w.widths.copy(),
            "reward_terms": dict(terms),
        }

    def expert_action(self) -> np.ndarray:
        """(20,) float32: the scripted demonstrator's next action for the current state."""
        if self._views is None:
            raise RuntimeError("call reset() before expert_action()")
        return self._expert.action()

    def state(self) -> StartState:
        """The current state as a `WMFold-v0` start: `reset(options={"start": sim.unwrapped.state()})`."""
        if self._views is None:
            raise RuntimeError("call reset() before state()")
        return StartState(self._views[0].copy(), GripperState.of_world(self.world))

    def views(self) -> dict[str, np.ndarray]:
        """The current three pixel-aligned views: `camera`, `static_scene`, `grippers`."""
        if self._views is None:
            raise RuntimeError("call reset() before views()")
        return dict(zip(("camera", "static_scene", "grippers"), (v.copy() for v in self._views)))

    def render(self):
        if self.render_mode == "rgb_array" and self._views is not None:
            return self._views[0].copy()
        return None
