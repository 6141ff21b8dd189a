"""`SuccessJudge`: does a clip show its task done? A multiple-choice question to VideoCLIP.

For task k the candidates are its instruction caption c_k, the other tasks' instructions and
the "not done" caption c_0 (`VideoCLIPConfig.not_done_caption`). With v the clip's embedding,
u_j the candidates' and s = exp(logit_scale) the model's learned inverse temperature,

    p(done | clip, k) = softmax_j(s * <v, u_j>)[k]        and    done  <=>  p >= threshold.

`train_videoclip` trains exactly this choice: every clip (whole episodes and prefixes, the
environment calls the judge after every step with the frames so far) has its task's
instruction as a positive caption when the ground truth says the fold has been done by its
newest frame (at some frame so far the task score reached the task's threshold with both
grippers open: the simulator's `success`; the environment ends at the first such frame), and
c_0 otherwise.
The threshold is then calibrated on the held-out (val split) episodes under the environment's
own rule (`calibration="episodes"`, the default): an episode counts as a success when the judge
accepts any of its prefixes of 2..T+1 frames (the env asks after every step and ends at the
first "done"), so each episode's verdict is `max_prefix p >= threshold` (`first_accept_peaks`),
and the threshold that maximises that verdict's accuracy against the episodes' simulator
success is stored in the model's config as `success_threshold` (see `calibrate_threshold`).
Calibrating on single prefixes instead (`calibration="prefixes"`, the first bundles' rule)
ignores that a 16-step episode gives the judge 16 chances to say "done" wrongly: a judge with a
good per-prefix accuracy then over-accepts whole episodes.

The shipped judge is trained on episodes re-drawn by the shipped world model (`wmgym imagine`),
the frames it judges in the environment; its threshold and its precision, recall and accuracy
on held-out imagined episodes: docs/results.md, "Success judge and text retrieval (VideoCLIP)".

A bundle with a judge.json (`wmgym train-judge`) judges with `TrackSuccessJudge` instead: the
answer above, the grippers' track, the grasp prior and the env's grasp draws of the episode so
far go through a small trained classifier (`wmgym.rewards.track_judge`); `make_judge` picks one
(benchmarks/judge_accuracy.py measures both per behaviour).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from wmgym.rewards.base import as_frames
from wmgym.rewards.videoclip import VideoCLIPHead


class SuccessJudge:
    """`judge(frames uint8 (b, t, H, W, 3), task) -> bool (b,)`, see the module docstring.

    Args:
        head: the VideoCLIP reward head whose model answers (and whose text cache is reused).
        threshold: probability at which the answer is "done"; None = the model's calibrated
            `success_threshold`.
    """

    def __init__(self, head: VideoCLIPHead, threshold: float | None = None):
        self.head = head
        self.config = head.model.config
        self.threshold = float(self.config.success_threshold if threshold is None else threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be a probability in [0, 1], got {self.threshold}")
        if not self.config.task_captions:
            raise ValueError("this VideoCLIP model has no task_captions in its config; the judge needs them")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "auto",
                        threshold: float | None = None) -> "SuccessJudge":
        return cls(VideoCLIPHead.from_pretrained(directory, device=device), threshold)

    @property
    def device(self) -> torch.device:
        return self.head.device

    def candidates(self, task: str) -> list[str]:
        """[task caption, the other tasks' captions..., not-done caption]; `task` is a task name
        (a key of `task_captions`) or its instruction caption."""
        captions = self.config.task_captions
        if task in captions:
            caption = captions[task]
        elif task in captions.values():
            caption = task
        else:
            raise ValueError(f"unknown task {task!r}; the judge knows the tasks {sorted(captions)} "
                             f"and their captions {sorted(captions.values())}")
        return [caption] + [c for c in captions.values() if c != caption] + [self.config.not_done_caption]

    def probability(self, frames, task) -> torch.Tensor:
        """float (b,) on `device`: p(done | clip, task); `task` is one str or b of them."""
        return self.probability_of_embeddings(self.head.video_embeddings(as_frames(frames)), task)

    @torch.no_grad()
    def probability_of_embeddings(self, video: torch.Tensor, task) -> torch.Tensor:
        """`probability` for clips already encoded: video (b, d) unit vectors -> (b,)."""
        tasks = [task] * len(video) if isinstance(task, str) else list(task)
        if len(tasks) != len(video):
            raise ValueError(f"got {len(tasks)} tasks for a batch of {len(video)} clips")
        out = torch.empty(len(video), device=video.device)
        scale = self.head.model.scale()
        for name in dict.fromkeys(tasks):  # each distinct task once, in order
            rows = torch.tensor([i for i, t in enumerate(tasks) if t == name], device=video.device)
            text = self.head.text_embeddings(self.candidates(name))  # (k, d)
            out[rows] = torch.softmax(scale * video[rows] @ text.T, dim=-1)[:, 0]
        return out

    def judge(self, frames, task) -> torch.Tensor:
        """bool (b,) on `device`: whether each clip shows `task` done (probability >= threshold)."""
        return self.probability(frames, task) >= self.threshold



class TrackSuccessJudge(SuccessJudge):
    """The env's judge when its bundle has a `judge.json` (`wmgym.rewards.track_judge`): the
    VideoCLIP question above gives p(done | clip, task), and the track judge turns it, with the
    grippers' track, the grasp prior and the env's grasp draws of the episode so far, into the
    verdict's probability (`step_probability`). `threshold` is the track judge's.

    Args:
        head: the VideoCLIP reward head.
        track: the `TrackJudge` read from judge.json.
        grasp_prior: the world model's `GraspPrior`.
        num_rows: b, the env's rows (each keeps its episode's history).
        threshold: overrides the track judge's threshold.
    """

    reads_track = True

    def __init__(self, head: VideoCLIPHead, track, grasp_prior, num_rows: int, threshold: float | None = None):
        from wmgym.rewards.track_judge import TrackJudgeRows

        super().__init__(head, None)
        self.rows = TrackJudgeRows(track, grasp_prior, num_rows, threshold)
        self.threshold = self.rows.threshold
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be a probability in [0, 1], got {self.threshold}")

    def step_probability(self, rows, lengths, p_done: torch.Tensor, poses_before: np.ndarray, poses: np.ndarray,
                         drawn: np.ndarray | None, tasks) -> torch.Tensor:
        """float (r,) on p_done's device: p(done) of the rows' episodes after a step, from
        VideoCLIP's p_done (r,), the pose vectors (r, 8) before and after the step, the step's
        grasp draws (r, 2) or None, and each row's task (see `TrackJudgeRows.probability`)."""
        p = self.rows.probability(rows, lengths, p_done.detach().cpu().numpy(), poses_before, poses, drawn, tasks)
        return torch.as_tensor(p, dtype=torch.float32, device=p_done.device)


