"""Checkpoint plumbing shared by the training loops: atomic writes, run directories with
optimizer state as safetensors + JSON (no pickle anywhere: docs/design.md, "Checkpoints"),
and their learning-rate schedule; what a resume checks (issue 36): the log read back
tolerating a damaged last line, and the configuration compared with the one the run was
started with."""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from wmgym.model.model_files import MODEL_DIRECTORY
from wmgym.outputs import check_output, recover_directory, replace_directory, temporary_directory_beside
from wmgym.writer_lock import WriterLock

STATE_FILE, STATE_META = "training_state.safetensors", "training_state.json"
RUN_DIRECTORY = "run directory"  # what the writer lock of a training run's `out` is called in messages

RESUME_MAY_CHANGE = frozenset({
    "out", "resume", "overwrite", "allow_config_change",  # how this invocation treats `out`
    "steps", "stop_after", "stop_after_minutes",  # the budget: a resume usually extends or time-boxes it
    "num_threads", "device", "num_workers", "show_progress", "tensorboard",  # where and how it runs
    "checkpoint_every", "keep_checkpoints", "log_every",  # how often it saves and logs
})
"""train_config.json keys a `--resume` may change freely; any other difference (data, seed,
batch size, learning rate, architecture...) is refused without `--allow-config-change`."""


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def section(tensors: dict, prefix: str) -> dict:
    """The entries of `tensors` under `prefix`, with the prefix removed."""
    return {key.removeprefix(prefix): value for key, value in tensors.items() if key.startswith(prefix)}


def flatten_optimizer(state_dict: dict) -> tuple[dict, dict]:
    """torch optimizer state -> (tensors keyed "<param>/<name>", JSON-able rest)."""
    import torch

    tensors, scalars = {}, {}
    for index, entry in state_dict["state"].items():
        scalars[str(index)] = {k: v for k, v in entry.items() if not torch.is_tensor(v)}
        tensors.update({f"{index}/{k}": v.detach().cpu().contiguous() for k, v in entry.items() if torch.is_tensor(v)})
    return tensors, {"state": scalars, "param_groups": state_dict["param_groups"]}


def unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    """The inverse of `flatten_optimizer` (JSON turns AdamW's betas into a list; made a tuple again)."""
    state = {int(index): dict(entry) for index, entry in meta["state"].items()}
    for key, value in tensors.items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in group.items()} for group in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def warmup_cosine_learning_rate(step: int, config) -> float:
    """Linear warm-up to `config.learning_rate` over `config.warmup_steps`, then cosine decay to
    a tenth of it at `config.steps` (the schedule of train-idm, train-videoclip, train-lpips)."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    return config.learning_rate * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def write_run_directory(out: Path, write_model: Callable[[Path], None], config, log: list[dict],
                        state: tuple[dict, dict] | None, extra_files: dict[str, dict] | None = None) -> None:
    """Replace the run directory `out` atomically: the model (`write_model(directory)`),
    train_config.json (`config`, a dataclass), log.jsonl, `extra_files` (name -> JSON), and,
    unless the run is finished (`state` None), the training state: (tensors saved as
    `STATE_FILE`, JSON-able dict saved as `STATE_META`)."""
    from safetensors.torch import save_file

    tmp = temporary_directory_beside(out, RUN_DIRECTORY)
    write_model(tmp)
    (tmp / "train_config.json").write_text(json.dumps(asdict(config), indent=2))
    (tmp / "log.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in log))
    for name, content in (extra_files or {}).items():
        (tmp / name).write_text(json.dumps(content, indent=2))
    if state is not None:
        tensors, meta = state
        save_file(tensors, tmp / STATE_FILE)
        (tmp / STATE_META).write_text(json.dumps(meta))
    replace_directory(tmp, out)


def optimizer_state(optimizer) -> tuple[dict, dict]:
    """(tensors under "optimizer/", {"optimizer": JSON-able rest}): the optimizer's part of a training state."""
    tensors, meta = flatten_optimizer(optimizer.state_dict())
    return {f"optimizer/{k}": v for k, v in tensors.items()}, {"optimizer": meta}


def training_progress(out: Path, optimizer, resumed: bool) -> tuple[int, float, list[dict], dict, dict]:
    """(step, seconds, log, meta, tensors) where a run stands: a fresh run's zeros, or a resumed
    run's training state at `out` loaded into `optimizer` (`load_training_state`)."""
    if not resumed:
        return 0, 0.0, [], {}, {}
    meta, tensors, log = load_training_state(out, optimizer)
    return meta["step"], meta["seconds"], log, meta, tensors


def load_training_state(out: Path, optimizer) -> tuple[dict, dict, list[dict]]:
    """Read `write_run_directory`'s training state at `out` into `optimizer`; returns (meta,
    tensors, log), the log cut at the checkpoint's step (lines past it are redone)."""
    from safetensors.torch import load_file

    meta = read_json(out / STATE_META)
    try:
        tensors = load_file(out / STATE_FILE)
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise ValueError(f"cannot resume {out}: {out / STATE_FILE} is not a readable safetensors file ({error})") from None
    optimizer.load_state_dict(unflatten_optimizer(section(tensors, "optimizer/"), meta["optimizer"]))
    log = read_log(out / "log.jsonl") if (out / "log.jsonl").is_file() else []
    return meta, tensors, [entry for entry in log if entry["step"] <= meta["step"]]


