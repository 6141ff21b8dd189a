"""The writer rule (issue 36, items 1, 6 and 7): writers never delete what they did not write,
replace their own kind of artefact only when told to, atomically, one writer at a time, and
say in one line which path they could not write."""

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import tiny_grasp_prior, tiny_world_model

from wmgym.cli import main
from wmgym.envs.bundle import Bundle, make_bundle
from wmgym.policies.idm import IDMConfig, InverseDynamicsModel
from wmgym.train.codec import TrainCodecConfig, train_codec
from wmgym.train.idm import TrainIDMConfig, train_idm
from wmgym.train.world_model import TrainWorldModelConfig, train_world_model
from wmgym.writer_lock import WriterLock, WriterLockError

pytestmark = pytest.mark.usefixtures("one_thread")


def precious_directory(path: Path) -> Path:
    """A directory holding a user's file that no writer may delete."""
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("precious")
    return path


def bundle_args(tiny_bundle: Path, out: Path, *extra: str) -> list[str]:
    return ["bundle", "--world-model", str(tiny_bundle / "world_model"), "--out", str(out), "--num-start-frames", "1", *extra]


# ------------------------------------------------------------------ bundles
def test_bundle_refuses_a_directory_that_is_not_a_bundle_and_keeps_its_files(tiny_bundle, tmp_path):
    out = precious_directory(tmp_path / "d")
    for extra in ((), ("--overwrite",)):  # not even --overwrite deletes what is not a bundle
        with pytest.raises(SystemExit, match=r"refusing to replace .*d: it is not a bundle .*holds notes\.txt"):
            main(bundle_args(tiny_bundle, out, *extra))
        assert (out / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".d.") and p.is_dir()] == []  # no temporary left


def test_bundle_refuses_a_file_at_the_output(tiny_bundle, tmp_path):
    out = tmp_path / "d"
    out.write_text("precious")
    with pytest.raises(SystemExit, match="it is a file, not a directory"):
        main(bundle_args(tiny_bundle, out, "--overwrite"))
    assert out.read_text() == "precious"


def test_bundle_replaces_an_existing_bundle_only_with_overwrite(tiny_bundle, tmp_path):
    out = tmp_path / "b"
    main(bundle_args(tiny_bundle, out, "--bank-seed", "7"))
    with pytest.raises(SystemExit, match="already exists.*--overwrite"):
        main(bundle_args(tiny_bundle, out, "--bank-seed", "8"))
    assert json.loads((out / "bundle.json").read_text())["bank_seed"] == 7
    main(bundle_args(tiny_bundle, out, "--bank-seed", "8", "--overwrite"))
    assert json.loads((out / "bundle.json").read_text())["bank_seed"] == 8
    assert Bundle.load(out).start_frames.shape[0] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.lock", "b"]  # no old copy or temporary left beside it


def test_bundle_writes_into_an_empty_directory(tiny_bundle, tmp_path):
    (tmp_path / "empty").mkdir()
    make_bundle(tmp_path / "empty", tiny_bundle / "world_model", num_start_frames=1)
    assert Bundle.load(tmp_path / "empty").height == 64


def test_bundle_refuses_while_another_writer_holds_it(tiny_bundle, tmp_path):
    with WriterLock(tmp_path / "b", "bundle"):
        with pytest.raises(WriterLockError, match=f"bundle .*b is being written by pid {os.getpid()}"):
            make_bundle(tmp_path / "b", tiny_bundle / "world_model", num_start_frames=1)
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------------ model directories
def _world_model(directory, **kwargs):
    return tiny_world_model().save_pretrained(directory, **kwargs)


def _inverse_dynamics_model(directory, **kwargs):  # ConfigAndWeights: VideoCLIP and the IDM
    torch.manual_seed(0)
    return InverseDynamicsModel(IDMConfig(channels=(8, 8), hidden=8), device="cpu").save_pretrained(directory, **kwargs)


def _grasp_prior(directory, **kwargs):
    return tiny_grasp_prior().save_pretrained(directory, **kwargs)


SAVERS = pytest.mark.parametrize("save", [_world_model, _inverse_dynamics_model, _grasp_prior],
                                 ids=["world_model", "config_and_weights", "grasp_prior"])


@SAVERS
def test_save_pretrained_refuses_a_directory_that_is_not_a_model_and_keeps_its_files(save, tmp_path):
    out = precious_directory(tmp_path / "d")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match=r"d: it is not a model directory .*holds notes\.txt"):
            save(out, overwrite=overwrite)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    (tmp_path / "f").write_text("precious")
    with pytest.raises(FileExistsError, match="it is a file"):
        save(tmp_path / "f", overwrite=True)
    assert (tmp_path / "f").read_text() == "precious"


