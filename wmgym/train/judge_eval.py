"""Held-out figures of a trained `VideoCLIP` and the calibration of its success judge.

Both read `EpisodeClips` (`wmgym.train.episode_clips.load_clips`): `videoclip_figures` gives retrieval and
judge figures (used during `wmgym train-videoclip` and by benchmarks/videoclip_retrieval.py),
`calibrate` chooses the judge threshold stored as `success_threshold` at the end of training.
`judged_clips` is the one definition of which clips the judge sees, and in what order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported inside the functions: the CLI imports this module
    import torch

    from wmgym.rewards.videoclip import VideoCLIP
    from wmgym.train.episode_clips import EpisodeClips

EVAL_BATCH = 256


def _encode_rows(model: "VideoCLIP", clips: EpisodeClips, rows: np.ndarray) -> "torch.Tensor":
    """Embeddings (r, d) of the clips whose frame rows are `rows` (r, n), in batches."""
    import torch

    with torch.no_grad():
        return torch.cat([model.video(model.to_input(clips.frames[torch.from_numpy(rows[i: i + EVAL_BATCH])]))
                          for i in range(0, len(rows), EVAL_BATCH)])


def judged_clips(clips: EpisodeClips, prefixes: bool) -> tuple[np.ndarray, np.ndarray]:
    """The clips `judge_probabilities` judges, in its order: (episode (k,), frames (k,)) of every
    whole episode (prefixes=False) or of every prefix of 1..T+1 frames, episode by episode (True)."""
    lengths = np.asarray(clips.lengths, np.int64)
    if not prefixes:
        return np.arange(len(lengths)), lengths
    return np.repeat(np.arange(len(lengths)), lengths), np.concatenate([np.arange(1, n + 1) for n in lengths] or [lengths])


def judge_probabilities(model: "VideoCLIP", clips: EpisodeClips, prefixes: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """p(done) of every whole episode (prefixes=False) or every prefix of 1..T+1 frames (True).

    Returns (probabilities, labels, episode of each clip); labels: store success for whole
    episodes, "done by the newest frame" for prefixes."""
    from wmgym.rewards.judge import SuccessJudge
    from wmgym.rewards.videoclip import VideoCLIPHead

    n = model.config.num_frames
    episodes, lengths = judged_clips(clips, prefixes)
    pairs = list(zip(episodes.tolist(), lengths.tolist()))
    rows = np.stack([clips.rows(e, length, n) for e, length in pairs])
    labels = clips.success[episodes] if not prefixes else np.array([clips.done[clips.starts[e] + length - 1] for e, length in pairs])
    judge = SuccessJudge(VideoCLIPHead(model), threshold=0.5)
    probability = judge.probability_of_embeddings(_encode_rows(model, clips, rows), [clips.tasks[e] for e in episodes])
    return probability.cpu().numpy(), labels, episodes


def videoclip_figures(model: "VideoCLIP", clips: EpisodeClips, prefixes: bool = True, threshold: float | None = None,
                      outcome_captions: list[str] | None = None) -> dict:
    """Held-out figures of a model on `clips` (see benchmarks/videoclip_retrieval.py).

    task_top1: succeeded whole episodes whose instruction ranks first among the task captions;
    outcome_top1: whole episodes whose outcome caption ranks first among `outcome_captions`
    (default: the distinct captions of `clips`); judge_full_*: the judge on whole episodes
    (and judge_prefix_* on every prefix when `prefixes`), at `threshold` (default: the model's).
    """
    import torch

    from wmgym.rewards.judge import judge_figures

    model.eval()
    threshold = model.config.success_threshold if threshold is None else threshold
    outcome_captions = sorted(set(clips.captions)) if outcome_captions is None else list(outcome_captions)
    full_rows = np.stack([clips.rows(e, int(n), model.config.num_frames) for e, n in enumerate(clips.lengths)])
    video = _encode_rows(model, clips, full_rows)  # (E, d)
    with torch.no_grad():
        instructions = list(model.config.task_captions.values())
        task_rank = (video @ model.encode_text(instructions).T).argmax(-1).cpu().numpy()
        outcome_rank = (video @ model.encode_text(outcome_captions).T).argmax(-1).cpu().numpy()
    succeeded = np.flatnonzero(clips.success)
    figures = {
        "task_top1": float(np.mean([instructions[task_rank[e]] == clips.goal_captions[e] for e in succeeded])) if len(succeeded) else float("nan"),
        "outcome_top1": float(np.mean([outcome_captions[outcome_rank[e]] == clips.captions[e] for e in range(len(video))])),
    }
    for name, is_prefix in (("full", False), ("prefix", True))[: 2 if prefixes else 1]:
        probability, labels, _ = judge_probabilities(model, clips, is_prefix)
        for key, value in judge_figures(probability >= threshold, labels).items():
            figures[f"judge_{name}_{key}"] = value
    return figures


CALIBRATION_RULES = {
    "episodes": "max accuracy of the environment's verdict (first accepted prefix of 2..T+1 frames) on whole "
                "val-split episodes against their simulator success, grid 0.01..0.99",
    "prefixes": "max accuracy over every prefix of every val-split episode, grid 0.01..0.99",
}


def calibrate(model: "VideoCLIP", clips: EpisodeClips, rule: str = "episodes") -> dict:
    """Choose the judge threshold on `clips` by `rule` (see `CALIBRATION_RULES`); figures at it.

    Returned figures: `episodes` (the environment's first-accept verdict on whole episodes),
    `prefixes` (every single prefix), `full` (the whole episode as one clip), each at the chosen
    threshold, and `episodes_at_prefix_threshold` (the verdict at the `prefixes` rule's threshold)."""
    from wmgym.rewards.judge import calibrate_threshold, first_accept_peaks, judge_figures

    if rule not in CALIBRATION_RULES:
        raise ValueError(f"calibration must be one of {sorted(CALIBRATION_RULES)}, got {rule!r}")
    probability, labels, episodes = judge_probabilities(model, clips, prefixes=True)
    peaks = first_accept_peaks(probability, episodes, judged_clips(clips, prefixes=True)[1], len(clips.tasks))
    success = np.asarray(clips.success, bool)
    prefix_threshold, _ = calibrate_threshold(probability, labels)
    threshold = calibrate_threshold(peaks, success)[0] if rule == "episodes" else prefix_threshold
    full_probability, full_labels, _ = judge_probabilities(model, clips, prefixes=False)
    return {"threshold": threshold, "rule": CALIBRATION_RULES[rule],
            "episodes": judge_figures(peaks >= threshold, success),
            "prefixes": judge_figures(probability >= threshold, labels),
            "full": judge_figures(full_probability >= threshold, full_labels),
            "prefix_rule_threshold": prefix_threshold,
            "episodes_at_prefix_threshold": judge_figures(peaks >= prefix_threshold, success),
            "val_episodes": [int(i) for i in clips.indices]}
