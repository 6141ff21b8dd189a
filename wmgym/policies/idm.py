"""Inverse dynamics: the action a_t that moved the world from frame o_t to frame o_{t+1}.

Dimension legend: b transitions, T actions of an episode (T + 1 frames), k future frames
(`IDMConfig.future_frames`), H x W frames, c channels, A = 20 action numbers.

`InverseDynamicsModel` is a small CNN over the frame pair (o_t, o_{t+1}) and, optionally, a
window of the k frames after it: o_t, o_{t+1}, o_{t+1} - o_t, o_{t+2} - o_{t+1}, ...,
o_{t+1+k} - o_{t+k} are stacked as 9 + 3k channels, strided conv levels halve the image down to
(H, W) / 2 ** levels, and an MLP over the flattened map (flattened, not pooled: where a
gripper is in the image matters for what its motion means) regresses the action. Outputs are
in raw action units (`wmgym.actions`); internally the network predicts the action normalised
by the training split's per-component mean and std, which the config carries.

The pair shows the motion and the gripper's orientation at t (the frame the position delta
is expressed in). The width is absolute, so o_{t+1} holds it in principle, but from above the
palm hides the jaws (the pair alone reads the width poorly): the future window shows its consequences
instead, the cloth lifting with a closed gripper or staying put under an open one. Past an
episode's last frame the window repeats that frame (zero differences), in training
(`wmgym.train.idm`) and in `predict_episode` alike (`future_rows`).

A width reader (`IDMConfig.width_channels`) reads the two widths from o_{t+1} alone with its
own CNN, whose first level keeps the full resolution: the fingertips' coloured pads that tell
an open gripper from a closed one are a few pixels apart at 64x64. Its outputs replace the
trunk's two width outputs: a single-frame reader of this shape reads the width better than the
windowed trunk does (the IDM's current R²: docs/results.md, "Inverse dynamics R²").

The rotation 6-D output is a plain regression of the six numbers; it is not orthonormalised
(env actions are, by Gram-Schmidt: docs/design.md, "Actions").

Uses: R² per action component on simulator and world-model frames
(`wmgym.policies.idm_metrics`), and pseudo-labelling action-free video
(`wmgym.policies.pseudo_label`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from wmgym.actions import ACTION_DIM, ACTION_LAYOUT, WIDTH_DIMS
from wmgym.model.model_files import ConfigAndWeights

PREDICT_BATCH = 512  # transitions per forward pass in `predict`


@dataclass
class IDMConfig:
    """Every constructor argument of `InverseDynamicsModel`.

    Attributes:
        height, width: frame size in pixels (each must divide by 2 ** len(channels)).
        channels: conv widths, one stride-2 level each (plus a stride-1 conv per level).
        hidden: width of the MLP head.
        future_frames: k, frames after t+1 the model also sees (0: the pair alone).
        width_channels: conv widths of a separate width reader, a CNN that reads the two
            gripper widths from o_{t+1} alone: a full-resolution (stride-1) level first, then
            one stride-2 level per further entry; its MLP is `hidden` wide. Empty: the trunk
            regresses the widths with everything else.
        action_mean, action_std: per-component statistics (20,) of the training actions;
            the network predicts (a - mean) / std.
    """

    height: int = 64
    width: int = 64
    channels: tuple[int, ...] = (32, 64, 128, 128)
    hidden: int = 256
    future_frames: int = 0
    width_channels: tuple[int, ...] = ()
    action_mean: list[float] = field(default_factory=lambda: [0.0] * ACTION_DIM)
    action_std: list[float] = field(default_factory=lambda: [1.0] * ACTION_DIM)

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        levels = len(self.channels)
        if levels < 1 or self.hidden < 1 or min(self.channels) < 1:
            raise ValueError(f"need at least one conv level and positive widths, got channels={self.channels}, "
                             f"hidden={self.hidden}")
        if self.height % 2**levels or self.width % 2**levels or self.height < 2**levels or self.width < 2**levels:
            raise ValueError(f"frame size {self.height}x{self.width} must divide by 2 ** {levels} (one per conv level)")
        self.width_channels = tuple(int(c) for c in self.width_channels)
        if self.width_channels:
            reader_levels = len(self.width_channels) - 1  # the first level keeps the resolution
            if min(self.width_channels) < 1:
                raise ValueError(f"width_channels must be positive, got {self.width_channels}")
            if self.height % 2**reader_levels or self.width % 2**reader_levels:
                raise ValueError(f"frame size {self.height}x{self.width} must divide by 2 ** {reader_levels} "
                                 f"(width_channels={self.width_channels}: one stride-2 level per entry after the first)")
        if self.future_frames < 0:
            raise ValueError(f"future_frames must be >= 0, got {self.future_frames}")
        if len(self.action_mean) != ACTION_DIM or len(self.action_std) != ACTION_DIM:
            raise ValueError(f"action_mean and action_std need {ACTION_DIM} numbers each, got "
                             f"{len(self.action_mean)} and {len(self.action_std)}\n{ACTION_LAYOUT}")
        if min(self.action_std) <= 0:
            raise ValueError(f"action_std must be positive, got {self.action_std}")


def future_rows(rows, last_rows, future_frames: int) -> np.ndarray:
    """Rows of the future windows: int64 (n, k), row t + 2 ... t + 1 + k for each transition
    row t in `rows` (n,), clamped to its episode's last row in `last_rows` (n,), so past the
    episode's end its last frame repeats."""
    rows = np.asarray(rows, np.int64)[:, None] + 2 + np.arange(future_frames)  # (n, k)
    return np.minimum(rows, np.asarray(last_rows, np.int64)[:, None])


