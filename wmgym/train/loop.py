"""The step loop shared by `wmgym train-idm` and `wmgym train-lam`: epochs in the seeded order
of an `EpochPermutationSampler`, resume mid-epoch (`skip_first_batches`), the learning-rate
schedule, running means in log.jsonl, validations, checkpoints, and the stop conditions
(`steps`, `stop_after`, `stop_after_minutes`)."""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from wmgym.train.checkpoint import optimizer_state, warmup_cosine_learning_rate, write_run_directory


def train_steps(config, accelerator, model, optimizer, loader, sampler, out, step: int, elapsed: float, log: list[dict],
                train_step: Callable, validate: Callable | None, desc: str) -> None:
    """Run optimizer steps from `step` until `config.steps` (or a stop setting), then write the
    run directory `out` (final when `config.steps` is reached, else with the optimizer state).

    train_step(batch, step) -> {name: float or array}: one step's forward, backward and optimizer
    step (the learning rate is already set); its values are averaged into log.jsonl every
    `config.log_every` steps. validate() -> (log entry, message) on the main process every
    `config.validate_every` steps and at the last. `log` is extended in place."""
    raw_model = accelerator.unwrap_model(model)
    batches_per_epoch = len(loader)

    def save(final: bool) -> None:
        if accelerator.is_main_process:
            tensors, meta = optimizer_state(optimizer)
            write_run_directory(out, raw_model.write_files, config, log,
                                None if final else (tensors, {"step": step, "seconds": elapsed, **meta}))

    limit = math.inf if config.stop_after_minutes is None else 60.0 * config.stop_after_minutes
    run_start = time.perf_counter()
    start_time = run_start - elapsed
    bar = tqdm(total=config.steps, initial=step, desc=desc, disable=not (config.show_progress and accelerator.is_main_process))
    model.train()
    sums, count = {}, 0
    stop = min(config.steps, config.stop_after or config.steps)
    while step < stop:
        epoch, done_in_epoch = divmod(step, batches_per_epoch)
        sampler.set_epoch(epoch)
        loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, done_in_epoch) if done_in_epoch else loader
        for batch in batches:
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine_learning_rate(step, config)
            values = train_step(batch, step)
            step += 1
            bar.update(1)
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + np.asarray(value, np.float64)
            count += 1
            elapsed = time.perf_counter() - start_time
            is_last = step >= stop or time.perf_counter() - run_start >= limit
            if step % config.log_every == 0 or is_last:
                means = {key: (value / count).round(5).tolist() if np.ndim(value) else float(value / count) for key, value in sums.items()}
                log.append({"step": step, "epoch": epoch, **means, "lr": warmup_cosine_learning_rate(step - 1, config),
                            "seconds": round(elapsed, 1)})
                bar.set_postfix({key: f"{value:.4g}" for key, value in means.items() if not np.ndim(value)})
                sums, count = {}, 0
            if validate is not None and accelerator.is_main_process and (step % config.validate_every == 0 or is_last):
                entry, message = validate(step)
                log.append(entry)
                bar.write(f"step {step}: {message}")
            if is_last:
                break
            if step % config.checkpoint_every == 0:
                save(final=False)
        if step >= stop or time.perf_counter() - run_start >= limit:
            break
    bar.close()
    save(final=step >= config.steps)
    accelerator.end_training()
