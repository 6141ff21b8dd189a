"""Folding tasks: goal configurations, ground-truth scores, captions.

Each task is a reflection of part of the shirt across a fold line, both given in the shirt
frame (`wmgym.sim.cloth.ShirtShape`): the goal puts every particle on the moving side at its
mirror image, one cloth thickness above the layer it lands on, and leaves the rest in place.
The score compares the current particle positions with that goal:

    score = clip(1 - mean_i max(|x_i - g_i| - tol, 0) / mean_i max(|x0_i - g_i| - tol, 0), 0, 1)

where x0 is the settled start state and tol one grid spacing (2.3 cm): a real fold has a
crease of finite radius and the particles are that far apart, so an error below one spacing
counts as in place. 0 means "no closer than at the start", 1 "the goal, up to the crease".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wmgym.sim.cloth import ShirtShape

TASKS = ("fold_left_sleeve", "fold_right_sleeve", "fold_half")


@dataclass(frozen=True)
class Task:
    """A fold: reflect particles with `side_sign * (coordinate - line) > 0` across `line`.

    Attributes:
        name: one of TASKS.
        axis: 0 reflects across a line x = const (sleeves), 1 across y = const (in half).
        line: the fold line's coordinate in the shirt frame (metres).
        side_sign: -1 moves the particles below the line, +1 those above it.
        success_threshold: score at which the fold counts as done.
        caption: the instruction, in English.
        hands: which grippers the scripted demonstrator uses (0 left, 1 right).
    """

    name: str
    axis: int
    line: float
    side_sign: int
    success_threshold: float
    caption: str
    hands: tuple[int, ...]

    def moving(self, shirt_xy: np.ndarray) -> np.ndarray:
        """(n,) bool: particles (rest positions in the shirt frame, (n, 2)) that the fold moves."""
        return self.side_sign * (shirt_xy[:, self.axis] - self.line) > 1e-9

    def reflect(self, shirt_xy: np.ndarray) -> np.ndarray:
        """Mirror image (n, 2) of shirt-frame points across the fold line."""
        out = shirt_xy.copy()
        out[:, self.axis] = 2.0 * self.line - shirt_xy[:, self.axis]
        return out


def make_task(name: str, shape: ShirtShape = ShirtShape()) -> Task:
    """The task called `name`; ValueError naming the valid tasks otherwise."""
    if name == "fold_left_sleeve":
        return Task(name, 0, -shape.body_half_width, -1, 0.7, "fold the left sleeve onto the body", (0,))
    if name == "fold_right_sleeve":
        return Task(name, 0, shape.body_half_width, +1, 0.7, "fold the right sleeve onto the body", (1,))
    if name == "fold_half":
        middle = 0.5 * (shape.body_bottom + shape.body_top)
        return Task(name, 1, middle, -1, 0.7, "fold the shirt in half, bottom edge to top edge", (0, 1))
    raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")


@dataclass(frozen=True)
class ShirtFrame:
    """Where the shirt lies: world = rotation(yaw) @ shirt + (x, y), z unchanged."""

    x: float
    y: float
    yaw: float

    @property
    def rotation(self) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, -s], [s, c]])

    def to_world(self, shirt_xy: np.ndarray) -> np.ndarray:
        return shirt_xy @ self.rotation.T + np.array([self.x, self.y])

    def to_shirt(self, world_xy: np.ndarray) -> np.ndarray:
        return (world_xy - np.array([self.x, self.y])) @ self.rotation


def goal_positions(task: Task, start: np.ndarray, rest_xy: np.ndarray, frame: ShirtFrame, thickness: float) -> np.ndarray:
    """(n, 3) goal positions for `task` from the settled start state `start` (n, 3).

    `rest_xy` (n, 2) are the particles' template positions in the shirt frame; they decide
    which side of the fold each particle is on, so crumples do not change the partition.
    """
    goal = start.copy()
    moving = task.moving(rest_xy)
    mirrored = task.reflect(frame.to_shirt(start[moving, :2]))
    goal[moving, :2] = frame.to_world(mirrored)
    goal[moving, 2] = start[moving, 2] + thickness
    return goal


def fold_score(positions: np.ndarray, goal: np.ndarray, start: np.ndarray, tolerance: float = ShirtShape().spacing) -> float:
    """Ground-truth score in [0, 1] (module docstring); arrays are (n, 3) particle positions."""
    initial = float(np.mean(np.maximum(np.linalg.norm(start - goal, axis=1) - tolerance, 0.0)))
    current = float(np.mean(np.maximum(np.linalg.norm(positions - goal, axis=1) - tolerance, 0.0)))
    return float(np.clip(1.0 - current / max(initial, 1e-9), 0.0, 1.0))


_HAND_NAMES = ("left gripper", "right gripper")
_DONE = {
    "fold_left_sleeve": "folded the left sleeve onto the body",
    "fold_right_sleeve": "folded the right sleeve onto the body",
    "fold_half": "folded the shirt in half, bottom edge to top edge",
}
_PARTIAL = {
    "fold_left_sleeve": "partly folded the left sleeve",
    "fold_right_sleeve": "partly folded the right sleeve",
    "fold_half": "partly folded the shirt in half",
}


def describe_outcome(scores: dict[str, float], thresholds: dict[str, float], hands_grasped: tuple[bool, bool], displacement: float) -> str:
    """English caption of what happened in an episode (for the text reward model).

    Args:
        scores: final score of every task; thresholds: each task's success threshold.
        hands_grasped: whether the left and right gripper ever held cloth.
        displacement: mean particle displacement from the start state (metres).
    """
    who = [n for n, g in zip(_HAND_NAMES, hands_grasped) if g]
    subject = "the " + " and the ".join(who) if who else "the grippers"
    done = [t for t in TASKS if scores[t] >= thresholds[t]]
    if done:
        return f"{subject} " + " and ".join(_DONE[t] for t in done)
    partial = [t for t in TASKS if scores[t] >= 0.35]
    if partial:
        return f"{subject} " + " and ".join(_PARTIAL[t] for t in partial)
    if displacement > 0.02:
        verb = "grasped and moved the shirt without folding it" if who else "pushed the shirt"
        return f"{subject} {verb}"
    if who:
        return f"{subject} grasped the shirt but left it almost where it was"
    return "the grippers moved without changing the shirt"
