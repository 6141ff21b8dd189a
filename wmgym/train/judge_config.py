"""The arguments of `wmgym train-judge` (`wmgym.train.judge`): the CLI reads them, for `--help`
too, without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainJudgeConfig:
    """Train the track judge (judge.json): VideoCLIP's answers, the grippers' track and the grasp prior against the simulator's success.

    Reads imagined stores (`wmgym imagine --held prior`), recomputes for every episode what
    WMFold-v0 has at each step (VideoCLIP's p(done) of the episode so far, the grippers' poses,
    the grasp prior's p(held), the env's grasp draws), fits a small MLP to the simulator's
    "done by this frame" and chooses its threshold under the env's first-accept rule on a
    calibration part of the training episodes. Copy the output into a bundle as judge.json."""

    data: tuple[str, ...]
    """Imagined stores (`wmgym imagine --held prior`) whose episodes train the judge."""
    out: str
    """judge.json to write (refused if it exists, unless --overwrite)."""
    checkpoint: str = "default"
    """WMFold-v0 bundle whose VideoCLIP and grasp prior the judge reads (the one its stores were imagined with)."""
    exclude_seeds_of: tuple[str, ...] = ()
    """Stores whose episodes' start states (episode seeds) are held out: episodes of `data` with
    one of those seeds are not trained on (keeps an evaluation set separate by start state)."""
    val_split_only: tuple[str, ...] = ()
    """Stores of `data` of which only the val split is used (`split_episodes`, 10%, split seed 0):
    those VideoCLIP trained on (its train split), where its answers are overconfident, e.g. the
    shipped VideoCLIP's data/judge2k_h.zarr."""
    hidden: int = 16
    """Hidden units of the MLP."""
    steps: int = 1500
    """Full-batch Adam steps."""
    learning_rate: float = 1e-2
    weight_decay: float = 1e-3
    calibration_fraction: float = 0.25
    """Share of the training episodes (by start state) kept out of fitting to choose the threshold."""
    min_recall: float = 0.85
    """The threshold maximises the calibration episodes' accuracy among those with at least this recall (if any)."""
    seed: int = 0
    """Seed of the initialisation and the calibration split."""
    cache_dir: str = "data/judge_signals"
    """Where each store's per-episode signals are cached (`<store name>.npz`; recomputed when missing)."""
    overwrite: bool = False
