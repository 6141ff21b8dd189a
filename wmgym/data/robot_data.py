"""Real robot datasets as read, before they become an episode store (`wmgym import`).

Dimension legend: T frames of an episode, H x W pixels, S state values, A action values.

A reader (`wmgym.data.lerobot`, `wmgym.data.umi`) gives a `RobotDatasetInfo` and, episode by
episode, `RobotEpisode`s whose rows are aligned: row t of every camera, of the state and of the
action belong to the same instant `timestamps[t]`. Resizing, fps strides and action conversion
happen after reading (`wmgym.data.robot_import`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class RobotDataError(ValueError):
    """A dataset that cannot be read as it is: the message names the file and what is wrong."""


@dataclass
class RobotDatasetInfo:
    """What a dataset holds, read from its metadata without decoding video.

    Attributes:
        format: "lerobot-v2.1", "lerobot-v3.0" or "umi-zarr".
        path: the dataset's directory (or .zarr.zip file).
        fps: frames per second of the recording.
        cameras: camera names in the dataset's order (LeRobot: "observation.images.image_0";
            UMI: "camera0_rgb"), each with its (H, W) in `camera_sizes`.
        camera_sizes: camera name -> (H, W).
        num_episodes: episodes in the dataset.
        episode_lengths: (num_episodes,) int64 frames of each episode.
        state_names: names of the S state values, or None where the dataset has no state.
        action_names: names of the A action values, or None where it has no action vector (UMI).
        robot_type: the robot's name where the dataset says it (LeRobot's "robot_type"), else None.
        tasks: task texts, in the dataset's order (empty where it has none).
    """

    format: str
    path: str
    fps: float
    cameras: list[str]
    camera_sizes: dict[str, tuple[int, int]]
    num_episodes: int
    episode_lengths: np.ndarray
    state_names: list[str] | None
    action_names: list[str] | None
    robot_type: str | None = None
    tasks: list[str] = field(default_factory=list)


@dataclass
class RobotEpisode:
    """One episode, rows aligned in time.

    Attributes:
        index: the episode's index in the dataset.
        frames: camera name -> uint8 (T, H, W, 3) RGB, for the cameras asked for.
        timestamps: float64 (T,) seconds from the episode's start.
        state: float32 (T, S), or None where the dataset has no state.
        action: float32 (T, A), the dataset's own action of each row (the command issued at
            that row), or None where it has none (UMI: actions come from poses).
        task: the episode's task text ("" where the dataset has none).
    """

    index: int
    frames: dict[str, np.ndarray]
    timestamps: np.ndarray
    state: np.ndarray | None
    action: np.ndarray | None
    task: str = ""

    @property
    def num_frames(self) -> int:
        return int(len(self.timestamps))


@dataclass
class RobotRecord:
    """One imported episode as an episode store keeps it (`EpisodeStore.append` of a robot store).

    Attributes (T frames):
        camera: uint8 (T, H, W, 3), the frames of the one camera a world model predicts.
        actions: float32 (T, A), one action a frame as UMI keeps them: row t moves frame t to
            frame t + 1; row T - 1 (after the last frame) is padding that no training window
            uses (the dataset's own last action, or a hold for converted actions).
        timestamps: float64 (T,) seconds from the episode's start.
        task: the task text ("" where the dataset has none).
        source_index: the episode's index in the dataset it was imported from.
        state: float32 (T, S), or None for a store without a state.
    """

    camera: np.ndarray
    actions: np.ndarray
    timestamps: np.ndarray
    task: str
    source_index: int
    state: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return int(self.camera.shape[0])
