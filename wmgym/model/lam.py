"""A factored latent action model (FLAM, seed 001): latent actions per scene factor, learnt from frames alone.

A monolithic latent action model (Genie, AdaWorld) infers one latent action z_t from a pair of
frames (o_t, o_{t+1}) and decodes o_{t+1} from (o_t, z_t). In a bimanual scene two entities
act at once and one vector entangles them. FLAM splits the scene into K factors (slots) and
infers one latent action per factor, with the same inverse and forward dynamics model shared
by every factor. FLAM publishes no code; this is our reading of it, written by hand (no
library has slot attention or per-slot latent dynamics), sized to train on two CPU cores:

    frames o_t (B, T, 3, H, W) in [-1, 1]
      -> CNN encoder: feature maps F_t (B, T, C, h, w), h = H / 4, plus a learnt position map
      -> slot attention (Locatello et al. 2020) per frame, its slots initialised from the
         previous frame's (SAVi, Kipf et al. 2022) and at t = 0 from K learnt queries (so slot k
         is the same factor in every episode): masks A_t (B, T, K, h, w), softmax over slots
      -> causal attention over time, one slot at a time (a transformer layer with a causal
         mask): slot states s_t (B, T, K, S) that see frames <= t only
      -> factor maps M_t^k = A_t^k * F_t: what slot k owns of the frame
    inverse dynamics, shared by the slots: (M_t^k, M_{t+1}^k, A_t^k, A_{t+1}^k, s_t^k, s_{t+1}^k)
      -> Gaussian q(z_t^k) with D / K dimensions (reparameterised in training; its mean in eval)
    forward dynamics, shared by the slots: (M_t^k, A_t^k, s_t^k, z_t^k) -> a feature change
      and a mask logit per slot; the changes are mixed by a softmax over slots (initialised at
      the slot attention's masks), so a slot changes mainly the pixels it owns
    decoder: the mixed change (B, C, h, w) and o_t -> o_{t+1} = o_t + residual (the residual's
      last layers start at zero: the untrained model copies the last frame)
    loss = MSE(o_{t+1}, prediction) + beta * sum_k KL(q(z_t^k) || N(0, I))

With K = 1 the mask is 1 everywhere and the model is the monolithic baseline with the same
total latent size D: its inverse dynamics sees the whole feature map of both frames.

Rollouts (`rollout`) are autoregressive: the latent actions come from elsewhere (e.g.
inferred from a ground-truth video with `infer_latents`) and each predicted frame is encoded
again to predict the next, with the slot chain carried along, exactly as in training but for
the frames being predicted ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from wmgym.model.model_files import ConfigAndWeights


@dataclass
class LAMConfig:
    """Architecture of a `LatentActionModel` (saved as config.json)."""

    height: int = 64
    width: int = 64
    slots: int = 2
    """K, the factors (1: the monolithic baseline)."""
    latent_dim: int = 16
    """D, the total latent action size; each slot gets D / K dimensions."""
    channels: tuple[int, ...] = (32, 64)
    """Encoder conv widths, one stride-2 level each; the last is the feature width C."""
    slot_dim: int = 64
    """S, a slot state's width."""
    hidden: int = 32
    """Width of the per-slot inverse and forward dynamics convs and the decoder."""
    iterations: int = 3
    """Slot attention iterations at the first frame."""
    later_iterations: int = 1
    """Slot attention iterations at later frames (their slots start from the previous frame's)."""
    max_frames: int = 32
    """Longest clip the causal time attention has positions for."""
    heads: int = 4
    """Heads of the causal time attention."""
    extra: dict = field(default_factory=dict)
    """Free-form notes (e.g. the store it was trained on); not read by the model."""

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        for name in ("height", "width", "slots", "latent_dim", "slot_dim", "hidden", "iterations", "later_iterations",
                     "max_frames", "heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels needs at least one positive width, got {self.channels}")
        if self.latent_dim % self.slots:
            raise ValueError(f"latent_dim {self.latent_dim} must divide by slots {self.slots} (D / K dimensions each)")
        scale = 2 ** len(self.channels)
        if self.height % scale or self.width % scale:
            raise ValueError(f"frames of {self.height}x{self.width} do not divide by 2 ** {len(self.channels)} "
                             f"(one stride-2 level per channel width)")
        if self.slot_dim % self.heads:
            raise ValueError(f"slot_dim {self.slot_dim} must divide by heads {self.heads}")

    @property
    def slot_latent_dim(self) -> int:
        """D / K, the latent size of one slot."""
        return self.latent_dim // self.slots

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w), the feature map's size."""
        scale = 2 ** len(self.channels)
        return self.height // scale, self.width // scale