def make_judge(bundle, head: VideoCLIPHead, world_model, num_rows: int, threshold: float | None = None) -> SuccessJudge:
    """The success judge of a bundle: a `TrackSuccessJudge` when it has a judge.json
    (`Bundle.judge_file`), else the VideoCLIP judge alone (`SuccessJudge`, the bundles before it).
    ValueError when judge.json is damaged or the world model has no grasp prior to feed it."""
    path = getattr(bundle, "judge_file", None)
    if path is None:
        return SuccessJudge(head, threshold)
    from wmgym.rewards.track_judge import TrackJudge

    track = TrackJudge.load(path)
    prior = getattr(world_model, "grasp_prior", None)
    if prior is None:
        raise ValueError(f"{path} judges with the grasp prior's p(held), but the world model in {bundle.directory} has no "
                         "grasp_prior/; delete judge.json to judge with VideoCLIP alone")
    missing = [t for t in bundle.captions if t not in track.tasks]
    if missing:
        raise ValueError(f"{path} knows the tasks {', '.join(track.tasks)}, not {', '.join(missing)} of its bundle")
    return TrackSuccessJudge(head, track, prior, num_rows, threshold)

def calibrate_threshold(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, dict]:
    """The threshold in {0.01, ..., 0.99} with the best accuracy of `probabilities >= t` on `labels`.

    Ties are broken by the middle of the best thresholds. Returns (threshold, its figures:
    accuracy, precision, recall, count, positives)."""
    probabilities, labels = np.asarray(probabilities, np.float64), np.asarray(labels, bool)
    if probabilities.shape != labels.shape or probabilities.ndim != 1 or len(labels) == 0:
        raise ValueError(f"need equal-length 1-D probabilities and labels, got {probabilities.shape} and {labels.shape}")
    grid = np.round(np.arange(1, 100) / 100, 2)
    accuracy = np.array([np.mean((probabilities >= t) == labels) for t in grid])
    best = grid[np.flatnonzero(accuracy == accuracy.max())]
    threshold = float(best[len(best) // 2])
    return threshold, judge_figures(probabilities >= threshold, labels)


def first_accept_peaks(probabilities: np.ndarray, episodes: np.ndarray, lengths: np.ndarray,
                       count: int, min_length: int = 2) -> np.ndarray:
    """float (count,): each episode's largest p(done) over its prefixes of >= `min_length` frames.

    `probabilities`, `episodes` and `lengths` (1-D, one entry per judged prefix: its p(done), its
    episode in 0..count-1 and its number of frames). An environment that asks the judge after
    every step and ends at the first "done" calls episode e a success at threshold t exactly when
    `peaks[e] >= t`. Episodes without such a prefix get -inf (never accepted)."""
    probabilities, episodes, lengths = (np.asarray(a) for a in (probabilities, episodes, lengths))
    if not probabilities.shape == episodes.shape == lengths.shape or probabilities.ndim != 1:
        raise ValueError(f"need equal-length 1-D probabilities, episodes and lengths, got "
                         f"{probabilities.shape}, {episodes.shape} and {lengths.shape}")
    if len(episodes) and (episodes.min() < 0 or episodes.max() >= count):
        raise ValueError(f"episode indices must lie in 0..{count - 1}")
    peaks = np.full(count, -np.inf)
    keep = lengths >= min_length
    np.maximum.at(peaks, episodes[keep], probabilities[keep].astype(np.float64))
    return peaks


def judge_figures(predicted: np.ndarray, labels: np.ndarray) -> dict:
    """accuracy, precision, recall (NaN when undefined), count and positives of bool predictions."""
    predicted, labels = np.asarray(predicted, bool), np.asarray(labels, bool)
    true_positive = int(np.sum(predicted & labels))
    return {"accuracy": float(np.mean(predicted == labels)) if len(labels) else float("nan"),
            "precision": true_positive / int(predicted.sum()) if predicted.any() else float("nan"),
            "recall": true_positive / int(labels.sum()) if labels.any() else float("nan"),
            "count": int(len(labels)), "positives": int(labels.sum())}
