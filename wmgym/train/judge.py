"""`wmgym train-judge`: fit the track judge (`wmgym.rewards.track_judge`) on imagined episodes.

Signals. For every episode of an imagined store (`wmgym imagine --held prior`) we recompute what
WMFold-v0 holds at each step (`episode_signals`): VideoCLIP's p(done | the episode so far, task)
for every prefix, from per-frame features as the env caches them (`VideoCLIPHead.frame_features`,
`embeddings_of_features`); the grippers' pose vectors (the store's, which the env's track
reproduces bit for bit from the actions); the grasp prior's p(held) of each closing; and the
grasp draws the imagined frames were made with (`wmgym imagine` draws batch i of its
`batch_size` episodes with a generator seeded seed * 1_000_003 + i; redrawn identically here).
Labels are the simulator's: "done by frame s" (`load_clips`' rule) and the episode's success.

Fitting. Prefixes of 2..T+1 frames of the training episodes are the rows; an MLP (one tanh
layer) is fitted by full-batch Adam to the per-frame label, then its threshold is chosen on
calibration episodes kept out of fitting (by start state) under the env's rule: an episode is
a success when any prefix is accepted (`first_accept_peaks`).

Dimension legend: E episodes, t = T + 1 frames, F features, m prefix rows.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from wmgym.train.judge_config import TrainJudgeConfig

BEHAVIOURS = ("demo clean", "demo noisy", "perturbed", "replay", "random", "proposal", "uniform")
SIGNAL_KEYS = ("p_done", "poses", "p_held", "drawn", "done", "success", "task", "kind", "noise", "seed", "index")


def behaviour_names(kinds: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """str (E,): "demo clean" (noise 0), "demo noisy" (demonstrations with key-pose noise), else the kind."""
    kinds, noise = np.asarray(kinds).astype(str), np.asarray(noise, np.float64)
    return np.where(kinds == "demo", np.where(noise > 0, "demo noisy", "demo clean"), kinds)


def episode_signals(store_path: str | Path, checkpoint: str = "default", batch_size: int = 64,
                    cache_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """Every episode's signals (module docstring) as arrays: p_done (E, t), poses (E, t, 8),
    p_held and drawn (E, t, 2), done (E, t) bool, success (E,) bool, task, kind (E,) str,
    noise (E,), seed and index (E,) int. Cached in `cache_dir/<store name>.npz` when given."""
    cache = None if cache_dir is None else Path(cache_dir) / f"{Path(store_path).name}.npz"
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as saved:
            return {key: saved[key] for key in SIGNAL_KEYS}
    signals = _compute_signals(store_path, checkpoint, batch_size)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, **signals)
    return signals


def _compute_signals(store_path, checkpoint: str, batch_size: int) -> dict[str, np.ndarray]:
    import torch

    from wmgym.conditioning import grasp_states
    from wmgym.data.store import EpisodeStore
    from wmgym.data.store_layout import CAMERA_KEY
    from wmgym.envs.bundle import Bundle
    from wmgym.model.grasp_prior import GraspPrior
    from wmgym.rewards.judge import SuccessJudge
    from wmgym.rewards.videoclip import VideoCLIPHead
    from wmgym.sim.episode import EPISODE_KINDS
    from wmgym.sim.gripper_track import pose_vectors
    from wmgym.train.episode_clips import load_clips

    store = EpisodeStore.open(store_path)
    imagined = store.attrs.get("imagined_by")
    if not imagined or imagined.get("held") != "prior":
        raise ValueError(f"{store_path} is not imagined with --held prior (wmgym imagine): its grasp draws cannot be redrawn")
    bundle = Bundle.load(checkpoint)
    prior = GraspPrior.from_pretrained(bundle.world_model_dir / "grasp_prior")
    judge = SuccessJudge(VideoCLIPHead.from_pretrained(bundle.videoclip_dir, device="cpu"))
    indices = np.arange(store.num_episodes)
    clips = load_clips(store, indices)
    if len(set(clips.lengths.tolist())) != 1:
        raise ValueError(f"{store_path}: episodes of different lengths; the judge's signals need one length")
    t = int(clips.lengths[0])
    keys = ["robot0_eef_pos", "robot1_eef_pos", "robot0_gripper_width", "robot1_gripper_width"]
    rows, _ = store.read_frames(indices, keys)
    positions = np.stack([rows["robot0_eef_pos"], rows["robot1_eef_pos"]], axis=1)  # (N, 2, 3)
    widths = np.concatenate([rows["robot0_gripper_width"], rows["robot1_gripper_width"]], axis=1)  # (N, 2)
    poses = pose_vectors(positions, widths).reshape(len(indices), t, 8)
    p_held = prior.frame_held(poses).numpy()
    drawn = np.zeros_like(p_held)
    model = type("GraspOnly", (), {"grasp_prior": prior})()  # what grasp_states reads of a world model
    for batch, first in enumerate(range(0, len(indices), batch_size)):  # wmgym imagine's draws, batch by batch
        generator = torch.Generator().manual_seed(int(imagined["seed"]) * 1_000_003 + batch)
        drawn[first: first + batch_size] = grasp_states(model, poses[first: first + batch_size], "sample", generator=generator)[0]
    k = judge.config.num_frames
    from wmgym.rewards.videoclip import resample_indices

    p_done = np.zeros((len(indices), t))
    frames = clips.frames.view(len(indices), t, *clips.frames.shape[1:])
    with torch.no_grad():
        for first in range(0, len(indices), 64):
            chunk = frames[first: first + 64]
            features = judge.head.frame_features(chunk, chunk[:, 0])  # (b, t, f)
            tasks = clips.tasks[first: first + 64]
            for length in range(1, t + 1):
                video = judge.head.embeddings_of_features(features[:, resample_indices(length, k)])
                p_done[first: first + 64, length - 1] = judge.probability_of_embeddings(video, tasks).numpy()
    return {"p_done": p_done, "poses": poses, "p_held": p_held, "drawn": drawn,
            "done": clips.done.reshape(len(indices), t), "success": clips.success, "task": np.array(clips.tasks),
            "kind": np.array([EPISODE_KINDS[int(i)] for i in store.read_meta("episode_kind", indices)]),
            "noise": store.read_meta("episode_noise", indices).astype(np.float64),
            "seed": store.read_meta("episode_seed", indices).astype(np.int64), "index": indices}


def join_signals(parts: list[dict]) -> dict[str, np.ndarray]:
    """The episodes of several stores' signals, one after another."""
    return {key: np.concatenate([p[key] for p in parts]) for key in SIGNAL_KEYS}


