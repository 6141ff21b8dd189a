"""A model directory on disk: config.json plus safetensors weight files, written atomically
and loaded with every key and shape checked (never a pickle). Shared by the world model, the
grasp prior, the codec and the training checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_FILE = "config.json"


def write_model_directory(directory: str | os.PathLike, config: dict, weights: dict, extra=None) -> Path:
    """Write a model directory atomically: config.json (`config`), one safetensors file per
    `weights` item (file name -> state dict), then `extra(tmp)` if given; the complete
    directory replaces `directory`."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=directory.name + ".", dir=directory.parent))
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    for name, state in weights.items():
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, tmp / name)
    if extra is not None:
        extra(tmp)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory


def load_state_checked(module: nn.Module, path: Path) -> None:
    """Load a safetensors state dict into `module`; ValueError naming the file and key on any mismatch."""
    try:
        state = load_file(path)
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path} is not a readable safetensors file: {error}") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(f"{path}: missing keys {missing[:5]}, unexpected keys {extra[:5]}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(f"{path}: key {key!r} has shape {tuple(value.shape)}, the config needs {tuple(expected[key].shape)}")
    module.load_state_dict(state)
