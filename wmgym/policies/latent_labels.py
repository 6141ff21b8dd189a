"""`wmgym label-lam`: pseudo-label a store's actions from a latent action model and a few true labels.

FLAM's use of latent actions: a latent action model learnt from video alone (`wmgym train-lam`)
reads the action of every transition up to a change of coordinates. A small labelled subset
fixes the coordinates: a ridge map (`wmgym.eval.lam_probe.fit_probe`) to the 20-D action from
the latent actions of all slots (D values) and the slot states at t and t+1 (2 K S values:
the gripper widths are absolute commands, which a latent change does not hold but the states
show) is fitted on the labelled episodes' transitions and applied to every other transition.
Everything the map reads comes from the video.

1. the labelled episodes: `labelled_fraction` of the store's train split (split seed 0 and
   `val_fraction`, the world model's split), drawn with `seed`; their actions stay true;
2. every other episode's actions (val split included) become the map's prediction, clipped
   to the action box (`wmgym.actions.ACTION_LOW/HIGH`), each episode's padding row the hold action;
   the grippers view and proprioception are re-made from these actions
   (`wmgym.policies.pseudo_label.follow_actions`), so no array of the copy shows the true ones;
3. the copy is written to `out` (`wmgym train-wm` reads it like any store) with root attributes
   `actions` = "pseudo-labelled" and `action_labeller` (the model, the labelled episodes, the
   map's R^2 on the labelled transitions); `labelled_out`, when given, gets a store of the
   labelled episodes alone (true actions): the few-label baseline's training set.

The latent action model reads frames only; the true actions of the labelled episodes are the
only actions the labelling sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np


@dataclass
class LabelLAMConfig:
    """Pseudo-label a store's actions from a latent action model (`wmgym train-lam`) and a few true labels.

    Fits a linear map from the latent actions to the 20-D actions on `--labelled-fraction` of the
    train split's episodes and writes a copy of the store with every other episode labelled by
    it, ready for `wmgym train-wm`; `--labelled-out` also writes the labelled episodes alone."""

    lam: str
    """The latent action model directory (`wmgym train-lam --out`)."""
    data: str
    """The episode store to label (a simulator store; its true actions are read for the labelled episodes only)."""
    out: str
    """The pseudo-labelled copy to write."""
    labelled_fraction: float = 0.05
    """Share of the train split's episodes whose true actions are used (at least one episode)."""
    labelled_out: str | None = None
    """Also write a store holding the labelled episodes alone, with their true actions."""
    val_fraction: float = 0.1
    """The world model's val fraction (split seed 0): labelled episodes come from its train split only."""
    ridge: float = 1e-2
    """Ridge strength of the map (on standardised inputs)."""
    seed: int = 0
    """Seed of the draw of labelled episodes."""
    batch_size: int = 32
    """Clips per forward pass of the latent action model."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Torch device of the latent action model."""
    overwrite: bool = False
    """Replace existing output stores."""
    show_progress: bool = True
    """Show progress bars."""


