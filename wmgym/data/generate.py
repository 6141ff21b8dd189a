"""Dataset generation: run the reference simulator over a fixed plan of episodes into a store.

The plan is a pure function of (seed, episode index), so a run can be resumed, extended to
more episodes, or split into chunks and always yields the same episodes in the same order.
Writes go through `EpisodeStore.append` in batches, each batch one atomic commit.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from wmgym.data.store import EpisodeStore
from wmgym.sim.episode import EpisodeRecord, EpisodeSpec

logger = logging.getLogger(__name__)

DEMO_NOISE_LEVELS = (0.0, 0.01, 0.02, 0.04)
PERTURBED_NOISE = 0.02
PROPOSAL_NOISE = 0.01  # ProposalConfig's default: `wmgym plan`'s own proposals
# Episode kinds by letter, for `GenerateConfig.kinds`.
KIND_LETTERS = {"D": "demo", "P": "perturbed", "R": "random", "X": "replay", "G": "proposal", "U": "uniform"}
# The default cycle of 20 kinds, spread evenly: 11 demo (55%), 5 perturbed (25%), 4 random (20%).
DEFAULT_KINDS = "DPDRDPDDRDPDDRDPDRDP"
KIND_CYCLE = tuple(KIND_LETTERS[c] for c in DEFAULT_KINDS)
MIN_RESOLUTION = 16


@dataclass
class GenerateConfig:
    """Simulate folding episodes (scripted, perturbed, random, replayed) and write them to a zarr episode store.

    Each episode keeps every frame's three views (camera, static scene, grippers alone), the
    actions, the grippers' poses and grasp state, the fold score and a caption: the data that
    every `wmgym train-*` command reads. Episode i is a pure function of (seed, i), so a store
    can be resumed or extended and always holds the same episodes."""

    out: str
    """Path of the zarr episode store to write."""
    episodes: int
    """Total number of episodes the store should hold when done."""
    resolution: int = 64
    """Square image size in pixels; `height`/`width` override one side."""
    height: int | None = None
    """Image height in pixels (default: `resolution`)."""
    width: int | None = None
    """Image width in pixels (default: `resolution`)."""
    seed: int = 0
    """Master seed; episode i's seed is derived from (seed, i)."""
    tasks: tuple[str, ...] | None = None
    """Tasks to cycle through, episode i gets tasks[i % len(tasks)]; None = all of `TASKS`."""
    horizon: int = 16
    """Actions per episode T (episodes have T + 1 frames)."""
    workers: int = 0
    """Simulator processes; 0 = os.cpu_count(), 1 = run in this process."""
    batch_episodes: int = 32
    """Episodes per atomic write; an interruption loses at most this many."""
    resume: bool = False
    """Continue an existing store at `out`, skipping its committed episodes."""
    overwrite: bool = False
    """Delete an existing store at `out` and start over."""
    show_progress: bool = True
    """Show a progress bar over episodes and print a throughput line at the end."""
    kinds: str = DEFAULT_KINDS
    """Cycle of episode kinds, one letter each: D demo, P perturbed, R random, X replay (another
    start state's clean demonstration played from this one: motion that mostly misses the
    cloth), G proposal (the clean demonstrator's sequence plus `proposal_noise`, 1 cm, of Gaussian noise a step, as
    `wmgym plan` draws its candidates), U uniform (every action drawn uniformly over the action
    box, as `action_space.sample()` does); episode i gets letter i % len. E.g. "X" for replay
    episodes only."""
    proposal_noise: float = PROPOSAL_NOISE
    """Std (metres) of the G episodes' Gaussian noise on every position delta and width
    (`wmgym plan --position-std/--width-std`); e.g. 0.005 for the 0.5 cm proposals."""


def kind_cycle(kinds: str = DEFAULT_KINDS) -> tuple[str, ...]:
    """Episode kind names of a cycle of letters (see `GenerateConfig.kinds`)."""
    unknown = sorted(set(kinds) - set(KIND_LETTERS))
    if not kinds or unknown:
        raise ValueError(f"kinds must be a non-empty string of the letters {''.join(KIND_LETTERS)} "
                         f"({', '.join(f'{k} {v}' for k, v in KIND_LETTERS.items())}), got {kinds!r}")
    return tuple(KIND_LETTERS[c] for c in kinds)


