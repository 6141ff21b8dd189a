"""The configs that rebuild a `WorldModel` (its checkpoint's config.json): `WorldModelConfig`
and the sampler defaults it carries, each checked when built (issue 36: a damaged or
hand-edited config fails at once with one line naming the key, never as black frames)."""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field

from wmgym.model.config_checks import check_field_types, check_known_keys, check_statistics, is_finite_number
from wmgym.model.denoiser import DenoiserConfig
from wmgym.model.schedule import NUM_TRAIN_TIMESTEPS

POSE_DIM = 8  # per frame: left gripper's tool-centre xyz and width, then the right's (metres)
HELD_DIM = 2  # per frame: whether the left, then the right gripper holds cloth (1/0 or a probability)


def check_sampler_arguments(num_steps=None, guidance_scale=None) -> None:
    """ValueError naming the argument unless `num_steps` is None or an int >= 1 and
    `guidance_scale` None or a finite number >= 0. Cheap: environments call it when made."""
    if num_steps is not None and (not isinstance(num_steps, numbers.Integral) or isinstance(num_steps, bool) or num_steps < 1):
        raise ValueError(f"num_steps must be an int >= 1 (denoising steps per frame), got {num_steps!r}")
    if guidance_scale is not None and not (is_finite_number(guidance_scale) and guidance_scale >= 0):
        raise ValueError(f"guidance_scale must be a finite number >= 0 (1 = no guidance), got {guidance_scale!r}")


@dataclass
class SamplerDefaults:
    """Sampler settings a checkpoint carries; `rollout` keywords override them.

    Attributes:
        num_steps: denoising steps per generated frame.
        guidance_scale: classifier-free guidance on the newest frame's action (1 = off).
        history_timestep: noise level history frames are held at (small; Diffusion Forcing
            conditions on slightly noisy history so errors in generated frames matter less).
        window_frames: frames the KV cache keeps (None: all); bounds memory past the
            training length.
        keep_first_frame: keep the start frame in the window for the whole rollout.
    """

    num_steps: int = 8
    guidance_scale: float = 1.0
    history_timestep: int = 20
    window_frames: int | None = 16
    keep_first_frame: bool = True

    def __post_init__(self):
        """ValueError naming the first invalid setting (a NaN guidance would give black frames)."""
        check_field_types(self)
        check_sampler_arguments(self.num_steps, self.guidance_scale)
        if self.history_timestep < 0:
            raise ValueError(f"history_timestep must be >= 0, got {self.history_timestep}")
        if self.window_frames is not None and self.window_frames < 1 + int(self.keep_first_frame):
            raise ValueError(f"window_frames must be None or >= {1 + int(self.keep_first_frame)}"
                             f"{' (keep_first_frame is true)' if self.keep_first_frame else ''}, got {self.window_frames}")


