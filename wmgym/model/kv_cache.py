"""Key/value cache for frame-by-frame generation (written by hand: the cache layout follows
the denoiser's block-causal attention, which no library provides).

Dimensions: b batch, h heads, f cached frame slots, p tokens per frame, e head width.

Keys are stored *before* the temporal rotary embedding, and rotated by their rank among the
row's valid frames for attention. So when the window slides, cached keys stay valid and
attention sees the same relative positions as a recompute of the window. The rotated keys are
kept too, in an attention buffer with room for the new frames after them: they are re-made only
when the cache changes (once per finished frame), not at every denoiser call, and a call only
writes its new frames' keys and values into the buffer's tail instead of concatenating the
whole cache (issue 41; the same values, so the same attention, bit for bit).

Rows (batch elements) can restart independently -- a vector environment resets one
imagined episode while the others go on. A row's old frames are then marked invalid
(`valid` (b, f)), its new start frames are appended, and the window keeps, per row, its first
valid frame (with `keep_first_frame`) and its newest valid ones. Slots are compacted with one
gather when the window overflows, so every row sees exactly the frames, at exactly the
positions, that a fresh rollout from its own start would see.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class KVCache:
    """Per-layer keys and values of finished frames, with an optional sliding window.

    Args:
        num_layers: transformer blocks in the denoiser.
        tokens_per_frame: p.
        max_frames: frames kept per row (None keeps every frame); when full, a row's oldest
            frame is dropped, except its first one if `keep_first_frame`.
        keep_first_frame: keep each row's start frame for the whole rollout.
    """

    def __init__(self, num_layers: int, tokens_per_frame: int, max_frames: int | None = None, keep_first_frame: bool = False):
        if max_frames is not None and max_frames < 1 + int(keep_first_frame):
            raise ValueError(f"max_frames must be >= {1 + int(keep_first_frame)}, got {max_frames}")
        self.num_layers = num_layers
        self.tokens_per_frame = tokens_per_frame
        self.max_frames = max_frames
        self.keep_first_frame = keep_first_frame
        self.keys: list[torch.Tensor | None] = [None] * num_layers  # each (b, h, f * p, e)
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.valid: torch.Tensor | None = None  # (b, f) bool; None while every slot is valid
        # Per layer: (rotated keys, values) (b, h, (f + n) * p, e), the cached frames then room for n new ones; None: stale.
        self._buffers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers
        # This pass's (gather index, valid, the index's slots when every row's are the same):
        self._plan: tuple[torch.Tensor | None, torch.Tensor | None, list[int] | None] = (None, None, None)

    @property
    def num_frames(self) -> int:
        """Frame slots held (the same for every row; some may be invalid for some rows)."""
        k = self.keys[0]
        return 0 if k is None else k.shape[2] // self.tokens_per_frame

    def get(self, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Keys (before rotation) and values (b, h, f * p, e) of `layer`, or (None, None) when empty."""
        return self.keys[layer], self.values[layer]

    def attention_inputs(self, layer: int, new_keys: torch.Tensor, new_values: torch.Tensor,
                         rotate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values to attend over: the cached frames', rotated, then the new frames'.

        Args:
            new_keys: rotated keys (b, h, n * p, e) of the n frames of this call.
            new_values: their values (b, h, n * p, e).
            rotate: rotate(keys (b, h, f * p, e), positions (b or 1, f)) -> the keys rotated by
                their frames' positions; called only when the cache changed since the last call.
        Returns:
            keys, values (b, h, (f + n) * p, e). They are views of a buffer that the next call
            overwrites: use them before calling again.
        """
        past_keys, past_values = self.get(layer)
        if past_keys is None:
            return new_keys, new_values
        b, h, cached, e = past_keys.shape
        buffer = self._buffers[layer]
        if buffer is None or buffer[0].shape[2] != cached + new_keys.shape[2] or buffer[0].dtype != new_keys.dtype:
            ranks = self.positions()  # this layer's frames: `valid` changes after the last layer's append
            positions = torch.arange(cached // self.tokens_per_frame, device=past_keys.device)[None] if ranks is None else ranks[0]
            buffer = tuple(x.new_empty(b, h, cached + new_keys.shape[2], e, dtype=new_keys.dtype) for x in (past_keys, past_values))
            buffer[0][:, :, :cached] = rotate(past_keys, positions)
            buffer[1][:, :, :cached] = past_values
            self._buffers[layer] = buffer
        buffer[0][:, :, cached:] = new_keys
        buffer[1][:, :, cached:] = new_values
        return buffer

    def positions(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(rank (b, f) of each slot among its row's valid frames, valid count (b,)), or None when all are valid."""
        if self.valid is None:
            return None
        rank = self.valid.long().cumsum(dim=1) - 1
        return rank.clamp(min=0), self.valid.sum(dim=1)

    def append(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Add whole frames' keys and values (b, h, n * p, e) to every row of `layer`, then apply the window.

        The denoiser calls this once per layer in order; layer 0 plans the window for the pass.
        """
        n = keys.shape[2] // self.tokens_per_frame
        if layer == 0:
            valid = None if self.valid is None else torch.cat([self.valid, self.valid.new_ones(keys.shape[0], n)], dim=1)
            self._plan = self._window_plan(self.num_frames + n, valid, keys.shape[0], keys.device)
        self._store(layer, keys, values)
        if layer == self.num_layers - 1:
            self.valid = self._plan[1]

    def append_rows(self, rows: torch.Tensor, other: "KVCache") -> None:
        """Restart `rows` (long (r,)) with the frames held by `other` (a cache of r rows, all valid).

        The rows' old frames become invalid; `other`'s frames are appended as new slots
        (invalid for every other row), then the window applies.
        """
        b, f, n = self.batch_size, self.num_frames, other.num_frames
        if other.valid is not None:
            raise ValueError("the cache to take frames from must hold only valid frames")
        valid = self.valid.clone() if self.valid is not None else torch.ones(b, f, dtype=torch.bool, device=rows.device)
        valid[rows] = False
        new = torch.zeros(b, n, dtype=torch.bool, device=rows.device)
        new[rows] = True
        valid = torch.cat([valid, new], dim=1)
        self._plan = self._window_plan(f + n, valid, b, rows.device)
        for layer in range(self.num_layers):
            padded = []
            for x in other.get(layer):
                full = x.new_zeros(b, *x.shape[1:])
                full[rows] = x
                padded.append(full)
            self._store(layer, *padded)
        self.valid = self._plan[1]

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    def _store(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        self._buffers[layer] = None  # its rotations and contents are stale
        index, _, shared = self._plan
        p = self.tokens_per_frame
        for store, new in ((self.keys, keys), (self.values, values)):
            if shared is not None and store[layer] is not None:
                # Every row keeps the same slots: one copy of contiguous slices instead of a concatenation and a gather.
                cached = store[layer].shape[2] // p
                runs: list[list] = []  # [tensor, first slot, end slot]
                for slot in shared:
                    piece, local = (store[layer], slot) if slot < cached else (new, slot - cached)
                    if runs and runs[-1][0] is piece and runs[-1][2] == local:
                        runs[-1][2] += 1
                    else:
                        runs.append([piece, local, local + 1])
                store[layer] = torch.cat([piece[:, :, first * p : end * p] for piece, first, end in runs], dim=2)
                continue
            x = new if store[layer] is None else torch.cat([store[layer], new], dim=2)
            store[layer] = x if index is None else self._gather(x, index)

    def _window_plan(self, slots: int, valid: torch.Tensor | None, b: int, device) -> tuple:
        """(gather index (b, max_frames) or None, valid (b, slots kept) or None, the index's row as
        a list when every row's is the same, else None) for `slots` slots."""
        if self.max_frames is None or slots <= self.max_frames:
            return None, valid, None
        if valid is None:
            valid = torch.ones(b, slots, dtype=torch.bool, device=device)
        rank = valid.long().cumsum(dim=1) - 1  # (b, slots)
        count = valid.sum(dim=1, keepdim=True)
        keep_first = int(self.keep_first_frame)
        kept = valid & ((rank >= count - (self.max_frames - keep_first)) | ((rank == 0) & bool(keep_first)))
        # Kept slots last, in slot order; the row's remaining columns hold dropped slots, marked invalid.
        order = torch.argsort(kept.long() * slots + torch.arange(slots, device=device), dim=1)[:, -self.max_frames :]
        new_valid = torch.gather(kept, 1, order)
        shared = order[0].tolist() if bool((order == order[:1]).all()) else None
        return order, None if bool(new_valid.all()) else new_valid, shared

    def _gather(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        b, h, _, e = x.shape
        p = self.tokens_per_frame
        frames = x.reshape(b, h, -1, p, e)  # (b, h, f, p, e)
        index = index[:, None, :, None, None].expand(b, h, index.shape[1], p, e)
        return torch.gather(frames, 2, index).reshape(b, h, -1, e)

    def num_bytes(self) -> int:
        """Bytes held: the keys and values, and the attention buffers."""
        held = self.keys + self.values + [x for buffer in self._buffers if buffer is not None for x in buffer]
        return sum(t.numel() * t.element_size() for t in held if t is not None)
