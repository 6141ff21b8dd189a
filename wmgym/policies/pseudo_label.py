"""Action-free video stores, and writing an inverse dynamics model's actions into them.

An **action-free store** is an `EpisodeStore` (same layout, `wmgym.data.store`) whose actions
are unknown: its root attribute `actions` is "absent" and `data/action` together with the
proprioception arrays (`data/robot{0,1}_eef_pos`, `_eef_rot_axis_angle`, `_gripper_width`)
hold NaN, so code that forgets to check fails loudly instead of training on zeros; the
simulator's grasp state (`robot{0,1}_held_particles`), which no video shows, is removed. The store
format has no separate action-free variant; this is the minimal honest one. `strip_actions`
makes one from a store written by `wmgym generate` (to test pseudo-labelling against the
known actions); a reader of outside video would write one directly.

`pseudo_label` copies a store and fills `data/action` with the IDM's prediction for every
transition (o_t, o_{t+1}) (`InverseDynamicsModel.predict_transitions`, so an IDM's future
window stays inside its episode); each episode's last row (UMI's padding row)
gets the hold action (zero motion, identity rotation) with the last predicted widths. Root
attributes record it: `actions` = "pseudo-labelled" and `action_labeller` = the IDM's config.
In a simulator store the grippers view and the proprioception then follow the new actions
(`follow_actions`): the source's were made by the true actions, and a world model conditioned
on the grippers view would read the true actions through them. A robot store's proprioception
is copied as it is (NaN for an action-free source). Both functions write a
temporary copy beside `out` and rename it into place, so `out` is either complete or absent;
there is nothing to resume (pseudo-labelling a whole store is short next to training).
They hold `out`'s writer lock (`wmgym.writer_lock`) throughout: one writer of a store at a time.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import zarr
from tqdm.auto import tqdm

from wmgym.actions import ACTION_DIM
from wmgym.data.store import EpisodeStore
from wmgym.data.store_layout import CAMERA_KEY, EPISODE_STORE, HOLD_ROT6D, OPTIONAL_FRAME_ARRAYS
from wmgym.outputs import check_output, replace_directory, temporary_directory_beside
from wmgym.writer_lock import WriterLock, lock_path

PROPRIOCEPTION = tuple(f"robot{r}_{name}" for r in (0, 1) for name in ("eef_pos", "eef_rot_axis_angle", "gripper_width"))
LABEL_BATCH_EPISODES = 256  # episodes read and labelled at a time


def is_action_free(store: EpisodeStore) -> bool:
    """Whether `store` is action-free (root attribute actions == "absent")."""
    return store.attrs.get("actions") == "absent"


def strip_actions(source, out, overwrite: bool = False) -> Path:
    """Copy the store at `source` to `out` as an action-free store (see the module docstring)."""
    source, out = check_paths(source, out, overwrite)

    def edit(root: zarr.Group) -> None:
        for name in ("action", *PROPRIOCEPTION):
            array = root[f"data/{name}"]
            for start in range(0, array.shape[0], 1 << 16):
                block = array[start: start + (1 << 16)]
                array[start: start + len(block)] = np.full_like(block, np.nan)
        for name in OPTIONAL_FRAME_ARRAYS:  # privileged: the simulator's grasp state
            if f"data/{name}" in root:
                del root[f"data/{name}"]
        root.attrs["actions"] = "absent"

    return copy_and_edit(source, out, overwrite, edit)


def pseudo_label(model, source_store_path, out_store_path, overwrite: bool = False, show_progress: bool = True) -> Path:
    """Write `model`'s (an `InverseDynamicsModel`) actions for every transition of the store at
    `source_store_path` into a copy at `out_store_path`; returns that path.

    The source may be action-free or not (its actions are replaced either way). Raises
    ValueError when the store's frame size is not the model's, FileExistsError when
    `out_store_path` exists and `overwrite` is False.
    """
    source, out = check_paths(source_store_path, out_store_path, overwrite)
    store = EpisodeStore.open(source)
    if (store.height, store.width) != (model.config.height, model.config.width):
        raise ValueError(f"store {source} holds {store.height}x{store.width} frames, the inverse dynamics model reads "
                         f"{model.config.height}x{model.config.width}")
    ends = store.episode_ends
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    actions = np.empty((store.num_frames, ACTION_DIM), np.float32)
    bar = tqdm(total=store.num_episodes, desc="pseudo-label", unit="episode", disable=not show_progress)
    for first in range(0, store.num_episodes, LABEL_BATCH_EPISODES):
        last = min(first + LABEL_BATCH_EPISODES, store.num_episodes)
        offset = int(starts[first])
        block = store.read_frames(np.arange(first, last), [CAMERA_KEY])[0][CAMERA_KEY]  # (r, H, W, 3), whole episodes
        lengths = ends[first:last] - starts[first:last]
        rows = np.concatenate([np.arange(s - offset, e - offset - 1) for s, e in zip(starts[first:last], ends[first:last])])
        actions[offset + rows] = model.predict_transitions(block, rows, np.repeat(ends[first:last] - offset - 1, lengths - 1))
        for start, end in zip(starts[first:last], ends[first:last]):
            hold = np.zeros(ACTION_DIM, np.float32)  # the padding row: hold, at the last predicted widths
            hold[3:9] = hold[13:19] = HOLD_ROT6D
            if end - start > 1:
                hold[9], hold[19] = actions[end - 2, 9], actions[end - 2, 19]
            actions[end - 1] = hold
        bar.update(last - first)
    bar.close()

    followed = follow_actions(store, actions, show_progress)

    def edit(root: zarr.Group) -> None:
        root["data/action"][: len(actions)] = actions
        for name, values in followed.items():
            root[f"data/{name}"][: len(values)] = values
        root.attrs.update({"actions": "pseudo-labelled",
                           "action_labeller": {"model": "InverseDynamicsModel", "config": asdict(model.config)}})

    return copy_and_edit(source, out, overwrite, edit)


def follow_actions(store: EpisodeStore, actions: np.ndarray, show_progress: bool = True) -> dict[str, np.ndarray]:
    """The grippers view and proprioception of a simulator store's every row under `actions`.

    Each episode's grippers start where the simulator started them (`start_gripper_state` of its
    seed and task: the start an env knows at reset) and are stepped through the episode's rows of
    `actions` by `GripperTracks` (all episodes of a length at once), which renders the simulator's
    own grippers view (for the store's true actions, these arrays equal the stored ones).

    Args:
        store: a simulator store (`wmgym generate`), open for reading.
        actions: float32 (store.num_frames, 20), the store's rows (each episode's last row, the
            padding row, is not stepped).

    Returns:
        {"grippers_rgb": uint8 (N, H, W, 3), "robot{r}_eef_pos": float32 (N, 3),
        "robot{r}_eef_rot_axis_angle": (N, 3), "robot{r}_gripper_width": (N, 1)} for r in 0, 1;
        empty for a robot store, which has no grippers view.
    """
    from wmgym.actions import matrix_to_axis_angle
    from wmgym.sim.episode import EpisodeSpec, start_gripper_state
    from wmgym.sim.gripper_track import GripperTracks
    from wmgym.sim.world import WorldConfig

    if store.is_robot:
        return {}
    actions = np.asarray(actions)
    if actions.shape != (store.num_frames, ACTION_DIM):
        raise ValueError(f"actions must be ({store.num_frames}, {ACTION_DIM}) for {store.path}, got {actions.shape}")
    config = WorldConfig(height=store.height, width=store.width)
    views = np.empty((store.num_frames, store.height, store.width, 3), np.uint8)
    poses = np.empty((store.num_frames, 2, 4, 4), np.float64)
    widths = np.empty((store.num_frames, 2), np.float64)
    seeds, task_ids = store.root["meta/episode_seed"][:], store.root["meta/episode_task_id"][:]
    ends = store.episode_ends.astype(np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    bar = tqdm(total=store.num_episodes, desc="grippers view", unit="episode", disable=not show_progress)
    for length in np.unique(ends - starts):  # episodes of one length step together, one row each (`GripperTracks`)
        episodes = np.flatnonzero(ends - starts == length)
        states = [start_gripper_state(EpisodeSpec(task=store.tasks[int(task_ids[i])], seed=int(seeds[i]), height=store.height,
                                                  width=store.width, horizon=int(length) - 1)) for i in episodes]
        tracks = GripperTracks(states, config)
        for t in range(int(length)):
            rows = starts[episodes] + t
            views[rows], poses[rows], widths[rows] = tracks.render(), tracks.poses, tracks.widths
            if t < length - 1:
                tracks.step(actions[rows])
        bar.update(len(episodes))
    bar.close()
    rotations = matrix_to_axis_angle(poses[:, :, :3, :3]).astype(np.float32)
    arrays = {"grippers_rgb": views}
    for r in (0, 1):
        arrays.update({f"robot{r}_eef_pos": poses[:, r, :3, 3].astype(np.float32), f"robot{r}_eef_rot_axis_angle": rotations[:, r],
                       f"robot{r}_gripper_width": widths[:, r: r + 1].astype(np.float32)})
    return arrays


def check_paths(source, out, overwrite: bool) -> tuple[Path, Path]:
    source, out = Path(source), Path(out)
    EpisodeStore.open(source)  # FileNotFoundError / ValueError for a missing or malformed store
    if out.resolve() == source.resolve():
        raise ValueError(f"the output store must differ from the source store {source}")
    check_output(out, EPISODE_STORE, overwrite, hint="pass overwrite=True to replace it")
    return source, out


def copy_and_edit(source: Path, out: Path, overwrite: bool, edit) -> Path:
    """Copy the committed store `source` beside `out`, apply `edit(root)`, rename it to `out`."""
    with WriterLock(out, "episode store"):  # before anything beside `out` is made or replaced
        tmp = temporary_directory_beside(out, "episode store")
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        with EpisodeStore.open(tmp, mode="a"):  # drop rows an interrupted append left past the commit point
            pass
        lock_path(tmp).unlink(missing_ok=True)  # the private copy's own lock file
        with zarr.config.set({"array.write_empty_chunks": True}):  # every chunk written, as EpisodeStore does
            edit(zarr.open_group(tmp, mode="r+"))
        EpisodeStore.open(tmp)  # still a valid store
        replace_directory(tmp, out)
    return out
