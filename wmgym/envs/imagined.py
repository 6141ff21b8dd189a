"""`ImaginedEpisodes`: the batched state behind every WMFold environment.

b imagined folding episodes over one `Imagination` (one batched, KV-cached generator): start
and goal per row, the frames so far (for video reward heads), the reward potential, the
success judge. It has no autoreset policy of its own: `WorldModelVectorEnv` (Gymnasium,
next-step autoreset), the stable-baselines3 adapter (same-step autoreset) and
`WorldModelEnv` (one row) put theirs on top.

Dimension legend: b rows (envs), r rows being reset, H x W the model's frame size,
Ho x Wo the observation size, K frames a video head sees.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wmgym.actions import ACTION_DIM, ACTION_HIGH, ACTION_LAYOUT, ACTION_LOW, check_rotations
from wmgym.conditioning import GripperConditions
from wmgym.envs.bundle import GRIPPERS_FILE, Bundle
from wmgym.envs.options import checked_reset_options, is_int
from wmgym.envs.sim_fold import StartState
from wmgym.model.config_checks import is_finite_number
from wmgym.model.imagination import Imagination
from wmgym.model.world_model_config import check_sampler_arguments
from wmgym.model.world_model import WorldModel
from wmgym.rewards.base import RewardHead
from wmgym.sim.gripper_track import GripperState
from wmgym.sim.tasks import TASKS
from wmgym.sim.world import WorldConfig
from wmgym.trust import MIN_SAMPLER_STEPS, TrustCalibration, TrustTracker

RESET_OPTIONS = ("start", "frame", "goal_image", "goal_text", "task", "grippers")
REWARDS = ("videoclip", "lpips", "lpips-offline", "lpips-calibrated", "none")
"""`reward` names: VideoCLIP similarity to the goal text; LPIPS to the goal image (real weights,
see `LPIPSHead`); LPIPS with its offline fallback trunk (uncalibrated, warns); LPIPS calibrated
on the simulator's fold score (the bundle's lpips/, `wmgym train-lpips`); no reward."""


class ImaginedEpisodes:
    """b imagined episodes of the world model in a bundle, stepped together.

    Args: as `WorldModelVectorEnv` (which documents them), plus `num_envs` = b.
    """

    def __init__(self, num_envs: int, checkpoint=None, task: str | None = "fold_half", goal_image=None, goal_text: str | None = None,
                 reward: str | RewardHead = "videoclip", num_steps: int | None = None, guidance_scale: float | None = None,
                 max_episode_steps: int | None = 16, resolution=None, device: str | torch.device = "auto",
                 use_success_judge: bool = True, judge_threshold: float | None = None,
                 lpips_trunk_weights: str | None = None, precision: str | None = None):
        if not is_int(num_envs) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if task is not None and task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)} or None (a random task per episode)")
        if max_episode_steps is not None and (not is_int(max_episode_steps) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be an int >= 1 or None, got {max_episode_steps!r}")
        check_sampler_arguments(num_steps, guidance_scale)  # on make, not at the first reset
        if judge_threshold is not None and not (is_finite_number(judge_threshold) and 0 <= judge_threshold <= 1):
            raise ValueError(f"judge_threshold must be a probability in [0, 1] or None (the calibrated one), got {judge_threshold!r}")
        self.bundle = Bundle.load(checkpoint)
        # The tasks this bundle has start and goal banks for (the shipped one: all of TASKS, in order).
        self.bundle_tasks = tuple(t for t in TASKS if t in self.bundle.captions)
        if task is not None and task not in self.bundle_tasks:
            raise ValueError(f"the bundle {self.bundle.directory} has no goals for task {task!r}; it has "
                             f"{', '.join(self.bundle_tasks) or 'none'} (pass one of them, or None for a random one)")
        self.model = WorldModel.from_pretrained(self.bundle.world_model_dir, device=device).eval()
        if precision is not None:
            self.model.set_precision(precision)
        self.device = self.model.device
        # The grippers' motion is kinematics of the actions: each row's track renders the view
        # the model is conditioned on, exactly as the simulator would, and a held-conditioned
        # model's grasp state is drawn once per closing (wmgym.conditioning).
        self.grippers = GripperConditions(self.model, num_envs, WorldConfig(height=self.bundle.height, width=self.bundle.width))
        if self.grippers.takes_held and self.model.grasp_prior is None:
            raise FileNotFoundError(f"the world model in {self.bundle.directory} is conditioned on the grasp state and has no "
                                    "grasp_prior/ to draw it from (`wmgym train-grasp-prior --out <model dir>/grasp_prior`)")
        self.uses_grippers = self.grippers.is_needed  # the rows' GripperTracks are stepped
        if self.uses_grippers and self.bundle.start_grippers is None:
            raise FileNotFoundError(f"the world model in {self.bundle.directory} is conditioned on the grippers, but the "
                                    f"bundle has no {GRIPPERS_FILE} (the start banks' gripper poses); remake it with `wmgym bundle`")
        self.num_envs, self.task, self.max_episode_steps = num_envs, task, max_episode_steps
        self.num_steps, self.guidance_scale = num_steps, guidance_scale
        self.height, self.width = self.bundle.height, self.bundle.width
        self.obs_height, self.obs_width = _resolution(resolution, (self.height, self.width))
        self.goal_image = None if goal_image is None else self._to_model_size(_as_images(goal_image, 1, "goal_image", self.device))[0]
        if goal_text is not None and (not isinstance(goal_text, str) or not goal_text.strip()):
            raise ValueError(f"goal_text must be a non-empty str or None (the task's caption), got {goal_text!r}")
        self.goal_text = goal_text
        self.videoclip = self._load_videoclip() if reward == "videoclip" or use_success_judge else None
        self.head = self._make_head(reward, lpips_trunk_weights)
        if goal_text is not None:
            self._check_goal_texts([goal_text])
        self.judge = None
        if use_success_judge:
            from wmgym.rewards.judge import make_judge

            # The bundle's track judge (judge.json: VideoCLIP, the grippers' track, the grasp prior) or VideoCLIP alone.
            self.judge = make_judge(self.bundle, self.videoclip, self.model, num_envs, judge_threshold)
        self.generator = torch.Generator(device=self.device)
        self.imagination: Imagination | None = None
        # Each row's trust in its newest frame (wmgym.trust; NaN for a world model without trust.json).
        calibration = TrustCalibration.of_model_dir(self.bundle.world_model_dir)
        if calibration is not None and (self.model.sampler.num_steps if num_steps is None else num_steps) < MIN_SAMPLER_STEPS:
            warnings.warn("trust scores need a sampler of at least two steps per frame (their disagreement feature); "
                          "with num_steps=1 info has no 'trust'", stacklevel=3)
            calibration = None
        self.trust = TrustTracker(num_envs, self.device, calibration)
        b = num_envs
        self.frames = torch.zeros(b, (max_episode_steps or 16) + 1, self.height, self.width, 3, dtype=torch.uint8, device=self.device)
        self.lengths = np.zeros(b, dtype=np.int64)  # frames so far per row (0: never reset)
        self.tasks = [task or TASKS[0]] * b
        self.goal_images = torch.zeros(b, self.height, self.width, 3, dtype=torch.uint8, device=self.device)
        self.goal_texts = [""] * b
        self.potential = torch.zeros(b, device=self.device)  # the head's score of each row's newest frame
        # VideoCLIP's per-frame features, each computed once when its frame is made (the
        # resampled clip changes every step, its frames' features do not).
        self.clip_features = None if self.videoclip is None else torch.zeros(
            b, self.frames.shape[1], self.videoclip.model.config.frame_width, device=self.device)
        self.success = np.zeros(b, dtype=bool)

    # ------------------------------------------------------------ set-up helpers
    def _load_videoclip(self):
        from wmgym.rewards.videoclip import VideoCLIPHead

        if self.bundle.videoclip_dir is None:
            raise FileNotFoundError(f"the bundle {self.bundle.directory} has no videoclip/ model, which reward='videoclip' and "
                                    "the success judge need; pass reward='lpips' (or 'none') and use_success_judge=False, "
                                    "or add one with `wmgym bundle --videoclip DIR`")
        return VideoCLIPHead.from_pretrained(self.bundle.videoclip_dir, device=self.device)

    def _make_head(self, reward, lpips_trunk_weights) -> RewardHead | None:
        if isinstance(reward, RewardHead):
            return reward
        if reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r}; expected one of {', '.join(REWARDS)} or a RewardHead instance")
        if reward == "videoclip":
            return self.videoclip
        if reward in ("lpips", "lpips-offline"):
            from wmgym.rewards.lpips_head import LPIPSHead

            return LPIPSHead(trunk_weights=lpips_trunk_weights, allow_offline_fallback=reward == "lpips-offline", device=self.device)
        if reward == "lpips-calibrated":
            from wmgym.rewards.lpips_head import bundle_head

            return bundle_head(self.bundle, self.device)
        return None

    def _check_goal_texts(self, texts: list[str]) -> None:
        """A text reward head with a closed vocabulary (VideoCLIP) refuses words it never saw, before any step."""
        if self.head is not None and hasattr(self.head, "check_text"):
            self.head.check_text(texts)

    @property
    def reward_names(self) -> tuple[str, ...]:
        return () if self.head is None else (self.head.name,)

    # ------------------------------------------------------------ reset
    def reset_rows(self, rows, rng: np.random.Generator, options: dict | None = None,
                   row_rngs: list[np.random.Generator | None] | None = None) -> torch.Tensor:
        """Start rows (a list of r indices); returns their first observations uint8 (r, Ho, Wo, 3) on the device.

        options: "start": a `StartState` (`SimFoldEnv.state()`) or r of them, the frame and
        grippers to start from (instead of "frame" and "grippers"); "frame" uint8 (r, H, W, 3)
        or, for one row, (H, W, 3): start from it (any size:
        resized to the model's for the model, returned unchanged); "goal_image" (one image or r);
        "goal_text" (one str or r); "task" (one task name or r, overriding the env's `task` for
        these episodes); "grippers" (a `GripperState` or r: the grippers at the start, for a
        model conditioned on the grippers view). Without them: a start frame drawn from the
        bundle's bank, and the goal and grippers the bank gives that start (for a given frame:
        those of the nearest bank frame, exact for `SimFold-v0`'s bank seeds).
        `row_rngs` (r generators or None): row k draws its start frame and task from its own
        generator where one is given (per-env seeds), else from `rng`.
        """
        rows = [int(i) for i in rows]
        r, options = len(rows), checked_reset_options(options, RESET_OPTIONS)
        if options.get("start") is not None:
            options.update(_start_options(options.pop("start"), r, options))
        frame = options.get("frame")
        if frame is not None:
            given = _as_images(frame, r, "options['frame']", self.device)  # uint8 (r, h, w, 3), any size
            starts = self._to_model_size(given)
            index = [self.bundle.nearest_start(f) for f in starts.cpu().numpy()]
            observations = given if given.shape[1:3] == (self.obs_height, self.obs_width) else self._to_obs_size(starts)
        else:
            if row_rngs is None:
                index = [int(i) for i in rng.integers(len(self.bundle.start_frames), size=r)]
            else:
                index = [int((own or rng).integers(len(self.bundle.start_frames))) for own in row_rngs]
            starts = torch.from_numpy(self.bundle.start_frames[index]).to(self.device)
            observations = self._to_obs_size(starts)
        tasks = options.get("task")
        if tasks is None:
            tasks = [self.task or self.bundle_tasks[int((own or rng).integers(len(self.bundle_tasks)))] for own in (row_rngs or [None] * r)]
        else:
            tasks = [tasks] * r if isinstance(tasks, str) else list(tasks) if isinstance(tasks, (list, tuple)) else None
            if tasks is None or len(tasks) != r or any(t not in self.bundle_tasks for t in tasks):
                raise ValueError(f"options['task'] must be one of {', '.join(self.bundle_tasks)} or a list of {r} of them, "
                                 f"got {options['task']!r}")
        goals = options.get("goal_image", self.goal_image)
        if goals is None:
            goals = torch.from_numpy(np.stack([self.bundle.goals[t][i] for t, i in zip(tasks, index)])).to(self.device)
        goals = self._to_model_size(_as_images(goals, r, "goal_image", self.device))
        texts = options.get("goal_text", self.goal_text)
        if texts is None:
            texts = [self.bundle.captions[t] for t in tasks]
        else:
            texts = [texts] * r if isinstance(texts, str) else list(texts) if isinstance(texts, (list, tuple)) else [texts]
        if len(texts) != r or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError(f"goal_text must be a non-empty str or a list of {r} of them, got {texts!r}")
        self._check_goal_texts(texts)
        conditions = None  # the first frames' Conditions (r, 1)
        if self.uses_grippers:
            conditions = self.grippers.restart(rows, self._start_grippers(options.get("grippers"), index, r), rng)
        if self.imagination is None or r == self.num_envs and rows == list(range(self.num_envs)):
            self.imagination = Imagination(self.model, self.num_envs, num_steps=self.num_steps, guidance_scale=self.guidance_scale)
            self.imagination.track_trust = self.trust.calibration is not None
            if r != self.num_envs:
                raise RuntimeError("the first reset must start every row")
            self.imagination.start(starts[:, None], generator=self.generator, conditions=conditions)
        else:
            self.imagination.start(starts[:, None], rows=rows, generator=self.generator, conditions=conditions)
        self.trust.reset(rows)
        self.frames[rows, 0] = starts
        if self.clip_features is not None:
            self.clip_features[rows, 0] = self.videoclip.frame_features(starts[:, None], starts)[:, 0]
        self.lengths[rows] = 1
        self.goal_images[rows] = goals
        for row, task, text in zip(rows, tasks, texts):
            self.tasks[row], self.goal_texts[row] = task, text
        self.success[rows] = False
        if self.head is not None:
            self.potential[rows] = self._scores(rows)[0]
        return observations

    # ------------------------------------------------------------ step
    def step(self, actions, active=None):
        """Generate every row's next frame; returns (observations uint8 (b, Ho, Wo, 3) on the device,
        reward terms {name: float (b,)}, success bool (b,), truncated bool (b,)). `trust.trust`
        (b,) then holds each row's trust in its new frame (`wmgym.trust`).

        actions: float (b, 20) (NumPy or torch). `active` bool (b,): rows whose episode goes on;
        the others (about to be reset) are generated with the batch but not recorded.
        """
        actions = self.check_actions(actions)
        active = np.ones(self.num_envs, dtype=bool) if active is None else np.asarray(active, dtype=bool)
        if self.imagination is None:
            raise RuntimeError("call reset() before step()")
        # A row stepped past its end (terminated, or truncated at max_episode_steps) goes on with
        # the same episode, as after gymnasium's TimeLimit: resetting is the caller's call.
        if self.lengths.max() >= self.frames.shape[1]:  # no horizon of our own (TimeLimit's): grow the frame buffer
            self.frames = torch.cat([self.frames, torch.zeros_like(self.frames)], dim=1)
            if self.clip_features is not None:
                self.clip_features = torch.cat([self.clip_features, torch.zeros_like(self.clip_features)], dim=1)
        poses_before = self._track_poses() if getattr(self.judge, "reads_track", False) else None  # (b, 8)
        conditions = self.grippers.step(actions.cpu().numpy()) if self.uses_grippers else None  # (b, 1)
        latents = self.imagination.step(actions, self.generator, conditions)
        self.trust.update(self.imagination)
        frames = self.model.decode_latents(latents)[:, 0]  # (b, H, W, 3)
        rows = np.flatnonzero(active).tolist()
        self.frames[rows, self.lengths[rows]] = frames[rows]
        if self.clip_features is not None and rows:
            first = self.frames[rows, 0]
            self.clip_features[rows, self.lengths[rows]] = self.videoclip.frame_features(frames[rows][:, None], first)[:, 0]
        self.lengths[rows] += 1
        terms = {}
        success = np.zeros(self.num_envs, dtype=bool)
        if rows and (self.head is not None or self.judge is not None):
            scores, probability = self._scores(rows, with_judge=self.judge is not None)
            if self.head is not None:
                delta = torch.zeros(self.num_envs, device=self.device)
                delta[rows] = scores - self.potential[rows]
                self.potential[rows] = scores
                terms[self.head.name] = delta
            if probability is not None:
                if poses_before is not None:  # the track judge reads the grippers and grasp draws too
                    probability = self._track_probability(rows, probability, poses_before, conditions)
                success[rows] = (probability >= self.judge.threshold).cpu().numpy()
        self.success[rows] = success[rows]
        truncated = np.zeros(self.num_envs, dtype=bool)
        if self.max_episode_steps is not None:
            truncated = active & (self.lengths > self.max_episode_steps) & ~success
        return self._to_obs_size(frames), terms, success & active, truncated

    def with_trust(self, info: dict, trust=None) -> dict:
        """`info` with "trust": `trust` (default: every row's, float32 (b,)), a Python float for one
        row's; unchanged for a world model without a trust calibration (no trust.json)."""
        if self.trust.calibration is None:
            return info
        trust = self.trust.trust.cpu().numpy() if trust is None else trust
        return {**info, "trust": float(trust) if np.ndim(trust) == 0 else trust}

    def _start_grippers(self, given, index: list[int], r: int) -> list[GripperState]:
        """The grippers at the start of r episodes: `given` (one `GripperState` or r), else the bank's at `index`."""
        if given is None:
            return [self.bundle.start_grippers[i] for i in index]
        states = [given] * r if isinstance(given, GripperState) else list(given)
        if len(states) != r or not all(isinstance(g, GripperState) for g in states):
            raise ValueError(f"options['grippers'] must be a GripperState or {r} of them, got {given!r}")
        return states

    def check_actions(self, actions) -> torch.Tensor:
        """(b, 20) float actions -> float32 tensor on the device; ValueError naming the layout when bad
        (shape, dtype, NaN, bounds, a degenerate rotation in any row): a rejected batch changes no state."""
        if not torch.is_tensor(actions):
            actions = np.asarray(actions)
            if not (np.issubdtype(actions.dtype, np.floating) or np.issubdtype(actions.dtype, np.integer)):
                raise ValueError(f"actions must be real numbers of shape ({self.num_envs}, {ACTION_DIM}), got dtype {actions.dtype}\n{ACTION_LAYOUT}")
            actions = torch.from_numpy(actions.astype(np.float32))
        elif actions.dtype == torch.bool or actions.is_complex():
            raise ValueError(f"actions must be real numbers, got dtype {actions.dtype}\n{ACTION_LAYOUT}")
        if tuple(actions.shape) != (self.num_envs, ACTION_DIM):
            raise ValueError(f"actions must have shape ({self.num_envs}, {ACTION_DIM}), got {tuple(actions.shape)}\n{ACTION_LAYOUT}")
        actions = actions.to(self.device, torch.float32)
        if not bool(torch.isfinite(actions).all()):
            raise ValueError(f"actions contain NaN or inf\n{ACTION_LAYOUT}")
        low, high = (torch.as_tensor(x, device=self.device) for x in (ACTION_LOW, ACTION_HIGH))
        bad = (actions < low) | (actions > high)
        if bool(bad.any()):
            raise ValueError(f"actions outside the bounds at indices {torch.nonzero(bad.any(0)).flatten().tolist()}: "
                             f"see the action space\n{ACTION_LAYOUT}")
        check_rotations(actions.cpu().numpy())  # every row, before any row's grippers move
        return actions

    # ------------------------------------------------------------ rewards
    def _scores(self, rows, with_judge: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(head score (r,), judge probability (r,) or None) of the rows' episodes so far."""
        video = None
        if self.videoclip is not None and (with_judge or self.head is self.videoclip):
            video = self.videoclip.embeddings_of_features(self._clip_features(rows))  # (r, d), = video_embeddings(clips)
        if self.head is None:
            scores = torch.zeros(len(rows), device=self.device)
        elif self.head is self.videoclip:  # one video embedding serves the reward and the judge
            scores = (video * self.videoclip.text_embeddings([self.goal_texts[i] for i in rows])).sum(-1)
        elif self.head.goal_kind == "image":
            scores = self.head.score(self.frames[rows, self.lengths[rows] - 1], self.goal_images[rows])
        else:
            clips = self._clips(rows, getattr(self.head, "num_frames", 8))
            scores = self.head.score(clips, [self.goal_texts[i] for i in rows])
        probability = self.judge.probability_of_embeddings(video, [self.tasks[i] for i in rows]) if with_judge else None
        return scores.float(), probability

    def _track_poses(self) -> np.ndarray:
        """float32 (b, 8): every row's gripper pose vector now (the track judge's input)."""
        if not self.uses_grippers:
            raise RuntimeError(f"the bundle {self.bundle.directory}'s judge.json reads the grippers' track, which this "
                               "world model does not keep; delete judge.json to judge with VideoCLIP alone")
        return self.grippers.tracks.pose_vectors()

    def _track_probability(self, rows, probability: torch.Tensor, poses_before: np.ndarray, conditions) -> torch.Tensor:
        """The track judge's p(done) (r,) of `rows` after a step, from VideoCLIP's (r,), the poses
        (b, 8) before the step and the step's Conditions (their grasp draws, if any)."""
        held = None if conditions is None else conditions.vectors.get("held")
        drawn = None if held is None else held.detach().cpu().numpy()[rows, 0]
        return self.judge.step_probability(rows, self.lengths[rows], probability, poses_before[rows],
                                           self._track_poses()[rows], drawn, [self.tasks[i] for i in rows])

    def _clip_features(self, rows) -> torch.Tensor:
        """VideoCLIP features (r, K, f) of the frames `_clips` would pick, from the cache."""
        from wmgym.rewards.videoclip import resample_indices

        k = self.videoclip.model.config.num_frames
        index = torch.from_numpy(np.stack([resample_indices(int(self.lengths[i]), k) for i in rows])).to(self.device)
        return self.clip_features[torch.as_tensor(rows, device=self.device)[:, None], index]

    def _clips(self, rows, num_frames: int) -> torch.Tensor:
        """uint8 (r, K, H, W, 3): K frames evenly over each row's episode so far (first and newest included)."""
        from wmgym.rewards.videoclip import resample_indices

        index = torch.from_numpy(np.stack([resample_indices(int(self.lengths[i]), num_frames) for i in rows])).to(self.device)
        return self.frames[torch.as_tensor(rows, device=self.device)[:, None], index]

    # ------------------------------------------------------------ resizing
    def _to_model_size(self, frames: torch.Tensor) -> torch.Tensor:
        return _resize(frames, self.height, self.width)

    def _to_obs_size(self, frames: torch.Tensor) -> torch.Tensor:
        return _resize(frames, self.obs_height, self.obs_width)


def _start_options(start, r: int, options: dict) -> dict:
    """options["start"] (one `StartState` or r) as the "frame" and "grippers" options."""
    if "frame" in options or "grippers" in options:
        raise ValueError("options['start'] gives the start frame and grippers: pass it without 'frame' and 'grippers'")
    states = [start] * r if isinstance(start, StartState) else list(start) if isinstance(start, (list, tuple)) else []
    if len(states) != r or not all(isinstance(s, StartState) for s in states):
        raise ValueError(f"options['start'] must be a StartState (SimFoldEnv.state()) or a list of {r} of them, got {start!r}")
    return {"frame": np.stack([s.frame for s in states]), "grippers": [s.grippers for s in states]}


def _as_images(x, r: int, what: str, device) -> torch.Tensor:
    """One uint8 image (h, w, 3) or r of them (r, h, w, 3) (NumPy or torch), or the path of an
    image file (PNG, JPEG, ...), any size -> tensor (r, h, w, 3) on `device`."""
    if isinstance(x, (str, os.PathLike)):
        x = _read_image(x, what)
    if not torch.is_tensor(x):
        x = np.asarray(x) if isinstance(x, (np.ndarray, list, tuple)) else None
        if x is None or x.dtype == object:
            raise ValueError(f"{what} must be a uint8 RGB array (H, W, 3) or ({r}, H, W, 3), a torch tensor of that shape, "
                             "or an image file's path")
        x = torch.from_numpy(x)
    if x.dtype != torch.uint8 or x.dim() not in (3, 4) or x.shape[-1] != 3 or min(x.shape[-3:-1]) < 1:
        hint = " (float images: convert with (x * 255).round().astype(np.uint8))" if x.is_floating_point() else ""
        raise ValueError(f"{what} must be uint8 RGB (H, W, 3) or ({r}, H, W, 3), got {x.dtype} {tuple(x.shape)}{hint}")
    if x.dim() == 3:
        x = x[None].expand(r, *x.shape)
    if x.shape[0] != r:
        raise ValueError(f"{what}: got {x.shape[0]} images for {r} environments")
    return x.to(device)


def _read_image(path, what: str) -> np.ndarray:
    """An image file -> uint8 RGB (H, W, 3) (grey expanded, alpha dropped); errors name the file."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no image file at {path}")
    try:
        image = np.asarray(iio.imread(path))
    except Exception as error:  # imageio raises plugin-specific errors for unreadable files
        raise ValueError(f"{what}: {path} is not a readable image ({error})") from None
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4) or image.dtype != np.uint8:
        raise ValueError(f"{what}: {path} holds a {image.dtype} image of shape {image.shape}; expected 8-bit RGB or RGBA")
    return np.ascontiguousarray(image[..., :3])


def _resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 (n, h, w, 3) -> (n, height, width, 3): bilinear with antialiasing (unchanged if same size)."""
    if tuple(frames.shape[1:3]) == (height, width):
        return frames
    x = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _resolution(resolution, default: tuple[int, int]) -> tuple[int, int]:
    if resolution is None:
        return default
    if isinstance(resolution, (int, np.integer)) and not isinstance(resolution, bool):
        resolution = (int(resolution), int(resolution))
    try:
        height, width = (int(x) for x in resolution)
    except (TypeError, ValueError):
        raise ValueError(f"resolution must be None, an int or a (height, width) pair, got {resolution!r}") from None
    if height < 16 or width < 16:
        raise ValueError(f"resolution must be at least 16x16, got {height}x{width}")
    return height, width
