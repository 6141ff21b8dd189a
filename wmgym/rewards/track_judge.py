"""`TrackJudge`: the success judge over VideoCLIP's answers, the grippers' track and the grasp prior.

The VideoCLIP judge alone (`wmgym.rewards.judge.SuccessJudge`) reads only the imagined frames,
and those can show a fold the simulator would not do (a missed grasp drawn held) or miss one it
would. This judge reads, for the episode so far (prefix ending at frame s, frames 0..s), only
signals the environment itself has:

    VideoCLIP       p(done | prefix, task) at s, the previous prefix's and the largest so far
    grippers        both jaws open at s (the simulator's success needs them open), each
                    gripper's tool centre at s, its displacement from frame 0 and where it last
                    closed and last opened (and the vector between), how high it lifted and
                    how far it travelled closed, closings so far
                    (poses and widths: the track the env computes from the actions,
                    `wmgym.conditioning.GripperConditions`)
    grasp prior     per gripper the largest p(held) of its closings so far
                    (`wmgym.model.grasp_prior.GraspPrior.frame_held`), the distance travelled
                    closed weighted by it, and whether the env's own draw made a closing hold
                    (`GraspDraws`) and the distance travelled while drawn held
    task, step      one-hot of the task, s / 16

(`FEATURE_NAMES`, `prefix_features`) and answers with a small MLP (standardised features,
one tanh hidden layer, a sigmoid), trained by `wmgym train-judge` (`wmgym.train.judge`) on
imagined episodes (`wmgym imagine --held prior`) against the simulator's per-frame verdict
("done by frame s"), its threshold chosen under the environment's rule (an episode succeeds at
its first accepted prefix of 2..T+1 frames). No simulator-only signal (cloth state, true grasp
state) enters. It is a JSON file in the bundle, `judge.json` (`JUDGE_FILE`): numbers only,
evaluated in NumPy, deterministic.

Dimension legend: n episodes (env rows), t frames, F features, h hidden units.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

JUDGE_FILE = "judge.json"
FORMAT = "wmgym-track-judge-1"
GRASP_WIDTH = 0.02  # a jaw narrower than this is closed (`wmgym.sim.gripper.GRASP_WIDTH`, the grasp prior's grasp_width)
EPISODE_STEPS = 16.0  # steps of the episodes judged (the step feature's scale)
HANDS = ("left", "right")
_PER_HAND = ("max_p_held", "drawn_held", "closed_path", "prior_path", "drawn_path", "closings", "closed_lift")
FEATURE_NAMES = (("logit_p", "logit_p_prev", "logit_p_max", "both_open")
                 + tuple(f"{name}_{hand}" for name in _PER_HAND for hand in HANDS)
                 + tuple(f"{hand}_{axis}" for hand in HANDS for axis in "xyz")
                 + tuple(f"{hand}_d{axis}" for hand in HANDS for axis in "xyz")
                 + tuple(f"{hand}_{event}_{axis}" for event in ("grasp", "release") for hand in HANDS for axis in "xyz")
                 + tuple(f"{hand}_carry_d{axis}" for hand in HANDS for axis in "xyz")
                 + ("step",))
"""Names of the features before the task one-hot (`prefix_features` appends one column per task)."""


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-4, 1 - 1e-4)
    return np.log(p) - np.log1p(-p)


def prefix_features(p_done: np.ndarray, poses: np.ndarray, p_held: np.ndarray, drawn: np.ndarray,
                    task_ids: np.ndarray, num_tasks: int) -> np.ndarray:
    """float64 (n, t, F): the features of every prefix ending at frame s = 0..t-1 (causal: row s
    reads frames <= s only), `FEATURE_NAMES` then the task one-hot (F = len(FEATURE_NAMES) + num_tasks).

    Args:
        p_done: (n, t) VideoCLIP's p(done) of the prefix ending at each frame (frame 0's is
            never used: the env first asks after one step).
        poses: (n, t, 8) pose vectors (left xyz, width, right xyz, width; `pose_vectors`).
        p_held: (n, t, 2) the grasp prior's p(held) of the closing each frame belongs to (0 open).
        drawn: (n, t, 2) the env's grasp draw (1 held, 0 missed or open); zeros for a model
            that is not held-conditioned. Frame 0's is not read.
        task_ids: (n,) int index of each episode's task among `num_tasks`.
    """
    p_done, poses = np.asarray(p_done, np.float64), np.asarray(poses, np.float64)
    p_held, drawn = np.asarray(p_held, np.float64), np.asarray(drawn, np.float64)
    n, t = p_done.shape
    if poses.shape != (n, t, 8) or p_held.shape != (n, t, 2) or drawn.shape != (n, t, 2):
        raise ValueError(f"need p_done (n, t), poses (n, t, 8), p_held and drawn (n, t, 2); got {p_done.shape}, "
                         f"{poses.shape}, {p_held.shape}, {drawn.shape}")
    task_ids = np.asarray(task_ids, np.int64)
    if task_ids.shape != (n,) or (n and (task_ids.min() < 0 or task_ids.max() >= num_tasks)):
        raise ValueError(f"task_ids must be (n,) = ({n},) indices in 0..{num_tasks - 1}, got {task_ids}")
    drawn = drawn.copy()
    drawn[:, :1] = 0.0  # the start frame's draw is not read (the env's rows take it as 0)
    asked = p_done.copy()
    asked[:, 0] = asked[:, 1] if t > 1 else asked[:, 0]  # frame 0 is never judged: stand in the first answer
    previous = np.concatenate([asked[:, :1], asked[:, :-1]], axis=1)
    position = poses[..., [0, 1, 2, 4, 5, 6]].reshape(n, t, 2, 3)
    closed = poses[..., [3, 7]] < GRASP_WIDTH  # (n, t, 2)
    step = np.zeros((n, t, 2))
    step[:, 1:] = np.linalg.norm(np.diff(position, axis=1), axis=-1)
    moved_closed = step * closed * np.concatenate([np.zeros((n, 1, 2), bool), closed[:, :-1]], axis=1)
    starts = closed & ~np.concatenate([np.zeros((n, 1, 2), bool), closed[:, :-1]], axis=1)
    releases = ~closed & np.concatenate([np.zeros((n, 1, 2), bool), closed[:, :-1]], axis=1)  # a jaw opens at s
    per_hand = [np.maximum.accumulate(p_held, axis=1), np.maximum.accumulate(drawn, axis=1),
                np.cumsum(moved_closed, axis=1), np.cumsum(moved_closed * p_held, axis=1),
                np.cumsum(moved_closed * drawn, axis=1), np.cumsum(starts, axis=1),
                np.maximum.accumulate(np.where(closed, position[..., 2] - position[:, :1, :, 2], 0.0), axis=1)]
    grasped, released = _last_event_positions(position, starts), _last_event_positions(position, releases)
    carried = np.where(np.maximum.accumulate(releases, axis=1)[..., None], released - grasped, 0.0)  # (n, t, 2, 3)
    columns = [_logit(asked), _logit(previous), _logit(np.maximum.accumulate(asked, axis=1)), closed.sum(-1) == 0,
               *[a[..., hand] for a in per_hand for hand in range(2)],
               *[position[..., hand, axis] for hand in range(2) for axis in range(3)],
               *[position[..., hand, axis] - position[:, :1, hand, axis] for hand in range(2) for axis in range(3)],
               *[event[..., hand, axis] for event in (grasped, released) for hand in range(2) for axis in range(3)],
               *[carried[..., hand, axis] for hand in range(2) for axis in range(3)],
               np.broadcast_to(np.arange(t) / EPISODE_STEPS, (n, t))]
    one_hot = np.broadcast_to(np.eye(num_tasks)[task_ids][:, None], (n, t, num_tasks))
    return np.concatenate([np.stack(columns, axis=-1).astype(np.float64), one_hot], axis=-1)


def _last_event_positions(position: np.ndarray, events: np.ndarray) -> np.ndarray:
    """(n, t, 2, 3): each hand's tool centre at its latest event (bool (n, t, 2)) at or before
    frame s, zeros before its first one."""
    n, t = events.shape[:2]
    latest = np.where(events, np.arange(t)[None, :, None], -1)
    latest = np.maximum.accumulate(latest, axis=1)  # (n, t, 2) frame of the latest event, -1 if none
    picked = np.take_along_axis(position, np.clip(latest, 0, None)[..., None].transpose(0, 1, 2, 3), axis=1)
    return np.where(latest[..., None] >= 0, picked, 0.0)


class TrackJudge:
    """The judge of `judge.json`: `probability(features (m, F)) -> (m,)`, `threshold`.

    Args:
        tasks: task names, in the order of the features' one-hot.
        mean, std: (F,) feature standardisation.
        hidden_weight (h, F), hidden_bias (h,), out_weight (h,), out_bias: the MLP.
        threshold: p at which a prefix is judged done.
        info: free-form provenance (training data, held-out figures).
    """

    def __init__(self, tasks, mean, std, hidden_weight, hidden_bias, out_weight, out_bias, threshold: float,
                 info: dict | None = None):
        self.tasks = tuple(str(t) for t in tasks)
        self.mean, self.std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        self.hidden_weight, self.hidden_bias = np.asarray(hidden_weight, np.float64), np.asarray(hidden_bias, np.float64)
        self.out_weight, self.out_bias = np.asarray(out_weight, np.float64), float(out_bias)
        self.threshold = float(threshold)
        self.info = dict(info or {})
        f = len(FEATURE_NAMES) + len(self.tasks)
        h = self.hidden_bias.shape[0] if self.hidden_bias.ndim == 1 else -1
        if not self.tasks or self.mean.shape != (f,) or self.std.shape != (f,) or self.hidden_weight.shape != (h, f) \
                or self.out_weight.shape != (h,) or h < 1:
            raise ValueError(f"a track judge over {len(self.tasks)} tasks needs mean and std ({f},), hidden_weight (h, {f}), "
                             f"hidden_bias and out_weight (h,); got {self.mean.shape}, {self.std.shape}, "
                             f"{self.hidden_weight.shape}, {self.hidden_bias.shape}, {self.out_weight.shape}")
        arrays = (self.mean, self.std, self.hidden_weight, self.hidden_bias, self.out_weight, [self.out_bias])
        if not all(np.isfinite(a).all() for a in arrays) or not (self.std > 0).all():
            raise ValueError("a track judge's numbers must be finite and its std > 0")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be a probability in [0, 1], got {self.threshold}")

    def task_index(self, task: str) -> int:
        if task not in self.tasks:
            raise ValueError(f"unknown task {task!r}; this judge knows {', '.join(self.tasks)}")
        return self.tasks.index(task)

    def probability(self, features: np.ndarray) -> np.ndarray:
        """float64 (...,) p(done) of features (..., F) (`prefix_features`)."""
        x = (np.asarray(features, np.float64) - self.mean) / self.std
        logit = np.tanh(x @ self.hidden_weight.T + self.hidden_bias) @ self.out_weight + self.out_bias
        return 1.0 / (1.0 + np.exp(-logit))

    def to_json(self) -> dict:
        return {"format": FORMAT, "feature_names": list(FEATURE_NAMES), "tasks": list(self.tasks),
                "mean": self.mean.tolist(), "std": self.std.tolist(), "hidden_weight": self.hidden_weight.tolist(),
                "hidden_bias": self.hidden_bias.tolist(), "out_weight": self.out_weight.tolist(),
                "out_bias": self.out_bias, "threshold": self.threshold, "info": self.info}

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrackJudge":
        """Read a `judge.json`; ValueError naming the file when it is damaged or of another format."""
        path = Path(path)
        try:
            meta = json.loads(path.read_bytes())
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r}")
            if list(meta["feature_names"]) != list(FEATURE_NAMES):
                raise ValueError("its feature_names differ from this wmgym's FEATURE_NAMES")
            return cls(meta["tasks"], meta["mean"], meta["std"], meta["hidden_weight"], meta["hidden_bias"],
                       meta["out_weight"], meta["out_bias"], meta["threshold"], meta.get("info"))
        except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ValueError(f"{path} is not a usable track judge ({type(error).__name__}: {error}); remake it with "
                             "`wmgym train-judge` or delete it to use the VideoCLIP judge alone") from None


class TrackJudgeRows:
    """A `TrackJudge` over b environment rows: each row's history of VideoCLIP answers, poses
    and grasp draws, so that every step's verdict reads the episode so far.

    Args:
        judge: the `TrackJudge`.
        grasp_prior: the world model's `GraspPrior` (p(held) of each closing).
        num_rows: b.
        threshold: overrides `judge.threshold` when given.
    """

    def __init__(self, judge: TrackJudge, grasp_prior, num_rows: int, threshold: float | None = None):
        self.judge, self.grasp_prior = judge, grasp_prior
        self.threshold = judge.threshold if threshold is None else float(threshold)
        self.history: list[list[tuple[float, np.ndarray, np.ndarray]]] = [[] for _ in range(num_rows)]

    def probability(self, rows, lengths, p_done: np.ndarray, poses_before: np.ndarray, poses: np.ndarray,
                    drawn: np.ndarray | None, tasks) -> np.ndarray:
        """float64 (r,) p(done) of the rows' episodes after a step.

        Args:
            rows: r row indices; lengths: (r,) their frames so far, the new one included (a row
                at length 2 has just started: its history restarts with `poses_before`).
            p_done: (r,) VideoCLIP's p(done) of the rows' episodes so far.
            poses_before, poses: (r, 8) pose vectors before and after the step's action.
            drawn: (r, 2) the grasp draws of the new frame, or None (no held-conditioned model); the
                start frame's are taken as 0 (a closing begun before the episode is never drawn held).
            tasks: r task names.
        """
        out = np.empty(len(rows))
        for k, (row, length) in enumerate(zip(rows, lengths)):
            history = self.history[row]
            if int(length) == 2 or len(history) != int(length) - 1:  # a new episode (or a row out of step): restart
                history[:] = [(0.0, np.asarray(poses_before[k], np.float64), np.zeros(2))]
            history.append((float(p_done[k]), np.asarray(poses[k], np.float64),
                            np.zeros(2) if drawn is None else np.asarray(drawn[k], np.float64)))
        for length in sorted(set(int(n) for n in lengths)):  # rows of one length go through together
            ks = [k for k, n in enumerate(lengths) if int(n) == length]
            p, pose, draw = (np.stack([np.stack([h[i] for h in self.history[rows[k]]]) for k in ks]) for i in range(3))
            p_held = self.grasp_prior.frame_held(pose.astype(np.float32)).numpy()
            task_ids = np.array([self.judge.task_index(tasks[k]) for k in ks])
            features = prefix_features(p, pose, p_held, draw, task_ids, len(self.judge.tasks))
            out[ks] = self.judge.probability(features[:, -1])
        return out
