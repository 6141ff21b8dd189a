"""Checkpoint plumbing shared by the training loops: atomic writes, and optimizer state
as safetensors + JSON (no pickle anywhere, DESIGN.md)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch


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
