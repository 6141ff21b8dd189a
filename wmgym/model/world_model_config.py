"""The configs that rebuild a `WorldModel` (its checkpoint's config.json): `WorldModelConfig`
and the sampler defaults it carries, each checked when built (issue 36: a damaged or
hand-edited config fails at once with one line naming the key, never as black frames)."""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field

from wmgym.model.config_checks import check_field_types, check_known_keys, check_statistics, is_finite_number
from wmgym.model.denoiser import DenoiserConfig
from wmgym.model.schedule import NUM_TRAIN_TIMESTEPS

LEGACY_VECTOR_KEYS = ("pose_mean", "pose_std", "held_conditioning")
"""Keys of configs saved before the per-frame vectors were declared (`condition_vectors`); read
by `WorldModelConfig.from_dict`."""


def check_sampler_arguments(num_steps=None, guidance_scale=None) -> None:
    """ValueError naming the argument unless `num_steps` is None or an int >= 1 and
    `guidance_scale` None or a finite number >= 0. Cheap: environments call it when made."""
    if num_steps is not None and (not isinstance(num_steps, numbers.Integral) or isinstance(num_steps, bool) or num_steps < 1):
        raise ValueError(f"num_steps must be an int >= 1 (denoising steps per frame), got {num_steps!r}")
    if guidance_scale is not None and not (is_finite_number(guidance_scale) and guidance_scale >= 0):
        raise ValueError(f"guidance_scale must be a finite number >= 0 (1 = no guidance), got {guidance_scale!r}")


