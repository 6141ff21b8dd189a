"""Key/value cache for frame-by-frame generation (written by hand: the cache layout follows
the denoiser's block-causal attention, which no library provides).

Dimensions: b batch, h heads, f cached frames, p tokens per frame, e head width.
Keys are stored *before* the temporal rotary embedding, and the denoiser rotates them by
their position inside the current window at attention time; so when the window slides,
cached keys stay valid and attention sees the same relative positions as a recompute of
the window would.
"""

from __future__ import annotations

import torch


class KVCache:
    """Per-layer keys and values of finished frames, with an optional sliding window.

    Args:
        num_layers: transformer blocks in the denoiser.
        tokens_per_frame: p.
        max_frames: frames kept (None keeps every frame); when full, the oldest frame is
            dropped, except the first one if `keep_first_frame`.
        keep_first_frame: keep frame 0 (the real start frame) for the whole rollout.
    """

    def __init__(self, num_layers: int, tokens_per_frame: int, max_frames: int | None = None, keep_first_frame: bool = False):
        if max_frames is not None and max_frames < 1 + int(keep_first_frame):
            raise ValueError(f"max_frames must be >= {1 + int(keep_first_frame)}, got {max_frames}")
        self.tokens_per_frame = tokens_per_frame
        self.max_frames = max_frames
        self.keep_first_frame = keep_first_frame
        self.keys: list[torch.Tensor | None] = [None] * num_layers  # each (b, h, f * p, e)
        self.values: list[torch.Tensor | None] = [None] * num_layers

    @property
    def num_frames(self) -> int:
        k = self.keys[0]
        return 0 if k is None else k.shape[2] // self.tokens_per_frame

    def get(self, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return self.keys[layer], self.values[layer]

    def append(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Add whole frames' keys and values (b, h, n * p, e) to `layer`, then apply the window."""
        old_k, old_v = self.keys[layer], self.values[layer]
        k = keys if old_k is None else torch.cat([old_k, keys], dim=2)
        v = values if old_v is None else torch.cat([old_v, values], dim=2)
        self.keys[layer], self.values[layer] = self._window(k), self._window(v)

    def _window(self, x: torch.Tensor) -> torch.Tensor:
        p = self.tokens_per_frame
        frames = x.shape[2] // p
        if self.max_frames is None or frames <= self.max_frames:
            return x
        if self.keep_first_frame:
            return torch.cat([x[:, :, :p], x[:, :, (frames - self.max_frames + 1) * p :]], dim=2)
        return x[:, :, (frames - self.max_frames) * p :]


    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values if t is not None)
