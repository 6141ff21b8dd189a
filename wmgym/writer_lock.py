"""One writer at a time: an exclusive lock on an output (an episode store, a run directory).

The lock is a small file beside the output, `<parent>/.<name>.lock`, so it survives the
output being deleted and rebuilt (`--overwrite`) and never appears inside a store or a model
directory. It is held with `fcntl.flock`, which the operating system releases when the holder
exits for any reason (a crash, `kill -9`), so a dead writer never blocks the next one; the file
also records the holder's pid and command line, which a refused writer names.

A lock file whose pid is no longer running (the usual leftover of a killed run) is taken over,
with a warning that says so. Written by hand because no library the project depends on offers
a lock that names its holder (`filelock` does not record one).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: pid files only (see `_try_lock`)
    fcntl = None


class WriterLockError(RuntimeError):
    """Another live process is writing the same output."""


class StaleLockWarning(UserWarning):
    """A lock left by a process that is no longer running was taken over."""


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of an output `path`: `<parent>/.<name>.lock`."""
    path = Path(path).absolute()
    return path.with_name(f".{path.name}.lock")


class WriterLock:
    """Exclusive lock on the output at `path`; `what` names it in messages ("episode store").

    Use as a context manager, or `acquire()` / `release()`. Re-acquiring a lock this object
    already holds is a no-op. A second `WriterLock` on the same path, in this process or
    another, raises `WriterLockError` naming the holder's pid and command.
    """

    def __init__(self, path: str | os.PathLike, what: str = "output"):
        self.path, self.what = Path(path), what
        self.file = lock_path(path)
        self._fd: int | None = None

    @property
    def is_held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "WriterLock":
        if self._fd is not None:
            return self
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise PermissionError(f"cannot write {self.what} {self.path}: could not create its lock file "
                                  f"{self.file} ({error.strerror})") from None
        try:
            previous = _read_holder(fd)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise WriterLockError(self._refusal(previous)) from None
            elif previous and _is_running(previous.get("pid")) and previous.get("pid") != os.getpid():
                raise WriterLockError(self._refusal(previous))
            if previous and previous["pid"] != os.getpid():  # recorded, yet free: its holder died holding it
                warnings.warn(f"taking over the lock on {self.what} {self.path}: its holder, pid {previous['pid']} "
                              f"({previous.get('command', '?')}), exited without releasing it", StaleLockWarning, stacklevel=3)
            holder = {"pid": os.getpid(), "command": " ".join(sys.argv) or "python", "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (the file stays, empty: an empty lock file is a free one)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def _refusal(self, holder: dict | None) -> str:
        who = f"pid {holder['pid']} ({holder.get('command', '?')}, since {holder.get('since', '?')})" if holder else "another process"
        return (f"{self.what} {self.path} is being written by {who}; wait for it to finish or stop it "
                f"(lock file {self.file})")

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            self.release()


def _read_holder(fd: int) -> dict | None:
    """The holder recorded in a lock file, or None (empty or unreadable: nobody recorded)."""
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data) if data.strip() else None
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _is_running(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
