"""The order training windows are drawn in: a pure function of (seed, epoch), so a run that
stops and resumes draws exactly the batches a straight run would (world model and IDM).

`epoch_items` lets one epoch draw some windows more than once (`train-wm
--focus-window-starts`): the grasp and lift, where a grasp's outcome first shows.
"""

from __future__ import annotations

import numpy as np
import torch


class EpochPermutationSampler(torch.utils.data.Sampler):
    """Every item once per epoch, in an order that is a pure function of (seed, epoch).

    items: a count n (the dataset indices 0..n-1) or an array of dataset indices in which an
    index may repeat (listed k times, it is drawn k times per epoch: `focus_window_starts`)."""

    def __init__(self, items, seed: int):
        self.items = np.arange(items) if np.ndim(items) == 0 else np.asarray(items, dtype=np.int64)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(self.epoch,)))
        return iter(self.items[rng.permutation(len(self.items))].tolist())

    def __len__(self) -> int:
        return len(self.items)


def epoch_loader(dataset, batch_size: int, seed: int, items=None, **loader_options) -> torch.utils.data.DataLoader:
    """Whole batches of `dataset` in each epoch's seeded order (`EpochPermutationSampler` over
    `items`, default every index once), the last partial batch dropped; the loader's own
    generator is seeded too, so nothing draws from the global RNG. `loader_options` go to the
    DataLoader (collate_fn, num_workers, ...)."""
    sampler = EpochPermutationSampler(len(dataset) if items is None else items, seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
                                       generator=torch.Generator().manual_seed(seed), **loader_options)


def epoch_items(window_offsets: np.ndarray, focus_window_starts: tuple[int, int] | None, focus_repeats: int) -> np.ndarray:
    """The dataset indices one epoch draws: every window once, and those whose first frame
    (`window_offsets`, the frame of its episode each window starts at) is in the inclusive
    range `focus_window_starts` `focus_repeats - 1` more times. (N,) -> (N + (repeats-1) * F,)."""
    items = np.arange(len(window_offsets))
    if focus_window_starts is None or focus_repeats == 1:
        return items
    first, last = focus_window_starts
    focus = np.flatnonzero((window_offsets >= first) & (window_offsets <= last))
    if len(focus) == 0:
        raise ValueError(f"no training window starts at frames {first}..{last} of its episode "
                         f"(episodes hold {int(window_offsets.max()) + 1} window starts at most)")
    return np.concatenate([items, np.repeat(focus, focus_repeats - 1)])