def take(signals: dict, keep: np.ndarray) -> dict[str, np.ndarray]:
    """The episodes `keep` (bool (E,) or indices) of `signals`."""
    return {key: value[keep] for key, value in signals.items()}


def signal_features(signals: dict, tasks) -> np.ndarray:
    """float64 (E, t, F): `prefix_features` of every episode's prefixes; `tasks` orders the one-hot."""
    from wmgym.rewards.track_judge import prefix_features

    tasks = list(tasks)
    task_ids = np.array([tasks.index(str(name)) for name in signals["task"]], np.int64)
    return prefix_features(signals["p_done"], signals["poses"], signals["p_held"], signals["drawn"], task_ids, len(tasks))


def videoclip_peaks(signals: dict) -> np.ndarray:
    """float (E,): VideoCLIP's largest p(done) over the prefixes of 2..t frames (the old judge's
    verdict is `peaks >= threshold`)."""
    return signals["p_done"][:, 1:].max(axis=1)


def judge_peaks(judge, signals: dict) -> np.ndarray:
    """float (E,): the track judge's largest p(done) over the prefixes of 2..t frames."""
    return judge.probability(signal_features(signals, judge.tasks))[:, 1:].max(axis=1)


def confusion_by_behaviour(predicted: np.ndarray, signals: dict) -> dict[str, dict]:
    """{behaviour (and "all"): {tp, fp, fn, tn, accuracy, precision, recall, count}} of bool
    episode verdicts (E,) against the simulator's success."""
    from wmgym.rewards.judge import judge_figures

    truth, behaviour = signals["success"].astype(bool), behaviour_names(signals["kind"], signals["noise"])
    out = {}
    for name in [b for b in BEHAVIOURS if b in set(behaviour)] + ["all"]:
        rows = np.ones(len(truth), bool) if name == "all" else behaviour == name
        p, y = np.asarray(predicted, bool)[rows], truth[rows]
        out[name] = {"tp": int(np.sum(p & y)), "fp": int(np.sum(p & ~y)), "fn": int(np.sum(~p & y)),
                     "tn": int(np.sum(~p & ~y)), **judge_figures(p, y)}
    return out