def _block(c_in: int, c_out: int, stride: int = 2) -> nn.Sequential:
    """Halve the image (stride 2; stride 1 keeps it): a strided conv, then a stride-1 conv; GroupNorm + SiLU after each."""
    groups = lambda c: 8 if c % 8 == 0 else 1
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(groups(c_out), c_out), nn.SiLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(groups(c_out), c_out), nn.SiLU())


def _width_reader(config: IDMConfig) -> nn.Sequential:
    """The width reader of `IDMConfig.width_channels`: frame (b, 3, H, W) -> normalised widths (b, 2).

    Its first level keeps the full resolution: the jaws that tell open from closed are a few
    pixels at 64x64 (the fingertips' coloured pads), which the trunk's first stride-2 level
    blurs together with the motion it is busy with."""
    channels = config.width_channels
    levels = [_block(3, channels[0], stride=1)] + [_block(a, b) for a, b in zip(channels[:-1], channels[1:])]
    return nn.Sequential(*levels, *_mlp_head(config, channels[-1], len(channels) - 1, 2))


def _mlp_head(config: IDMConfig, channels: int, halvings: int, outputs: int) -> list[nn.Module]:
    """Flatten a (b, channels, H / 2**halvings, W / 2**halvings) map (not pooled: where a gripper
    is in the image matters), then an MLP `config.hidden` wide -> (b, outputs)."""
    flat = channels * (config.height // 2**halvings) * (config.width // 2**halvings)
    return [nn.Flatten(), nn.Linear(flat, config.hidden), nn.SiLU(), nn.Linear(config.hidden, outputs)]


class InverseDynamicsModel(ConfigAndWeights, nn.Module):
    """(o_t, o_{t+1}, o_{t+2} ... o_{t+1+k}) -> a_t, k = config.future_frames (the widths from
    o_{t+1} alone when config.width_channels gives a width reader).

    forward(frames_t, frames_t1, future=None): float (b, 3, H, W) each and future (b, k, 3, H, W),
        all in [-1, 1] -> normalised actions (b, 20).
    predict(frames_t, frames_t1, future=None): uint8 (b, H, W, 3) each and future (b, k, H, W, 3)
        -> float32 (b, 20) raw actions.
    predict_episode(frames): uint8 (T+1, H, W, 3), one episode -> float32 (T, 20) raw actions.
    predict_transitions(frames, rows, last_rows): many episodes' transitions at once -> float32 (n, 20).
    """

    CONFIG_CLASS, MODEL_NAME = IDMConfig, "inverse dynamics"

    def __init__(self, config: IDMConfig, device: str | torch.device = "auto"):
        from wmgym.model.world_model import resolve_device

        super().__init__()
        self.config = config
        widths = (9 + 3 * config.future_frames, *config.channels)
        self.encoder = nn.Sequential(*[_block(a, b) for a, b in zip(widths[:-1], widths[1:])])
        levels = len(config.channels)
        self.head = nn.Sequential(*_mlp_head(config, config.channels[-1], levels, ACTION_DIM))
        self.width_reader = _width_reader(config) if config.width_channels else None
        self.register_buffer("action_mean", torch.tensor(config.action_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("action_std", torch.tensor(config.action_std, dtype=torch.float32), persistent=False)
        self.register_buffer("width_dims", torch.tensor(WIDTH_DIMS.tolist(), dtype=torch.long), persistent=False)
        self.to(resolve_device(device))

    @property
    def device(self) -> torch.device:
        return self.action_mean.device

    def forward(self, frames_t: torch.Tensor, frames_t1: torch.Tensor, future: torch.Tensor | None = None
                ) -> torch.Tensor:
        k = self.config.future_frames
        if (future is None and k) or (future is not None and (future.ndim != 5 or future.shape[1] != k)):
            raise ValueError(f"this model reads future_frames={k} frames after t+1: future must be (b, {k}, 3, H, W), "
                             f"got {None if future is None else tuple(future.shape)}")
        x = [frames_t, frames_t1, frames_t1 - frames_t]
        if k:
            later = torch.cat([frames_t1[:, None], future], dim=1)  # (b, k + 1, 3, H, W)
            x.append((later[:, 1:] - later[:, :-1]).flatten(1, 2))  # (b, 3k, H, W)
        out = self.head(self.encoder(torch.cat(x, dim=1)))  # (b, 9 + 3k, H, W) -> (b, 20) normalised
        if self.width_reader is not None:  # the widths from o_{t+1} alone, (b, 3, H, W) -> (b, 2)
            out = out.index_copy(1, self.width_dims, self.width_reader(frames_t1).to(out.dtype))
        return out

    def to_input(self, frames) -> torch.Tensor:
        """uint8 (..., H, W, 3) array or tensor -> float (..., 3, H, W) in [-1, 1] on the model's device."""
        frames = torch.as_tensor(np.asarray(frames) if not torch.is_tensor(frames) else frames).to(self.device)
        if frames.dtype != torch.uint8:
            raise ValueError(f"frames must be uint8, got {frames.dtype}")
        return frames.movedim(-1, -3).float() / 127.5 - 1.0

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions - self.action_mean) / self.action_std

    def denormalize_actions(self, normalized: torch.Tensor) -> torch.Tensor:
        return normalized * self.action_std + self.action_mean

    def check_frames(self, name: str, frames) -> None:
        expected = (self.config.height, self.config.width, 3)
        shape = tuple(frames.shape)
        if len(shape) != 4 or shape[1:] != expected:
            raise ValueError(f"{name} must be uint8 (b, {expected[0]}, {expected[1]}, 3) frames, got shape {shape}")

    @torch.no_grad()
    def predict(self, frames_t, frames_t1, future=None) -> np.ndarray:
        """Actions float32 (b, 20) (raw units, `wmgym.actions` layout) that move frames_t to frames_t1.

        Args:
            frames_t, frames_t1: uint8 (b, H, W, 3) arrays or tensors, RGB, the model's frame size.
            future: uint8 (b, k, H, W, 3), the k = config.future_frames frames after each
                frames_t1; required when k > 0 (`predict_episode` builds them from whole episodes).
        """
        self.check_frames("frames_t", frames_t)
        self.check_frames("frames_t1", frames_t1)
        if len(frames_t) != len(frames_t1):
            raise ValueError(f"frames_t and frames_t1 must hold the same number of frames, got {len(frames_t)} "
                             f"and {len(frames_t1)}")
        k, (h, w) = self.config.future_frames, (self.config.height, self.config.width)
        if future is None and k:
            raise ValueError(f"this model reads future_frames={k} frames after t+1: pass future uint8 (b, {k}, {h}, "
                             f"{w}, 3), or give whole episodes to predict_episode(frames), which builds the windows")
        if future is not None and tuple(future.shape) != (len(frames_t), k, h, w, 3):
            raise ValueError(f"future must be uint8 (b={len(frames_t)}, {k}, {h}, {w}, 3) frames, got shape "
                             f"{tuple(future.shape)}")
        was_training = self.training
        self.eval()
        chunk = lambda frames, i: None if frames is None else self.to_input(frames[i: i + PREDICT_BATCH])
        out = [self.denormalize_actions(self(chunk(frames_t, i), chunk(frames_t1, i), chunk(future, i))).cpu()
               for i in range(0, len(frames_t), PREDICT_BATCH)]
        self.train(was_training)
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, ACTION_DIM), np.float32)

    def predict_episode(self, frames) -> np.ndarray:
        """Actions float32 (T, 20) (raw units) of every transition of ONE episode's frames.

        Args:
            frames: uint8 (T+1, H, W, 3) array or tensor, the episode's frames in order.

        Transition t's future window is frames t + 2 ... t + 1 + k; past the episode's last
        frame that frame repeats (`future_rows`), as in training. For k = 0 this is
        predict(frames[:-1], frames[1:]). `PREDICT_BATCH` transitions per pass.
        """
        self.check_frames("frames", frames)
        if len(frames) < 1:
            raise ValueError("an episode needs at least one frame")
        steps = len(frames) - 1  # T
        return self.predict_transitions(frames, np.arange(steps), np.full(steps, steps))

    def predict_transitions(self, frames, rows, last_rows) -> np.ndarray:
        """Actions float32 (n, 20) (raw units) of the transitions starting at `rows` of a frame sequence.

        Args:
            frames: uint8 (N, H, W, 3) array or tensor holding whole episodes one after another.
            rows: int (n,) rows t of the transitions (t -> t + 1, each inside its episode).
            last_rows: int (n,) the row of each transition's episode's last frame; the future
                window t + 2 ... t + 1 + k is clamped to it (`future_rows`).

        Many episodes go through in `PREDICT_BATCH`-transition passes (`predict_episode` is one).
        """
        rows = np.asarray(rows, np.int64)
        future = future_rows(rows, last_rows, self.config.future_frames)  # (n, k)
        out = [self.predict(frames[rows[i: i + PREDICT_BATCH]], frames[rows[i: i + PREDICT_BATCH] + 1],
                            frames[future[i: i + PREDICT_BATCH]] if self.config.future_frames else None)
               for i in range(0, len(rows), PREDICT_BATCH)]
        return np.concatenate(out) if out else np.zeros((0, ACTION_DIM), np.float32)

    # ------------------------------------------------------------------ save / load