def _kind_and_noise(i: int, cycle: tuple[str, ...] = KIND_CYCLE, proposal_noise: float = PROPOSAL_NOISE) -> tuple[str, float]:
    kind = cycle[i % len(cycle)]
    if kind == "demo":  # noise cycles over the demos in order: count demos before episode i
        demo_ordinal = (i // len(cycle)) * cycle.count("demo") + cycle[: i % len(cycle)].count("demo")
        return kind, DEMO_NOISE_LEVELS[demo_ordinal % len(DEMO_NOISE_LEVELS)]
    return kind, {"perturbed": PERTURBED_NOISE, "proposal": proposal_noise}.get(kind, 0.0)


def _check_proposal_noise(proposal_noise: float) -> None:
    if not (np.isfinite(proposal_noise) and proposal_noise >= 0):
        raise ValueError(f"proposal_noise must be a finite std >= 0 (metres), got {proposal_noise}")


def episode_seed(seed: int, index: int) -> int:
    """Seed of episode `index`: 32 bits drawn from SeedSequence(seed, spawn_key=(index,))."""
    state = np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1, np.uint32)
    return int(state[0])


def plan_episodes(num_episodes: int, seed: int, tasks, height: int, width: int,
                  horizon: int, kinds: str = DEFAULT_KINDS, proposal_noise: float = PROPOSAL_NOISE) -> list[EpisodeSpec]:
    """The specs of episodes 0..num_episodes-1; episode i does not depend on num_episodes.

    Episode i gets task tasks[i % len(tasks)], seed `episode_seed(seed, i)` and a kind from the
    cycle `kinds` (default: 20 long, 55% "demo" with noise cycling over `DEMO_NOISE_LEVELS`,
    25% "perturbed" with noise 0.02, 20% "random" with noise 0; "replay" has noise 0, "proposal"
    noise `proposal_noise`, default 0.01).
    """
    _check_proposal_noise(proposal_noise)
    tasks, cycle = tuple(tasks), kind_cycle(kinds)
    specs = []
    for i in range(num_episodes):
        kind, noise = _kind_and_noise(i, cycle, proposal_noise)
        specs.append(EpisodeSpec(task=tasks[i % len(tasks)], seed=episode_seed(seed, i),
                                 kind=kind, noise=noise, height=height, width=width,
                                 horizon=horizon))
    return specs