def choose_threshold(peaks: np.ndarray, success: np.ndarray, min_recall: float) -> float:
    """The threshold in {0.01, ..., 0.99} of best episode accuracy of `peaks >= t` among those
    with recall >= `min_recall` (all of them when none reaches it); ties: the middle one."""
    peaks, success = np.asarray(peaks, np.float64), np.asarray(success, bool)
    grid = np.round(np.arange(1, 100) / 100, 2)
    accuracy = np.array([np.mean((peaks >= g) == success) for g in grid])
    recall = np.array([np.mean(peaks[success] >= g) if success.any() else 1.0 for g in grid])
    allowed = recall >= min_recall if (recall >= min_recall).any() else np.ones(len(grid), bool)
    score = np.where(allowed, accuracy, -1.0)
    best = grid[np.flatnonzero(score == score.max())]
    return float(best[len(best) // 2])


def fit_judge(signals: dict, tasks, hidden: int = 16, steps: int = 1500, learning_rate: float = 1e-2,
              weight_decay: float = 1e-3, calibration_fraction: float = 0.25, min_recall: float = 0.85, seed: int = 0):
    """A `TrackJudge` fitted on `signals` (module docstring); returns (judge, figures on the calibration episodes)."""
    import torch

    from wmgym.rewards.track_judge import TrackJudge

    rng = np.random.default_rng(seed)
    seeds = np.unique(signals["seed"])
    calibration_seeds = rng.choice(seeds, size=int(round(calibration_fraction * len(seeds))), replace=False)
    is_calibration = np.isin(signals["seed"], calibration_seeds)
    fit = take(signals, ~is_calibration)
    x = signal_features(fit, tasks)[:, 1:].reshape(-1, signal_features(fit, tasks).shape[-1])  # (m, F)
    y = fit["done"][:, 1:].reshape(-1).astype(np.float32)
    mean, std = x.mean(0), x.std(0)
    std = np.where(std > 1e-6, std, 1.0)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)).double()
    inputs, targets = torch.from_numpy((x - mean) / std), torch.from_numpy(y).double()
    optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(inputs)[:, 0], targets)
        loss.backward()
        optimizer.step()
    (w1, b1), (w2, b2) = [(layer.weight.detach().numpy(), layer.bias.detach().numpy()) for layer in (net[0], net[2])]
    judge = TrackJudge(tasks, mean, std, w1, b1, w2[0], float(b2[0]), threshold=0.5)
    calibration = take(signals, is_calibration)
    peaks = judge_peaks(judge, calibration)
    judge.threshold = choose_threshold(peaks, calibration["success"], min_recall)
    figures = confusion_by_behaviour(peaks >= judge.threshold, calibration)
    judge.info.update({"fit_episodes": int((~is_calibration).sum()), "calibration_episodes": int(is_calibration.sum()),
                       "final_loss": float(loss.item()), "hidden": hidden, "steps": steps})
    return judge, figures


def train_judge(config: TrainJudgeConfig) -> Path:
    """`wmgym train-judge`: write `config.out` (judge.json); prints the calibration figures."""
    from wmgym.envs.bundle import Bundle

    out = Path(config.out)
    if out.exists() and not config.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    bundle = Bundle.load(config.checkpoint)
    tasks = [t for t in bundle.captions]
    from wmgym.data.dataset import split_episodes

    unknown = [path for path in config.val_split_only if path not in config.data]
    if unknown:
        raise ValueError(f"--val-split-only names stores that are not in --data: {unknown}")
    parts = []
    for path in config.data:
        part = episode_signals(path, config.checkpoint, cache_dir=config.cache_dir)
        parts.append(take(part, split_episodes(len(part["success"]), "val")) if path in config.val_split_only else part)
    signals = join_signals(parts)
    if config.exclude_seeds_of:
        held = np.concatenate([episode_signals(path, config.checkpoint, cache_dir=config.cache_dir)["seed"]
                               for path in config.exclude_seeds_of])
        signals = take(signals, ~np.isin(signals["seed"], held))
    judge, figures = fit_judge(signals, tasks, config.hidden, config.steps, config.learning_rate, config.weight_decay,
                               config.calibration_fraction, config.min_recall, config.seed)
    judge.info.update({"made_with": {"command": "wmgym train-judge", **asdict(config)},
                       "calibration_figures": figures["all"]})
    out.parent.mkdir(parents=True, exist_ok=True)
    judge.save(out)
    all_ = figures["all"]
    print(f"wrote {out}: threshold {judge.threshold:.2f}; calibration episodes {all_['count']}: accuracy "
          f"{all_['accuracy']:.1%}, precision {all_['precision']:.1%}, recall {all_['recall']:.1%}")
    return out
