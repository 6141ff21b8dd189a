"""Specs of `wmgym.writer_lock`: one writer at a time, the holder named, dead holders taken over."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from wmgym.writer_lock import StaleLockWarning, WriterLock, WriterLockError, lock_path


def test_a_second_writer_is_refused_naming_the_holders_pid(tmp_path):
    with WriterLock(tmp_path / "out", "run directory"):
        with pytest.raises(WriterLockError, match=f"run directory .*out is being written by pid {os.getpid()}"):
            WriterLock(tmp_path / "out", "run directory").acquire()
    WriterLock(tmp_path / "out").acquire().release()  # released on exit: free again


def test_a_writer_in_another_process_is_refused(tmp_path):
    code = "import sys; from wmgym.writer_lock import WriterLock; WriterLock(sys.argv[1], 'episode store').acquire()"
    with WriterLock(tmp_path / "store.zarr", "episode store"):
        result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "store.zarr")], capture_output=True, text=True)
    assert result.returncode != 0 and f"being written by pid {os.getpid()}" in result.stderr


def test_the_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(tmp_path / "out").write_text(json.dumps({"pid": dead.pid, "command": "wmgym train-wm"}))
    with pytest.warns(StaleLockWarning, match=f"pid {dead.pid} \\(wmgym train-wm\\), exited without releasing it"):
        lock = WriterLock(tmp_path / "out").acquire()
    assert lock.is_held and json.loads(lock_path(tmp_path / "out").read_text())["pid"] == os.getpid()
    lock.release()


def test_the_lock_file_lies_beside_the_output_not_inside_it(tmp_path):
    with WriterLock(tmp_path / "store.zarr"):
        assert lock_path(tmp_path / "store.zarr") == (tmp_path / ".store.zarr.lock").absolute()
        assert not (tmp_path / "store.zarr").exists()
