"""Scripted demonstrators: a folding expert per task, and random behaviour for dataset variety.

The expert plans one key pose per step when it is created (approach, descend, grasp, lift,
carry along an arc, lower, release, lift, retreat) from the cloth's state, and at every step
returns the action that moves each gripper from wherever it actually is to that step's key
pose, so it keeps tracking its plan if someone else's actions pushed the grippers off it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wmgym.actions import MAX_POSITION_DELTA, hand_action_from_poses, validate_action
from wmgym.sim.gripper import GRASP_WIDTH
from wmgym.sim.world import OPEN_WIDTH, FoldWorld


@dataclass(frozen=True)
class DemoParams:
    """Demonstrator parameters.

    Attributes:
        noise: standard deviation (metres) of the Gaussian noise added to every key position.
        speed: >1 shortens the approach and carry phases, <1 lengthens them (and may run
            past the horizon, so the fold is not finished).
        grasp_offset: standard deviation (metres) of a random offset of the grasp point.
    """

    noise: float = 0.0
    speed: float = 1.0
    grasp_offset: float = 0.0


def _grasp_points(world: FoldWorld) -> dict[int, np.ndarray]:
    """Ideal grasp point (shirt frame, (2,)) for each hand the task uses."""
    s = world.shape
    reach = s.body_half_width + s.sleeve_length - 0.012
    sleeve_y = 0.5 * (s.sleeve_bottom + s.body_top)
    corner_x, corner_y = s.body_half_width - 0.025, s.body_bottom + 0.012
    return {
        "fold_left_sleeve": {0: np.array([-reach, sleeve_y])},
        "fold_right_sleeve": {1: np.array([reach, sleeve_y])},
        "fold_half": {0: np.array([-corner_x, corner_y]), 1: np.array([corner_x, corner_y])},
    }[world.task.name]


class ScriptedDemonstrator:
    """Folds `world.task` from the world's current state; call `action()` once per step.

    Args:
        world: a reset `FoldWorld`; the plan starts at its current `step_count`.
        rng: draws the noise and grasp offsets (the plan is fixed at construction).
        params: noise, speed, grasp offset.
        horizon: plan length in steps; the plan holds still after it finishes.
    """

    def __init__(self, world: FoldWorld, rng: np.random.Generator, params: DemoParams = DemoParams(), horizon: int = 16):
        self.world = world
        self.first_step = world.step_count
        self.params = params
        poses, widths = world.poses.copy(), world.widths.copy()
        plan_poses = [[poses[h].copy() for _ in range(horizon)] for h in range(2)]
        plan_widths = [[widths[h]] * horizon for h in range(2)]
        for hand, grasp_xy in _grasp_points(world).items():
            offset = rng.normal(0.0, params.grasp_offset, size=2) if params.grasp_offset > 0 else 0.0
            poses_h, widths_h = self._plan_hand(poses[hand], grasp_xy + offset, horizon)
            plan_poses[hand], plan_widths[hand] = poses_h, widths_h
        if params.noise > 0:
            for hand in range(2):
                for pose in plan_poses[hand]:
                    pose[:3, 3] += rng.normal(0.0, params.noise, size=3)
                    pose[2, 3] = max(pose[2, 3], 0.0)
        self.plan_poses = np.array(plan_poses)  # (2, horizon, 4, 4)
        self.plan_widths = np.array(plan_widths)  # (2, horizon)

    def _plan_hand(self, home: np.ndarray, grasp_xy_shirt: np.ndarray, horizon: int):
        w = self.world
        target = w.frame.to_world(grasp_xy_shirt[None])[0]
        index = int(np.argmin(np.linalg.norm(w.positions[:, :2] - target, axis=1)))
        grasp = w.positions[index].copy()
        place = w.goal[index].copy()
        speed = max(self.params.speed, 0.1)
        approach_steps = max(1, round(3 / speed))
        carry_steps = max(2, round(4 / speed))
        keys: list[tuple[np.ndarray, float]] = []  # (position, width) at the end of each step

        def move(start, end, steps, width):
            for k in range(1, steps + 1):
                f = k / steps
                keys.append(((1 - f) * start + f * end, width))

        grasp_tcp = np.array([grasp[0], grasp[1], 0.0])
        move(home[:3, 3], grasp + [0, 0, 0.05], approach_steps, OPEN_WIDTH)
        keys.append((grasp_tcp, OPEN_WIDTH))  # descend around the cloth
        keys.append((grasp_tcp, 0.0))  # close
        # Carry the grasped edge on a half circle about the fold line, like turning a page:
        # every distance within the moving part is preserved, so nothing is dragged.
        task = w.task
        shirt = w.frame.to_shirt(grasp[None, :2])[0]
        offset = shirt[task.axis] - task.line
        radius = abs(offset)
        for k in range(1, carry_steps + 1):
            phi = np.pi * k / carry_steps
            point = shirt.copy()
            point[task.axis] = task.line + offset * np.cos(phi)
            world_xy = w.frame.to_world(point[None])[0]
            height = radius * np.sin(phi) + (place[2] + 0.015) * k / carry_steps
            keys.append((np.array([world_xy[0], world_xy[1], height]), 0.0))
        release = keys[-1][0]
        keys.append((release, OPEN_WIDTH))
        keys.append((release + [0, 0, 0.06], OPEN_WIDTH))
        move(keys[-1][0], home[:3, 3], max(1, min(horizon - len(keys), 4)), OPEN_WIDTH)
        poses, widths = [], []
        for k in range(horizon):
            p, width = keys[min(k, len(keys) - 1)]
            pose = home.copy()
            pose[:3, 3] = p
            poses.append(pose)
            widths.append(width)
        return poses, widths

    def action(self) -> np.ndarray:
        """(20,) float32: move both grippers toward this step's key poses (clipped to the bounds)."""
        w = self.world
        k = min(w.step_count - self.first_step, self.plan_poses.shape[1] - 1)
        hands = []
        for hand in range(2):
            a = hand_action_from_poses(w.poses[hand], self.plan_poses[hand, k], self.plan_widths[hand, k])
            a[:3] = np.clip(a[:3], -MAX_POSITION_DELTA, MAX_POSITION_DELTA)
            hands.append(a)
        return validate_action(np.concatenate(hands))


