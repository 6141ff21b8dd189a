"""Specs of one writer at a time for episode stores (issue 36, item 6) and of unwritable store
paths (item 7): every writer (`EpisodeStore.create`, `open(mode="a")`, `generate`, `imagine`,
pseudo-labelling) takes the store's `WriterLock` before it changes anything; readers take none."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from wmgym.data.generate import generate, plan_episodes
from wmgym.data.imagine import ImagineConfig, imagine_store
from wmgym.data.store import EpisodeStore
from wmgym.policies.pseudo_label import strip_actions
from wmgym.writer_lock import StaleLockWarning, WriterLock, WriterLockError, lock_path

from test_data import SIZE, TASKS, assert_same_contents, config, fake_run_episode, store_contents


def records(first: int, count: int, size: int = SIZE):
    return [fake_run_episode(s) for s in plan_episodes(first + count, 0, TASKS, size, size, 2)[first:]]


def test_a_second_writer_in_one_process_is_refused_and_the_first_keeps_its_episodes(tmp_path):
    path = tmp_path / "s.zarr"
    first = EpisodeStore.create(path, SIZE, SIZE, TASKS)
    first.append(records(0, 2))
    refusal = f"episode store .*s\\.zarr is being written by pid {os.getpid()}"
    with pytest.raises(WriterLockError, match=refusal):
        EpisodeStore.open(path, mode="a")
    with pytest.raises(WriterLockError, match=refusal):
        EpisodeStore.create(path, SIZE, SIZE, TASKS, overwrite=True)
    first.append(records(2, 1))  # the first writer goes on undisturbed
    first.close()
    assert EpisodeStore.open(path).num_episodes == 3
    with EpisodeStore.open(path, mode="a") as second:  # free once the first closed
        second.append(records(3, 1))
    assert EpisodeStore.open(path).num_episodes == 4


def test_readers_take_no_lock(tmp_path):
    path = tmp_path / "s.zarr"
    with EpisodeStore.create(path, SIZE, SIZE, TASKS) as writer:
        writer.append(records(0, 2))
        assert EpisodeStore.open(path).read_episode(1)["camera"].shape == (3, SIZE, SIZE, 3)


def test_a_closed_store_refuses_appends(tmp_path):
    with EpisodeStore.create(tmp_path / "s.zarr", SIZE, SIZE, TASKS) as writer:
        writer.append(records(0, 1))
    with pytest.raises(ValueError, match=r"s\.zarr is closed; open it with mode='a'"):
        writer.append(records(1, 1))


def test_generate_overwrite_while_another_writer_holds_the_lock_refuses_and_deletes_nothing(tmp_path):
    generate(config(tmp_path, "s.zarr", episodes=4), run_episode=fake_run_episode)
    before = store_contents(tmp_path / "s.zarr")
    with WriterLock(tmp_path / "s.zarr", "episode store"):
        for overrides in (dict(overwrite=True), dict(resume=True, episodes=6)):
            with pytest.raises(WriterLockError, match=f"s\\.zarr is being written by pid {os.getpid()}"):
                generate(config(tmp_path, "s.zarr", **overrides), run_episode=fake_run_episode)
    assert_same_contents(store_contents(tmp_path / "s.zarr"), before)
    generate(config(tmp_path, "s.zarr", resume=True, episodes=6), run_episode=fake_run_episode)  # released
    assert EpisodeStore.open(tmp_path / "s.zarr").num_episodes == 6


def test_wmgym_generate_overwrite_in_another_process_refuses_naming_the_holder(tmp_path):
    path = tmp_path / "s.zarr"
    with EpisodeStore.create(path, SIZE, SIZE, TASKS) as writer:
        writer.append(records(0, 2))
        command = [sys.executable, "-m", "wmgym.cli", "generate", "--out", str(path), "--episodes", "1",
                   "--resolution", "16", "--horizon", "2", "--workers", "1", "--overwrite"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"wmgym: error: episode store {path} is being written by pid {os.getpid()}" in result.stderr
    assert "Traceback" not in result.stderr
    assert EpisodeStore.open(path).num_episodes == 2


def test_the_lock_of_a_dead_writer_is_taken_over_with_a_warning(tmp_path):
    path = tmp_path / "s.zarr"
    EpisodeStore.create(path, SIZE, SIZE, TASKS).close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(path).write_text(json.dumps({"pid": dead.pid, "command": "wmgym generate"}))
    with pytest.warns(StaleLockWarning, match=f"pid {dead.pid} \\(wmgym generate\\)"):
        writer = EpisodeStore.open(path, mode="a")
    writer.append(records(0, 1))
    writer.close()
    assert EpisodeStore.open(path).num_episodes == 1


def test_pseudo_label_copies_refuse_an_output_another_writer_holds(tmp_path):
    source, out = tmp_path / "src.zarr", tmp_path / "free.zarr"
    with EpisodeStore.create(source, SIZE, SIZE, TASKS) as writer:
        writer.append(records(0, 2))
    strip_actions(source, out)
    before = store_contents(out)
    with WriterLock(out, "episode store"):
        with pytest.raises(WriterLockError, match=r"free\.zarr is being written"):
            strip_actions(source, out, overwrite=True)
    assert_same_contents(store_contents(out), before)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".free.zarr.lock", ".src.zarr.lock", "free.zarr", "src.zarr"]


def test_imagine_refuses_an_output_another_writer_holds(tiny_bundle, tmp_path):
    source, out = tmp_path / "src.zarr", tmp_path / "wm.zarr"
    with EpisodeStore.create(source, 64, 64, TASKS) as writer:
        writer.append(records(0, 1, size=64))
    with EpisodeStore.create(out, 64, 64, TASKS) as writer:
        writer.append(records(0, 1, size=64))
        with pytest.raises(WriterLockError, match=r"wm\.zarr is being written"):
            imagine_store(ImagineConfig(data=str(source), out=str(out), checkpoint=str(tiny_bundle), overwrite=True,
                                        device="cpu"))
    assert EpisodeStore.open(out).num_episodes == 1


def test_a_store_path_under_a_regular_file_fails_with_one_line_naming_it(tmp_path, capsys):
    from wmgym.cli import main

    (tmp_path / "notes.txt").write_text("precious")
    out = tmp_path / "notes.txt" / "s.zarr"
    with pytest.raises(PermissionError, match=f"cannot write episode store {out}"):
        generate(config(tmp_path, "notes.txt/s.zarr"), run_episode=fake_run_episode)
    with pytest.raises(SystemExit) as exit:
        main(["generate", "--out", str(out), "--episodes", "1", "--resolution", "16", "--workers", "1"])
    message = str(exit.value.code)
    assert message.startswith(f"wmgym: error: cannot write episode store {out}") and "\n" not in message
    assert (tmp_path / "notes.txt").read_text() == "precious"


def test_overwrite_refuses_a_directory_that_is_not_an_episode_store(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match=r"d: it is not an episode store \(no zarr.json\) but holds notes.txt"):
        EpisodeStore.create(tmp_path / "d", SIZE, SIZE, TASKS, overwrite=True)
    assert (tmp_path / "d" / "notes.txt").read_text() == "precious"
    WriterLock(tmp_path / "d").acquire().release()  # the refused writer let its lock go (else WriterLockError)