def label_with_lam(config: LabelLAMConfig) -> Path:
    """Write the pseudo-labelled store of `config` (see the module docstring); returns `config.out`."""
    from wmgym.actions import ACTION_DIM, ACTION_HIGH, ACTION_LOW
    from wmgym.data.dataset import split_episodes
    from wmgym.data.store import EpisodeStore
    from wmgym.data.store_layout import CAMERA_KEY, HOLD_ROT6D
    from wmgym.eval.lam import episode_latents
    from wmgym.eval.lam_probe import fit_probe, r2_score
    from wmgym.model.lam import LatentActionModel
    from wmgym.policies.pseudo_label import check_paths, copy_and_edit, follow_actions

    _check_config(config)
    source, out = check_paths(config.data, config.out, config.overwrite)
    if config.labelled_out is not None:
        check_paths(config.data, config.labelled_out, config.overwrite)
        if Path(config.labelled_out).resolve() == out.resolve():
            raise ValueError("labelled_out must differ from out")
    store = EpisodeStore.open(source)
    if store.is_robot:
        raise ValueError(f"{source} is a robot store; label-lam writes the simulator's 20-D actions")
    model = LatentActionModel.from_pretrained(config.lam, device=config.device)
    if (model.config.height, model.config.width) != (store.height, store.width):
        raise ValueError(f"{config.lam} reads {model.config.height}x{model.config.width} frames, {source} holds "
                         f"{store.height}x{store.width}")
    train = split_episodes(store.num_episodes, "train", config.val_fraction)
    count = max(1, math.ceil(config.labelled_fraction * len(train)))
    labelled = np.sort(np.random.default_rng(config.seed).choice(train, count, replace=False))
    everything = np.arange(store.num_episodes)
    rows, lengths = store.read_frames(everything, [CAMERA_KEY])
    frames = np.split(rows[CAMERA_KEY], np.cumsum(lengths)[:-1])
    window = _training_window(Path(config.lam), model)
    latents, states = episode_latents(model, frames, window, config.batch_size, config.show_progress, with_states=True)
    latents = np.concatenate([latents.reshape(len(latents), -1), states.reshape(len(states), -1)], 1)  # (sum L - 1, D + 2KS)
    transition_episode = np.repeat(everything, lengths - 1)
    is_labelled = np.isin(transition_episode, labelled)
    true_actions = store.read_frames(labelled, ["action"])[0]["action"]  # the labelled episodes' only
    labelled_lengths = lengths[labelled]
    keep = np.concatenate([np.arange(n - 1) + o for n, o in zip(labelled_lengths, np.cumsum(labelled_lengths) - labelled_lengths)])
    target = true_actions[keep].astype(np.float64)  # (n labelled transitions, 20)
    predict = fit_probe(latents[is_labelled], target, ridge=config.ridge)
    fit_r2 = r2_score(predict(latents[is_labelled]), target)
    predicted = np.clip(predict(latents), ACTION_LOW, ACTION_HIGH).astype(np.float32)
    predicted[is_labelled] = target.astype(np.float32)
    actions = np.empty((int(lengths.sum()), ACTION_DIM), np.float32)
    ends = np.cumsum(lengths)
    cursor = 0
    for end, n in zip(ends, lengths):
        actions[end - n: end - 1] = predicted[cursor: cursor + n - 1]
        cursor += n - 1
        hold = np.zeros(ACTION_DIM, np.float32)
        hold[3:9] = hold[13:19] = HOLD_ROT6D
        hold[9], hold[19] = (actions[end - 2, 9], actions[end - 2, 19]) if n > 1 else (ACTION_HIGH[9], ACTION_HIGH[19])
        actions[end - 1] = hold
    scores = _pseudo_label_scores(store, everything, lengths, is_labelled, predicted)
    labeller = {"model": "LatentActionModel", "lam": str(config.lam), "labelled_fraction": config.labelled_fraction,
                "labelled_episodes": labelled.tolist(), "map": "ridge on the latent actions and slot states", "ridge": config.ridge, "fit_r2": round(fit_r2, 4),
                "seed": config.seed, "pseudo_label_r2": scores}

    followed = follow_actions(store, actions, config.show_progress)

    def edit(root) -> None:
        root["data/action"][: len(actions)] = actions
        for name, values in followed.items():
            root[f"data/{name}"][: len(values)] = values
        root.attrs.update({"actions": "pseudo-labelled", "action_labeller": labeller})

    copy_and_edit(source, out, config.overwrite, edit)
    if config.labelled_out is not None:
        _write_subset(store, labelled, Path(config.labelled_out), config.overwrite)
    print(f"label-lam: {len(labelled)} labelled episodes ({is_labelled.sum()} transitions, map R^2 {fit_r2:.3f} on them); "
          f"{store.num_episodes - len(labelled)} pseudo-labelled -> {out}")
    if scores:
        print("pseudo-label R^2 against the store's true actions (measured only): "
              + ", ".join(f"{group} {value:.3f}" for group, value in scores.items() if value is not None))
    return out


def _pseudo_label_scores(store, episodes, lengths, is_labelled, predicted) -> dict:
    """R^2 per action group of the pseudo labels of the unlabelled transitions against the store's
    true actions, when it has them (a simulator store; an action-free one gives {}): a measurement
    written beside the labels, never an input to them."""
    from wmgym.policies.idm_metrics import r2_scores
    from wmgym.policies.pseudo_label import is_action_free

    if is_action_free(store) or is_labelled.all():
        return {}
    true = store.read_frames(episodes, ["action"])[0]["action"]
    rows = np.concatenate([np.arange(n - 1) + o for n, o in zip(lengths, np.cumsum(lengths) - lengths)])
    groups = r2_scores(predicted[~is_labelled], true[rows][~is_labelled])["groups"]
    return {group: None if np.isnan(value) else round(float(value), 4) for group, value in groups.items()}


def _training_window(run: Path, model) -> int:
    """The clip length the model was trained on (train_config.json's num_frames), else its max_frames."""
    import json

    path = run / "train_config.json"
    if path.is_file():
        return int(json.loads(path.read_text()).get("num_frames", model.config.max_frames))
    return model.config.max_frames


def _write_subset(store, indices: np.ndarray, out: Path, overwrite: bool) -> None:
    """A store of episodes `indices` of the simulator store `store`, as they are."""
    from wmgym.data.store import EpisodeStore

    attrs = {key: value for key, value in store.attrs.items()
             if key not in ("format_version", "height", "width", "tasks", "episode_captions", "goal_captions")}
    attrs["subset_of"] = {"store": str(store.path), "episodes": indices.tolist()}
    subset = EpisodeStore.create(out, store.height, store.width, store.tasks, overwrite=overwrite, attrs=attrs,
                                 has_held_particles=store.has_held_particles)
    with subset:
        for start in range(0, len(indices), 64):
            subset.append([store.read_record(int(i)) for i in indices[start: start + 64]])


def _check_config(config: LabelLAMConfig) -> None:
    if not 0.0 < config.labelled_fraction <= 1.0:
        raise ValueError(f"labelled_fraction must be in (0, 1], got {config.labelled_fraction}")
    if not 0.0 <= config.val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {config.val_fraction}")
    if config.ridge < 0 or config.batch_size < 1:
        raise ValueError(f"need ridge >= 0 and batch_size >= 1, got {config.ridge}, {config.batch_size}")
    if not (Path(config.lam) / "config.json").is_file():
        raise FileNotFoundError(f"no latent action model at {config.lam}")
