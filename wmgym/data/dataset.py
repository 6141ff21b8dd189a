"""Training windows over an episode store: (num_actions + 1 frames, num_actions actions)."""

from __future__ import annotations

import math

import numpy as np
import torch

from wmgym.data.batch import Window
from wmgym.data.store import EpisodeStore
from wmgym.data.store_layout import CAMERA_KEY

SPLITS = ("train", "val", "all")
CONDITION_VIEWS = {"grippers": "grippers_rgb", "static_scene": "static_scene_rgb"}
"""Pixel-aligned views a world model can be conditioned on -> their arrays in the store."""
POSE_KEYS = ("robot0_eef_pos", "robot0_gripper_width", "robot1_eef_pos", "robot1_gripper_width")
"""The store arrays of the grippers' pose vector (`wmgym.train.wm_build.POSE_DIM` values a
frame, in this order), the condition of a pose-conditioned world model."""
HELD_KEYS = ("robot0_held_particles", "robot1_held_particles")
"""The store arrays of the grippers' grasp state; a held-conditioned world model is given
`held_particles > 0` of each gripper (`wmgym.train.wm_build.HELD_DIM` values a frame)."""


def split_episodes(num_episodes: int, split: str, val_fraction: float = 0.1,
                   split_seed: int = 0) -> np.ndarray:
    """Sorted episode indices of `split`, from a permutation seeded by `split_seed`.

    val gets ceil(val_fraction * E) episodes, at least one when E >= 2 and val_fraction > 0,
    and never all of them; train gets the rest.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if split == "all":
        return np.arange(num_episodes)
    num_val = math.ceil(val_fraction * num_episodes)
    if val_fraction > 0 and num_episodes >= 2:
        num_val = min(max(num_val, 1), num_episodes - 1)
    else:
        num_val = 0
    order = np.random.default_rng(split_seed).permutation(num_episodes)
    return np.sort(order[:num_val] if split == "val" else order[num_val:])


class WindowDataset(torch.utils.data.Dataset):
    """Every window of `num_actions` consecutive actions inside one episode of a split.

    Item: a `wmgym.data.batch.Window` with frames (T+1, H, W, 3) torch.uint8 (camera view
    o_s..o_{s+T}) and actions (T, 20) torch.float32 (a_s..a_{s+T-1}; the store's padding row is
    never returned), T = `num_actions`. With `views` (e.g. ("grippers",)), its `views` hold
    each one named, (T+1, H, W, 3) torch.uint8: the store's pixel-aligned view of the same
    frames. With `poses=True`, its `vectors` hold "poses" (T+1, 8) torch.float32: each frame's
    grippers' tool-centre xyz and width (`POSE_KEYS`). With `held=True`, they hold "held"
    (T+1, 2) torch.float32: 1.0 where the left / right gripper holds cloth (`HELD_KEYS`), else
    0.0; every store needs those arrays (stores written by `wmgym generate` before they were
    recorded lack them). A DataLoader stacks items into a `WindowBatch` with
    `collate_fn=WindowBatch.collate`. Windows never cross episode boundaries.

    `path` is one store or a list of stores of the same frame size and tasks (e.g. the main
    dataset and a store of extra "replay" episodes); each store is split on its own, so adding
    a store never moves another store's episodes between train and val.

    The camera frames and actions of the selected episodes are loaded into memory once, at
    construction (89k frames at 64x64 is about 1.1 GB), so items cost no disk reads.

    Attributes:
        episode_indices: sorted store indices of the episodes in this split (of the first
            store; `store_episodes` has every store's).
        store_episodes: one array of episode indices per store, in the order of `path`.
        episode_lengths: frames (actions + 1) of each selected episode, in the order the
            rows of `frames` and `actions` hold them.
        window_offsets: (len(self),) the frame of its episode each window starts at.
        frames, actions: uint8 (N, H, W, 3) and float32 (N, A) rows of every selected episode
            (N frames; each episode's last action row is the store's padding).
        conditions: uint8 (N, V, H, W, 3) of the `views`, in their order, or None without views.
        poses, held: float32 (N, 8) and (N, 2), or None unless `poses` / `held`.
        height, width, tasks: from the store(s).
        action_names: a robot store's names of its action values (None: WMFold-v0's 20).
        camera: the name of the camera the frames come from (`EpisodeStore.camera`).
    """

    def __init__(self, path, num_actions: int = 4, split: str = "train",
                 val_fraction: float = 0.1, split_seed: int = 0, views: tuple[str, ...] = (), poses: bool = False,
                 held: bool = False):
        unknown = [v for v in views if v not in CONDITION_VIEWS]
        if unknown:
            raise ValueError(f"views must be among {tuple(CONDITION_VIEWS)}, got {tuple(views)}")
        if num_actions < 1:
            raise ValueError(f"num_actions must be at least 1, got {num_actions}")
        paths = [path] if isinstance(path, (str, bytes)) or hasattr(path, "__fspath__") else list(path)
        if not paths:
            raise ValueError("need at least one episode store")
        self.num_actions, self.views = num_actions, tuple(views)
        self.store_episodes, frames, actions, conditions, pose_rows, held_rows, lengths = [], [], [], [], [], [], []
        for p in paths:
            store = EpisodeStore.open(p, mode="r")
            if store.num_episodes == 0:
                raise ValueError(f"episode store {p} holds no episodes")
            if len(self.store_episodes) == 0:
                self.height, self.width, self.tasks = store.height, store.width, store.tasks
                self.action_names, self.camera = store.action_names, store.camera
            elif (store.height, store.width, tuple(store.tasks)) != (self.height, self.width, tuple(self.tasks)):
                raise ValueError(f"store {p} has {store.height}x{store.width} frames and tasks {store.tasks}; "
                                 f"{paths[0]} has {self.height}x{self.width} and {self.tasks}")
            elif store.action_names != self.action_names:
                raise ValueError(f"store {p} has actions {store.action_names or 'of WMFold-v0'}; {paths[0]} has "
                                 f"{self.action_names or 'those of WMFold-v0'}")
            if store.is_robot and (views or poses or held):
                raise ValueError(f"store {p} holds real robot data (wmgym import): it has no grippers view, pose "
                                 "vector or grasp state to condition on; train without --condition-views, "
                                 "--pose-conditioning and --held-conditioning")
            if held and not store.has_held_particles:
                raise ValueError(f"store {p} does not record the grippers' grasp state (robot{{0,1}}_held_particles), "
                                 "which held=True needs; regenerate it with the current `wmgym generate`")
            indices = split_episodes(store.num_episodes, split, val_fraction, split_seed)
            if len(indices) == 0:
                raise ValueError(f"split {split!r} of {p} is empty ({store.num_episodes} "
                                 f"episodes, val_fraction={val_fraction})")
            store_lengths = store.episode_rows(indices)[1]  # frames = actions + 1
            if num_actions > store_lengths.min() - 1:
                raise ValueError(f"num_actions={num_actions} exceeds the shortest episode of split "
                                 f"{split!r} of {p}, which has {store_lengths.min() - 1} actions")
            names = [CAMERA_KEY, "action", *(CONDITION_VIEWS[v] for v in views), *(POSE_KEYS if poses else ()),
                     *(HELD_KEYS if held else ())]
            rows = store.read_frames(indices, names)[0]
            frames.append(rows[CAMERA_KEY])
            actions.append(rows["action"])
            if views:
                conditions.append(np.stack([rows[CONDITION_VIEWS[v]] for v in views], axis=1))  # (N, V, H, W, 3)
            if poses:
                pose_rows.append(np.concatenate([rows[k].astype(np.float32) for k in POSE_KEYS], axis=1))  # (N, 8)
            if held:
                held_rows.append(np.stack([rows[k] > 0 for k in HELD_KEYS], axis=1).astype(np.float32))  # (N, 2)
            self.store_episodes.append(indices)
            lengths.append(store_lengths)
        self.episode_indices = self.store_episodes[0]
        self.episode_lengths = np.concatenate(lengths)
        join = lambda arrays: torch.from_numpy(arrays[0] if len(arrays) == 1 else np.concatenate(arrays))
        self.frames, self.actions = join(frames), join(actions)
        self.conditions = join(conditions) if views else None
        self.poses = join(pose_rows) if poses else None
        self.held = join(held_rows) if held else None

        # Window starts as rows of the compacted arrays.
        offsets = np.concatenate([[0], np.cumsum(self.episode_lengths)[:-1]])
        windows = self.episode_lengths - num_actions
        self.window_offsets = np.concatenate([np.arange(n) for n in windows])
        self._starts = np.repeat(offsets, windows) + self.window_offsets

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, index: int) -> Window:
        start = int(self._starts[index])
        window = slice(start, start + self.num_actions + 1)
        frames = self.frames[window].clone()  # (T+1, H, W, 3)
        actions = self.actions[start: start + self.num_actions].clone()  # (T, 20)
        views = {} if self.conditions is None else {name: self.conditions[window, i].clone()
                                                    for i, name in enumerate(self.views)}  # (T+1, H, W, 3) each
        vectors = {name: x[window].clone() for name, x in (("poses", self.poses), ("held", self.held))
                   if x is not None}  # (T+1, 8), (T+1, 2)
        return Window(frames, actions, views, vectors)