class RandomBehaviour:
    """Random actions that still touch the cloth: half of the episodes pick a random particle
    and drop it at a random place at random times (failed and accidental folds), the other
    half are a smooth random walk with random rotations and random jaw toggling.
    """

    def __init__(self, world: FoldWorld, rng: np.random.Generator, horizon: int = 16):
        self.world = world
        self.rng = rng
        self.first_step = world.step_count
        self.is_pick_and_place = bool(rng.uniform() < 0.5)
        if self.is_pick_and_place:
            # Reuse the expert's planner with a random grasp point and a random goal.
            self.expert = ScriptedDemonstrator(world, rng, DemoParams(noise=0.03, speed=rng.uniform(0.7, 1.6), grasp_offset=0.12), horizon)
        self.velocity = np.zeros((2, 3))

    def action(self) -> np.ndarray:
        if self.is_pick_and_place:
            return self.expert.action()
        rng, hands = self.rng, []
        for hand in range(2):
            self.velocity[hand] = 0.6 * self.velocity[hand] + rng.normal(0.0, 0.03, size=3)
            self.velocity[hand, 2] -= 0.01 * (self.world.poses[hand, 2, 3] > 0.05)  # drift toward the cloth
            delta = np.clip(self.velocity[hand], -MAX_POSITION_DELTA, MAX_POSITION_DELTA)
            angle = rng.normal(0.0, 0.15)
            c, s = np.cos(angle), np.sin(angle)
            rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
            width = self.world.widths[hand]
            if rng.uniform() < 0.25:
                width = 0.0 if width >= GRASP_WIDTH else OPEN_WIDTH
            hands.append(np.concatenate([delta, rot[:, 0], rot[:, 1], [width]]))
        return validate_action(np.concatenate(hands))


class UniformBehaviour:
    """Every action drawn uniformly over the action box (`wmgym.actions.ACTION_LOW`..`ACTION_HIGH`),
    which is what Gymnasium's `Box.sample()` does for `SimFold-v0`'s and `WMFold-v0`'s action
    space: a random rotation, a jump of up to `MAX_POSITION_DELTA` per axis and a random jaw
    width every step. The first exploration an RL user runs."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def action(self) -> np.ndarray:
        from wmgym.actions import ACTION_HIGH, ACTION_LOW

        return self.rng.uniform(ACTION_LOW, ACTION_HIGH).astype(np.float32)