PRECISIONS = ("fp32", "bf16", "auto")


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
        action_support: how far (in training standard deviations, per component) an action may
            lie outside the training actions' range (`action_min`..`action_max`) and still be
            read; a further one is replaced by the null action of action dropout for its row
            and step, so the frame follows the conditions (WMFold-v0: the grippers view the
            track renders from that very action) instead of an action embedding the model never
            learnt. None reads every action (after clamping to the range); a model without an
            action range (`action_min` None) reads every action either way. Uniform random
            actions (`action_space.sample()`) rotate about every axis, which the training data
            never does: read, they turn rollouts into noise within a few steps.
        precision: what the denoiser computes in while imagining (one of `PRECISIONS`): "fp32",
            or "bf16", its calls under `torch.autocast(dtype=torch.bfloat16)` (matmuls and
            attention in bfloat16, fast on CPUs with AMX/AVX512-BF16 and on GPUs; the KV cache
            then holds bfloat16; the sampler step stays float32). Both are deterministic on a
            fixed device; their frames differ by rounding. "auto": "bf16" for calls on at least
            `AUTO_BF16_MIN_ROWS` rows on a device that computes bfloat16 natively (a CPU with
            AVX512-BF16 or AMX, a GPU that supports it), else "fp32" (`WorldModel.compute_precision`);
            the shipped model's default (issue 41: 1.25x the env steps/s of fp32 with 16 envs on
            this project's CPU, PSNR within 0.01 dB).
    """

    num_steps: int = 8
    guidance_scale: float = 1.0
    history_timestep: int = 20
    window_frames: int | None = 16
    keep_first_frame: bool = True
    action_support: float | None = 3.0
    precision: str = "fp32"

    def __post_init__(self):
        """ValueError naming the first invalid setting (a NaN guidance would give black frames)."""
        check_field_types(self)
        check_sampler_arguments(self.num_steps, self.guidance_scale)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.history_timestep < 0:
            raise ValueError(f"history_timestep must be >= 0, got {self.history_timestep}")
        if self.action_support is not None and self.action_support < 0:
            raise ValueError(f"action_support must be None or >= 0, got {self.action_support}")
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
    camera: str = "camera"
    """The camera whose frames the model predicts (WMFold-v0: "camera", the simulator's camera
    view, stored as `data/camera0_rgb`)."""
    condition_views: tuple = ()
    """Pixel-aligned views each frame is conditioned on, by name (WMFold-v0: ("grippers",), the
    grippers alone at that frame's poses); they enter as latents through the denoiser's
    zero-initialised `condition_in`."""
    condition_vectors: dict = field(default_factory=dict)
    """Per-frame condition vectors, name -> {"size": d, "mean": [d], "std": [d], "range": [low,
    high] or None}, in the order they enter: each is standardised, (x - mean) / std, and the
    concatenation (`vector_dim` values) goes to the denoiser's `vector_embed`. "range" (optional)
    is the values a caller may give (checked). WMFold-v0 knows two: "poses" (8: each gripper's
    tool-centre xyz and width, metres; statistics of the training data) and "held" (2: whether
    the left, the right gripper holds cloth, 1/0 or a probability; mean 0.5, std 0.5 so held is
    +1 and free -1, range [0, 1]). The grasp state is a fraction of a pixel of the frames; given
    as a vector, "the cloth follows this gripper" is something the model cannot fail to see."""
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
    min_snr_gamma: float = 5.0
    prediction: str = "v"
    """What the denoiser outputs: "v" (v-prediction) or "residual" (x0 - the predecessor frame,
    so a zero output copies the last frame: the model starts at the copy-last-frame baseline
    and learns only what the action changes; needs `use_previous_frame`)."""

    @classmethod
    def from_dict(cls, raw: dict) -> "WorldModelConfig":
        """The config of a config.json dict, older layouts included: `pose_mean`/`pose_std`
        become the "poses" vector, `held_conditioning: true` the "held" vector, and the
        denoiser's `pose_dim` its `vector_dim`. ValueError naming unknown keys."""
        raw = dict(raw)
        legacy = {key: raw.pop(key) for key in LEGACY_VECTOR_KEYS if key in raw}
        if (legacy.get("pose_mean") is None) != (legacy.get("pose_std") is None):
            raise ValueError("pose_mean and pose_std come together (or both None)")
        if legacy.get("pose_mean") is not None:  # named as the file names them
            check_statistics(legacy["pose_mean"], "pose_mean", 8)
            check_statistics(legacy["pose_std"], "pose_std", 8, is_positive=True)
        if legacy:
            declared = raw.get("condition_vectors") if isinstance(raw.get("condition_vectors"), dict) else {}
            raw["condition_vectors"] = {**({"poses": pose_vector_spec(legacy["pose_mean"], legacy["pose_std"])}
                                           if legacy.get("pose_mean") is not None else {}),
                                        **({"held": dict(HELD_VECTOR)} if legacy.get("held_conditioning") else {}), **declared}
        check_known_keys(raw, cls)
        if isinstance(raw.get("condition_views"), list):
            raw["condition_views"] = tuple(raw["condition_views"])
        return cls(**raw)

    def __post_init__(self):
        if isinstance(self.denoiser, dict) and "pose_dim" in self.denoiser:  # configs saved before the rename
            self.denoiser = {("vector_dim" if k == "pose_dim" else k): v for k, v in self.denoiser.items()}
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
        vectors = {name: spec["size"] for name, spec in self.condition_vectors.items()}
        return {"camera": {self.camera: frame}, "views": {name: frame for name in self.condition_views}, "vectors": vectors,
                "action": {"dim": self.action_dim, "names": self.action_names, "low": self.action_min, "high": self.action_max,
                           "mean": self.action_mean, "std": self.action_std}}

    def check(self) -> None:
        """ValueError naming the first invalid key: wrong types, unknown nested keys, statistics
        of the wrong length, not finite, or not positive where they divide (`action_std`, each
        condition vector's std), invalid sampler defaults. Run on construction and by `WorldModel` (a config
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
        for name, spec in self.condition_vectors.items():
            check_vector_spec(name, spec)
        if self.num_train_timesteps < 2 or not self.min_snr_gamma > 0:
            raise ValueError(f"num_train_timesteps must be >= 2 and min_snr_gamma > 0, got {self.num_train_timesteps} "
                             f"and {self.min_snr_gamma}")


HELD_VECTOR = {"size": 2, "mean": [0.5, 0.5], "std": [0.5, 0.5], "range": [0.0, 1.0]}
"""WMFold-v0's "held" vector: whether the left, the right gripper holds cloth (standardised to +1 / -1)."""


def pose_vector_spec(mean: list, std: list) -> dict:
    """WMFold-v0's "poses" vector (8: tool-centre xyz and width of the left, then the right
    gripper, metres) with the training data's statistics."""
    return {"size": len(mean), "mean": [float(m) for m in mean], "std": [float(v) for v in std], "range": None}


def check_vector_spec(name, spec) -> None:
    """ValueError naming what is wrong with one `condition_vectors` entry."""
    where = f"condition_vectors[{name!r}]"
    if not isinstance(name, str) or not isinstance(spec, dict):
        raise ValueError(f"condition_vectors must map names to {{'size', 'mean', 'std', 'range'}} objects, got {name!r}: {spec!r}")
    unknown = sorted(set(spec) - {"size", "mean", "std", "range"})
    if unknown or not {"size", "mean", "std"} <= set(spec):
        raise ValueError(f"{where} needs keys size, mean, std (and optionally range), got {sorted(spec)}")
    size = spec["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"{where}.size must be an int >= 1, got {size!r}")
    check_statistics(spec["mean"], f"{where}.mean", size)
    check_statistics(spec["std"], f"{where}.std", size, is_positive=True)
    bounds = spec.get("range")
    if bounds is not None:
        check_statistics(bounds, f"{where}.range", 2)
        if bounds[0] > bounds[1]:
            raise ValueError(f"{where}.range must be [low, high] with low <= high, got {bounds}")
