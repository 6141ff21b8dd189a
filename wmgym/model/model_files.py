"""A model directory on disk: config.json plus safetensors weight files, written atomically
and loaded with every key and shape checked (never a pickle). Shared by the world model, the
grasp prior, the codec and the training checkpoints.

Model directories follow the project's writer rule (`wmgym.outputs`): replaced only with
`overwrite`, never anything else."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from wmgym.outputs import OutputKind, check_output, directory_written_atomically

if TYPE_CHECKING:
    from torch import nn

CONFIG_FILE = "config.json"
MODEL_DIRECTORY = OutputKind("model directory", (CONFIG_FILE, "*.safetensors"))


def write_model_directory(directory: str | os.PathLike, config: dict, weights: dict, extra=None,
                          overwrite: bool = False) -> Path:
    """Write a model directory atomically: config.json (`config`), one safetensors file per
    `weights` item (file name -> state dict), then `extra(tmp)` if given; the complete
    directory then takes the place of `directory`, which must not exist, be an empty
    directory, or (with `overwrite`) be a model directory (`check_output`)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    check_output(directory, MODEL_DIRECTORY, overwrite)
    with directory_written_atomically(directory, MODEL_DIRECTORY.name) as tmp:  # nothing half-written is left beside it
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        for name, state in weights.items():
            save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, tmp / name)
        if extra is not None:
            extra(tmp)
    return directory


def load_state_checked(module: nn.Module, path: Path, renamed: dict[str, str] | None = None) -> None:
    """Load a safetensors state dict into `module`; ValueError naming the file and key on any
    mismatch or on a tensor with NaN or infinite values (which would give black frames later).
    `renamed`: old key prefix -> new, for weights saved before a module was renamed."""
    from safetensors.torch import load_file

    try:
        state = load_file(path)
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path} is not a readable safetensors file: {error}") from None
    for old, new in (renamed or {}).items():
        state = {(new + key[len(old):] if key.startswith(old) else key): value for key, value in state.items()}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(f"{path}: missing keys {missing[:5]}, unexpected keys {extra[:5]}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(f"{path}: key {key!r} has shape {tuple(value.shape)}, the config needs {tuple(expected[key].shape)}")
        if value.is_floating_point() and not value.isfinite().all():  # one pass per tensor
            raise ValueError(f"{path}: key {key!r} holds non-finite values (NaN or inf); the weights are damaged")
    module.load_state_dict(state)
