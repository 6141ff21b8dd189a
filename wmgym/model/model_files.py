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


def resolve_device(device="auto"):
    """"auto" -> CUDA when available, else CPU; -> torch.device."""
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
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


class ConfigAndWeights:
    """Mixin for a torch module built as `cls(config, device=...)` from a dataclass config: a model
    directory of config.json + model.safetensors (the layout of VideoCLIP and the inverse
    dynamics model). Subclasses set CONFIG_CLASS and MODEL_NAME (for error messages)."""

    CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
    CONFIG_CLASS: type
    MODEL_NAME: str = "model"

    def save_pretrained(self, directory, overwrite: bool = False) -> Path:
        """Write config.json + model.safetensors atomically (a temporary directory, then rename).
        `directory` must not exist, be empty, or (with `overwrite`) hold a model directory."""
        from wmgym.outputs import replace_directory, temporary_directory_beside

        directory = Path(directory)
        check_output(directory, MODEL_DIRECTORY, overwrite)
        tmp = temporary_directory_beside(directory, MODEL_DIRECTORY.name)
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