class SlotAttention(nn.Module):
    """Slot attention (Locatello et al. 2020): slots compete for the inputs (softmax over slots),
    then each is updated by a GRU from the weighted mean of the inputs it won."""

    def __init__(self, input_dim: int, slot_dim: int, hidden: int):
        super().__init__()
        self.norm_inputs, self.norm_slots, self.norm_mlp = nn.LayerNorm(input_dim), nn.LayerNorm(slot_dim), nn.LayerNorm(slot_dim)
        self.to_q = nn.Linear(slot_dim, slot_dim, bias=False)
        self.to_k = nn.Linear(input_dim, slot_dim, bias=False)
        self.to_v = nn.Linear(input_dim, slot_dim, bias=False)
        self.gru = nn.GRUCell(slot_dim, slot_dim)
        self.mlp = nn.Sequential(nn.Linear(slot_dim, hidden), nn.GELU(), nn.Linear(hidden, slot_dim))
        self.scale = slot_dim ** -0.5

    def forward(self, inputs: torch.Tensor, slots: torch.Tensor, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs (n, N, C), slots (n, K, S) -> (slots (n, K, S), attention (n, K, N), summing to 1 over K)."""
        inputs = self.norm_inputs(inputs)
        keys, values = self.to_k(inputs), self.to_v(inputs)
        attention = None
        for _ in range(iterations):
            queries = self.to_q(self.norm_slots(slots))
            attention = torch.softmax(torch.einsum("nks,nis->nki", queries, keys) * self.scale, dim=1)  # over slots
            weights = attention / (attention.sum(-1, keepdim=True) + 1e-8)  # a weighted mean over the inputs
            updates = torch.einsum("nki,nis->nks", weights, values)
            slots = self.gru(updates.reshape(-1, updates.shape[-1]), slots.reshape(-1, slots.shape[-1])).view_as(slots)
            slots = slots + self.mlp(self.norm_mlp(slots))
        return slots, attention


def _conv_block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(min(8, c_out), c_out), nn.GELU())


class LatentActionModel(ConfigAndWeights, nn.Module):
    """FLAM's factored latent action model (see the module docstring); K = 1 is the monolithic baseline.

    Frames enter as uint8 (B, T, H, W, 3) through `to_input` or as float (B, T, 3, H, W) in [-1, 1].
    """

    CONFIG_CLASS = LAMConfig
    MODEL_NAME = "latent action"

    def __init__(self, config: LAMConfig, device="cpu"):
        super().__init__()
        self.config = config
        c, k, s, hidden = config.channels[-1], config.slots, config.slot_dim, config.hidden
        h, w = config.grid
        layers, c_in = [], 3
        for width in config.channels:
            layers.append(_conv_block(c_in, width, stride=2))
            c_in = width
        layers.append(nn.Conv2d(c_in, c, 3, 1, 1))
        self.encoder = nn.Sequential(*layers)
        self.position = nn.Parameter(torch.randn(1, c, h, w) * 0.02)
        self.input_mlp = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, c), nn.GELU(), nn.Linear(c, c))
        self.slot_queries = nn.Parameter(torch.randn(k, s) * s ** -0.5)
        self.slot_attention = SlotAttention(c, s, 2 * s)
        self.slot_predictor = nn.Sequential(nn.LayerNorm(s), nn.Linear(s, s), nn.GELU(), nn.Linear(s, s))
        self.time_position = nn.Parameter(torch.zeros(config.max_frames, s))
        self.time_attention = nn.TransformerEncoderLayer(s, config.heads, 2 * s, dropout=0.0, activation="gelu",
                                                         batch_first=True, norm_first=True)
        d = config.slot_latent_dim
        # inverse dynamics, shared by the slots: two frames' factor maps and masks -> q(z^k)
        self.idm_convs = nn.Sequential(_conv_block(2 * c + 2, hidden, stride=2), _conv_block(hidden, hidden, stride=2))
        self.idm_head = nn.Sequential(nn.Linear(hidden * (h // 4) * (w // 4) + 2 * s, 2 * hidden), nn.GELU(),
                                      nn.Linear(2 * hidden, 2 * d))
        # q(z) starts narrow (std 0.14): with unit variance the untrained decoder sees only noise in
        # z, learns to ignore it, and the posterior collapses to the prior
        nn.init.constant_(self.idm_head[-1].bias[d:], -4.0)
        # forward dynamics, shared by the slots: a factor map, its mask and state, and z^k -> change + mask logit
        # (the slot's state and latent enter after the norm, FiLM-style: added before a GroupNorm,
        # a per-channel constant is normalised away and the latent could not steer anything)
        self.fdm_vector = nn.Linear(s + d, 2 * hidden)
        self.fdm_in = nn.Sequential(nn.Conv2d(c + 1, hidden, 3, 1, 1), nn.GroupNorm(min(8, hidden), hidden))
        self.fdm_out = nn.Sequential(nn.GELU(), nn.Conv2d(hidden, hidden, 3, 1, 1), nn.GELU(), nn.Conv2d(hidden, c + 1, 1))
        # decoder: the mixed change and o_t's features -> a coarse residual, pixel-shuffled up to full
        # size, refined at full size with o_t itself (residual o_{t+1} - o_t; both last layers start at zero)
        self.scale = 2 ** len(config.channels)
        self.decoder_coarse = nn.Sequential(_conv_block(2 * c, hidden), nn.Conv2d(hidden, 3 * self.scale ** 2, 3, 1, 1))
        self.decoder_fine = nn.Sequential(nn.Conv2d(6, 16, 3, 1, 1), nn.GELU(), nn.Conv2d(16, 3, 3, 1, 1))
        for last in (self.decoder_coarse[-1], self.decoder_fine[-1]):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.to(device)

    # ----------------------------------------------------------------------------------------------- inputs

    @staticmethod
    def to_input(frames: torch.Tensor) -> torch.Tensor:
        """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) in [-1, 1]."""
        return frames.float().movedim(-1, -3) / 127.5 - 1.0

    def _check_frames(self, frames: torch.Tensor) -> None:
        if frames.ndim != 5 or frames.shape[2] != 3 or tuple(frames.shape[-2:]) != (self.config.height, self.config.width):
            raise ValueError(f"frames must be (B, T, 3, {self.config.height}, {self.config.width}) floats in [-1, 1], "
                             f"got {tuple(frames.shape)}")
        if frames.shape[1] > self.config.max_frames:
            raise ValueError(f"clips of at most {self.config.max_frames} frames (max_frames), got {frames.shape[1]}")

    # ----------------------------------------------------------------------------------------------- factors

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) -> feature maps (n, C, h, w)."""
        return self.encoder(frames) + self.position

    def _slot_step(self, features: torch.Tensor, previous: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame's slot attention: features (n, C, h, w), the previous frame's slots (n, K, S)
        or None at t = 0 -> (slots (n, K, S), masks (n, K, h, w))."""
        n, c, h, w = features.shape
        inputs = self.input_mlp(features.flatten(2).transpose(1, 2))  # (n, hw, C)
        if previous is None:
            init, iterations = self.slot_queries.expand(n, -1, -1), self.config.iterations
        else:
            init, iterations = previous + self.slot_predictor(previous), self.config.later_iterations
        slots, attention = self.slot_attention(inputs, init, iterations)
        return slots, attention.view(n, -1, h, w)

    def _time_attention(self, slots: torch.Tensor) -> torch.Tensor:
        """(B, T, K, S) slots -> (B, T, K, S) states; each attends to its own slot's past (causal)."""
        b, t, k, s = slots.shape
        sequence = (slots.transpose(1, 2).reshape(b * k, t, s) + self.time_position[:t])
        mask = torch.ones(t, t, dtype=torch.bool, device=slots.device).triu(1)  # True = may not attend (the future)
        return self.time_attention(sequence, src_mask=mask).view(b, k, t, s).transpose(1, 2)

    def factorise(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """frames (B, T, 3, H, W) -> {"features" (B, T, C, h, w), "masks" (B, T, K, h, w), "slots" (B, T, K, S),
        "states" (B, T, K, S)}. Causal: nothing at t depends on frames after t."""
        self._check_frames(frames)
        b, t = frames.shape[:2]
        features = self.features(frames.flatten(0, 1)).unflatten(0, (b, t))
        slots, masks, previous = [], [], None
        for i in range(t):
            previous, mask = self._slot_step(features[:, i], previous)
            slots.append(previous)
            masks.append(mask)
        slots = torch.stack(slots, 1)
        return {"features": features, "masks": torch.stack(masks, 1), "slots": slots, "states": self._time_attention(slots)}

    # ----------------------------------------------------------------------------------------------- dynamics

    def _idm(self, features, masks, states) -> tuple[torch.Tensor, torch.Tensor]:
        """Factors of T frames -> (mean, log variance) of q(z), each (B, T - 1, K, D / K)."""
        b, t, k = masks.shape[:3]
        maps = masks.unsqueeze(3) * features.unsqueeze(2)  # (B, T, K, C, h, w)
        pair = torch.cat([maps[:, :-1], maps[:, 1:], masks[:, :-1, :, None], masks[:, 1:, :, None]], 3)
        pooled = self.idm_convs(pair.flatten(0, 2)).flatten(1)  # (B (T-1) K, hidden * h/4 * w/4)
        vector = torch.cat([states[:, :-1], states[:, 1:]], -1).flatten(0, 2)
        mean, log_var = self.idm_head(torch.cat([pooled, vector], 1)).view(b, t - 1, k, -1).chunk(2, -1)
        return mean, log_var.clamp(-12.0, 6.0)

    def infer_latents(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """The latent actions of a video: frames (B, T, 3, H, W) -> {"mean", "log_var"} (B, T - 1, K, D / K)
        and the factors of `factorise`."""
        factors = self.factorise(frames)
        mean, log_var = self._idm(factors["features"], factors["masks"], factors["states"])
        return {"mean": mean, "log_var": log_var, **factors}

    def predict_next(self, frames: torch.Tensor, features, masks, states, latents) -> tuple[torch.Tensor, torch.Tensor]:
        """One step for n transitions: frames o_t (n, 3, H, W), their features (n, C, h, w), masks
        (n, K, h, w), states (n, K, S), latent actions (n, K, D / K) -> (o_{t+1} (n, 3, H, W),
        mixing weights (n, K, h, w): which slot made the change where)."""
        n, k = masks.shape[:2]
        maps = torch.cat([masks.unsqueeze(2) * features.unsqueeze(1), masks.unsqueeze(2)], 2).flatten(0, 1)  # (nK, C+1, h, w)
        scale, shift = self.fdm_vector(torch.cat([states, latents], -1)).flatten(0, 1)[:, :, None, None].chunk(2, 1)
        out = self.fdm_out(self.fdm_in(maps) * (1.0 + scale) + shift).unflatten(0, (n, k))  # (n, K, C + 1, h, w)
        change, logits = out[:, :, :-1], out[:, :, -1]
        weights = torch.softmax(logits + torch.log(masks + 1e-4), dim=1)  # (n, K, h, w)
        mixed = (weights.unsqueeze(2) * change).sum(1)  # (n, C, h, w)
        coarse = F.pixel_shuffle(self.decoder_coarse(torch.cat([mixed, features], 1)), self.scale)  # (n, 3, H, W)
        residual = coarse + self.decoder_fine(torch.cat([coarse, frames], 1))
        return (frames + residual).clamp(-1.0, 1.0), weights

    # ----------------------------------------------------------------------------------------------- training

    def compute_loss(self, frames: torch.Tensor, beta: float, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Teacher-forced loss of a clip batch, frames (B, T, 3, H, W) in [-1, 1]: every next frame
        predicted from the true frame before it and a sampled latent action.

        Returns {"loss", "mse", "kl" (summed over slots and dimensions, mean over transitions),
        "kl_per_slot" (K,)}."""
        inferred = self.infer_latents(frames)
        mean, log_var = inferred["mean"], inferred["log_var"]
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        latents = mean + torch.exp(0.5 * log_var) * noise
        kl = kl_per_slot(mean, log_var)  # (B, T-1, K)
        take = lambda x: x[:, :-1].flatten(0, 1)
        predicted, _ = self.predict_next(take(frames), take(inferred["features"]), take(inferred["masks"]),
                                         take(inferred["states"]), latents.flatten(0, 1))
        mse = F.mse_loss(predicted, frames[:, 1:].flatten(0, 1))
        per_slot = kl.mean((0, 1))
        total_kl = per_slot.sum()
        return {"loss": mse + beta * total_kl, "mse": mse, "kl": total_kl, "kl_per_slot": per_slot}

    # ----------------------------------------------------------------------------------------------- rollouts

    @torch.no_grad()
    def rollout(self, first: torch.Tensor, latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """Autoregressive rollout from first frames (B, 3, H, W) driven by latent actions (B, L, K, D / K):
        -> {"frames" (B, L + 1, 3, H, W) (the first frame included), "weights" (B, L, K, h, w)}.
        Each predicted frame is encoded again (slot chain and causal time attention included)."""
        if latents.ndim != 4 or latents.shape[2:] != (self.config.slots, self.config.slot_latent_dim):
            raise ValueError(f"latents must be (B, L, {self.config.slots}, {self.config.slot_latent_dim}), got {tuple(latents.shape)}")
        if latents.shape[1] + 1 > self.config.max_frames:
            raise ValueError(f"rollouts of at most {self.config.max_frames - 1} steps (max_frames), got {latents.shape[1]}")
        frames, slots, all_weights, previous = [first], [], [], None
        for i in range(latents.shape[1]):
            features = self.features(frames[-1])
            previous, masks = self._slot_step(features, previous)
            slots.append(previous)
            states = self._time_attention(torch.stack(slots, 1))[:, -1]
            nxt, weights = self.predict_next(frames[-1], features, masks, states, latents[:, i])
            frames.append(nxt)
            all_weights.append(weights)
        return {"frames": torch.stack(frames, 1), "weights": torch.stack(all_weights, 1)}

    @torch.no_grad()
    def reconstruct(self, frames: torch.Tensor, steps: int | None = None) -> dict[str, torch.Tensor]:
        """Roll out `steps` (default T - 1) steps from frames[:, 0], driven by the latent actions
        (posterior means) inferred from the whole clip frames (B, T, 3, H, W): the usual
        latent-action-model test. -> rollout's dict plus "latents" (B, T - 1, K, D / K) and "masks"."""
        inferred = self.infer_latents(frames)
        steps = frames.shape[1] - 1 if steps is None else steps
        out = self.rollout(frames[:, 0], inferred["mean"][:, :steps])
        return {**out, "latents": inferred["mean"], "masks": inferred["masks"]}


def kl_per_slot(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)) summed over the last dim: (..., d) -> (...)."""
    return 0.5 * (mean.square() + log_var.exp() - log_var - 1.0).sum(-1)
