"""`EpisodeClips`: the camera frames and success labels of some episodes of a store, in memory,
as `wmgym train-videoclip` trains on them and `wmgym.train.judge_eval` scores them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from wmgym.data.store import EpisodeStore

if TYPE_CHECKING:  # torch and wmgym.data.dataset (which imports it) are imported inside the functions: the CLI imports this module
    import torch


@dataclass
class EpisodeClips:
    """The camera frames and labels of some episodes, in memory.

    Attributes (E episodes, N frames in all):
        frames: (N, H, W, 3) uint8 torch tensor, the episodes back to back.
        starts, lengths: (E,) first row and number of frames of each episode.
        done: (N,) bool, the episode's task was done by this frame (the simulator's success
            rule at some frame so far: score >= the task's threshold with both grippers open).
        success: (E,) bool, the store's ground-truth success.
        tasks, captions, goal_captions: (E,) task names, outcome captions, instructions.
        indices: (E,) the episodes' indices in the store.
    """

    frames: "torch.Tensor"
    starts: np.ndarray
    lengths: np.ndarray
    done: np.ndarray
    success: np.ndarray
    tasks: list
    captions: list
    goal_captions: list
    indices: np.ndarray

    def rows(self, episode: int, length: int, num_frames: int) -> np.ndarray:
        """Frame rows (num_frames,) of the first `length` frames of `episode`, resampled."""
        from wmgym.rewards.videoclip import resample_indices

        return self.starts[episode] + resample_indices(length, num_frames)


def load_clips(store: EpisodeStore, indices: np.ndarray) -> EpisodeClips:
    """Read episodes `indices` of `store` (camera view, scores, widths, captions) into memory."""
    import torch

    from wmgym.data.store_layout import CAMERA_KEY
    from wmgym.sim.gripper import GRASP_WIDTH
    from wmgym.sim.tasks import make_task

    indices = np.asarray(indices, np.int64)
    rows, lengths = store.read_frames(indices, [CAMERA_KEY, "score", "robot0_gripper_width", "robot1_gripper_width"])
    attrs, score = store.attrs, rows["score"]
    widths = np.minimum(rows["robot0_gripper_width"][:, 0], rows["robot1_gripper_width"][:, 0])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    task_ids = store.read_meta("episode_task_id", indices)
    tasks = [store.tasks[t] for t in task_ids]
    thresholds = np.repeat([make_task(t).success_threshold for t in tasks], lengths)
    now = (score >= thresholds) & (widths >= GRASP_WIDTH)  # the simulator's is_success, per frame
    done = np.concatenate([np.maximum.accumulate(now[s: s + n]) for s, n in zip(starts, lengths)]) if len(indices) else now
    return EpisodeClips(frames=torch.from_numpy(rows[CAMERA_KEY]), starts=starts, lengths=lengths,
                        done=done, success=store.read_meta("episode_success", indices).astype(bool), tasks=tasks,
                        captions=[attrs["episode_captions"][i] for i in indices],
                        goal_captions=[attrs["goal_captions"][i] for i in indices], indices=indices)


def join_clips(parts: list[EpisodeClips]) -> EpisodeClips:
    """The episodes of several `EpisodeClips` in one, in order (`indices` stay each store's own)."""
    import torch

    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0, *[len(p.frames) for p in parts[:-1]]])
    return EpisodeClips(frames=torch.cat([p.frames for p in parts]),
                        starts=np.concatenate([p.starts + o for p, o in zip(parts, offsets)]),
                        lengths=np.concatenate([p.lengths for p in parts]), done=np.concatenate([p.done for p in parts]),
                        success=np.concatenate([p.success for p in parts]),
                        tasks=[t for p in parts for t in p.tasks], captions=[c for p in parts for c in p.captions],
                        goal_captions=[c for p in parts for c in p.goal_captions],
                        indices=np.concatenate([p.indices for p in parts]))


def task_captions(store: EpisodeStore) -> dict[str, str]:
    """Task name -> instruction caption, read from the store's episodes (the simulator's for unseen tasks)."""
    from wmgym.sim.tasks import make_task

    captions = {}
    task_ids = store.read_meta("episode_task_id", np.arange(store.num_episodes))
    for task_id, caption in zip(task_ids, store.attrs["goal_captions"]):
        captions.setdefault(store.tasks[int(task_id)], caption)
    return {name: captions.get(name) or make_task(name).caption for name in store.tasks}
