"""`Conditions`: what a world model's frames are conditioned on besides the camera frames and
the actions, in one typed container.

Dimension legend: b batch (episodes, candidates, env rows), t frames, H x W pixels, d a
vector's size.

Two kinds, each by name:
    views    pixel maps aligned with the camera frame, uint8 (b, t, H, W, 3): "grippers" (the
             grippers alone on black), "static_scene".
    vectors  one float vector per frame, float32 (b, t, d): "poses" (d = 8, each gripper's
             tool-centre xyz and width), "held" (d = 2, whether each gripper holds cloth, or a
             probability of it).
A model takes the views its config names and the vectors it is conditioned on
(`WorldModel.encode_conditions`); `wmgym.conditioning` builds them from store records, gripper
tracks and planner candidates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


def _as_tensor(x, dtype: torch.dtype) -> torch.Tensor:
    tensor = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


@dataclass
class Conditions:
    """Per-frame conditions of b clips of t frames.

    Attributes:
        views: name -> uint8 (b, t, H, W, 3) tensor, pixel-aligned with the camera frames.
        vectors: name -> float32 (b, t, d) tensor, one vector per frame.
    Arrays (NumPy) are taken as tensors; every entry must share b and t.
    """

    views: dict[str, torch.Tensor] = field(default_factory=dict)
    vectors: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        self.views = {name: _as_tensor(x, torch.uint8) for name, x in self.views.items()}
        self.vectors = {name: _as_tensor(x, torch.float32) for name, x in self.vectors.items()}
        for name, x in self.views.items():
            if x.dim() != 5 or x.shape[-1] != 3:
                raise ValueError(f"condition view {name!r} must be uint8 (b, t, H, W, 3), got {tuple(x.shape)}")
        for name, x in self.vectors.items():
            if x.dim() != 3:
                raise ValueError(f"{name} must be float (b, t, d), one vector per frame, got {tuple(x.shape)}")
        sizes = {name: tuple(x.shape[:2]) for name, x in self.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"conditions disagree on (b, t): {sizes}")

    def items(self):
        """(name, tensor) of every view, then every vector."""
        return [*self.views.items(), *self.vectors.items()]

    @property
    def is_empty(self) -> bool:
        return not self.views and not self.vectors

    @property
    def batch_size(self) -> int | None:
        """b (None when empty)."""
        entries = self.items()
        return entries[0][1].shape[0] if entries else None

    @property
    def num_frames(self) -> int | None:
        """t (None when empty)."""
        entries = self.items()
        return entries[0][1].shape[1] if entries else None

    def _map(self, fn) -> "Conditions":
        return Conditions({k: fn(v) for k, v in self.views.items()}, {k: fn(v) for k, v in self.vectors.items()})

    def to(self, device: str | torch.device) -> "Conditions":
        """The same conditions on `device`."""
        return self._map(lambda x: x.to(device))

    def rows(self, index) -> "Conditions":
        """The clips `index` selects (an int list, a slice, a bool or long tensor)."""
        return self._map(lambda x: x[index])

    def frames(self, index) -> "Conditions":
        """Frames `index` (a slice, or an int kept as a frame axis of 1) of every clip."""
        index = slice(index, index + 1) if isinstance(index, int) else index
        return self._map(lambda x: x[:, index])

    def repeat(self, times: int) -> "Conditions":
        """All b clips `times` times over, (times * b, t, ...), as `Tensor.repeat` stacks them."""
        return self._map(lambda x: x.repeat(times, *([1] * (x.dim() - 1))))

    @classmethod
    def cat(cls, parts: list["Conditions"], dim: int = 0) -> "Conditions":
        """Clips (dim 0) or frames (dim 1) of several `Conditions` with the same names, in order."""
        first = parts[0]
        if any(set(p.views) != set(first.views) or set(p.vectors) != set(first.vectors) for p in parts):
            raise ValueError("Conditions.cat needs parts with the same views and vectors")
        return cls({k: torch.cat([p.views[k] for p in parts], dim) for k in first.views},
                   {k: torch.cat([p.vectors[k] for p in parts], dim) for k in first.vectors})
