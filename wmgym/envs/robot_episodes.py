"""`RobotEpisodes`: the batched state behind `wmgym/WorldModel-v0` (one KV-cached `Imagination`
for all rows: start and goal frames per row, the reward potential). It has no autoreset policy of
its own: `wmgym.envs.robot_env` puts Gymnasium's conventions on top.

Dimension legend: b envs (rows), r rows being reset, H x W the model's frame size, A action
values, N start frames in the bundle.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from wmgym.envs.options import checked_reset_options, is_int
from wmgym.envs.robot_bundle import RobotBundle, check_model_matches_store
from wmgym.model.imagination import Imagination
from wmgym.model.world_model import WorldModel
from wmgym.model.world_model_config import check_sampler_arguments
from wmgym.rewards.base import RewardHead

REWARDS = ("auto", "lpips", "lpips-offline", "none")
"""`reward` names: "auto" (the default) is "lpips" where the trunk file is there, else "lpips-offline"
with its warning, so the env makes on any machine; the others as WMFold-v0's: "lpips" is real LPIPS (torchvision's ImageNet AlexNet trunk, read
from torch's hub cache or `lpips_trunk_weights`, never downloaded: FileNotFoundError without it);
"lpips-offline" is LPIPS' architecture with a seeded random trunk (deterministic but uncalibrated,
warns once); "none" gives reward 0."""
RESET_OPTIONS = ("start", "frame", "goal_image")
FALLBACK_STDS = 4.0
"""Where the model's config has no action range (`action_min`/`action_max`), the action space is
`action_mean` +- FALLBACK_STDS * `action_std` (Stable-Baselines3 needs finite bounds)."""


def action_bounds(config) -> tuple[np.ndarray, np.ndarray, str]:
    """(low, high) float32 (A,) of the action space of a `WorldModelConfig`, and where they come
    from: its training range (`action_min`/`action_max`, which the model clamps actions to), or,
    for a config without one, `action_mean` +- 4 `action_std` (finite, for Stable-Baselines3;
    the model does not clamp to these)."""
    if config.action_min is not None:
        return np.asarray(config.action_min, np.float32), np.asarray(config.action_max, np.float32), "training range"
    mean, std = np.asarray(config.action_mean, np.float64), np.asarray(config.action_std, np.float64)
    return ((mean - FALLBACK_STDS * std).astype(np.float32), (mean + FALLBACK_STDS * std).astype(np.float32),
            f"mean +- {FALLBACK_STDS:g} std")


class RobotEpisodes:
    """b imagined episodes of a robot bundle's world model, stepped together (one batched,
    KV-cached `Imagination`). No autoreset policy of its own.

    Args: as `RobotWorldModelVectorEnv` (which documents them), plus `num_envs` = b and
    `max_episode_steps` (None: never truncated here).

    Attributes:
        bundle: the `RobotBundle`.
        model: the `WorldModel`.
        action_low, action_high: float32 (A,), the action space's bounds; `bounds_source` says
            where they come from (`action_bounds`).
        frames: uint8 (b, H, W, 3) on the device, each row's newest frame.
        goals: uint8 (b, H, W, 3) on the device, each row's goal frame.
        lengths: int64 (b,), frames so far per row (0: never reset).
        start_index: int64 (b,), each row's start in the bundle's bank (for a given frame: the
            nearest bank start, whose goal and task it takes).
        tasks: b task texts.
    """

    def __init__(self, num_envs: int, checkpoint, reward: str | RewardHead = "auto", num_steps: int | None = None,
                 guidance_scale: float | None = None, max_episode_steps: int | None = None, device: str | torch.device = "auto",
                 start: int | None = None, lpips_trunk_weights=None):
        if not is_int(num_envs) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if max_episode_steps is not None and (not is_int(max_episode_steps) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be an int >= 1 or None, got {max_episode_steps!r}")
        check_sampler_arguments(num_steps, guidance_scale)  # on make, not at the first reset
        self.bundle = RobotBundle.load(checkpoint)
        if start is not None and not (is_int(start) and 0 <= start < self.bundle.num_starts):
            raise ValueError(f"start must be None or a start index in [0, {self.bundle.num_starts}), got {start!r}")
        self.model = WorldModel.from_pretrained(self.bundle.world_model_dir, device=device).eval()
        check_model_matches_store(self.model.config, self.bundle.height, self.bundle.width, self.bundle.action_names,
                                  f"the world model in {self.bundle.directory}", "the bundle")
        self.device = self.model.device
        self.num_envs, self.max_episode_steps, self.default_start = num_envs, max_episode_steps, start
        self.num_steps, self.guidance_scale = num_steps, guidance_scale
        self.height, self.width = self.bundle.height, self.bundle.width
        self.action_names = list(self.bundle.action_names)
        self.action_dim = len(self.action_names)
        self.action_low, self.action_high, self.bounds_source = action_bounds(self.model.config)
        self.head = self._make_head(reward, lpips_trunk_weights)
        self.generator = torch.Generator(device=self.device)
        self.imagination: Imagination | None = None
        b, shape = num_envs, (num_envs, self.height, self.width, 3)
        self.frames = torch.zeros(shape, dtype=torch.uint8, device=self.device)
        self.goals = torch.zeros(shape, dtype=torch.uint8, device=self.device)
        self.lengths = np.zeros(b, dtype=np.int64)
        self.start_index = np.full(b, -1, dtype=np.int64)
        self.tasks = [""] * b
        self.potential = torch.zeros(b, device=self.device)  # the head's score of each row's newest frame

    # ------------------------------------------------------------ set-up helpers
    def _make_head(self, reward, lpips_trunk_weights) -> RewardHead | None:
        if isinstance(reward, RewardHead):
            if reward.goal_kind != "image":
                raise ValueError(f"wmgym/WorldModel-v0's goals are frames: a RewardHead with goal_kind 'image' is needed, "
                                 f"got {type(reward).__name__} ({reward.goal_kind!r})")
            return reward
        if reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r}; expected one of {', '.join(REWARDS)} or a RewardHead instance")
        if reward == "none":
            return None
        from wmgym.rewards.lpips_head import LPIPSHead

        try:
            return LPIPSHead(trunk_weights=lpips_trunk_weights, allow_offline_fallback=reward in ("auto", "lpips-offline"),
                             device=self.device)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{error}\nwmgym/WorldModel-v0 without the trunk: reward='lpips-offline' (a seeded random "
                                    "trunk, uncalibrated) or reward='none'.") from None

    @property
    def reward_names(self) -> tuple[str, ...]:
        return () if self.head is None else (self.head.name,)

    @property
    def action_layout(self) -> str:
        """The action, for error messages: its shape and each value's name and bounds."""
        values = ", ".join(f"{name} [{low:.4g}, {high:.4g}]" for name, low, high in
                           zip(self.action_names, self.action_low, self.action_high))
        return (f"wmgym/WorldModel-v0 takes float32 actions of {self.action_dim} values (bounds: the {self.bounds_source}): "
                f"{values}")

    # ------------------------------------------------------------ reset
    def reset_rows(self, rows, rng: np.random.Generator, options: dict | None = None,
                   row_rngs: list[np.random.Generator | None] | None = None) -> torch.Tensor:
        """Start rows (r indices); returns their first observations uint8 (r, H, W, 3) on the device.

        options: "start": a bank index (int, or r of them) in [0, N); "frame": uint8 (H, W, 3) or
        (r, H, W, 3), a frame to start from (another size is scaled and centre-cropped to (H, W)
        as `wmgym import` does; the goal and task are those of the nearest bank start); "goal_image":
        uint8 (H, W, 3) or (r, H, W, 3), overriding the start's goal (same resizing). Without
        "start" or "frame": the env's `start`, else a bank index drawn from `rng` (row k from
        `row_rngs[k]` where given).
        """
        rows = [int(i) for i in rows]
        r, options = len(rows), checked_reset_options(options, RESET_OPTIONS)
        n = self.bundle.num_starts
        if options.get("frame") is not None:
            if options.get("start") is not None:
                raise ValueError("pass options['start'] (a bank index) or options['frame'] (a frame), not both")
            starts = self._as_frames(options["frame"], r, "options['frame']")
            index = [self.bundle.nearest_start(f) for f in starts]
        else:
            if options.get("start") is not None:
                given = options["start"]
                index = [given] * r if is_int(given) else list(given) if isinstance(given, (list, tuple, np.ndarray)) else None
                if index is None or len(index) != r or not all(is_int(i) and 0 <= i < n for i in index):
                    raise ValueError(f"options['start'] must be a start index in [0, {n}) or a list of {r} of them, got {given!r}")
                index = [int(i) for i in index]
            elif self.default_start is not None:
                index = [self.default_start] * r
            elif row_rngs is None:
                index = [int(i) for i in rng.integers(n, size=r)]
            else:
                index = [int((own or rng).integers(n)) for own in row_rngs]
            starts = self.bundle.start_frames[index]
        goals = options.get("goal_image")
        goals = self.bundle.goals[index] if goals is None else self._as_frames(goals, r, "options['goal_image']")
        starts_t = torch.from_numpy(np.ascontiguousarray(starts)).to(self.device)
        if self.imagination is None or rows == list(range(self.num_envs)):
            if r != self.num_envs:
                raise RuntimeError("the first reset must start every row")
            self.imagination = Imagination(self.model, self.num_envs, num_steps=self.num_steps, guidance_scale=self.guidance_scale)
            self.imagination.start(starts_t[:, None], generator=self.generator)
        else:
            self.imagination.start(starts_t[:, None], rows=rows, generator=self.generator)
        self.frames[rows] = starts_t
        self.goals[rows] = torch.from_numpy(np.ascontiguousarray(goals)).to(self.device)
        self.lengths[rows] = 1
        self.start_index[rows] = index
        for row, i in zip(rows, index):
            self.tasks[row] = self.bundle.start_tasks[i]
        if self.head is not None:
            self.potential[rows] = self._scores(rows)
        return starts_t.clone()

    def _as_frames(self, x, r: int, what: str) -> np.ndarray:
        """uint8 (h, w, 3) or (r, h, w, 3), NumPy or torch -> NumPy (r, H, W, 3) at the model's size
        (other sizes scaled and centre-cropped as `wmgym import` does)."""
        x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
        if x.dtype != np.uint8 or x.ndim not in (3, 4) or x.shape[-1] != 3 or min(x.shape[-3:-1]) < 1:
            raise ValueError(f"{what} must be uint8 RGB ({self.height}, {self.width}, 3) or ({r}, {self.height}, {self.width}, 3), "
                             f"got {x.dtype} {x.shape}")
        if x.ndim == 3:
            x = np.broadcast_to(x, (r, *x.shape))
        if x.shape[0] != r:
            raise ValueError(f"{what}: got {x.shape[0]} frames for {r} environments")
        if x.shape[1:3] != (self.height, self.width):
            from wmgym.data.robot_import import resize_and_crop

            x = resize_and_crop(np.ascontiguousarray(x), self.height, self.width)
        return np.array(x, dtype=np.uint8, order="C")  # a writable copy (a broadcast view is not)

    # ------------------------------------------------------------ step
    def step(self, actions, active=None) -> tuple[torch.Tensor, dict[str, torch.Tensor], np.ndarray]:
        """Generate every row's next frame; returns (frames uint8 (b, H, W, 3) on the device, reward
        terms {name: float (b,)}, truncated bool (b,)).

        actions: float (b, A) (NumPy or torch), checked (`check_actions`). `active` bool (b,): rows
        whose episode goes on; the others (about to be reset) are generated with the batch but not
        recorded, and their reward terms are 0.
        """
        actions = self.check_actions(actions)
        if self.imagination is None:
            raise RuntimeError("call reset() before step()")
        active = np.ones(self.num_envs, dtype=bool) if active is None else np.asarray(active, dtype=bool)
        latents = self.imagination.step(actions, self.generator)
        frames = self.model.decode_latents(latents)[:, 0]  # (b, H, W, 3)
        rows = np.flatnonzero(active).tolist()
        self.frames[rows] = frames[rows]
        self.lengths[rows] += 1
        terms = {}
        if self.head is not None:
            delta = torch.zeros(self.num_envs, device=self.device)
            if rows:
                scores = self._scores(rows)
                delta[rows] = scores - self.potential[rows]
                self.potential[rows] = scores
            terms[self.head.name] = delta
        truncated = np.zeros(self.num_envs, dtype=bool)
        if self.max_episode_steps is not None:
            truncated = active & (self.lengths > self.max_episode_steps)
        return frames, terms, truncated

    def check_actions(self, actions) -> torch.Tensor:
        """(b, A) real actions (NumPy or torch) -> float32 tensor on the device; ValueError naming
        the action values when the dtype, the shape or a value (NaN, inf) is wrong. Values outside
        the action space are not refused: the model clamps them to its training range, where its
        config has one (`WorldModel.normalize_actions`)."""
        b, a = self.num_envs, self.action_dim
        if torch.is_tensor(actions):
            if actions.dtype == torch.bool or actions.is_complex():
                raise ValueError(f"actions must be real numbers, got dtype {actions.dtype}\n{self.action_layout}")
        else:
            actions = np.asarray(actions)
            if actions.dtype == bool or not (np.issubdtype(actions.dtype, np.floating) or np.issubdtype(actions.dtype, np.integer)):
                raise ValueError(f"actions must be real numbers of shape ({b}, {a}), got dtype {actions.dtype}\n{self.action_layout}")
            actions = torch.from_numpy(actions.astype(np.float32))
        if tuple(actions.shape) != (b, a):
            raise ValueError(f"actions must have shape ({b}, {a}), got {tuple(actions.shape)}\n{self.action_layout}")
        actions = actions.to(self.device, torch.float32)
        if not bool(torch.isfinite(actions).all()):
            bad = torch.nonzero(~torch.isfinite(actions).all(0)).flatten().tolist()
            raise ValueError(f"actions contain NaN or inf at {', '.join(self.action_names[i] for i in bad)}\n{self.action_layout}")
        return actions

    # ------------------------------------------------------------ rewards
    def _scores(self, rows) -> torch.Tensor:
        """The head's score (r,) of the rows' newest frames against their goals. LPIPS trunks need
        frames of a minimum size (AlexNet: 31 pixels a side): smaller frames and goals are both
        scaled up (bilinear) by the smallest integer factor that reaches it."""
        frames, goals = self.frames[rows], self.goals[rows]
        minimum = _lpips_min_size(self.head)
        if minimum and min(self.height, self.width) < minimum:
            factor = math.ceil(minimum / min(self.height, self.width))
            frames, goals = (_resize(x, self.height * factor, self.width * factor) for x in (frames, goals))
        return self.head.score(frames, goals).float().to(self.device)


def _lpips_min_size(head) -> int:
    from wmgym.rewards.lpips_head import MIN_FRAME_SIZE, LPIPSHead

    return MIN_FRAME_SIZE[head.net] if isinstance(head, LPIPSHead) else 0


def _resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 (n, h, w, 3) -> (n, height, width, 3), bilinear."""
    x = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=(height, width), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