@dataclass
class WorldModelConfig:
    """Everything that rebuilds a `WorldModel` (saved as config.json)."""

    height: int = 64
    width: int = 64
    codec: dict = field(default_factory=lambda: {"type": "pixel", "patch": 1})
    denoiser: dict = field(default_factory=lambda: asdict(DenoiserConfig()))
    sampler: dict = field(default_factory=lambda: asdict(SamplerDefaults()))
    action_mean: list | None = None
    """The action spec (with `action_std`, `action_min`, `action_max`, `action_names`): the
    per-component mean of the training actions (raw units), subtracted before the model sees them
    (None: zeros). Every action statistic has `action_dim` values, the denoiser's `action_dim`
    (WMFold-v0's 20, written in its config)."""
    action_std: list | None = None
    """Per-component std the actions are divided by (None: ones)."""
    action_min: list | None = None
    """Per-component range of the training actions (raw units); actions are clamped to it before
    the model sees them (None: no clamp). Far outside what it was trained on, e.g. a uniformly
    sampled 6-D rotation, the network's output is meaningless."""
    action_max: list | None = None
    action_names: list | None = None
    """The action components' names, in order (WMFold-v0: `wmgym.actions.ACTION_NAMES`; None:
    unnamed); errors about actions list them."""
    condition_views: tuple = ()
    pose_mean: list | None = None
    """Mean of the grippers' pose vector (`POSE_DIM`: tool-centre xyz and width of the left, then
    the right gripper, metres); with `pose_std`, makes the model pose-conditioned (None: not).
    The pose enters as `POSE_DIM` constant condition channels after the views' latents."""
    pose_std: list | None = None
    held_conditioning: bool = False
    """Also condition every frame on the simulator's grasp state (`HELD_DIM` values: whether the
    left and the right gripper hold cloth, 1/0, or a prior's probability of it), teacher-forced
    in training from the store's `robot{0,1}_held_particles` (the "held" vector of the
    `Conditions` that `compute_loss`, `rollout` and `Imagination` take). A grasp that catches
    the cloth or closes beside it is a fraction of a pixel of the frames;
    given as a switch, "the cloth follows this gripper" is something the model cannot fail to
    see. The values enter after the pose's, as constant condition channels, read by the
    denoiser's frame-vector embedding."""
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
    min_snr_gamma: float = 5.0
    prediction: str = "v"
    """What the denoiser outputs: "v" (v-prediction) or "residual" (x0 - the predecessor frame,
    so a zero output copies the last frame: the model starts at the copy-last-frame baseline
    and learns only what the action changes; needs `use_previous_frame`)."""

    def __post_init__(self):
        dim = self.action_dim
        if isinstance(dim, int) and not isinstance(dim, bool) and dim >= 1:  # else `check` names the bad value
            self.action_mean = [0.0] * dim if self.action_mean is None else self.action_mean
            self.action_std = [1.0] * dim if self.action_std is None else self.action_std
        self.check()

    @property
    def action_dim(self) -> int:
        """Components of an action: the denoiser's `action_dim`."""
        return self.denoiser.get("action_dim", DenoiserConfig.action_dim) if isinstance(self.denoiser, dict) else DenoiserConfig.action_dim

    def features(self) -> dict:
        """The declared features: the predicted camera frames and each condition view (H, W, 3),
        each per-frame condition vector's size, and the action spec (dim, names, bounds, mean, std)."""
        frame = (self.height, self.width, 3)
        vectors = {**({"poses": POSE_DIM} if self.pose_mean is not None else {}), **({"held": HELD_DIM} if self.held_conditioning else {})}
        return {"camera": frame, "views": {name: frame for name in self.condition_views}, "vectors": vectors,
                "action": {"dim": self.action_dim, "names": self.action_names, "low": self.action_min, "high": self.action_max,
                           "mean": self.action_mean, "std": self.action_std}}

    def check(self) -> None:
        """ValueError naming the first invalid key: wrong types, unknown nested keys, statistics
        of the wrong length, not finite, or not positive where they divide (`action_std`,
        `pose_std`), invalid sampler defaults. Run on construction and by `WorldModel` (a config
        edited after construction is checked again); `from_pretrained` puts the file in front."""
        check_field_types(self)
        if self.height < 1 or self.width < 1:
            raise ValueError(f"height and width must be >= 1, got {self.height} and {self.width}")
        if not all(isinstance(view, str) for view in self.condition_views):
            raise ValueError(f"condition_views must be a list of view names, got {self.condition_views!r}")
        check_known_keys(self.denoiser, DenoiserConfig, "denoiser")
        check_field_types(DenoiserConfig(**self.denoiser), "denoiser.")
        check_known_keys(self.sampler, SamplerDefaults, "sampler")
        try:
            SamplerDefaults(**self.sampler)
        except ValueError as error:
            raise ValueError(f"sampler.{error}") from None
        history = self.sampler.get("history_timestep", SamplerDefaults.history_timestep)
        if not 0 <= history < self.num_train_timesteps:
            raise ValueError(f"sampler.history_timestep must be in [0, num_train_timesteps={self.num_train_timesteps}), got {history}")
        action_dim = self.action_dim
        if not isinstance(action_dim, int) or isinstance(action_dim, bool) or action_dim < 1:
            raise ValueError(f"denoiser.action_dim must be an int >= 1, got {action_dim!r}")
        check_statistics(self.action_mean, "action_mean", action_dim)
        check_statistics(self.action_std, "action_std", action_dim, is_positive=True)
        if self.action_names is not None and (len(self.action_names) != action_dim
                                              or not all(isinstance(n, str) for n in self.action_names)):
            raise ValueError(f"action_names must be None or {action_dim} names (denoiser.action_dim), got {self.action_names!r}")
        if (self.action_min is None) != (self.action_max is None):
            raise ValueError("action_min and action_max come together (or both None)")
        if self.action_min is not None:
            check_statistics(self.action_min, "action_min", action_dim)
            check_statistics(self.action_max, "action_max", action_dim)
            inverted = [i for i, (low, high) in enumerate(zip(self.action_min, self.action_max)) if low > high]
            if inverted:
                raise ValueError(f"action_min must be <= action_max, not at components {inverted}")
        if (self.pose_mean is None) != (self.pose_std is None):
            raise ValueError("pose_mean and pose_std come together (or both None)")
        if self.pose_mean is not None:
            check_statistics(self.pose_mean, "pose_mean", POSE_DIM)
            check_statistics(self.pose_std, "pose_std", POSE_DIM, is_positive=True)
        if self.num_train_timesteps < 2 or not self.min_snr_gamma > 0:
            raise ValueError(f"num_train_timesteps must be >= 2 and min_snr_gamma > 0, got {self.num_train_timesteps} "
                             f"and {self.min_snr_gamma}")
