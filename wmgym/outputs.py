"""The writer rule every output of the project follows (issue 36: nothing lost).

An output that does not exist or is an empty directory is written; an existing artefact of the
same kind (`OutputKind`: a model directory, a bundle, a run directory, an episode store) is
replaced only when the caller says overwrite, and then atomically (`replace_directory`); anything
else (a file, a directory of something else) is refused with a one-line error naming the path
and what it holds. `wmgym.writer_lock` keeps a second writer away meanwhile."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OutputKind:
    """A kind of artefact a writer may replace: its name for messages, and the glob patterns
    that mark a directory as one (each pattern must match an entry of the directory)."""

    name: str
    markers: tuple[str, ...]

    @property
    def a_name(self) -> str:
        """The name with its article, for messages: "a bundle", "an episode store"."""
        return ("an " if self.name[0] in "aeiou" else "a ") + self.name

    def is_held_by(self, directory: Path) -> bool:
        return all(next(directory.glob(pattern), None) is not None for pattern in self.markers)


def check_output(path: str | os.PathLike, kind: OutputKind, overwrite: bool,
                 hint: str = "pass --overwrite (overwrite=True) to replace it") -> bool:
    """The writer rule for an output `path` of `kind`: False when there is nothing to replace
    (no such path, or an empty directory); True when `path` holds a `kind` and `overwrite` is
    set; FileExistsError naming the path otherwise (`hint` says how to replace an artefact)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return False
    if not path.is_dir():
        raise FileExistsError(f"refusing to write {kind.a_name} to {path}: it is a file, not a directory; "
                              "choose another output path")
    entries = sorted(entry.name for entry in path.iterdir())
    if not entries:
        return False
    if kind.is_held_by(path):
        if overwrite:
            return True
        raise FileExistsError(f"{path} already exists ({kind.a_name}); {hint}")
    shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
    raise FileExistsError(f"refusing to replace {path}: it is not {kind.a_name} (no {' + '.join(kind.markers)}) "
                          f"but holds {shown}; choose another output directory")


def temporary_directory_beside(final: Path, what: str) -> Path:
    """A new empty directory `.<name>.XXXX` beside `final` (so renaming it into place is atomic),
    world-readable like any output. A read-only parent or a file in the way is a one-line
    PermissionError / FileExistsError naming `final`."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in final.parents if p.exists() and not p.is_dir()), final.parent)
        raise FileExistsError(f"cannot write {what} {final}: {blocker} is a file, not a directory") from None
    except OSError as error:
        raise PermissionError(f"cannot write {what} {final}: its directory {final.parent} is not writable "
                              f"({error.strerror or error})") from None
    tmp.chmod(0o755)  # mkdtemp makes it private; outputs are for sharing
    return tmp


def replace_directory(tmp: Path, final: Path) -> None:
    """Move the complete directory `tmp` to `final`, replacing an older `final`.

    A rename cannot replace a non-empty directory, so the old one is moved aside first; at
    every moment either the old or the new directory is complete under some name. Callers
    decide beforehand (`check_output`) that `final` may be replaced.
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


@contextmanager
def directory_written_atomically(final: Path, what: str):
    """Yield a temporary directory beside `final` to write into; when the block ends, it takes
    `final`'s place (`replace_directory`); when the block fails, it is removed and nothing
    half-written is left beside `final`."""
    tmp = temporary_directory_beside(Path(final), what)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_directory(tmp, Path(final))
