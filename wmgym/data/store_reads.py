"""Reading many episodes of an episode store at once, for training sets (`EpisodeStore` inherits
these): every reader of per-frame arrays goes through them, so block-wise reads and the error
that names store, array and episodes are written once."""

from __future__ import annotations

import numpy as np

from wmgym.data.store_layout import READ_BLOCK_FRAMES


class BulkReads:
    """Methods of `wmgym.data.store.EpisodeStore` that read many episodes' rows at once; they use
    its `root`, `num_frames`, `num_episodes`, `episode_slice` and `_read`."""

    def episode_rows(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """(keep bool (N,) over the store's frame rows, lengths int64 (E,)): the rows of episodes
        `indices` and their frame counts (actions + 1)."""
        slices = [self.episode_slice(int(i)) for i in indices]
        keep = np.zeros(self.num_frames, bool)
        for rows in slices:
            keep[rows] = True
        return keep, np.array([rows.stop - rows.start for rows in slices], np.int64)

    def read_frames(self, indices, names) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Per-frame arrays of many episodes at once, for training sets.

        Args:
            indices: episode indices, sorted (the rows come back in store order).
            names: arrays under data/ ("camera0_rgb", "action", "score", "robot0_eef_pos", ...).
        Returns:
            name -> the episodes' rows back to back (N, ...), and each episode's frame count (E,).
        Arrays are read in blocks of `READ_BLOCK_FRAMES` rows, so peak memory stays near the
        result; a decode error names the store, the array, the episodes and the chunk.
        """
        keep, lengths = self.episode_rows(indices)
        return self.read_rows(keep, names), lengths

    def read_meta(self, name: str, indices) -> np.ndarray:
        """Per-episode array meta/`name` ("episode_success", "goal_rgb", ...) at episodes `indices` (E, ...)."""
        return self._read(f"meta/{name}", slice(0, self.num_episodes))[np.asarray(indices, np.int64)]

    def read_rows(self, keep: np.ndarray, names) -> dict[str, np.ndarray]:
        """name -> data/`name`[keep] for a bool mask `keep` (N,) over the store's frame rows (any
        rows, e.g. sampled frames), read block by block as `read_frames` does."""
        out = {}
        for name in names:
            array = self.root[f"data/{name}"]
            rows, filled = np.empty((int(keep.sum()), *array.shape[1:]), array.dtype), 0
            for start in range(0, len(keep), READ_BLOCK_FRAMES):
                mask = keep[start: start + READ_BLOCK_FRAMES]
                count = int(mask.sum())
                if count:
                    block = self._read(f"data/{name}", slice(start, start + len(mask)))
                    rows[filled: filled + count] = block[mask]
                    filled += count
            out[name] = rows
        return out
