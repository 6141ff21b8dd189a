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
The threshold is then calibrated on the held-out (val split) episodes: every prefix of every
episode is judged and the threshold that maximises accuracy against that ground truth is
stored in the model's config as `success_threshold` (see `calibrate_threshold`).

Measured (benchmarks/videoclip_retrieval.py, docs/benchmarks.md): the shipped model, trained
on 2,000 episodes re-drawn by the world model (`wmgym imagine`), got threshold 0.53 and judges
held-out imagined episodes with precision 72.7%, recall 57.1%, accuracy 73.0%. The first
model, trained by `wmgym train-videoclip --data wm5k.zarr --steps 2500 --batch-size 64` on
5,248 simulator episodes, got threshold 0.43; on the 525 val episodes' 8,925 prefixes the judge then has accuracy 95.0%,
precision 85.5%, recall 89.0% (94.9% / 86.6% / 87.1% at 0.5), and on whole episodes 91.0% /
85.0% / 96.0%. Its misses sit near the success line: most false "done" are partly folded
shirts (final score 0.35-0.7).
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


def judge_figures(predicted: np.ndarray, labels: np.ndarray) -> dict:
    """accuracy, precision, recall (NaN when undefined), count and positives of bool predictions."""
    predicted, labels = np.asarray(predicted, bool), np.asarray(labels, bool)
    true_positive = int(np.sum(predicted & labels))
    return {"accuracy": float(np.mean(predicted == labels)) if len(labels) else float("nan"),
            "precision": true_positive / int(predicted.sum()) if predicted.any() else float("nan"),
            "recall": true_positive / int(labels.sum()) if labels.any() else float("nan"),
            "count": int(len(labels)), "positives": int(labels.sum())}
