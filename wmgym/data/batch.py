"""Named training windows (issue 37): one `Window` per `WindowDataset` item, and the
`WindowBatch` a DataLoader stacks them into by name (`WindowBatch.collate`).

Dimension legend: b windows, T actions (T + 1 frames), H x W pixels, A action values (20),
d a vector's size.

A window's conditions are named as a world model takes them (`wmgym.model.conditions`): views
("grippers", "static_scene") and vectors ("poses" (8), "held" (2)). The batch carries what its
items carry, so nothing downstream counts tensors to learn which is which.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from wmgym.model.conditions import Conditions


@dataclass
class Window:
    """One training window, unbatched (a `wmgym.data.dataset.WindowDataset` item).

    Attributes:
        frames: uint8 (T + 1, H, W, 3) camera frames o_s..o_{s+T}.
        actions: float32 (T, A) raw actions a_s..a_{s+T-1}; actions[i] produces frames[i + 1].
        views: name -> uint8 (T + 1, H, W, 3), pixel-aligned views of the same frames
            (e.g. "grippers"); empty when the dataset reads none.
        vectors: name -> float32 (T + 1, d), one vector per frame ("poses" (d = 8), "held"
            (d = 2)); empty when the dataset reads none.
    """

    frames: torch.Tensor
    actions: torch.Tensor
    views: dict[str, torch.Tensor] = field(default_factory=dict)
    vectors: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class WindowBatch:
    """A batch of training windows (b windows of T actions).

    Attributes:
        frames: uint8 (b, T + 1, H, W, 3) camera frames.
        actions: float32 (b, T, A) raw actions; actions[:, i] produces frames[:, i + 1].
        conditions: the frames' `Conditions` (b, T + 1), views uint8 (b, T + 1, H, W, 3) and
            vectors float32 (b, T + 1, d) named as the windows name them, or None for windows
            that carry none.
    """

    frames: torch.Tensor
    actions: torch.Tensor
    conditions: Conditions | None

    def to(self, device, non_blocking: bool = False) -> "WindowBatch":
        """The batch on `device` (Accelerate's data loaders call this)."""
        move = lambda x: x.to(device, non_blocking=non_blocking)
        return WindowBatch(move(self.frames), move(self.actions), None if self.conditions is None else self.conditions.to(device))

    @classmethod
    def collate(cls, items: list[Window]) -> "WindowBatch":
        """The `collate_fn` of a DataLoader over a `WindowDataset` (or a `Subset` of one): b
        `Window`s -> one `WindowBatch`, every tensor stacked along a new first axis, each
        condition by its name. ValueError for no items, or items whose views or vectors are
        not named alike."""
        if not items:
            raise ValueError("cannot collate an empty list of windows")
        first = items[0]
        for item in items[1:]:
            if item.views.keys() != first.views.keys() or item.vectors.keys() != first.vectors.keys():
                raise ValueError(f"windows with different conditions cannot be batched: views {list(first.views)} "
                                 f"and vectors {list(first.vectors)}, then views {list(item.views)} and vectors "
                                 f"{list(item.vectors)}")
        stack = lambda get: torch.stack([get(item) for item in items])  # as default_collate stacks them
        views = {name: stack(lambda item: item.views[name]) for name in first.views}
        vectors = {name: stack(lambda item: item.vectors[name]) for name in first.vectors}
        conditions = Conditions(views, vectors) if views or vectors else None
        return cls(stack(lambda item: item.frames), stack(lambda item: item.actions), conditions)
