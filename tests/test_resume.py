"""Resuming a run (issue 36, items 5 and 6): a damaged log line or checkpoint is tolerated or
named, never a bare JSON error; a changed configuration is refused unless the user says so;
and one run at a time writes a run directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_idm import TINY
from test_train_world_model import store, tiny  # noqa: F401  (`store`: the tiny episode store fixture)

from wmgym.cli import main
from wmgym.train.idm import TrainIDMConfig, train_idm
from wmgym.train.world_model import train_world_model
from wmgym.writer_lock import StaleLockWarning, WriterLock, WriterLockError, lock_path

pytestmark = pytest.mark.usefixtures("one_thread")

STATE = "training_state.safetensors"


def log_entries(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def stopped_run(store, out: Path, **overrides) -> Path:
    """A train-wm run of 4 steps stopped after 2, with a checkpoint at every step."""
    train_world_model(tiny(store, out, steps=4, checkpoint_every=1, stop_after=2, **overrides))
    return out


@pytest.fixture(scope="module")
def straight_run(store, tmp_path_factory) -> Path:
    """The same 4 steps in one go."""
    out = tmp_path_factory.mktemp("straight")
    train_world_model(tiny(store, out, steps=4, checkpoint_every=1))
    return out


def assert_same_final_state(run: Path, straight_run: Path) -> None:
    a, b = (load_file(r / "checkpoints/step_0000004" / STATE) for r in (straight_run, run))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ log.jsonl
def test_resume_drops_a_partial_last_log_line_with_a_warning(store, straight_run, tmp_path):
    run = stopped_run(store, tmp_path)
    with open(run / "log.jsonl", "a") as log:
        log.write('{"step": 3, "epoch": 0, "lo')  # killed while writing a line
    with pytest.warns(UserWarning, match=r"log\.jsonl: dropping its damaged last line"):
        train_world_model(tiny(store, run, steps=4, checkpoint_every=1, resume=True))
    assert [entry["step"] for entry in log_entries(run) if "loss" in entry] == [1, 2, 3, 4]
    assert_same_final_state(run, straight_run)


def test_resume_names_the_log_file_and_line_of_damage_before_the_last_line(store, tmp_path):
    run = stopped_run(store, tmp_path)
    lines = (run / "log.jsonl").read_text().splitlines()
    (run / "log.jsonl").write_text("\n".join(["{not json", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"log\.jsonl, line 1: not a log entry"):
        train_world_model(tiny(store, run, steps=4, checkpoint_every=1, resume=True))


# ------------------------------------------------------------------ damaged checkpoints
@pytest.mark.parametrize("damaged", [STATE, "training_state.json", "model/denoiser.safetensors"])
def test_resume_falls_back_to_the_newest_intact_checkpoint(store, straight_run, tmp_path, damaged):
    run = stopped_run(store, tmp_path)
    path = run / "checkpoints/step_0000002" / damaged
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # a copy cut short
    with pytest.warns(UserWarning, match=r"from step_0000001, the newest intact checkpoint; skipped the damaged step_0000002"):
        train_world_model(tiny(store, run, steps=4, checkpoint_every=1, resume=True))
    assert_same_final_state(run, straight_run)  # resumed from step 1, still bit for bit
    assert (run / "checkpoints/damaged_step_0000002" / damaged).is_file()  # kept aside, not deleted


def test_resume_with_every_checkpoint_damaged_names_them(store, tmp_path):
    run = stopped_run(store, tmp_path)
    for step in (1, 2):
        (run / f"checkpoints/step_000000{step}/training_state.json").write_text("{")
    with pytest.raises(ValueError, match=r"every checkpoint is damaged: step_0000002 \(.*training_state\.json is not valid JSON"):
        train_world_model(tiny(store, run, steps=4, checkpoint_every=1, resume=True))


# ------------------------------------------------------------------ a changed configuration
def test_resume_refuses_a_changed_configuration_listing_old_and_new_values(store, tmp_path):
    run = stopped_run(store, tmp_path)
    saved = (run / "train_config.json").read_text()
    changed = dict(data=str(tmp_path / "other.zarr"), seed=1, batch_size=4, learning_rate=1e-3)
    with pytest.raises(ValueError) as raised:
        train_world_model(tiny(store, run, steps=4, checkpoint_every=1, resume=True, **changed))
    message = str(raised.value)
    for expected in ("data '", "other.zarr'", "seed 0 -> 1", "batch_size 8 -> 4", "learning_rate 0.0003 -> 0.001",
                     "--allow-config-change"):
        assert expected in message, message
    assert "steps" not in message.replace("warmup_steps", "").replace("num_steps", "")  # a budget may change
    assert (run / "train_config.json").read_text() == saved  # not overwritten


def test_resume_with_allow_config_change_warns_and_records_the_new_configuration(store, tmp_path):
    run = stopped_run(store, tmp_path)
    with pytest.warns(UserWarning, match=r"changed configuration .*learning_rate 0\.0003 -> 0\.001"):
        train_world_model(tiny(store, run, steps=4, checkpoint_every=1, resume=True, learning_rate=1e-3,
                               allow_config_change=True))
    assert json.loads((run / "train_config.json").read_text())["learning_rate"] == 1e-3
    assert (run / "latest").read_text().strip() == "step_0000004"


def test_cli_resume_with_another_seed_is_refused(store, tmp_path):
    args = ["train-wm", "--data", str(store), "--out", str(tmp_path), "--steps", "2", "--batch-size", "4", "--width", "32",
            "--depth", "2", "--num-heads", "2", "--patch-size", "4", "--num-steps", "2", "--val-batches", "1", "--device", "cpu"]
    main([*args, "--stop-after", "1"])
    with pytest.raises(SystemExit, match=r"seed 0 -> 3.*--allow-config-change"):
        main([*args, "--resume", "--seed", "3"])  # without --stop-after: a budget may change
    with pytest.warns(UserWarning, match="seed 0 -> 3"):
        main([*args, "--resume", "--seed", "3", "--allow-config-change"])
    assert (tmp_path / "latest").read_text().strip() == "step_0000002"


def idm_config(store, out: Path, **overrides) -> TrainIDMConfig:
    args = dict(data=str(store), out=str(out), steps=4, batch_size=8, warmup_steps=1, log_every=1, validate_every=100,
                checkpoint_every=2, val_fraction=0.2, device="cpu", show_progress=False, **TINY)
    return TrainIDMConfig(**{**args, **overrides})


def test_start_run_trainers_refuse_a_changed_configuration_and_tolerate_a_partial_log_line(store, tmp_path):
    train_idm(idm_config(store, tmp_path, stop_after=2))
    saved = (tmp_path / "train_config.json").read_text()
    with pytest.raises(ValueError, match=r"differs in batch_size 8 -> 4, seed 0 -> 1; .*--allow-config-change"):
        train_idm(idm_config(store, tmp_path, resume=True, seed=1, batch_size=4))
    assert (tmp_path / "train_config.json").read_text() == saved
    with open(tmp_path / "log.jsonl", "a") as log:
        log.write('{"step": 3, "lo')
    with pytest.warns(UserWarning, match=r"log\.jsonl: dropping its damaged last line"):
        train_idm(idm_config(store, tmp_path, resume=True, steps=4))
    assert [entry["step"] for entry in log_entries(tmp_path) if "loss" in entry] == [1, 2, 3, 4]


# ------------------------------------------------------------------ one writer at a time
def test_train_wm_refuses_a_run_directory_another_writer_holds(store, tmp_path):
    with WriterLock(tmp_path / "run", "run directory"):
        with pytest.raises(WriterLockError, match=f"run directory .*run is being written by pid {os.getpid()}"):
            train_world_model(tiny(store, tmp_path / "run", steps=1))
    assert not (tmp_path / "run").exists()  # nothing was read or written
    train_world_model(tiny(store, tmp_path / "run", steps=1))  # the lock is free again


def test_start_run_trainers_refuse_a_run_directory_another_writer_holds(store, tmp_path):
    with WriterLock(tmp_path / "run", "run directory"):
        with pytest.raises(WriterLockError, match="is being written by pid"):
            train_idm(idm_config(store, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_train_wm_takes_over_a_stale_lock_with_a_warning(store, tmp_path):
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()  # a pid no process has any more (the usual leftover of a killed run)
    lock_path(tmp_path / "run").write_text(json.dumps({"pid": exited.pid, "command": "wmgym train-wm (killed)"}))
    with pytest.warns(StaleLockWarning, match=f"holder, pid {exited.pid} .*exited without releasing it"):
        train_world_model(tiny(store, tmp_path / "run", steps=1))
    assert (tmp_path / "run" / "latest").read_text().strip() == "step_0000001"
