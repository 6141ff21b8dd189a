"""Causal spatio-temporal transformer that predicts v for every frame of a latent video.

Dimension legend: b batch, t frames, p patches (tokens) per frame, d width, h heads,
e head width, c latent channels, H x W latent size.

Each frame carries its own noise level and its own action (the seed's per-frame noise and
per-frame action dropout): both are embedded into one conditioning vector per frame that
modulates that frame's tokens (AdaLN-Zero, Peebles & Xie 2023). Attention is bidirectional
inside a frame and block-causal across frames, so no frame sees a later one; time enters
only as a rotary embedding of the frame index (relative, so a sliding window keeps it
valid). With `use_previous_frame`, every frame's tokens also see the frame before it, as it
appears in the sequence (noisy or not), pixel-aligned through the patch embedding: an
identity path in time, the Dexterous World Models insight applied to the previous frame
(docs/design.md, "The previous frame as an input": through attention alone a model learned to
copy slowly). Optional pixel-aligned condition latents (static scene, grippers; the Dexterous
World Models recipe) enter through a zero-initialised projection, so adding them leaves a
trained model's output unchanged at first. Per-frame condition vectors (the grippers' pose, the
grasp state: `WorldModel.encode_conditions`) come as a separate input and are embedded into
each frame's conditioning vector (`vector_dim`), or, in the first pose-conditioned models, go
through the same projection as channels constant over the latent grid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from wmgym.model.kv_cache import KVCache


@dataclass
class DenoiserConfig:
    """Every constructor argument of `Denoiser` (saved as config.json)."""

    latent_channels: int = 3
    latent_height: int = 64
    latent_width: int = 64
    patch_size: int = 8
    condition_channels: int = 0
    width: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    action_dim: int = 20
    use_previous_frame: bool = True
    vector_dim: int = 0
    """Size of the per-frame condition vector read by `vector_embed` (WMFold-v0: the grasp state),
    an MLP whose output joins the per-frame adaLN conditioning as the action's does; the vector is
    the last `vector_dim` of the `condition_channels` (0: a given vector is
    broadcast over the grid and goes through the patch projection `condition_in` with the
    maps, as in the first pose-conditioned models, which learnt nothing from the pose)."""

    @property
    def tokens_per_frame(self) -> int:
        return (self.latent_height // self.patch_size) * (self.latent_width // self.patch_size)

    def to_dict(self) -> dict:
        return asdict(self)


def rotary_table(positions: torch.Tensor, head_width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotations of positions (b or 1, n) by the angles position * freq (RoFormer), per channel
    of a head: (cos, signed sin) (b or 1, 1, n, e), each angle twice, the sin as (-sin, +sin) for
    channel pairs (2i, 2i + 1); computed once per forward."""
    freqs = 1.0 / (10000 ** (torch.arange(0, head_width, 2, device=positions.device, dtype=torch.float32) / head_width))
    angles = positions.to(torch.float32)[:, None, :, None] * freqs  # (b, 1, n, e/2)
    cos, sin = angles.cos(), angles.sin()
    return cos.repeat_interleave(2, dim=-1), torch.stack([-sin, sin], dim=-1).flatten(-2)


def rotary(x: torch.Tensor, table: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate the channel pairs (2i, 2i + 1) of x (b, h, n, e) by the angles of `table`:
    (x1 cos - x2 sin, x1 sin + x2 cos), as x * cos + (pairs swapped) * signed sin, which is the
    same arithmetic bit for bit in fewer passes over x."""
    cos, signed_sin = (t.to(x.dtype) for t in table)
    return x * cos + x.unflatten(-1, (-1, 2)).roll(1, dims=-1).flatten(-2) * signed_sin  # roll: a faster swap than flip


class Block(nn.Module):
    """Pre-norm transformer block with per-frame AdaLN-Zero modulation and cached attention."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x, cond, layer: int, cache: KVCache | None, write_cache: bool, rope, mask, output: bool = True):
        """x (b, t, p, d) -> x (b, t, p, d); with `output` False only writes the cache (returns None)."""
        b, t, p, d = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond)[:, :, None].chunk(6, dim=-1)  # (b, t, 1, d) each
        y = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = self.qkv(y).reshape(b, t * p, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)  # (b, h, t*p, e)
        query_rope, rotate_cached = rope
        keys, values = rotary(k, query_rope), v  # the new frames' keys sit at their queries' positions
        if cache is not None and output:
            keys, values = cache.attention_inputs(layer, keys, values, rotate_cached)  # cached frames first
        if write_cache:
            cache.append(layer, k, v)
        if not output:
            return None
        attn = F.scaled_dot_product_attention(rotary(q, query_rope), keys, values, attn_mask=mask)
        attn = attn.transpose(1, 2).reshape(b, t, p, d)
        x = x + gate1 * self.proj(attn)
        x = x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)
        return x


