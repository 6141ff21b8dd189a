"""`wmgym/WorldModel-v0`: a world model trained on real robot data, served as a Gymnasium
environment (the generic learned simulator) and as a natively batched vector env.

Dimension legend: b envs (rows), r rows being reset, H x W the model's frame size, A action
values, N start frames in the bundle.

`RobotEpisodes` is the batched state (one KV-cached `Imagination` for all rows); `RobotWorldModelEnv`
(one row, `gym.make`) and `RobotWorldModelVectorEnv` (b rows, `gym.make_vec`, next-step autoreset)
put Gymnasium's conventions on top, as `WorldModelEnv` / `WorldModelVectorEnv` do for WMFold-v0.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from wmgym.envs.options import checked_reset_options
from wmgym.envs.robot_bundle import RobotBundle, check_model_matches_store
from wmgym.model.imagination import Imagination
from wmgym.model.world_model import WorldModel
from wmgym.model.world_model_config import check_sampler_arguments
from wmgym.rewards.base import RewardHead

ENV_ID = "wmgym/WorldModel-v0"
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

_DOC_ARGUMENTS = """`checkpoint`: a robot bundle directory (`wmgym bundle --world-model RUN --data STORE
    --out DIR`; a WMFold-v0 bundle is refused with a message). `reward`: "auto" (default: "lpips"
    where its trunk file is found, else "lpips-offline" with a warning), "lpips" (real
    LPIPS to the goal frame: torchvision's ImageNet AlexNet trunk from torch's hub cache or
    `lpips_trunk_weights`, never downloaded, FileNotFoundError without it, as WMFold-v0's
    "lpips"), "lpips-offline" (LPIPS' architecture with a seeded random trunk: deterministic but
    NOT calibrated, a stand-in; warns once), "none" (reward 0), or a `RewardHead` whose goal is
    an image. `num_steps`, `guidance_scale`: sampler overrides (default: the bundle's model's).
    `device`: "auto" (CUDA when available). `start`: a start index in [0, N) used by every reset
    without a start option (default None: drawn at random with the env's seed).
    `lpips_trunk_weights`: the LPIPS trunk file (see `LPIPSHead`)."""


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
        if not _is_int(num_envs) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if max_episode_steps is not None and (not _is_int(max_episode_steps) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be an int >= 1 or None, got {max_episode_steps!r}")
        check_sampler_arguments(num_steps, guidance_scale)  # on make, not at the first reset
        self.bundle = RobotBundle.load(checkpoint)
        if start is not None and not (_is_int(start) and 0 <= start < self.bundle.num_starts):
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
                index = [given] * r if _is_int(given) else list(given) if isinstance(given, (list, tuple, np.ndarray)) else None
                if index is None or len(index) != r or not all(_is_int(i) and 0 <= i < n for i in index):
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


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _row_seeds(seeds, num_envs: int) -> list[int | None]:
    """A per-env seed list, checked: num_envs entries, each a non-negative int or None."""
    seeds = list(seeds)
    if len(seeds) != num_envs or not all(s is None or (_is_int(s) and s >= 0) for s in seeds):
        raise ValueError(f"reset(seed=...) takes one int, or a list of {num_envs} non-negative ints or None (one per env), "
                         f"got {seeds!r}")
    return [None if s is None else int(s) for s in seeds]


_DOC_SPACES = """## Action Space
    `Box(low, high, (A,), float32)`: the world model's action spec (its config's `action_names`,
    A values; the bundle's store's actions). `low`/`high` are the model's training range
    (`action_min`/`action_max`), which the model clamps actions to; a config without one gets
    `action_mean` +- 4 `action_std` (finite bounds for Stable-Baselines3; not enforced: the model
    then sees the action unclamped). `bounds_source` says which. Wrong shape or dtype, NaN or inf
    raise ValueError naming the action values; values outside the box are clamped by the model
    (where it has a range), not refused.

    ## Observation Space
    `Box(0, 255, (H, W, 3), uint8)`: the predicted camera frame at the model's size (the store's)."""

_DOC_REWARD_START = """## Rewards
    The change of the reward head's score over the step (potential-based): for LPIPS the decrease
    of the LPIPS distance of the newest frame to the goal frame (the last frame of the start
    frame's held-out episode). `info["reward_terms"]` holds the named term ({"lpips": ...}; empty
    for reward "none"). Frames smaller than the LPIPS trunk needs (AlexNet: 31 pixels a side) are
    scored scaled up (bilinear, frame and goal alike).

    ## Starting State
    Start i of the bundle's bank (the first frame of held-out episode i of the robot store) and
    its goal (that episode's last frame) and task: `options["start"]` = i, else the env's `start`,
    else drawn with the env's seeded RNG. `options["frame"]` (uint8 (H, W, 3); another size is
    scaled and centre-cropped as `wmgym import` does) starts from that frame instead, with the goal
    and task of the nearest bank start; `options["goal_image"]` overrides the goal. Sampling noise
    comes from the env's own generator, seeded by `reset(seed=...)`: the same seed and actions give
    the same frames. Generation is causal: frame t depends on the actions before it only."""


class RobotWorldModelVectorEnv(VectorEnv):
    __doc__ = f"""## Description
    `num_envs` imagined robot episodes generated by one action-conditioned, causal, KV-cached
    video diffusion world model trained on real robot data (`wmgym import`, `wmgym train-wm`):
    one batched denoiser pass per sampling step serves every env.

    {_DOC_SPACES.replace("(A,)", "(num_envs, A)").replace("(H, W, 3), uint8)", "(num_envs, H, W, 3), uint8)")}

    {_DOC_REWARD_START}

    In a vector env `options["start"]` may also be a list of num_envs indices and `options["frame"]`
    / `options["goal_image"]` (num_envs, H, W, 3); `reset(seed=[s0, s1, ...])` takes one seed per
    env (env i's start from seed i alone, the batch's sampling noise from all of them).

    ## Episode End
    Never terminated (no success judge). Truncated after `max_episode_steps` (default 32, as
    registered). Autoreset is next-step (`metadata["autoreset_mode"]`): the step after an episode
    ends resets that env, ignores its action and returns reward 0.

    ## Info
    "reward_terms" {{name: float (num_envs,)}}, "start_index" int (num_envs,), "task" (num_envs,)
    object (the start's task text), "step" int (num_envs,).

    ## Arguments
    `num_envs`: batch size. {_DOC_ARGUMENTS} `max_episode_steps`: horizon. `render_mode`: None or
    "rgb_array".
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 5, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, checkpoint=None, reward: str | RewardHead = "auto", num_steps: int | None = None,
                 guidance_scale: float | None = None, max_episode_steps: int = 32, device="auto", start: int | None = None,
                 lpips_trunk_weights=None, render_mode: str | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.core = RobotEpisodes(num_envs, checkpoint, reward, num_steps, guidance_scale, max_episode_steps, device, start,
                                  lpips_trunk_weights)
        self.num_envs, self.render_mode = num_envs, render_mode
        self.metadata = {**self.metadata, "render_fps": self.core.bundle.fps or 5}
        self.bounds_source = self.core.bounds_source
        self.single_observation_space = spaces.Box(0, 255, (self.core.height, self.core.width, 3), np.uint8)
        self.single_action_space = spaces.Box(self.core.action_low, self.core.action_high, (self.core.action_dim,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self._observations: np.ndarray | None = None
        self._seeded = False

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        """Start every env. `seed`: one int for the batch, or one per env (a list of num_envs ints or None)."""
        row_seeds = None
        if isinstance(seed, (list, tuple, np.ndarray)):
            row_seeds = _row_seeds(seed, self.num_envs)
            given = [s for s in row_seeds if s is not None]
            seed = int(np.random.SeedSequence(given).generate_state(1, np.uint64)[0] >> 1) if len(given) == self.num_envs else None
        super().reset(seed=seed)
        if seed is not None or not self._seeded:
            self.core.generator.manual_seed(int(self.np_random.integers(2**62)))
            self._seeded = True
        row_rngs = None if row_seeds is None else [None if s is None else np.random.default_rng(s) for s in row_seeds]
        self._observations = self.core.reset_rows(range(self.num_envs), self.np_random, options, row_rngs=row_rngs).cpu().numpy()
        self._needs_reset[:] = False
        info = {"start_index": self.core.start_index.copy(), "task": np.array(self.core.tasks, dtype=object)}
        return self._observations.copy(), info

    def step(self, actions):
        if self._observations is None:
            raise RuntimeError("call reset() before step()")
        resetting = self._needs_reset.copy()
        frames, terms, truncated = self.core.step(actions, active=~resetting)
        rewards = sum(terms.values()) if terms else torch.zeros(self.num_envs, device=self.core.device)
        observations = frames.cpu().numpy()
        rows = np.flatnonzero(resetting)
        if rows.size:  # next-step autoreset: these envs start over; action ignored, reward 0
            observations[rows] = self.core.reset_rows(rows, self.np_random).cpu().numpy()
            rewards = rewards.clone()
            rewards[rows] = 0.0
            for value in terms.values():
                value[rows] = 0.0
        self._observations = observations
        self._needs_reset = truncated.copy()
        info = {"start_index": self.core.start_index.copy(), "task": np.array(self.core.tasks, dtype=object),
                "step": self.core.lengths - 1, "reward_terms": {name: value.float().cpu().numpy() for name, value in terms.items()}}
        terminated = np.zeros(self.num_envs, dtype=bool)
        return observations.copy(), rewards.float().cpu().numpy(), terminated, truncated.copy(), info

    def render(self):
        if self.render_mode != "rgb_array" or self._observations is None:
            return None
        return tuple(self._observations.copy())


class RobotWorldModelEnv(gym.Env):
    __doc__ = f"""## Description
    `wmgym/WorldModel-v0`: one imagined episode of a world model trained on real robot data
    (`wmgym import`, `wmgym train-wm`, `wmgym bundle --data`): `step(action)` returns the
    predicted next camera frame, generated through a persistent KV-cached `Imagination` (the
    history is kept across steps, never recomputed). The one-env view of
    `RobotWorldModelVectorEnv` (same generator code).

    {_DOC_SPACES}

    {_DOC_REWARD_START}

    ## Episode End
    Never terminated (no success judge). Truncated after `max_episode_steps`: `gym.make` applies
    it through its `TimeLimit` wrapper (32 as registered; `gym.make(..., max_episode_steps=64)` for
    longer), so the class's own `max_episode_steps` defaults to None (no horizon). Stepping on
    after truncation continues the same imagined episode; `reset()` is the caller's.

    ## Info
    "reward_terms" {{name: float}}, "start_index" (the start's index in the bundle's bank),
    "task" (its episode's task text), "step" (steps so far).

    ## Arguments
    {_DOC_ARGUMENTS} `render_mode`: None or "rgb_array" (`render()` returns the current frame).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 5}

    def __init__(self, checkpoint=None, reward: str | RewardHead = "auto", num_steps: int | None = None,
                 guidance_scale: float | None = None, max_episode_steps: int | None = None, device="auto",
                 start: int | None = None, lpips_trunk_weights=None, render_mode: str | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.core = RobotEpisodes(1, checkpoint, reward, num_steps, guidance_scale, max_episode_steps, device, start,
                                  lpips_trunk_weights)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.core.bundle.fps or 5}
        self.bounds_source = self.core.bounds_source
        self.observation_space = spaces.Box(0, 255, (self.core.height, self.core.width, 3), np.uint8)
        self.action_space = spaces.Box(self.core.action_low, self.core.action_high, (self.core.action_dim,), np.float32)
        self._observation: np.ndarray | None = None
        self._seeded = False

    @property
    def action_names(self) -> list[str]:
        return list(self.core.action_names)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None or not self._seeded:
            self.core.generator.manual_seed(int(self.np_random.integers(2**62)))
            self._seeded = True
        self._observation = self.core.reset_rows([0], self.np_random, options)[0].cpu().numpy()
        return self._observation.copy(), self._info({name: 0.0 for name in self.core.reward_names})

    def step(self, action):
        if self._observation is None:
            raise RuntimeError("call reset() before step()")
        action = action if torch.is_tensor(action) else np.asarray(action)
        if tuple(action.shape) != (self.core.action_dim,):
            raise ValueError(f"{ENV_ID} takes one action of shape ({self.core.action_dim},), got {tuple(action.shape)}\n"
                             f"{self.core.action_layout}")
        frames, terms, truncated = self.core.step(action[None])
        self._observation = frames[0].cpu().numpy()
        terms = {name: float(value[0]) for name, value in terms.items()}
        return self._observation.copy(), float(sum(terms.values())), False, bool(truncated[0]), self._info(terms)

    def _info(self, terms: dict[str, float]) -> dict[str, Any]:
        core = self.core
        return {"reward_terms": dict(terms), "start_index": int(core.start_index[0]), "task": core.tasks[0],
                "step": int(core.lengths[0] - 1)}

    def goal_image(self) -> np.ndarray:
        """uint8 (H, W, 3): the current episode's goal frame."""
        return self.core.goals[0].cpu().numpy()

    def render(self):
        if self.render_mode == "rgb_array" and self._observation is not None:
            return self._observation.copy()
        return None
