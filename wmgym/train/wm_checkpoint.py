"""World-model training checkpoints: save and restore everything a bit-exact resume needs.

Layout (`out/checkpoints/step_XXXXXXX/`, written to a temporary directory and renamed into
place; `out/latest` names the newest complete one):
    model/                        EMA weights as a `WorldModel` checkpoint (what users load)
    training_state.safetensors    raw weights "raw/...", EMA shadow "ema/...", optimizer
                                  tensors "optimizer/<param>/<name>", RNG "rng/<kind>/<rank>"
    training_state.json           step, epoch, optimizer and scheduler scalars, EMA and
                                  grad-scaler settings, one weight digest per process

A resume reads the newest checkpoint that reads back whole (`newest_intact_checkpoint`): a
damaged newer one (a disk filled up, a copy cut short) is reported and moved aside to
`damaged_step_XXXXXXX`, so later saves neither resume from it nor keep it in place of an
intact one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from wmgym.outputs import OutputKind, replace_directory, temporary_directory_beside
from wmgym.train.checkpoint import RUN_DIRECTORY, flatten_optimizer, read_json, section, unflatten_optimizer, write_text_atomic

STATE_FILES = ("training_state.json", "training_state.safetensors")
RUN_DIRECTORY_KIND = OutputKind(RUN_DIRECTORY, ("train_config.json",))  # what `out` may hold: a run, written first thing


def latest_checkpoint(out: Path) -> Path | None:
    """The newest step_* directory: each appeared by one rename, so each is complete (`latest` names it too)."""
    found = sorted((out / "checkpoints").glob("step_*"))
    return found[-1] if found else None


def read_checkpoint(directory: Path):
    """(model, training state, state tensors) of the checkpoint `directory`, read whole; a
    missing or damaged file is an error naming it."""
    from safetensors.torch import load_file

    from wmgym.model.world_model import WorldModel

    model = WorldModel.from_pretrained(directory / "model", device="cpu")
    state = read_json(directory / STATE_FILES[0])
    try:
        tensors = load_file(directory / STATE_FILES[1])
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{directory / STATE_FILES[1]} is not a readable safetensors file ({error})") from None
    return model, state, tensors


def newest_intact_checkpoint(out: Path, is_main_process: bool = True):
    """(directory, model, state, tensors) of the newest checkpoint in `out` that reads back
    whole, or None when there is none. Newer damaged ones are reported (a warning naming each
    and why) and, by the main process, renamed `damaged_step_*`; ValueError when every
    checkpoint is damaged."""
    skipped = []  # (directory, why), newest first
    for directory in sorted((out / "checkpoints").glob("step_*"), reverse=True):
        try:
            found = (directory, *read_checkpoint(directory))
        except Exception as error:  # any damage: an unreadable file, bad JSON, a wrong shape
            skipped.append((directory, (str(error).splitlines() or [type(error).__name__])[0]))
            continue
        if skipped and is_main_process:
            for damaged, _ in skipped:
                os.replace(damaged, _free_name(damaged.with_name(f"damaged_{damaged.name}")))
            listed = "; ".join(f"{damaged.name} ({why})" for damaged, why in skipped)
            warnings.warn(f"resuming {out} from {directory.name}, the newest intact checkpoint; skipped the damaged "
                          f"{listed}, now renamed damaged_step_*", stacklevel=2)
        return found
    if skipped:
        listed = "; ".join(f"{damaged.name} ({why})" for damaged, why in skipped)
        raise ValueError(f"cannot resume {out}: every checkpoint is damaged: {listed}")
    return None


def _free_name(path: Path) -> Path:
    """`path`, or `path.1`, `path.2`... whichever does not exist yet."""
    candidate, count = path, 0
    while candidate.exists():
        count += 1
        candidate = path.with_name(f"{path.name}.{count}")
    return candidate


def _gather_rows(accelerator, row: torch.Tensor) -> list[torch.Tensor]:
    return list(accelerator.gather(row.to(accelerator.device)[None]).cpu())  # one uint8 row per process


def save_checkpoint(out, step, model, ema, ema_model, optimizer, scheduler, accelerator, extra, keep) -> None:
    # Collective first: every process contributes its RNG states and a digest of its weights.
    rng = {"torch_cpu": _gather_rows(accelerator, torch.get_rng_state())}
    if torch.cuda.is_available():
        rng["torch_cuda"] = _gather_rows(accelerator, torch.cuda.get_rng_state())
    digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.denoiser.parameters()))
    digests = _gather_rows(accelerator, torch.frombuffer(bytearray(digest.digest()), dtype=torch.uint8))
    if accelerator.is_main_process:
        final = out / "checkpoints" / f"step_{step:07d}"
        tmp = temporary_directory_beside(final, f"{RUN_DIRECTORY} checkpoint")  # `.step_*`: cleared below if cut short
        ema.copy_to(ema_model.denoiser.parameters())
        ema_model.save_pretrained(tmp / "model")  # a fresh directory inside the new checkpoint
        tensors = {f"raw/{k}": v for k, v in model.denoiser.state_dict().items()}
        tensors.update({f"ema/{n}": p for (n, _), p in zip(model.denoiser.named_parameters(), ema.shadow_params)})
        opt_tensors, opt_meta = flatten_optimizer(optimizer.state_dict())
        tensors.update({f"optimizer/{k}": v for k, v in opt_tensors.items()})
        tensors.update({f"rng/{kind}/{r}": s for kind, rows in rng.items() for r, s in enumerate(rows)})
        ema_meta = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
        scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
        meta = {"step": step, **extra, "num_processes": accelerator.num_processes, "optimizer": opt_meta,
                "scheduler": scheduler.state_dict(), "ema": ema_meta, "grad_scaler": scaler,
                "weight_digests": [bytes(d.tolist()).hex() for d in digests]}
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / STATE_FILES[1])
        (tmp / STATE_FILES[0]).write_text(json.dumps(meta, indent=1))
        replace_directory(tmp, final)
        write_text_atomic(out / "latest", final.name + "\n")
        if len(set(meta["weight_digests"])) > 1:
            tqdm.write(f"warning: processes hold different weights at step {step}: {meta['weight_digests']}")
        stale = list(final.parent.glob(".step_*"))  # temporary directories of interrupted saves
        for old in stale + (sorted(final.parent.glob("step_*"))[:-keep] if keep else []):
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def restore_checkpoint(state: dict, tensors: dict, model, ema, optimizer, scheduler, accelerator) -> int:
    """Load optimizer, scheduler, EMA, grad scaler and this process's RNG; returns the step."""
    optimizer.load_state_dict(unflatten_optimizer(section(tensors, "optimizer/"), state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    shadow = section(tensors, "ema/")
    ema.load_state_dict({**state["ema"], "shadow_params": [shadow[n] for n, _ in model.denoiser.named_parameters()]})
    ema.to(accelerator.device)
    if accelerator.scaler is not None and state.get("grad_scaler"):
        accelerator.scaler.load_state_dict(state["grad_scaler"])
    if state["num_processes"] == accelerator.num_processes:  # else: a new layout, fresh RNG streams
        rank = accelerator.process_index
        torch.set_rng_state(tensors[f"rng/torch_cpu/{rank}"])
        if torch.cuda.is_available() and f"rng/torch_cuda/{rank}" in tensors:
            torch.cuda.set_rng_state(tensors[f"rng/torch_cuda/{rank}"])
    return int(state["step"])