@SAVERS
def test_save_pretrained_replaces_a_model_directory_only_with_overwrite(save, tmp_path):
    save(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir() if p.is_file()}
    with pytest.raises(FileExistsError, match="already exists.*overwrite"):
        save(tmp_path / "m")
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir() if p.is_file()} == before
    (tmp_path / "m" / "stale.txt").write_text("from the old model")  # replaced whole, not merged
    save(tmp_path / "m", overwrite=True)
    assert "stale.txt" not in {p.name for p in (tmp_path / "m").iterdir()} and "config.json" in before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_train_grasp_prior_refuses_a_directory_that_is_not_a_model_before_training(tmp_path):
    out = precious_directory(tmp_path / "d")
    # --data names no store: the output is refused before any data is read
    with pytest.raises(SystemExit, match=r"it is not a model directory .*notes\.txt"):
        main(["train-grasp-prior", "--data", str(tmp_path / "none.zarr"), "--out", str(out), "--overwrite"])
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    _grasp_prior(tmp_path / "prior")
    with pytest.raises(SystemExit, match="already exists.*--overwrite"):
        main(["train-grasp-prior", "--data", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "prior")])


# ------------------------------------------------------------------ training runs' --overwrite
def test_train_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path):
    out = precious_directory(tmp_path / "d")
    missing = str(tmp_path / "none.zarr")  # refused before the data is read
    with pytest.raises(FileExistsError, match=r"not a model directory .*notes\.txt"):
        train_idm(TrainIDMConfig(data=missing, out=str(out), overwrite=True, device="cpu", show_progress=False))
    with pytest.raises(FileExistsError, match=r"not a model directory .*notes\.txt"):
        train_codec(TrainCodecConfig(data=missing, out=str(out), overwrite=True, device="cpu"))
    with pytest.raises(FileExistsError, match=r"not a run directory .*notes\.txt"):
        train_world_model(TrainWorldModelConfig(data=missing, out=str(out), device="cpu"))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# ------------------------------------------------------------------ unwritable outputs
@pytest.fixture
def mkdtemp_honouring_mode_bits(monkeypatch):
    """tempfile.mkdtemp that refuses a directory without write permission even for root (the
    tests run as root, where chmod stops nothing), as it would for any other user."""
    real = tempfile.mkdtemp

    def mkdtemp(*args, dir=None, **kwargs):
        if dir is not None and not os.stat(dir).st_mode & 0o200:
            raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, ".tmp"))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)


@SAVERS
def test_save_into_a_read_only_directory_names_the_output(save, tmp_path, mkdtemp_honouring_mode_bits):
    parent = tmp_path / "read_only"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(PermissionError) as raised:
            save(parent / "m")
    finally:
        parent.chmod(0o755)
    message = str(raised.value)
    assert f"cannot write model directory {parent / 'm'}" in message and "not writable" in message and "\n" not in message


def test_bundle_into_a_read_only_directory_is_a_one_line_error(tiny_bundle, tmp_path, mkdtemp_honouring_mode_bits):
    parent = tmp_path / "read_only"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(SystemExit) as raised:
            main(bundle_args(tiny_bundle, parent / "b"))
    finally:
        parent.chmod(0o755)
    message = str(raised.value.code)
    assert message.startswith("wmgym: error: cannot write bundle") and str(parent / "b") in message and "\n" not in message


def test_output_below_a_file_names_the_file(tmp_path):
    (tmp_path / "file").write_text("precious")
    with pytest.raises(FileExistsError, match=f"cannot write model directory .*: {tmp_path / 'file'} is a file"):
        _world_model(tmp_path / "file" / "m")
    assert (tmp_path / "file").read_text() == "precious"


# ------------------------------------------------------------------ damaged bundles
@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def test_bundle_with_invalid_json_is_a_one_line_error_naming_the_file(bundle_copy):
    text = (bundle_copy / "bundle.json").read_text()
    (bundle_copy / "bundle.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"bundle\.json is not valid JSON") as raised:
        Bundle.load(bundle_copy)
    assert str(bundle_copy / "bundle.json") in str(raised.value) and "\n" not in str(raised.value)


def test_bundle_with_a_missing_field_names_the_file_and_field(bundle_copy):
    meta = json.loads((bundle_copy / "bundle.json").read_text())
    del meta["height"]
    (bundle_copy / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"bundle\.json: missing or malformed field .*height"):
        Bundle.load(bundle_copy)


def test_truncated_start_grippers_is_a_one_line_error_naming_the_file(bundle_copy):
    path = bundle_copy / "start_grippers.safetensors"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match=r"start_grippers\.safetensors is not a readable safetensors file") as raised:
        Bundle.load(bundle_copy)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_train_policy_refuses_a_directory_that_is_not_a_policy_run_and_replaces_one_only_with_overwrite(tmp_path):
    from wmgym.train.policy import TrainPolicyConfig, train_policy

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a policy run .* holds notes.txt"):
        train_policy(TrainPolicyConfig(out=str(tmp_path / "notes"), ppo_timesteps=8))
    assert (tmp_path / "notes" / "notes.txt").read_text() == "precious"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "bc.zip").write_bytes(b"an earlier run's policy")
    with pytest.raises(FileExistsError, match="already exists \\(a policy run\\); pass --overwrite"):
        train_policy(TrainPolicyConfig(out=str(tmp_path / "run"), ppo_timesteps=8))
    assert (tmp_path / "run" / "bc.zip").read_bytes() == b"an earlier run's policy"