def _check_config(config: GenerateConfig) -> tuple[int, int, tuple[str, ...]]:
    """Validate `config`; return (height, width, tasks)."""
    from wmgym.sim.tasks import TASKS  # lazy: the simulator's task list

    if config.episodes <= 0:
        raise ValueError(f"episodes must be positive, got {config.episodes}")
    height = config.resolution if config.height is None else config.height
    width = config.resolution if config.width is None else config.width
    if min(height, width) < MIN_RESOLUTION:
        raise ValueError(f"resolution must be at least {MIN_RESOLUTION} pixels, got "
                         f"height={height}, width={width}")
    tasks = tuple(TASKS) if config.tasks is None else tuple(config.tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown task(s) {unknown or tasks!r}; valid tasks are {tuple(TASKS)}")
    if config.horizon < 1 or config.batch_episodes < 1 or config.workers < 0:
        raise ValueError(f"need horizon >= 1, batch_episodes >= 1, workers >= 0, got "
                         f"{config.horizon}, {config.batch_episodes}, {config.workers}")
    kind_cycle(config.kinds)
    _check_proposal_noise(config.proposal_noise)  # before the store is created
    if config.resume and config.overwrite:
        raise ValueError("pass at most one of resume and overwrite")
    if Path(config.out).exists() and not (config.resume or config.overwrite):
        raise FileExistsError(f"{config.out} already exists; pass --resume to continue it or "
                              "--overwrite to replace it")
    return height, width, tasks


def _open_store(config: GenerateConfig, height: int, width: int,
                tasks: tuple[str, ...]) -> EpisodeStore:
    plan = {"seed": config.seed, "horizon": config.horizon, "kinds": config.kinds, "proposal_noise": config.proposal_noise}
    if not (config.resume and Path(config.out).exists()):
        return EpisodeStore.create(config.out, height, width, tasks,
                                   overwrite=config.overwrite, attrs={"generation": plan})
    store = EpisodeStore.open(config.out, mode="a")
    try:
        _check_resume(config, store, height, width, tasks, plan)
    except BaseException:
        store.close()
        raise
    return store


def _check_resume(config: GenerateConfig, store: EpisodeStore, height: int, width: int,
                  tasks: tuple[str, ...], plan: dict) -> None:
    found = {"height": store.height, "width": store.width, "tasks": store.tasks,
             "kinds": DEFAULT_KINDS,  # stores made before kinds existed used the default cycle
             "proposal_noise": PROPOSAL_NOISE,  # and before proposal_noise, the default
             **store.attrs.get("generation", {})}
    wanted = {"height": height, "width": width, "tasks": tasks, **plan}
    differ = [f"{k}: store has {found[k]!r}, asked for {wanted[k]!r}"
              for k in wanted if k in found and found[k] != wanted[k]]
    if differ:
        raise ValueError(f"cannot resume {config.out} with different settings ("
                         + "; ".join(differ) + "); use --overwrite or a new path")


def _run_all(specs: list[EpisodeSpec], run_episode: Callable, workers: int) -> Iterator:
    """Records in plan order, from a spawn-context pool when workers > 1."""
    if workers <= 1 or len(specs) <= 1:
        yield from map(run_episode, specs)
        return
    # spawn: the parent holds zarr's I/O thread, and forking a threaded process is unsafe
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(workers, len(specs))) as pool:
        yield from pool.imap(run_episode, specs, chunksize=4)


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def generate(config: GenerateConfig,
             run_episode: Callable[[EpisodeSpec], EpisodeRecord] | None = None) -> str:
    """Fill the store at `config.out` with `config.episodes` planned episodes; return its path.

    `run_episode` defaults to `wmgym.sim.episode.run_episode`; with several workers it must be
    picklable (a module-level function). Already committed episodes are skipped on resume.
    The store's writer lock is held from before anything is deleted (`--overwrite`) to the end:
    a second writer of the same store refuses with WriterLockError, naming this one.
    """
    height, width, tasks = _check_config(config)
    if run_episode is None:
        from wmgym.sim.episode import run_episode
    with _open_store(config, height, width, tasks) as store:
        return _fill(config, store, run_episode, height, width, tasks)


def _fill(config: GenerateConfig, store: EpisodeStore, run_episode: Callable, height: int, width: int,
          tasks: tuple[str, ...]) -> str:
    """Append the planned episodes the open `store` lacks."""
    done = store.num_episodes
    if done >= config.episodes:
        logger.info("%s already holds %d episodes (asked for %d); nothing to do",
                    config.out, done, config.episodes)
        return str(config.out)
    specs = plan_episodes(config.episodes, config.seed, tasks, height, width,
                          config.horizon, config.kinds, config.proposal_noise)[done:]
    workers = config.workers or os.cpu_count() or 1
    frames, write_seconds, start = 0, 0.0, time.perf_counter()
    with tqdm(total=config.episodes, initial=done, unit="episode", desc="generate",
              disable=not config.show_progress) as bar:
        for batch in _batches(_run_all(specs, run_episode, workers), config.batch_episodes):
            planned = specs[store.num_episodes - done:][: len(batch)]
            for spec, record in zip(planned, batch):
                if record.spec != spec:
                    raise ValueError(f"run_episode returned a record for {record.spec}, "
                                     f"expected {spec}")
            tick = time.perf_counter()
            store.append(batch)
            write_seconds += time.perf_counter() - tick
            frames += sum(r.num_frames for r in batch)
            bar.update(len(batch))
    seconds = time.perf_counter() - start
    message = (f"generated {config.episodes - done} episodes ({frames} frames) in "
               f"{seconds:.1f} s: {frames / seconds:.1f} frames/s overall, writer "
               f"{frames / max(write_seconds, 1e-9):.0f} frames/s; store {config.out} holds "
               f"{store.num_episodes} episodes")
    logger.info(message)
    if config.show_progress:
        print(message)
    return str(config.out)
