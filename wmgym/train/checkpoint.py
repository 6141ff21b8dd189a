"""Checkpoint plumbing shared by the training loops: atomic writes, run directories with
optimizer state as safetensors + JSON (no pickle anywhere, DESIGN.md), and their learning-rate
schedule."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

STATE_FILE, STATE_META = "training_state.safetensors", "training_state.json"


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def replace_directory(tmp: Path, final: Path) -> None:
    """Move the complete directory `tmp` to `final`, replacing an older `final`.

    A rename cannot replace a non-empty directory, so the old one is moved aside first; at
    every moment either the old or the new directory is complete under some name.
    """
    previous = _previous(final)
    shutil.rmtree(previous, ignore_errors=True)
    if final.exists():
        os.replace(final, previous)
    os.replace(tmp, final)
    shutil.rmtree(previous, ignore_errors=True)


def recover_directory(final: Path) -> None:
    """After a crash between `replace_directory`'s two renames, put the old directory back."""
    previous = _previous(final)
    if not final.exists() and previous.exists():
        os.replace(previous, final)


def _previous(final: Path) -> Path:
    return final.with_name(f".{final.name}.previous")


def section(tensors: dict, prefix: str) -> dict:
    """The entries of `tensors` under `prefix`, with the prefix removed."""
    return {key.removeprefix(prefix): value for key, value in tensors.items() if key.startswith(prefix)}


def flatten_optimizer(state_dict: dict) -> tuple[dict, dict]:
    """torch optimizer state -> (tensors keyed "<param>/<name>", JSON-able rest)."""
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

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a model directory is for sharing
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


def load_training_state(out: Path, optimizer) -> tuple[dict, dict, list[dict]]:
    """Read `write_run_directory`'s training state at `out` into `optimizer`; returns (meta,
    tensors, log), the log cut at the checkpoint's step (lines past it are redone)."""
    from safetensors.torch import load_file

    meta = json.loads((out / STATE_META).read_text())
    tensors = load_file(out / STATE_FILE)
    optimizer.load_state_dict(unflatten_optimizer(section(tensors, "optimizer/"), meta["optimizer"]))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line]
    return meta, tensors, [entry for entry in log if entry["step"] <= meta["step"]]


def start_run(config) -> Path:
    """The first steps of every resumable `wmgym train-*` (idm, videoclip, lpips), given its config
    (`out`, `resume`, `overwrite`, `num_threads`): restore a directory a crash left aside, refuse to
    clobber a run unless told, refuse to resume a finished one (it has no `STATE_FILE`), and set
    torch's CPU threads. Returns `Path(config.out)`."""
    out = Path(config.out)
    if config.resume:
        recover_directory(out)
    if out.exists() and not (config.resume or config.overwrite):
        raise FileExistsError(f"{out} already exists; pass --resume to continue it or --overwrite to replace it")
    if config.resume and out.exists() and not (out / STATE_FILE).is_file():
        raise ValueError(f"{out} holds a finished run (no {STATE_FILE}); pass --overwrite to train a new one")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    return out


class ConfigAndWeights:
    """Mixin for a torch module built as `cls(config, device=...)` from a dataclass config: a model
    directory of config.json + model.safetensors (the layout of VideoCLIP and the inverse
    dynamics model). Subclasses set CONFIG_CLASS and MODEL_NAME (for error messages)."""

    CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
    CONFIG_CLASS: type
    MODEL_NAME: str = "model"

    def save_pretrained(self, directory) -> Path:
        """Write config.json + model.safetensors atomically (a temporary directory, then rename)."""
        import tempfile

        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; a model directory is for sharing
        self.write_files(tmp)
        replace_directory(tmp, directory)
        return directory

    def write_files(self, directory: Path) -> None:
        """config.json + model.safetensors into an existing directory (no atomicity of its own)."""
        import json
        from dataclasses import asdict

        from safetensors.torch import save_file

        (directory / self.CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, directory / self.WEIGHTS_FILE)

    @classmethod
    def from_pretrained(cls, directory, device="auto"):
        """Load a model directory; errors name the missing or mismatched file and key; never reads a pickle."""
        import json

        from wmgym.model.model_files import load_state_checked
        from wmgym.model.world_model import resolve_device

        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"no {cls.MODEL_NAME} model directory at {directory}")
        for name in (cls.CONFIG_FILE, cls.WEIGHTS_FILE):
            if not (directory / name).is_file():
                pickles = sorted(p.name for p in directory.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
                hint = f" (found {pickles}: only safetensors weights are loaded, never pickles)" if pickles else ""
                raise FileNotFoundError(f"{cls.MODEL_NAME} model directory {directory} is missing {name}{hint}")
        config_path = directory / cls.CONFIG_FILE
        try:
            raw = json.loads(config_path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{config_path} is not valid JSON: {error}") from None
        known = set(cls.CONFIG_CLASS.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{config_path}: unknown keys {unknown}; expected a subset of {sorted(known)}")
        try:
            config = cls.CONFIG_CLASS(**raw)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{config_path}: {error}") from None
        model = cls(config, device="cpu")
        load_state_checked(model, directory / cls.WEIGHTS_FILE)
        return model.eval().to(resolve_device(device))
