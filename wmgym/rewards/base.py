"""The one interface every reward head implements, so users can add their own.

A reward head maps frames and a goal to a score per batch element, higher = closer to the
goal. Environments turn scores into dense rewards as the change of score from one step to
the next (potential-based shaping: for LPIPS, the decrease of the distance to the goal).

Frames are uint8 (b, t, H, W, 3): the episode so far, newest frame last (t >= 1). Image heads
look at `frames[:, -1]`; video heads look at up to `num_frames` of them. A single frame batch
(b, H, W, 3) is read as t = 1.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import numpy as np
import torch


class RewardHead(ABC):
    """Base class of reward heads.

    Attributes:
        name: the key of this head's term in an environment's `info["reward_terms"]`.
        goal_kind: "image" (goal is uint8 (b, H, W, 3) or (H, W, 3)) or "text" (a str or b strs).
        device: where the head's model lives and where `score` returns its (b,) tensor.
    """

    name: ClassVar[str]
    goal_kind: ClassVar[Literal["image", "text"]]
    device: torch.device

    @abstractmethod
    def score(self, frames, goal) -> torch.Tensor:
        """frames uint8 (b, t, H, W, 3) (or (b, H, W, 3)), goal as `goal_kind` says -> float (b,) on `device`."""


def as_frames(frames, device: torch.device | str | None = None) -> torch.Tensor:
    """Validate frames and return a uint8 tensor (b, t, H, W, 3) on `device` (default: where they are)."""
    x = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.asarray(frames))
    if x.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 RGB (b, t, H, W, 3) or (b, H, W, 3), got dtype {x.dtype}")
    if x.dim() == 4:
        x = x[:, None]
    if x.dim() != 5 or x.shape[-1] != 3 or x.shape[1] < 1:
        raise ValueError(f"frames must be uint8 RGB (b, t, H, W, 3) or (b, H, W, 3), got shape {tuple(x.shape)}")
    return x if device is None else x.to(device)


def as_goal_images(goal, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
    """A goal image (H, W, 3) or a batch of them (b, H, W, 3), uint8 -> tensor (b, H, W, 3) on `device`."""
    x = goal if isinstance(goal, torch.Tensor) else torch.from_numpy(np.asarray(goal))
    if x.dtype != torch.uint8 or x.dim() not in (3, 4) or x.shape[-1] != 3:
        raise ValueError(f"a goal image must be uint8 RGB (H, W, 3) or (b, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    if x.dim() == 3:
        x = x[None].expand(batch, *x.shape)
    if x.shape[0] != batch:
        raise ValueError(f"got {x.shape[0]} goal images for a batch of {batch} frames")
    return x if device is None else x.to(device)


def as_goal_texts(goal, batch: int) -> list[str]:
    """A goal text or b of them -> list of b strings."""
    texts = [goal] * batch if isinstance(goal, str) else list(goal)
    if len(texts) != batch or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError(f"a goal text must be a non-empty str or {batch} of them, got {goal!r}")
    return texts


def to_unit_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1] (the models' convention: docs/design.md, "Frames")."""
    return frames.movedim(-1, -3).float() / 127.5 - 1.0
