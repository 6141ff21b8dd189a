"""`wmgym imagine`: a store whose camera frames the world model drew.

Every episode of a `wmgym generate` store is rolled out by a bundle's world model from its
first frame with its own actions, and written to a new store of the same layout in which only
`camera0_rgb` differs: actions, scores, success, captions, the other views and the grasp
state (`robot{0,1}_held_particles`, where the source has it) stay the simulator's. Such a store trains and calibrates models that must read *imagined* frames — the
success judge and VideoCLIP reward of WMFold-v0 see nothing else — against the simulator's
ground truth. A world model conditioned on the grippers view is given the store's own
grippers view of every frame (`grippers_rgb`). A world model conditioned on the grasp state is
given the simulator's (`held="store"`) or draws it from its grasp prior as WMFold-v0 does
(`held="prior"`: the frames a judge reads in the env, where a grasp the simulator missed can be
drawn held). Resumable: episodes already written are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

if TYPE_CHECKING:  # torch is imported inside the functions: the CLI imports this module
    import torch


@dataclass
class ImagineConfig:
    """Re-draw a store's camera frames with a world model, keeping its actions, scores and other views.

    The imagined store trains and calibrates models that must read generated frames (VideoCLIP,
    the success judge, `wmgym train-lpips`) against the simulator's ground truth."""

    data: str
    """Source store (`wmgym generate`)."""
    out: str
    """Store to write."""
    checkpoint: str = "default"
    """WMFold-v0 bundle whose world model draws the frames."""
    num_steps: int | None = None
    """Sampler steps (None: the bundle's default)."""
    batch_size: int = 64
    """Episodes per batched rollout."""
    max_episodes: int | None = None
    """Only the first N episodes of the source."""
    seed: int = 0
    """Batch i's sampling noise (and grasp draws) come from generators seeded (seed, i)."""
    held: str = "store"
    """Grasp state of a held-conditioned world model: "store" (the simulator's, where the source
    records it; else the grasp prior's probabilities) or "prior" (each closing drawn held or
    missed with the grasp prior's probability, as WMFold-v0 draws it). Ignored for other models."""
    resume: bool = False
    """Continue an interrupted run (keeps the episodes already written)."""
    overwrite: bool = False
    """Replace an existing output store."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda'."""


def imagine_store(config: ImagineConfig) -> Path:
    """Write `config.out`; returns its path."""
    from wmgym.data.store import EpisodeStore
    from wmgym.envs.bundle import Bundle
    from wmgym.model.world_model import WorldModel
    from wmgym.conditioning import takes_grippers_view

    if config.batch_size < 1 or (config.max_episodes is not None and config.max_episodes < 1):
        raise ValueError(f"need batch_size >= 1 and max_episodes >= 1 (or None), got {config.batch_size}, {config.max_episodes}")
    if config.held not in ("store", "prior"):
        raise ValueError(f"held must be 'store' or 'prior', got {config.held!r}")
    if Path(config.out).resolve() == Path(config.data).resolve():
        raise ValueError(f"the output store must differ from the source store {config.data}")
    source = EpisodeStore.open(config.data)
    bundle = Bundle.load(config.checkpoint)
    model = WorldModel.from_pretrained(bundle.world_model_dir, device=config.device).eval()
    takes_grippers_view(model)  # ValueError for views a store cannot give
    if (source.height, source.width) != (model.config.height, model.config.width):
        raise ValueError(f"{config.data} holds {source.height}x{source.width} frames; the world model makes "
                         f"{model.config.height}x{model.config.width}")
    total = source.num_episodes if config.max_episodes is None else min(config.max_episodes, source.num_episodes)
    out_path = Path(config.out)
    if config.resume and out_path.exists():
        out = EpisodeStore.open(out_path, mode="a")
    else:
        attrs = {"imagined_by": {"bundle": str(bundle.directory), "source": str(config.data), "num_steps": config.num_steps,
                                 "seed": config.seed, "held": config.held}}
        out = EpisodeStore.create(out_path, source.height, source.width, source.tasks, overwrite=config.overwrite, attrs=attrs,
                                  has_held_particles=source.has_held_particles)
    with out:  # holds the output's writer lock until the last batch is committed
        _draw(config, source, out, model, total)
    return out_path


def _draw(config: ImagineConfig, source, out, model, total: int) -> None:
    """Append the imagined episodes `out` lacks, in batches of `config.batch_size`."""
    import torch

    from wmgym.conditioning import conditions_of_records

    done = out.num_episodes
    with tqdm(total=total, initial=done, desc="imagine") as progress:
        for batch, first in enumerate(range(0, total, config.batch_size)):
            indices = range(first, min(first + config.batch_size, total))
            if indices.stop <= done:
                continue
            records = [source.read_record(i) for i in indices]
            context = np.stack([r.camera[:1] for r in records])  # (b, 1, H, W, 3)
            actions = np.stack([r.actions for r in records])  # (b, T, 20)
            batch_seed = config.seed * 1_000_003 + batch
            # The store's grippers view and poses of every frame, and the grasp state: the store's
            # or drawn from the model's prior (Conditions (b, T+1); empty for an unconditioned model).
            conditions = conditions_of_records(model, records, "sample" if config.held == "prior" else "store",
                                               torch.Generator().manual_seed(batch_seed))
            generator = torch.Generator(device=model.device).manual_seed(batch_seed)
            with torch.no_grad():
                frames = model.rollout(context, actions, generator=generator, num_steps=config.num_steps,
                                       conditions=conditions).cpu().numpy()
            imagined = [replace(r, camera=np.concatenate([r.camera[:1], f])) for r, f in zip(records, frames)]
            out.append(imagined[max(0, done - first):])
            progress.update(len(indices) - max(0, done - first))
