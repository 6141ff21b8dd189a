"""`WorldModel`: codec + causal denoiser + sampler defaults + action statistics.

Dimension legend: b batch, c context frames, T generated frames, t all frames,
H x W pixels, h x w latents, C latent channels.

Conventions (docs/design.md, "Time: frames and actions"): frame o_t is followed by action a_t,
which produces o_{t+1}; inside the denoiser frame i is conditioned on a_{i-1} and frame 0 (and
every context frame, whose producing action is unknown) on the learned null action.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wmgym.model.codec import Codec
from wmgym.model.codec_factory import make_codec
from wmgym.model.conditions import Conditions
from wmgym.model.config_checks import read_config_json
from wmgym.model.denoiser import Denoiser, DenoiserConfig
from wmgym.model.imagination import Imagination, NonFiniteLatentsError
from wmgym.model.model_files import CONFIG_FILE, load_state_checked, resolve_device, write_model_directory
from wmgym.model.schedule import add_noise, make_scheduler
from wmgym.model.world_model_config import SamplerDefaults, WorldModelConfig  # noqa: F401  (importable from here)

VECTOR_HINTS = {  # what WMFold-v0's vectors are, for the error that asks for one
    "poses": ": each gripper's tool-centre xyz and width (GripperState.vector)",
    "held": " in [0, 1]: whether the left and right gripper hold cloth (or a prior's probability, wmgym.model.grasp_prior)",
}
LEGACY_WEIGHT_NAMES = {"pose_embed.": "vector_embed."}
"""Weight-name prefixes of checkpoints saved before the per-frame vector was named (old -> new)."""

WEIGHT_FILES = ("denoiser.safetensors", "codec.safetensors")
ONE_STEP_WEIGHTS = "denoiser_one_step.safetensors"
"""Optional weights of a denoiser distilled for one-step sampling (`wmgym distill`; `WorldModel.one_step_denoiser`)."""
GRASP_PRIOR_DIR = "grasp_prior"
"""Subdirectory of a held-conditioned checkpoint holding its `GraspPrior` (optional)."""


PREDICTIONS = ("v", "residual")
GRIPPER_DILATION = 4  # pixels the gripper mask of the gripper-weighted loss is grown by


def gripper_region_weights(grippers: torch.Tensor, latent_size: tuple[int, int], weight: float,
                           dilation: int = GRIPPER_DILATION) -> torch.Tensor:
    """Loss weights (b, t, 1, h, w): 1 + weight where a gripper is drawn (grown by `dilation`
    pixels), 1 elsewhere, max-pooled from the frame's H x W to the latent grid h x w.

    grippers: uint8 (b, t, H, W, 3), the simulator's grippers-only view (exactly 0 where empty,
    `wmgym.sim.render.MIN_BOX_CHANNEL`). Hand-written: a mask from a rendered view is not
    something a library offers.
    """
    if weight < 0 or dilation < 0:
        raise ValueError(f"weight and dilation must be >= 0, got {weight}, {dilation}")
    b, t, height, width = grippers.shape[:4]
    mask = (grippers.amax(dim=-1) > 0).float().reshape(b * t, 1, height, width)
    if dilation:
        mask = nn.functional.max_pool2d(mask, 2 * dilation + 1, stride=1, padding=dilation)
    if (height, width) != tuple(latent_size):
        mask = nn.functional.adaptive_max_pool2d(mask, tuple(latent_size))
    return (1.0 + weight * mask).reshape(b, t, 1, *latent_size)


AUTO_BF16_MIN_ROWS = 8
"""Precision "auto" computes in bfloat16 from this many rows per denoiser call: on this project's CPU
(AMX) bf16 was 14-16% slower than fp32 with 1-2 envs, 4% slower with 4, 12% faster with 8 and 25%
faster with 16 (issue 41, `benchmarks/env_speed.py --worker --envs N --precision P`)."""


def computes_bf16_natively(device: torch.device) -> bool:
    """Whether `device` has bfloat16 arithmetic in hardware: a CPU with AVX512-BF16 or AMX (elsewhere
    bfloat16 autocast is emulated, slower than float32), or a CUDA GPU that supports bfloat16."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":  # torch's own CPU feature probes (private, so absent ones read as False)
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return False


def _to_tensor(x, dtype, device) -> torch.Tensor:
    return (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))).to(device=device, dtype=dtype)


