"""`GraspPrior`: the probability that a closing gripper catches cloth, from the grippers' poses.

Dimension legend: b batch (episodes or candidates), t frames, e close events, K `window` frames.

A held-conditioned world model (a "held" vector in `WorldModelConfig.condition_vectors`) is told, per frame and
hand, whether the gripper holds cloth. The simulator decides it once per closing: when a
gripper's width drops below `grasp_width` it takes the cloth particles between its jaws (often
none), holds exactly those until it opens again, and holds nothing while open
(`wmgym.sim.world.World._update_grasp`). In imagination nobody tells the model, so this prior
supplies it: for every *close event* (the first closed frame of a run of closed frames of one
hand) an MLP reads both grippers' pose vectors (`POSE_DIM`: tool-centre xyz and width of each)
over the `window` frames ending at that frame and gives p(the grasp catches cloth); every frame
of the run gets that probability, every open frame 0 (`frame_held`). It never looks past the
event's frame, so it is causal: an environment can apply it step by step.

Where a grasp lands relative to the cloth is what decides it, and where the cloth lies varies
little between start states next to the proposals' spread, so the poses alone carry most of it
(`wmgym train-grasp-prior` reports the prior's held-out ROC AUC).
Written by hand: a close-event classifier over gripper poses is nothing a library offers.

Saved as a directory: config.json + model.safetensors (`save_pretrained`, `from_pretrained`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wmgym.model.config_checks import check_field_types, check_known_keys, check_statistics, read_config_json

POSE_DIM = 8  # WMFold-v0's "poses" vector (wmgym.train.wm_build.POSE_DIM; not imported: the model layer imports nothing above it)
WIDTH_COLUMNS = (3, 7)  # the left and the right gripper's width in a pose vector
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


@dataclass
class GraspPriorConfig:
    """Everything that rebuilds a `GraspPrior` (saved as config.json)."""

    window: int = 2
    """Frames of pose read per close event, ending at the event's frame (padded with the first
    frame before the episode starts)."""
    hidden: int = 128
    """Width of the MLP's two hidden layers."""
    feature_mean: list = field(default_factory=lambda: [0.0] * (2 * POSE_DIM + 2))
    """Mean of the standardised features (`window` * POSE_DIM poses, then the hand's one-hot)."""
    feature_std: list = field(default_factory=lambda: [1.0] * (2 * POSE_DIM + 2))
    grasp_width: float = 0.02
    """A gripper narrower than this (metres) is closed: the simulator's grasp threshold
    (`wmgym.sim.gripper.GRASP_WIDTH`), declared here so the model imports nothing from the simulator."""

    def __post_init__(self):
        """ValueError naming the first invalid key (types, window and hidden >= 1, statistics of
        `num_features` finite values, the std > 0: features are divided by it)."""
        check_field_types(self)
        if self.window < 1 or self.hidden < 1:
            raise ValueError(f"window and hidden must be >= 1, got {self.window}, {self.hidden}")
        if not self.grasp_width > 0:
            raise ValueError(f"grasp_width must be > 0 (metres), got {self.grasp_width}")
        check_statistics(self.feature_mean, "feature_mean", self.num_features)
        check_statistics(self.feature_std, "feature_std", self.num_features, is_positive=True)

    @property
    def num_features(self) -> int:
        return self.window * POSE_DIM + 2


def close_events(widths: np.ndarray, grasp_width: float = GraspPriorConfig.grasp_width) -> list[tuple[int, int, int]]:
    """The close events of one episode: (hand, first closed frame, frame after the run) per run
    of consecutive frames with width < `grasp_width`.

    widths: (t, 2) the left and right gripper's width (metres) at each frame."""
    widths = np.asarray(widths)
    if widths.ndim != 2 or widths.shape[1] != 2:
        raise ValueError(f"widths must be (t, 2), got {widths.shape}")
    events = []
    for hand in range(2):
        closed = np.concatenate([[False], widths[:, hand] < grasp_width, [False]])
        starts = np.flatnonzero(closed[1:-1] & ~closed[:-2])
        stops = np.flatnonzero(~closed[2:] & closed[1:-1]) + 1
        events.extend((hand, int(a), int(b)) for a, b in zip(starts, stops))
    return sorted(events, key=lambda e: (e[1], e[0]))


def event_features(poses: np.ndarray, frame: int, hand: int, window: int) -> np.ndarray:
    """Raw features (window * POSE_DIM + 2,) of the close event of `hand` at `frame` of an
    episode's poses (t, POSE_DIM): the pose vectors of frames frame-window+1..frame (the first
    frame repeated before the episode starts), then the hand's one-hot."""
    rows = np.clip(np.arange(frame - window + 1, frame + 1), 0, None)
    return np.concatenate([np.asarray(poses, np.float32)[rows].reshape(-1), np.eye(2, dtype=np.float32)[hand]])