class Denoiser(nn.Module):
    """v-prediction network over latent videos.

    forward(noisy (b, t, c, H, W), timesteps (b, t) int in [0, T), actions (b, t, action_dim)
    normalised, is_action_dropped (b, t) bool (True: use the learned null action),
    condition_maps (b, t, m, H, W) pixel-aligned condition latents or None, condition_vectors
    (b, t, v) per-frame condition vectors or None (m + v = condition_channels), cache,
    write_cache, return_output) -> v (b, t, c, H, W), or None with `return_output` False (a pass
    that only writes the cache skips what only the output needs: the last block's attention and
    MLP, the output head). With `config.vector_dim` (= v), the vectors are embedded into each
    frame's conditioning vector; without, they are broadcast over the grid and projected with
    the maps.

    Frame i's action is a_{i-1}, the action that produced it (frame 0 gets the null action).
    With a `cache`, the t frames given are the newest ones, after the cache's frames, and
    `previous_first` (b, 1, c, H, W) is the last cached frame's latent as it was written.
    `previous` (b, t, c, H, W) overrides the predecessor input outright (training passes each
    frame's predecessor at the history noise level, as sampling sees it).
    """

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        cfg = self.config = config
        if cfg.latent_height % cfg.patch_size or cfg.latent_width % cfg.patch_size:
            raise ValueError(f"latent size {cfg.latent_height}x{cfg.latent_width} is not divisible by patch_size {cfg.patch_size}")
        if cfg.width % cfg.num_heads or (cfg.width // cfg.num_heads) % 2:
            raise ValueError(f"width {cfg.width} must split into {cfg.num_heads} heads of even width")
        patch_dim = cfg.latent_channels * cfg.patch_size**2
        self.patch_in = nn.Linear(patch_dim, cfg.width)
        self.previous_in = nn.Linear(patch_dim, cfg.width) if cfg.use_previous_frame else None
        if not 0 <= cfg.vector_dim <= cfg.condition_channels:
            raise ValueError(f"vector_dim {cfg.vector_dim} must be in [0, condition_channels={cfg.condition_channels}]")
        spatial = cfg.condition_channels - cfg.vector_dim
        self.condition_in = nn.Linear(spatial * cfg.patch_size**2, cfg.width) if spatial else None
        # the vector's embedding: its first layer random features of the standardised vector
        self.vector_embed = nn.Sequential(nn.Linear(cfg.vector_dim, cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.width)) \
            if cfg.vector_dim else None
        for layer in (self.condition_in, None if self.vector_embed is None else self.vector_embed[2]):
            if layer is not None:  # zero-initialised: conditions start with no effect
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.position = nn.Parameter(torch.randn(cfg.tokens_per_frame, cfg.width) * 0.02)
        self.time_proj = Timesteps(cfg.width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(cfg.width, cfg.width)
        self.action_embed = nn.Sequential(nn.Linear(cfg.action_dim, cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.width))
        self.null_action = nn.Parameter(torch.zeros(cfg.width))
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(cfg.width, elementwise_affine=False, eps=1e-6)
        self.modulation_out = nn.Sequential(nn.SiLU(), nn.Linear(cfg.width, 2 * cfg.width))
        self.patch_out = nn.Linear(cfg.width, patch_dim)
        for layer in (self.modulation_out[1], self.patch_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, hh, ww = x.shape
        s = self.config.patch_size
        x = x.reshape(b, t, c, hh // s, s, ww // s, s).permute(0, 1, 3, 5, 2, 4, 6)  # (b, t, H/s, W/s, c, s, s)
        return x.reshape(b, t, (hh // s) * (ww // s), c * s * s)  # (b, t, p, c*s*s)

    def _unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        cfg, s = self.config, self.config.patch_size
        b, t = x.shape[:2]
        x = x.reshape(b, t, cfg.latent_height // s, cfg.latent_width // s, cfg.latent_channels, s, s)
        return x.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, t, cfg.latent_channels, cfg.latent_height, cfg.latent_width)

    def forward(self, noisy, timesteps, actions, is_action_dropped=None, condition_maps=None, condition_vectors=None,
                cache: KVCache | None = None, write_cache: bool = False, previous_first=None, previous=None,
                return_output: bool = True):
        cfg = self.config
        if not (return_output or write_cache):
            raise ValueError("a call without output must write the cache (write_cache=True)")
        b, t = noisy.shape[:2]
        x = self.patch_in(self._patchify(noisy)) + self.position  # (b, t, p, d)
        if self.previous_in is not None:
            if previous is None:  # each frame's predecessor as it appears in the sequence
                # previous_first (b, 1, c, H, W): the frame before noisy[:, 0] (zeros if None).
                first = torch.zeros_like(noisy[:, :1]) if previous_first is None else previous_first.to(noisy.dtype)
                previous = torch.cat([first, noisy[:, :-1]], dim=1)  # (b, t, c, H, W)
            x = x + self.previous_in(self._patchify(previous.to(noisy.dtype)))
        given = (0 if condition_maps is None else condition_maps.shape[2]) + (0 if condition_vectors is None else condition_vectors.shape[2])
        if given != cfg.condition_channels:
            raise ValueError(f"this denoiser expects {cfg.condition_channels} condition channels (maps and vectors); got {given}")
        if cfg.vector_dim and (condition_vectors is None or condition_vectors.shape[2] != cfg.vector_dim):
            raise ValueError(f"this denoiser embeds a per-frame condition vector of {cfg.vector_dim} values; got "
                             f"{None if condition_vectors is None else tuple(condition_vectors.shape)}")
        if self.condition_in is not None:
            maps = [] if condition_maps is None else [condition_maps]
            if condition_vectors is not None and not cfg.vector_dim:  # the first pose models: vectors as constant channels
                maps.append(condition_vectors[..., None, None].expand(*condition_vectors.shape, *noisy.shape[-2:]))
            x = x + self.condition_in(self._patchify(torch.cat(maps, dim=2) if len(maps) > 1 else maps[0]))
        time = self.time_embed(self.time_proj(timesteps.reshape(-1)).to(x.dtype)).reshape(b, t, -1)  # (b, t, d)
        act = self.action_embed(actions.to(x.dtype))  # (b, t, d)
        if is_action_dropped is not None:
            act = torch.where(is_action_dropped[..., None], self.null_action.to(act.dtype), act)
        cond = time + act  # (b, t, d)
        if self.vector_embed is not None:  # the vector is not dropped with the action: it is the state, not the command
            cond = cond + self.vector_embed(condition_vectors.to(x.dtype))
        rope, mask = self._positions_and_mask(cache, t, x.device)
        for layer, block in enumerate(self.blocks):
            # Without output, the last block's keys and values are all that is needed of it.
            x = block(x, cond, layer, cache, write_cache, rope, mask, output=return_output or layer < len(self.blocks) - 1)
        if not return_output:
            return None
        shift, scale = self.modulation_out(cond)[:, :, None].chunk(2, dim=-1)
        return self._unpatchify(self.patch_out(self.norm_out(x) * (1 + scale) + shift))

    def _positions_and_mask(self, cache: KVCache | None, t: int, device):
        """(rotary table of the new frames' tokens, rotate(cached keys, their positions)), and the attention mask (or None).

        A frame's temporal position is its rank among its row's valid frames (the cached ones
        first); keys of invalid cache slots (a row that restarted) are masked out. The cache
        rotates its keys with `rotate` only when it has changed (`KVCache.attention_inputs`).
        """
        cfg, p = self.config, self.config.tokens_per_frame
        past_frames = cache.num_frames if cache is not None else 0
        ranks = cache.positions() if cache is not None else None
        slot = torch.arange(past_frames + t, device=device)  # (f + t,)
        if ranks is None:
            position = slot[None, past_frames:]  # (1, t)
        else:
            rank, count = ranks  # (b, f), (b,)
            position = count[:, None] + torch.arange(t, device=device)  # (b, t)
        frame_of_key = slot.repeat_interleave(p)  # (n_keys,)
        frame_of_query = frame_of_key[past_frames * p :]  # (t*p,)
        # Block-causal mask (t*p, n_keys); a single new frame sees every key, so it needs none
        # (and the masked attention kernel is several times slower on CPU).
        mask = None if t == 1 else frame_of_key[None, :] <= frame_of_query[:, None]
        if ranks is not None:
            key_valid = torch.cat([cache.valid, cache.valid.new_ones(cache.valid.shape[0], t)], dim=1).repeat_interleave(p, dim=1)
            key_valid = key_valid[:, None, None, :]  # (b, 1, 1, n_keys)
            mask = key_valid if mask is None else mask[None, None] & key_valid
        head_width = cfg.width // cfg.num_heads
        rotate_cached = lambda keys, positions: rotary(keys, rotary_table(positions.repeat_interleave(p, dim=1), head_width))
        return (rotary_table(position.repeat_interleave(p, dim=1), head_width), rotate_cached), mask