class WorldModel(nn.Module):
    """Action-conditioned causal video diffusion model over latent frames."""

    def __init__(self, config: WorldModelConfig, device: str | torch.device = "auto"):
        super().__init__()
        config.check()
        self.config = config
        self.codec: Codec = make_codec(config.codec)
        self.codec.check_frame_size(config.height, config.width)
        self.denoiser = Denoiser(DenoiserConfig(**config.denoiser))
        dcfg = self.denoiser.config
        expected = (self.codec.latent_channels, config.height // self.codec.downsample, config.width // self.codec.downsample)
        got = (dcfg.latent_channels, dcfg.latent_height, dcfg.latent_width)
        if expected != got:
            raise ValueError(f"denoiser latent shape {got} does not match the codec's {expected}")
        if config.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {config.prediction!r}")
        if config.prediction == "residual" and not dcfg.use_previous_frame:
            raise ValueError("prediction='residual' needs a denoiser with use_previous_frame=True")
        vector = self.frame_vector_dim
        if dcfg.condition_channels != len(config.condition_views) * self.codec.latent_channels + vector:
            raise ValueError("denoiser condition_channels must be len(condition_views) * codec latent channels"
                             f" + the condition vectors' sizes ({vector})")
        if dcfg.vector_dim not in (0, vector):
            raise ValueError(f"denoiser vector_dim must be 0 or the frame vector's {vector} values (the sizes of "
                             f"condition_vectors {tuple(config.condition_vectors)}); got {dcfg.vector_dim}")
        self.sampler = SamplerDefaults(**config.sampler)
        self.register_buffer("alphas_cumprod", make_scheduler(config.num_train_timesteps).alphas_cumprod.float(), persistent=False)
        self.register_buffer("action_mean", torch.tensor(config.action_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("action_std", torch.tensor(config.action_std, dtype=torch.float32), persistent=False)
        self.action_dim = config.action_dim  # the action spec is the config's (WMFold-v0: 20)
        bounds = (config.action_min, config.action_max) if config.action_min is not None else ([-np.inf] * self.action_dim, [np.inf] * self.action_dim)
        self.register_buffer("action_low", torch.tensor(bounds[0], dtype=torch.float32), persistent=False)
        self.register_buffer("action_high", torch.tensor(bounds[1], dtype=torch.float32), persistent=False)
        object.__setattr__(self, "_grasp_prior", None)  # not a submodule: see `grasp_prior`
        object.__setattr__(self, "_one_step_denoiser", None)  # not a submodule either: see `one_step_denoiser`
        specs = config.condition_vectors.values()  # each vector's statistics, concatenated in order
        self.register_buffer("vector_mean", torch.tensor([m for v in specs for m in v["mean"]], dtype=torch.float32), persistent=False)
        self.register_buffer("vector_std", torch.tensor([d for v in specs for d in v["std"]], dtype=torch.float32), persistent=False)
        self.to(resolve_device(device))

    def set_precision(self, precision: str) -> "WorldModel":
        """Imagine with the denoiser in `precision` from now on (`SamplerDefaults.precision`:
        "fp32", "bf16" or "auto"); returns the model. Training is unaffected (Accelerate's
        `--mixed-precision` governs it)."""
        self.sampler = SamplerDefaults(**{**asdict(self.sampler), "precision": precision})  # validated there
        return self

    def compute_precision(self, rows: int) -> str:
        """"fp32" or "bf16": what the denoiser computes in for a call on `rows` rows (batch elements):
        the sampler's precision, with "auto" resolved for this device and batch."""
        if self.sampler.precision != "auto":
            return self.sampler.precision
        return "bf16" if rows >= AUTO_BF16_MIN_ROWS and computes_bf16_natively(self.device) else "fp32"

    def inference_autocast(self, rows: int):
        """The autocast context `Imagination` runs the denoiser in for `rows` rows (`compute_precision`)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.compute_precision(rows) == "bf16")

    @property
    def device(self) -> torch.device:
        return self.alphas_cumprod.device

    @property
    def is_pose_conditioned(self) -> bool:
        """True when the model takes the grippers' pose vector of every frame (the "poses" vector of `Conditions`)."""
        return "poses" in self.config.condition_vectors

    @property
    def grasp_prior(self):
        """For a held-conditioned model: the `wmgym.model.grasp_prior.GraspPrior` that draws the
        grasp state in imagination (`wmgym.conditioning.grasp_states`), loaded from
        the checkpoint's `grasp_prior/` and saved there (None: give the "held" vector yourself). Kept out
        of the module tree, so the model's state dict is the denoiser's and the codec's."""
        return self._grasp_prior

    @property
    def one_step_denoiser(self) -> Denoiser | None:
        """A copy of `denoiser` distilled to sample a frame in one step (`wmgym distill`: progressive
        distillation of the 2-step sampler, Salimans & Ho 2022), or None. `Imagination` calls it,
        for denoising and cache writes alike, when num_steps == 1 (`sampling_denoiser`); other
        step counts use `denoiser`. Saved as denoiser_one_step.safetensors; kept out of the module
        tree (the state dict stays the denoiser's and the codec's) but moved with the model."""
        return self._one_step_denoiser

    def sampling_denoiser(self, num_steps: int) -> Denoiser:
        """The denoiser a sampler of `num_steps` steps per frame calls: `one_step_denoiser` for one
        step when the model has one, else `denoiser`."""
        return self._one_step_denoiser if num_steps == 1 and self._one_step_denoiser is not None else self.denoiser

    def _apply(self, fn, *args, **kwargs):
        """`nn.Module._apply` (`.to`, `.float`, ...), applied to `one_step_denoiser` too."""
        super()._apply(fn, *args, **kwargs)
        if self._one_step_denoiser is not None:
            self._one_step_denoiser._apply(fn, *args, **kwargs)
        return self

    def __setattr__(self, name, value) -> None:
        if name == "one_step_denoiser":  # kept out of the module tree, as the grasp prior is
            if value is not None and (not isinstance(value, Denoiser) or value.config != self.denoiser.config):
                raise ValueError("a one-step denoiser must be a Denoiser with the world model's denoiser config")
            object.__setattr__(self, "_one_step_denoiser", None if value is None else value.to(self.device))
            return
        if name == "grasp_prior":  # before nn.Module would register the prior as a submodule
            if value is not None and not self.is_held_conditioned:
                raise ValueError("a grasp prior serves a held-conditioned world model; this one is not")
            object.__setattr__(self, "_grasp_prior", value)
            return
        super().__setattr__(name, value)

    @property
    def is_held_conditioned(self) -> bool:
        """True when the model takes the grippers' grasp state of every frame (the "held" vector of `Conditions`)."""
        return "held" in self.config.condition_vectors

    @property
    def condition_vectors(self) -> dict[str, int]:
        """The per-frame vectors this model takes (`Conditions.vectors`), name -> size, in the
        order they enter, as its config declares them (`WorldModelConfig.condition_vectors`)."""
        return self.config.features()["vectors"]

    @property
    def action_layout(self) -> str:
        """What an action is, for error messages: its size and, where the config names them, its components."""
        names = self.config.action_names
        return f"an action has {self.action_dim} components" + (f": {', '.join(names)}" if names else "")

    @property
    def frame_vector_dim(self) -> int:
        """Values of the per-frame condition vector: the declared vectors' sizes, summed."""
        return sum(self.condition_vectors.values())

    # ------------------------------------------------------------ encoding
    def encode_frames(self, frames) -> torch.Tensor:
        """uint8 (b, t, H, W, 3) array or tensor -> latents (b, t, C, h, w) float."""
        frames = _to_tensor(frames, torch.uint8, self.device)
        if frames.dim() != 5 or frames.shape[-1] != 3 or tuple(frames.shape[2:4]) != (self.config.height, self.config.width):
            raise ValueError(f"frames must be uint8 (b, t, {self.config.height}, {self.config.width}, 3), got {tuple(frames.shape)}")
        b, t = frames.shape[:2]
        x = frames.permute(0, 1, 4, 2, 3).reshape(b * t, 3, *frames.shape[2:4]).float() / 127.5 - 1.0
        z = self.codec.encode(x)
        return z.reshape(b, t, *z.shape[1:])

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (b, t, C, h, w) -> uint8 frames (b, t, H, W, 3) on the model's device."""
        b, t = latents.shape[:2]
        x = self.codec.decode(latents.reshape(b * t, *latents.shape[2:]))
        if not torch.isfinite(x).all():  # uint8 would turn NaN into black pixels without a word
            raise NonFiniteLatentsError("the codec decoded non-finite pixels; the latents or the codec's weights are broken")
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.reshape(b, t, *x.shape[1:]).permute(0, 1, 3, 4, 2)

    def normalize_actions(self, actions) -> torch.Tensor:
        """Raw actions (b, T, action_dim) -> clamped to the training range (`config.action_min/max`), then
        standardised with the training mean and std."""
        actions = _to_tensor(actions, torch.float32, self.device)
        if actions.dim() != 3 or actions.shape[-1] != self.action_dim:
            raise ValueError(f"actions must be (b, T, {self.action_dim}), got {tuple(actions.shape)}\n{self.action_layout}")
        if not torch.isfinite(actions).all():
            raise ValueError(f"actions contain non-finite values\n{self.action_layout}")
        return (torch.maximum(torch.minimum(actions, self.action_high), self.action_low) - self.action_mean) / self.action_std

    def action_support_distance(self, actions) -> torch.Tensor:
        """How far raw actions (b, T, action_dim) lie outside the training actions' range -> (b, T):
        the largest, over components, of the distance beyond `config.action_min/max` in training
        standard deviations (0 inside the range; +inf for a model without a range is never
        returned: such a model reports 0). `sampler.action_support` gates on it."""
        actions = _to_tensor(actions, torch.float32, self.device)
        beyond = torch.maximum(actions - self.action_high, self.action_low - actions).clamp_min(0) / self.action_std
        return beyond.nan_to_num(0.0, posinf=0.0).amax(-1)

    def out_of_support(self, actions, action_support: float | None = None) -> torch.Tensor:
        """bool (b, T): the raw actions (b, T, action_dim) the model will not read, because they lie
        further than `action_support` (default: the checkpoint's `sampler.action_support`) outside
        the training range; all False when that is None."""
        action_support = self.sampler.action_support if action_support is None else action_support
        if action_support is None:
            return torch.zeros(actions.shape[:-1], dtype=torch.bool, device=self.device)
        return self.action_support_distance(actions) > action_support

    def _frame_actions(self, actions: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame conditioning (b, t, action_dim) and is_dropped (b, t): frame i gets a_{i-1}."""
        b = actions.shape[0]
        frame_actions = torch.zeros(b, num_frames, self.action_dim, device=self.device)
        frame_actions[:, 1:] = actions[:, : num_frames - 1]
        dropped = torch.zeros(b, num_frames, dtype=torch.bool, device=self.device)
        dropped[:, 0] = True
        return frame_actions, dropped

    def predicted_x0(self, output: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """Clean-latent estimate (b, t, C, h, w) from the denoiser's output.

        "v": x0 = sqrt(a) x_k - sqrt(1 - a) v (schedule.py, step 1). "residual": x0 = previous + output,
        where `previous` (b, t, C, h, w) is each frame's *clean* predecessor (the denoiser itself
        sees it at the history noise level). Anchoring on the clean latent keeps an untrained
        model an exact copier; anchoring on the noisy one would add the history noise to every
        generated frame, a random walk over the rollout.
        """
        if self.config.prediction == "residual":
            return previous.to(output.dtype) + output
        a = self.alphas_cumprod[timesteps].reshape(*timesteps.shape, 1, 1, 1).to(output.dtype)
        return a.sqrt() * noisy - (1 - a).sqrt() * output

    def predicted_velocity(self, output: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """The v the sampler steps with: v = (sqrt(a) x_k - x0) / sqrt(1 - a) for a residual output
        (finite for every k >= 1, which is all the sampler ever queries)."""
        if self.config.prediction == "v":
            return output
        a = self.alphas_cumprod[timesteps].reshape(*timesteps.shape, 1, 1, 1).to(output.dtype)
        return (a.sqrt() * noisy - self.predicted_x0(output, noisy, timesteps, previous)) / (1 - a).sqrt()

    # ------------------------------------------------------------ training
    def compute_loss(self, frames, actions, conditions: Conditions | None = None, action_dropout: float = 0.15,
                     generator: torch.Generator | None = None, gripper_weight: float = 0.0,
                     gripper_dilation: int = GRIPPER_DILATION):
        """Diffusion-forcing loss on a batch of windows; returns (loss, logs).

        frames: uint8 (b, t, H, W, 3); actions: (b, t-1, action_dim) raw (normalised here);
        conditions: the frames' `Conditions` (b, t): the views named by config.condition_views
        and the vectors of `config.condition_vectors` (WMFold-v0: "poses", the raw grippers' poses
        (8), "held", whether each gripper holds cloth (2, in [0, 1])), or None for a model without any.
        Every frame gets its own timestep; each frame's action is dropped with probability
        `action_dropout` (the seed's per-frame dropout for guidance). The loss is the v error,
        down-weighted for nearly clean frames (SNR above gamma - 1), summed over frames and
        averaged over the batch; it is computed as the equivalent x0 error weighted by
        min(1 + SNR, gamma), which serves both predictions. With prediction="residual", frame 0
        (which has no predecessor, and which sampling never generates) is left out of the loss.

        gripper_weight: w > 0 weighs the latent pixels near a gripper 1 + w times the rest
            (`gripper_region_weights`; each frame's error stays a weighted mean, so the loss
            keeps its scale). Where a grasp catches the cloth or closes beside it is a few
            pixels of a 64 x 64 frame; an unweighted mean spends the model on the rest.
            Needs a model conditioned on the "grippers" view.
        gripper_dilation: pixels (of the frame) the gripper mask is grown by.
        """
        z0 = self.encode_frames(frames)
        b, t = z0.shape[:2]
        frame_actions, dropped = self._frame_actions(self.normalize_actions(actions), t)
        drop = torch.rand(b, t, device=self.device, generator=generator) < action_dropout
        timesteps = torch.randint(0, self.config.num_train_timesteps, (b, t), device=self.device, generator=generator)
        noise = torch.randn(z0.shape, device=self.device, generator=generator)
        noisy = add_noise(z0, noise, timesteps, self.alphas_cumprod)
        conditions = None if conditions is None else conditions.to(self.device)  # once, for both uses
        maps, vectors = self.encode_conditions(conditions, b, t)
        previous = self._history_predecessors(z0, generator)
        output = self.denoiser(noisy, timesteps, frame_actions, dropped | drop, maps, vectors, previous=previous)
        anchor = torch.cat([torch.zeros_like(z0[:, :1]), z0[:, :-1]], dim=1)  # clean predecessors (b, t, C, h, w)
        x0_hat = self.predicted_x0(output.float(), noisy, timesteps, anchor)
        a = self.alphas_cumprod[timesteps]
        snr = a / (1 - a).clamp(min=1e-8)
        # In x0 terms the plain v loss weighs each frame by 1 + SNR. Min-SNR (Hang et al. 2023)
        # caps that at gamma but also sends it to 0 as SNR -> 0, i.e. it ignores exactly the
        # pure-noise frames a world model must predict from its history. Cap only the top:
        # x0 weight min(1 + SNR, gamma) = full v loss at high noise, gamma / (1 + SNR) times the
        # v loss for nearly clean frames, whose v target is mostly unpredictable noise.
        weight = (snr + 1).clamp(max=self.config.min_snr_gamma)  # (b, t)
        if self.config.prediction == "residual":
            weight = torch.cat([torch.zeros_like(weight[:, :1]), weight[:, 1:]], dim=1)
        squared = ((x0_hat - z0) ** 2).mean(dim=2, keepdim=True)  # (b, t, 1, h, w)
        if gripper_weight > 0:
            pixel_weight = gripper_region_weights(self._gripper_view(conditions), z0.shape[-2:], gripper_weight, gripper_dilation)
            per_frame = (pixel_weight * squared).sum(dim=(2, 3, 4)) / pixel_weight.sum(dim=(2, 3, 4))  # (b, t)
        else:
            per_frame = squared.mean(dim=(2, 3, 4))  # (b, t)
        loss = (weight * per_frame).sum(dim=1).mean()
        return loss, {"loss": loss.detach(), "x0_mse": per_frame.mean().detach()}

    def _gripper_view(self, conditions: Conditions | None) -> torch.Tensor:
        """uint8 (b, t, H, W, 3): the "grippers" view of `conditions`, on the device."""
        if "grippers" not in self.config.condition_views or conditions is None or "grippers" not in conditions.views:
            raise ValueError("gripper_weight > 0 needs a model conditioned on the 'grippers' view and its conditions; "
                             f"this one is conditioned on {self.config.condition_views or 'nothing'}")
        return conditions.views["grippers"].to(self.device)

    def _history_predecessors(self, z0: torch.Tensor, generator) -> torch.Tensor | None:
        """Each frame's predecessor (b, t, C, h, w) noised to the history level, zeros for frame 0.

        Sampling always shows the newest frame its predecessor at `history_timestep`; with
        independent per-frame noise the predecessor *token* is usually far noisier, so the
        identity path gets its own copy at the level sampling will use (docs/design.md, "The
        previous frame as an input": the all-history-clean pattern sampling uses almost never
        occurs in training otherwise).
        """
        if not self.denoiser.config.use_previous_frame:
            return None
        b, t = z0.shape[:2]
        levels = torch.full((b, t - 1), self.sampler.history_timestep, device=self.device, dtype=torch.long)
        noise = torch.randn(z0[:, :-1].shape, device=self.device, generator=generator)
        return torch.cat([torch.zeros_like(z0[:, :1]), add_noise(z0[:, :-1], noise, levels, self.alphas_cumprod)], dim=1)

    def encode_conditions(self, conditions: Conditions | None, b: int, t: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The denoiser's two condition inputs of `conditions` (b, t): maps (b, t, V * C, h, w),
        the views' latents in `config.condition_views` order (None without views), and vectors
        (b, t, `frame_vector_dim`): the declared `condition_vectors` in order, each standardised
        with its mean and std (None without any).
        ValueError naming what is missing, extra, of the wrong shape or not finite."""
        conditions = Conditions() if conditions is None else conditions
        views = tuple(self.config.condition_views)
        extra = sorted(set(conditions.views) - set(views)) + sorted(set(conditions.vectors) - set(self.condition_vectors))
        if extra:
            names = {"poses": "not pose-conditioned", "held": "not held-conditioned"}
            why = "; ".join(f"{name} given to a world model that is {names.get(name, 'not conditioned on it')}" for name in extra)
            raise ValueError(f"{why} (it takes views {views} and vectors {tuple(self.condition_vectors)})")
        maps, parts = None, []
        if views:
            if any(v not in conditions.views for v in views):
                raise ValueError(f"this model is conditioned on views {views}; pass conditions with those views")
            stacked = torch.stack([conditions.views[v] for v in views], dim=2).to(self.device)  # (b, t, V, H, W, 3)
            if tuple(stacked.shape[:3]) != (b, t, len(views)):
                raise ValueError(f"conditions must be uint8 (b={b}, t={t}, H, W, 3) per view, got {tuple(stacked.shape)}")
            z = self.encode_frames(stacked.reshape(b, t * len(views), *stacked.shape[3:]))
            maps = z.reshape(b, t, len(views) * z.shape[2], *z.shape[3:])
        for name, spec in self.config.condition_vectors.items():
            vector = conditions.vectors.get(name)
            if vector is None:
                raise ValueError(f"this model is conditioned on the per-frame vector {name!r}; pass {name} (b={b}, t={t}, "
                                 f"{spec['size']}){VECTOR_HINTS.get(name, '')}")
            vector = vector.to(self.device)
            bounds = spec.get("range")
            if (tuple(vector.shape) != (b, t, spec["size"]) or not torch.isfinite(vector).all()
                    or (bounds is not None and vector.numel() and (vector.min() < bounds[0] or vector.max() > bounds[1]))):
                within = f" in [{bounds[0]:g}, {bounds[1]:g}]" if bounds is not None else ""
                raise ValueError(f"{name} must be finite float (b={b}, t={t}, {spec['size']}){within}, got {tuple(vector.shape)}")
            parts.append(vector)
        if not parts:
            return maps, None
        return maps, ((torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]) - self.vector_mean) / self.vector_std

    # ------------------------------------------------------------ sampling
    @torch.no_grad()
    def rollout(self, context_frames, actions, *, num_steps: int | None = None, guidance_scale: float | None = None,
                generator: torch.Generator | None = None, use_cache: bool = True, conditions: Conditions | None = None,
                drop_actions: bool = False) -> torch.Tensor:
        """Generate one frame per action, frame by frame.

        Args:
            context_frames: uint8 (b, c, H, W, 3), c >= 1, array or tensor.
            actions: float32 (b, T, action_dim); actions[:, i] produces generated frame i.
            num_steps, guidance_scale: override the checkpoint's sampler defaults.
            generator: torch.Generator on the model's device (same seed, same frames).
            use_cache: write each finished frame's keys/values once and reuse them; False
                recomputes the whole window at every denoiser call (same result).
            conditions: `Conditions` (b, c + T) of the context and the generated frames, if the
                model has any: its views and its `config.condition_vectors` (WMFold-v0: "poses" (8),
                "held" (2, in [0, 1]: the grippers' grasp state or a prior's probability of it,
                `wmgym.conditioning.grasp_states`)).
            drop_actions: roll out with the null action of action dropout at every step (the
                action-free baseline of `wmgym eval`); `actions` then only sets the horizon.
        Returns:
            uint8 tensor (b, T, H, W, 3) on the model's device.
        """
        context = _to_tensor(context_frames, torch.uint8, self.device)
        actions = _to_tensor(actions, torch.float32, self.device)
        if actions.dim() != 3 or actions.shape[0] != context.shape[0]:
            raise ValueError(f"actions must be (b={context.shape[0]}, T, {self.action_dim}), got {tuple(actions.shape)}\n"
                             f"{self.action_layout}")
        b, c, horizon = context.shape[0], context.shape[1], actions.shape[1]
        if conditions is not None:
            conditions = conditions.to(self.device)
            for name, x in conditions.items():
                if tuple(x.shape[:2]) != (b, c + horizon):
                    raise ValueError(f"{'conditions' if name in conditions.views else name} must be (b={b}, c + T={c + horizon}, ...) "
                                     f"for every frame, got {name} {tuple(x.shape)}")
        frames = lambda index: None if conditions is None else conditions.frames(index)
        imagination = Imagination(self, b, num_steps=num_steps, guidance_scale=guidance_scale, use_cache=use_cache)
        imagination.start(context, generator=generator, conditions=frames(slice(0, c)))
        outputs = [imagination.step(actions[:, i], generator, frames(c + i), drop_actions=drop_actions) for i in range(horizon)]
        return self.decode_latents(torch.cat(outputs, dim=1))

    # ------------------------------------------------------------ save / load
    def save_pretrained(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write config.json + denoiser.safetensors + codec.safetensors (+ denoiser_one_step.safetensors,
        + grasp_prior/) atomically (an existing model directory is replaced only with `overwrite`;
        anything else there is refused)."""
        prior = self.grasp_prior
        weights = dict(zip(WEIGHT_FILES, (self.denoiser.state_dict(), self.codec.state_dict())))
        if self.one_step_denoiser is not None:
            weights[ONE_STEP_WEIGHTS] = self.one_step_denoiser.state_dict()
        return write_model_directory(directory, asdict(self.config), weights,
                                     extra=None if prior is None else lambda tmp: prior.save_pretrained(tmp / GRASP_PRIOR_DIR),
                                     overwrite=overwrite)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "auto") -> "WorldModel":
        """Load a checkpoint directory; clear errors name the missing or mismatched file and key."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"no world-model checkpoint directory at {directory}")
        for name in (CONFIG_FILE, *WEIGHT_FILES):
            if not (directory / name).is_file():
                pickles = sorted(p.name for p in directory.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
                hint = f" (found {pickles}: only safetensors weights are loaded, never pickles)" if pickles else ""
                raise FileNotFoundError(f"checkpoint {directory} is missing {name}{hint}")
        config_path = directory / CONFIG_FILE
        raw = read_config_json(config_path)
        try:  # every config error, here or in the model's constructor, names the file
            model = cls(WorldModelConfig.from_dict(raw), device="cpu")
        except ValueError as error:
            raise ValueError(f"{config_path}: {error}") from None
        for module, name in ((model.denoiser, WEIGHT_FILES[0]), (model.codec, WEIGHT_FILES[1])):
            load_state_checked(module, directory / name, renamed=LEGACY_WEIGHT_NAMES)
        if (directory / ONE_STEP_WEIGHTS).is_file():  # a distilled one-step denoiser (`wmgym distill`)
            one_step = Denoiser(model.denoiser.config)
            load_state_checked(one_step, directory / ONE_STEP_WEIGHTS, renamed=LEGACY_WEIGHT_NAMES)
            model.one_step_denoiser = one_step
        if model.is_held_conditioned and (directory / GRASP_PRIOR_DIR).is_dir():
            from wmgym.model.grasp_prior import GraspPrior

            model.grasp_prior = GraspPrior.from_pretrained(directory / GRASP_PRIOR_DIR)
        return model.to(resolve_device(device))