class GraspPrior(nn.Module):
    """p(a closing gripper catches cloth | the grippers' poses up to that frame)."""

    def __init__(self, config: GraspPriorConfig | None = None):
        super().__init__()
        self.config = config = config or GraspPriorConfig()
        if config.window < 1 or config.hidden < 1:
            raise ValueError(f"window and hidden must be >= 1, got {config.window}, {config.hidden}")
        if len(config.feature_mean) != config.num_features or len(config.feature_std) != config.num_features:
            raise ValueError(f"feature_mean and feature_std need {config.num_features} values (window {config.window})")
        self.net = nn.Sequential(nn.Linear(config.num_features, config.hidden), nn.SiLU(),
                                 nn.Linear(config.hidden, config.hidden), nn.SiLU(), nn.Linear(config.hidden, 1))
        self.register_buffer("mean", torch.tensor(config.feature_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(config.feature_std, dtype=torch.float32), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Raw event features (e, num_features) -> logits (e,) of "the grasp catches cloth"."""
        return self.net((features.float() - self.mean) / self.std)[:, 0]

    @torch.no_grad()
    def frame_held(self, poses, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """The grasp state a held-conditioned world model takes, from the grippers' poses.

        Args:
            poses: float (b, t, POSE_DIM) pose vectors of the frames (tool-centre xyz and width
                of the left, then the right gripper: `wmgym.sim.gripper_track.pose_vectors`).
            sample: False gives each closed run the event's probability; True draws it held
                (1) or missed (0) with that probability (an environment's stochastic grasp).
            generator: a CPU torch.Generator for `sample`.
        Returns:
            float (b, t, 2) on the CPU: per frame and hand, p(held) (or the draw) while the
            gripper is closed, 0 while it is open. Frame s depends only on frames <= s.
        """
        poses = np.asarray(poses.detach().cpu() if torch.is_tensor(poses) else poses, np.float32)
        if poses.ndim != 3 or poses.shape[-1] != POSE_DIM or not np.isfinite(poses).all():
            raise ValueError(f"poses must be finite float (b, t, {POSE_DIM}), got {poses.shape}")
        held = torch.zeros(poses.shape[0], poses.shape[1], 2)
        runs, features = [], []
        for row, episode in enumerate(poses):
            for hand, first, stop in close_events(episode[:, WIDTH_COLUMNS], self.config.grasp_width):
                runs.append((row, hand, first, stop))
                features.append(event_features(episode, first, hand, self.config.window))
        if not runs:
            return held
        device = next(self.parameters()).device
        p = torch.sigmoid(self(torch.from_numpy(np.stack(features)).to(device))).cpu()
        if sample:
            p = (torch.rand(p.shape, generator=generator) < p).float()
        for (row, hand, first, stop), value in zip(runs, p):
            held[row, first:stop, hand] = value
        return held

    @torch.no_grad()
    def held_cases(self, poses) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The two grasp states a planner imagines a candidate under, and the weight of the first.

        A held-conditioned model was trained on 0/1 states only, so instead of feeding it the
        prior's probability (`frame_held`), a planner can imagine every candidate twice, once with
        every closing catching cloth and once with none, and weigh the two scores:
        E[score] ~= p_all * score(held) + (1 - p_all) * score(missed). This is exact for a
        candidate with one close event; with several it counts the mixed outcomes (one hand
        catches, another misses) as "missed", which for a fold that needs every hand's grasp
        fails as a miss does.

        Args:
            poses: float (b, t, POSE_DIM) pose vectors, as `frame_held`.
        Returns:
            held (b, t, 2): 1 while a gripper is closed, 0 while open; missed (b, t, 2): zeros;
            p_all (b,): the product over the candidate's close events of p(the grasp catches)
            (1 for a candidate that never closes: both states are then the same).
        """
        p = self.frame_held(poses)  # (b, t, 2), the event's probability over each closed run
        closed = torch.zeros_like(p)
        widths = np.asarray(poses.detach().cpu() if torch.is_tensor(poses) else poses, np.float32)[..., WIDTH_COLUMNS]
        p_all = torch.ones(p.shape[0])
        for row in range(p.shape[0]):
            for hand, first, stop in close_events(widths[row], self.config.grasp_width):
                closed[row, first:stop, hand] = 1.0
                p_all[row] *= p[row, first, hand]
        return closed, torch.zeros_like(p), p_all

    # ------------------------------------------------------------ save / load
    def save_pretrained(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write config.json + model.safetensors atomically (an existing model directory is
        replaced only with `overwrite`; anything else there is refused)."""
        from wmgym.model.model_files import write_model_directory

        return write_model_directory(directory, asdict(self.config), {WEIGHTS_FILE: self.state_dict()}, overwrite=overwrite)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> "GraspPrior":
        """Load a directory written by `save_pretrained` (or `wmgym train-grasp-prior`)."""
        from wmgym.model.model_files import load_state_checked

        directory = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"no grasp prior at {directory}: {name} is missing (make one with `wmgym train-grasp-prior`)")
        config_path = directory / CONFIG_FILE
        raw = read_config_json(config_path)
        try:
            check_known_keys(raw, GraspPriorConfig)
            model = cls(GraspPriorConfig(**raw))
        except ValueError as error:
            raise ValueError(f"{config_path}: {error}") from None
        load_state_checked(model, directory / WEIGHTS_FILE)
        return model.to(device).eval()