def read_json(path: Path):
    """A JSON file's content; ValueError naming the file when it is not valid JSON."""
    try:
        return json.loads(path.read_bytes())
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path} is not valid JSON ({error})") from None


def read_log(path: Path) -> list[dict]:
    """The entries of a log.jsonl (one JSON object with an integer "step" a line).

    A damaged last line (a run killed while writing it) is dropped with a warning; a damaged
    line anywhere else is a ValueError naming the file and the line."""
    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    last = max((number for number, line in enumerate(lines) if line.strip()), default=-1)
    entries = []
    for number, line in enumerate(lines[: last + 1]):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
                raise ValueError("not an object with an integer 'step'")
        except ValueError as error:
            if number == last:
                warnings.warn(f"{path}: dropping its damaged last line {number + 1} ({error}); the run was "
                              "probably stopped while writing it", stacklevel=2)
                break
            raise ValueError(f"{path}, line {number + 1}: not a log entry ({error}); repair or delete that line") from None
        entries.append(entry)
    return entries


def check_resume_config(saved: dict, source: Path, config, allow_change: bool) -> None:
    """Refuse to resume with a configuration that differs from `saved` (the run's, read from
    `source`) in a key outside `RESUME_MAY_CHANGE`, listing each such key with its old and new
    value; with `allow_change` warn instead. Keys only one side knows (a run made by another
    version of wmgym) are not compared."""
    new = json.loads(json.dumps(asdict(config)))
    changed = {key: (saved[key], value) for key, value in new.items()
               if key in saved and key not in RESUME_MAY_CHANGE and not _same_setting(key, saved[key], value)}
    if not changed:
        return
    listed = ", ".join(f"{key} {old!r} -> {value!r}" for key, (old, value) in changed.items())
    if not allow_change:
        raise ValueError(f"cannot resume {config.out}: its configuration ({source}) differs in {listed}; resume with "
                         "the saved values, or pass --allow-config-change to continue with the new ones")
    warnings.warn(f"resuming {config.out} with a changed configuration (--allow-config-change): {listed}; "
                  f"{source} records the new one", stacklevel=2)


def _same_setting(key: str, old, new) -> bool:
    """Equal values; for the path settings (stores, a model to start from), the same files
    however written (relative or absolute)."""
    if old == new:
        return True
    as_list = lambda value: value if isinstance(value, list) else [value]
    if key not in ("data", "extra_data", "init_from", "codec") or not all(isinstance(v, str) for v in as_list(old) + as_list(new)):
        return False
    return [Path(v).resolve() for v in as_list(old)] == [Path(v).resolve() for v in as_list(new)]


def start_run(config) -> Path:
    """The first steps of every resumable `wmgym train-*` (idm, videoclip, lpips), given its config
    (`out`, `resume`, `overwrite`, `allow_config_change`, `num_threads`); call it holding the
    run's writer lock (`run_lock`). Restores a directory a crash left aside, refuses to replace
    anything but a run (a model directory) and a run unless told, refuses to resume a finished
    one (it has no `STATE_FILE`) or with a changed configuration (`check_resume_config`), and
    sets torch's CPU threads. Returns `Path(config.out)`."""
    out = Path(config.out)
    if config.resume:
        recover_directory(out)
    exists = check_output(out, MODEL_DIRECTORY, config.resume or config.overwrite,
                          hint="pass --resume to continue it or --overwrite to replace it")
    if config.resume and exists and not (out / STATE_FILE).is_file():
        raise ValueError(f"{out} holds a finished run (no {STATE_FILE}); pass --overwrite to train a new one")
    if config.resume and exists and (out / "train_config.json").is_file():
        check_resume_config(read_json(out / "train_config.json"), out / "train_config.json", config,
                            getattr(config, "allow_config_change", False))
    if config.num_threads:
        import torch

        torch.set_num_threads(config.num_threads)
    return out


def run_locked(config, body, **accelerator_options):
    """Run `body(accelerator)` under the run's Hugging Face Accelerator (on the CPU when
    `config.device` is "cpu"; ValueError when "cuda" was asked for and is missing) while the main
    process holds the writer lock of `config.out` (`run_lock`); returns what `body` returns.
    Every process waits until the lock is held, so none reads `out` before."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=config.device == "cpu", **accelerator_options)
    if config.device == "cuda" and accelerator.device.type != "cuda":
        raise ValueError("device='cuda' was asked for but CUDA is not available")
    with run_lock(config.out, accelerator.is_main_process):
        accelerator.wait_for_everyone()
        return body(accelerator)


def run_lock(out, is_main_process: bool = True):
    """The writer lock of the run directory `out`, held for a whole run so a second run on the
    same `out` refuses naming the first (issue 36); only the main process of a multi-process
    run takes it (a do-nothing context in the others)."""
    from contextlib import nullcontext

    return WriterLock(out, RUN_DIRECTORY) if is_main_process else nullcontext()
