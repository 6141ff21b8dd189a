"""`wmgym train-lpips`: calibrate LPIPS on the simulator, a goal-image distance trained here.

Real LPIPS is an ImageNet trunk whose unit-normalised activations are compared and weighted
per channel by linear heads fitted to human judgements of image similarity. wmgym cannot
download that trunk, and the seeded random trunk it falls back to is a weak judge of cloth (its
agreement with the fold score beside the calibrated one's: docs/results.md, "Calibrated
LPIPS"). This trains the same architecture (lpips.LPIPS: trunk, linear
heads, distance) on the reference simulator's judgement instead of people's:

    LPIPS(frame, goal image)  ~  1 - fold score(frame's cloth, goal cloth)

where the fold score (`wmgym.sim.tasks.fold_score`) is the normalised mean particle distance
to the goal configuration that the goal image renders, stored per frame in every episode
store (`data/score`). So the distance a planner ranks candidates by is the simulator's own
distance-to-goal, read from pixels. Imagined stores (`wmgym imagine`) pair the world model's
frames with the score of the simulated frame they imitate, so a metric trained on them also
learns to read the softer frames it will judge.

Data: every frame of the stores' train splits (`split_episodes`, split seed 0), paired with its
episode's goal image. A batch draws `final_share` of its samples among episodes' last frames
(where a planner compares candidates) and the rest among all frames. With `flip`, half the
pairs are mirrored left-right, frame and goal together (the distance is mirror-invariant).
Randomness is a pure function of (seed, step) (the batch, the flips, the linear heads'
dropout), so a run stopped and resumed ends with the same weights.
Loss: mean squared error of the distance to 1 - score, plus `ranking_weight` times a logistic
loss on every pair of the batch whose scores differ by more than 0.02 (is the closer one
scored closer?), with temperature `ranking_temperature`. The linear heads are clamped
non-negative after every step, as LPIPS' own training does, so the distance stays >= 0.

Validation (logged to log.jsonl per store, named by its file stem), on the val split's last
frames: ROC AUC of -distance for the episode's success, and Spearman of -distance with the
score over all val frames.

Output directory (replaced atomically at every checkpoint): config.json + model.safetensors
(`LPIPSHead(calibrated=out)`), train_config.json, log.jsonl, and until the end
training_state.safetensors/.json (`--resume` continues).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from wmgym.train.checkpoint import (STATE_FILE, optimizer_state, run_lock, start_run, training_progress,
                                    warmup_cosine_learning_rate as learning_rate, write_run_directory)

RANKING_MARGIN = 0.02  # pairs whose scores differ by less are not ranked


@dataclass
class TrainLPIPSConfig:
    """Train LPIPS on the simulator's fold score, so its distance to the goal image ranks frames as the simulator does.

    The result is the bundle's "lpips-calibrated" reward (`wmgym bundle --lpips`), which `wmgym
    plan` scores candidates with. Resumable (`--resume`)."""

    data: str
    """Path of a zarr episode store (simulated, or imagined by `wmgym imagine`)."""
    out: str
    """Model directory to write (replaced atomically at every checkpoint)."""
    extra_data: tuple[str, ...] = ()
    """More stores, trained on together with `data` (each split the same way)."""
    net: Literal["alex", "vgg", "squeeze"] = "alex"
    """LPIPS trunk architecture (trained from the seeded random initialisation of the offline fallback)."""
    steps: int = 2500
    """Optimizer steps in total (the shipped model's)."""
    stop_after_minutes: float | None = None
    """Stop (with a checkpoint) after this many minutes of wall time; `--resume` continues."""
    batch_size: int = 128
    """(frame, goal) pairs per step."""
    learning_rate: float = 3e-4
    """Adam peak learning rate (linear warm-up, then cosine decay to a tenth at `steps`)."""
    warmup_steps: int = 100
    """Steps of linear learning-rate warm-up."""
    final_share: float = 0.5
    """Share of each batch drawn among episodes' last frames (the rest among all frames)."""
    ranking_weight: float = 1.0
    """Weight of the pairwise ranking loss (0: regression alone)."""
    ranking_temperature: float = 0.05
    """Distance difference at which the ranking loss' logistic is e times more confident."""
    flip: bool = True
    """Mirror half the pairs left-right (frame and goal together)."""
    seed: int = 0
    """Seed of the data order and the flips (the trunk starts from the offline fallback's seed)."""
    val_fraction: float = 0.1
    """Fraction of each store's episodes held out (`split_episodes`, split seed 0)."""
    validate_every: int = 500
    """Steps between validations."""
    checkpoint_every: int = 500
    """Steps between checkpoints (one is always written at the end)."""
    log_every: int = 50
    """Steps between training-loss lines of log.jsonl."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """'auto': CUDA when available."""
    num_threads: int | None = None
    """torch CPU threads (None = torch's default)."""
    resume: bool = False
    """Continue the unfinished run at `out` (optimizer state included); refused when a setting
    differs from its train_config.json (see --allow-config-change)."""
    overwrite: bool = False
    """Replace an existing run (or model directory) at `out` with a fresh run; anything else at `out` is refused."""
    allow_config_change: bool = False
    """Let --resume continue with settings that differ from the run's saved configuration
    (data, seed, batch size, learning rate, ...: each change is listed in a warning). Without
    it such a resume is refused. Always free to change on resume: steps, stop_after,
    stop_after_minutes, device, num_threads, show_progress, checkpoint_every, log_every."""
    show_progress: bool = True
    """Show a tqdm progress bar."""


class ScoredFrames:
    """The frames of some episodes of one store, in memory, with their goal-distance targets.

    Attributes: `frames` uint8 (N, H, W, 3), `goals` uint8 (E, H, W, 3), `episode` int64 (N,)
    row -> index into `goals`, `target` float32 (N,) = 1 - score, `finals` int64 (E,) rows of
    the episodes' last frames, `success` bool (E,), `name` the store's file stem.
    """

    def __init__(self, path: str, split: str, val_fraction: float):
        from wmgym.data.dataset import split_episodes
        from wmgym.data.store import EpisodeStore
        from wmgym.data.store_layout import CAMERA_KEY

        store = EpisodeStore.open(path)
        if store.num_episodes == 0:
            raise ValueError(f"episode store {path} holds no episodes")
        self.name = Path(path).name.removesuffix(".zarr")
        indices = split_episodes(store.num_episodes, split, val_fraction)
        rows, lengths = store.read_frames(indices, [CAMERA_KEY, "score"])
        self.frames = rows[CAMERA_KEY]
        self.target = (1.0 - rows["score"]).astype(np.float32)
        self.episode = np.repeat(np.arange(len(indices)), lengths)
        self.finals = np.cumsum(lengths) - 1
        self.goals = store.read_meta("goal_rgb", indices)
        self.success = store.read_meta("episode_success", indices).astype(bool)
        self.height, self.width = store.height, store.width

    def __len__(self) -> int:
        return len(self.frames)


def lpips_distance(model, frames, goals):
    """LPIPS distance (b,) of uint8 frames (b, H, W, 3) to uint8 goals (b, H, W, 3), both on the model's device."""
    from wmgym.rewards.base import to_unit_float

    return model(to_unit_float(frames), to_unit_float(goals)).reshape(len(frames))


def ranking_loss(distance, target, temperature: float):
    """Logistic loss over all pairs (i, j) with target_i + RANKING_MARGIN < target_j: -log sigmoid((d_j - d_i) / T); 0 without pairs."""
    import torch.nn.functional as F

    farther = target[None, :] > target[:, None] + RANKING_MARGIN  # (b, b): j farther from the goal than i
    if not bool(farther.any()):
        return distance.sum() * 0.0  # keeps the graph (and the device) of `distance`
    gap = (distance[None, :] - distance[:, None]) / temperature  # (b, b)
    return F.softplus(-gap)[farther].mean()


def train_lpips(config: TrainLPIPSConfig) -> Path:
    """Train (or resume) a simulator-calibrated LPIPS; writes and returns the model directory `config.out`.
    Holds the writer lock of `config.out` throughout, so a second run on it refuses."""
    _check_config(config)
    with run_lock(config.out):
        return _train_locked(config)


def _train_locked(config: TrainLPIPSConfig) -> Path:
    import torch
    import torch.nn.functional as F

    from wmgym.model.world_model import resolve_device
    from wmgym.rewards.lpips_head import MIN_FRAME_SIZE, build_lpips, load_calibrated, save_calibrated

    out = start_run(config)
    device = resolve_device(config.device)
    paths = (config.data, *config.extra_data)
    train = [ScoredFrames(p, "train", config.val_fraction) for p in tqdm(paths, desc="reading stores", disable=not config.show_progress)]
    val = [ScoredFrames(p, "val", config.val_fraction) for p in paths] if config.val_fraction > 0 else []
    sizes = {(part.height, part.width) for part in train}
    if len(sizes) != 1:
        raise ValueError(f"the stores hold frames of different sizes {sorted(sizes)}; train on one size")
    if (size := min(next(iter(sizes)))) < (minimum := MIN_FRAME_SIZE[config.net]):
        raise ValueError(f"LPIPS-{config.net} needs frames of at least {minimum} pixels a side, the stores hold {size}")
    # one flat index over the stores: (store, row) for all frames, and for the last frames
    all_rows = np.concatenate([np.stack([np.full(len(p), k), np.arange(len(p))], 1) for k, p in enumerate(train)])
    final_rows = np.concatenate([np.stack([np.full(len(p.finals), k), p.finals], 1) for k, p in enumerate(train)])

    resumed = config.resume and (out / STATE_FILE).is_file()
    model = (load_calibrated(out)[0] if resumed else build_lpips(config.net)).to(device).requires_grad_(True).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    step, elapsed, log, _, _ = training_progress(out, optimizer, resumed)
    info = {"calibrated_on": "1 - fold score (wmgym.sim.tasks.fold_score) of the frame's cloth to the goal image's",
            "stores": [str(p) for p in paths], "height": train[0].height, "width": train[0].width}

    def save(final: bool) -> None:
        tensors, meta = optimizer_state(optimizer)
        write_run_directory(out, lambda directory: save_calibrated(model, config.net, directory, {**info, "steps": step}), config,
                            log, None if final else (tensors, {"step": step, "seconds": elapsed, **meta}))

    def batch(rng: np.random.Generator):
        n_final = int(round(config.final_share * config.batch_size))
        picks = np.concatenate([final_rows[rng.integers(len(final_rows), size=n_final)],
                                all_rows[rng.integers(len(all_rows), size=config.batch_size - n_final)]])
        frames = np.stack([train[k].frames[r] for k, r in picks])  # (b, H, W, 3)
        goals = np.stack([train[k].goals[train[k].episode[r]] for k, r in picks])
        target = np.array([train[k].target[r] for k, r in picks], np.float32)
        if config.flip:
            mirror = rng.random(len(picks)) < 0.5
            frames[mirror], goals[mirror] = frames[mirror, :, ::-1], goals[mirror, :, ::-1]
        as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)
        return as_tensor(frames), as_tensor(goals), as_tensor(target)

    limit = math.inf if config.stop_after_minutes is None else 60.0 * config.stop_after_minutes
    run_start = time.perf_counter()
    start_time = run_start - elapsed
    bar = tqdm(total=config.steps, initial=step, desc="train-lpips", disable=not config.show_progress)
    running = {"loss": 0.0, "mse": 0.0, "ranking": 0.0}
    count = 0
    while step < config.steps:
        frames, goals, target = batch(np.random.default_rng([config.seed, step]))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        # the linear heads' dropout draws from torch's RNG: seeded per step, so a resumed run repeats it
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(np.random.SeedSequence([config.seed, step]).generate_state(1)[0]))
            distance = lpips_distance(model, frames, goals)
        mse = F.mse_loss(distance, target)
        ranking = ranking_loss(distance, target, config.ranking_temperature)
        loss = mse + config.ranking_weight * ranking
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # LPIPS' linear heads weigh squared feature differences: keep them >= 0
            for lin in model.lins:
                lin.model[-1].weight.clamp_(min=0)
        step += 1
        bar.update(1)
        for key, value in (("loss", loss), ("mse", mse), ("ranking", ranking)):
            running[key] += float(value.detach())
        count += 1
        elapsed = time.perf_counter() - start_time
        is_last = step >= config.steps or time.perf_counter() - run_start >= limit
        if step % config.log_every == 0 or is_last:
            log.append({"step": step, **{k: v / count for k, v in running.items()}, "lr": learning_rate(step - 1, config),
                        "seconds": round(elapsed, 1)})
            bar.set_postfix(loss=f"{running['loss'] / count:.4f}")
            running, count = dict.fromkeys(running, 0.0), 0
        if val and (step % config.validate_every == 0 or is_last):
            entry = {"step": step, **validate(model, val, device)}
            model.train()
            log.append(entry)
            bar.write(f"step {step}: " + ", ".join(f"{k.removeprefix('val/')} {v:.3f}" for k, v in entry.items()
                                                   if k != "step" and v is not None))
        if is_last:
            break
        if step % config.checkpoint_every == 0:
            save(final=False)
    bar.close()
    save(final=step >= config.steps)
    return out


def frame_distances(model, part: ScoredFrames, device, batch_size: int = 256) -> np.ndarray:
    """float (N,): the model's distance of every frame of `part` to its episode's goal (eval mode, no grad)."""
    import torch

    model.eval()
    with torch.no_grad():
        return np.concatenate([
            lpips_distance(model, torch.from_numpy(part.frames[i: i + batch_size]).to(device),
                           torch.from_numpy(part.goals[part.episode[i: i + batch_size]]).to(device)).float().cpu().numpy()
            for i in range(0, len(part), batch_size)])


def distance_metrics(part: ScoredFrames, distance: np.ndarray) -> dict:
    """`val/<name>/auc_final` (ROC AUC of -distance for success, last frames) and
    `val/<name>/spearman` (of -distance with the score, all frames); None where undefined."""
    from scipy.stats import spearmanr

    from wmgym.eval.ranking import roc_auc

    metrics = {f"val/{part.name}/auc_final": roc_auc(-distance[part.finals], part.success),
               f"val/{part.name}/spearman": float(spearmanr(-distance, 1.0 - part.target)[0])}
    return {k: (None if math.isnan(v) else v) for k, v in metrics.items()}


def validate(model, parts: list[ScoredFrames], device) -> dict:
    """`distance_metrics` of every store in `parts`."""
    return {k: v for part in parts for k, v in distance_metrics(part, frame_distances(model, part, device)).items()}


def _check_config(config: TrainLPIPSConfig) -> None:
    for name in ("steps", "batch_size", "validate_every", "checkpoint_every", "log_every"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.batch_size < 2 and config.ranking_weight > 0:
        raise ValueError("the ranking loss compares pairs within a batch: batch_size must be at least 2")
    if config.learning_rate <= 0 or config.warmup_steps < 0:
        raise ValueError(f"need learning_rate > 0 and warmup_steps >= 0, got {config.learning_rate} and {config.warmup_steps}")
    if not 0.0 <= config.final_share <= 1.0:
        raise ValueError(f"final_share must be in [0, 1], got {config.final_share}")
    if config.ranking_weight < 0 or config.ranking_temperature <= 0:
        raise ValueError(f"need ranking_weight >= 0 and ranking_temperature > 0, got {config.ranking_weight} and {config.ranking_temperature}")
    if not 0.0 <= config.val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {config.val_fraction}")
    if config.stop_after_minutes is not None and config.stop_after_minutes <= 0:
        raise ValueError(f"stop_after_minutes must be positive, got {config.stop_after_minutes}")
    for path in (config.data, *config.extra_data):
        if not Path(path).exists():
            raise FileNotFoundError(f"no episode store at {path}")
