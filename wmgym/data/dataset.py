"""Training windows over an episode store: (num_actions + 1 frames, num_actions actions)."""

from __future__ import annotations

import math

import numpy as np
import torch

from wmgym.data.store import EpisodeStore

SPLITS = ("train", "val", "all")
READ_BLOCK_FRAMES = 4096  # rows read from zarr at a time while loading
CONDITION_VIEWS = {"grippers": "grippers_rgb", "static_scene": "static_scene_rgb"}
"""Pixel-aligned views a world model can be conditioned on -> their arrays in the store."""


def split_episodes(num_episodes: int, split: str, val_fraction: float = 0.1,
                   split_seed: int = 0) -> np.ndarray:
    """Sorted episode indices of `split`, from a permutation seeded by `split_seed`.

    val gets ceil(val_fraction * E) episodes, at least one when E >= 2 and val_fraction > 0,
    and never all of them; train gets the rest.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if split == "all":
        return np.arange(num_episodes)
    num_val = math.ceil(val_fraction * num_episodes)
    if val_fraction > 0 and num_episodes >= 2:
        num_val = min(max(num_val, 1), num_episodes - 1)
    else:
        num_val = 0
    order = np.random.default_rng(split_seed).permutation(num_episodes)
    return np.sort(order[:num_val] if split == "val" else order[num_val:])


class WindowDataset(torch.utils.data.Dataset):
    """Every window of `num_actions` consecutive actions inside one episode of a split.

    Item: `(frames, actions)` with frames (T+1, H, W, 3) torch.uint8 (camera view o_s..o_{s+T})
    and actions (T, 20) torch.float32 (a_s..a_{s+T-1}; the store's padding row is never
    returned), T = `num_actions`. With `views` (e.g. ("grippers",)), the item is
    `(frames, actions, conditions)` with conditions (T+1, V, H, W, 3) torch.uint8: the store's
    pixel-aligned views of the same frames, in the order named. Windows never cross episode
    boundaries.

    The camera frames and actions of the selected episodes are loaded into memory once, at
    construction (89k frames at 64x64 is about 1.1 GB), so items cost no disk reads.

    Attributes:
        episode_indices: sorted store indices of the episodes in this split.
        height, width, tasks: from the store.
    """

    def __init__(self, path, num_actions: int = 4, split: str = "train",
                 val_fraction: float = 0.1, split_seed: int = 0, views: tuple[str, ...] = ()):
        unknown = [v for v in views if v not in CONDITION_VIEWS]
        if unknown:
            raise ValueError(f"views must be among {tuple(CONDITION_VIEWS)}, got {tuple(views)}")
        store = EpisodeStore.open(path, mode="r")
        if store.num_episodes == 0:
            raise ValueError(f"episode store {path} holds no episodes")
        self.episode_indices = split_episodes(store.num_episodes, split, val_fraction, split_seed)
        if len(self.episode_indices) == 0:
            raise ValueError(f"split {split!r} of {path} is empty ({store.num_episodes} "
                             f"episodes, val_fraction={val_fraction})")
        if num_actions < 1:
            raise ValueError(f"num_actions must be at least 1, got {num_actions}")
        slices = [store.episode_slice(int(i)) for i in self.episode_indices]
        lengths = np.array([s.stop - s.start for s in slices])  # frames = actions + 1
        if num_actions > lengths.min() - 1:
            raise ValueError(f"num_actions={num_actions} exceeds the shortest episode of split "
                             f"{split!r}, which has {lengths.min() - 1} actions")
        self.num_actions = num_actions
        self.height, self.width, self.tasks = store.height, store.width, store.tasks

        keep = np.zeros(store.num_frames, bool)  # rows of the selected episodes
        for s in slices:
            keep[s] = True
        self.frames = torch.from_numpy(read_rows(store.root["data/camera0_rgb"], keep))
        self.actions = torch.from_numpy(read_rows(store.root["data/action"], keep))
        self.views = tuple(views)
        self.conditions = (torch.from_numpy(np.stack([read_rows(store.root[f"data/{CONDITION_VIEWS[v]}"], keep)
                                                      for v in views], axis=1)) if views else None)  # (N, V, H, W, 3)

        # Window starts as rows of the compacted arrays.
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self._starts = np.concatenate([
            offset + np.arange(length - num_actions) for offset, length in zip(offsets, lengths)])

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        start = int(self._starts[index])
        frames = self.frames[start: start + self.num_actions + 1].clone()  # (T+1, H, W, 3)
        actions = self.actions[start: start + self.num_actions].clone()  # (T, 20)
        if self.conditions is None:
            return frames, actions
        return frames, actions, self.conditions[start: start + self.num_actions + 1].clone()  # (T+1, V, H, W, 3)


def read_rows(array, keep: np.ndarray) -> np.ndarray:
    """array[keep] for a zarr array, reading blocks so peak memory stays near the result."""
    out = np.empty((int(keep.sum()), *array.shape[1:]), array.dtype)
    filled = 0
    for start in range(0, len(keep), READ_BLOCK_FRAMES):
        mask = keep[start: start + READ_BLOCK_FRAMES]
        count = int(mask.sum())
        if count:
            out[filled: filled + count] = array[start: start + len(mask)][mask]
            filled += count
    return out
