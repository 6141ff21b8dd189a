"""Store integrity (issue 36): which chunk files an episode store needs, what is damage, and errors that name it
(`wmgym.data.verify` reads every chunk: `wmgym verify`).

An episode store (`wmgym.data.store`) keeps every array in chunk files: `<store>/<array>/c/<i>/0/...`,
chunk i holding rows [i * chunk, (i + 1) * chunk). What counts as damage:

- **Stores with checksums** (made by `EpisodeStore.create` since issue 36: every array's codecs
  end with crc32c) write every chunk, even an all-zero one (zarr's `write_empty_chunks`). A
  missing chunk file of a committed row is damage in any array, and a changed byte fails the
  checksum when the chunk is read.
- **Stores written before** have no checksums, and zarr skipped chunks that were all fill value
  (0), which small arrays legitimately have (`held_particles` of episodes that grasp nothing,
  `episode_success`, the `task_id` of a one-task store). There a missing chunk is damage only
  where zero rows are impossible: the rendered views (`NEVER_ALL_ZERO`: no view is ever all
  black) and `meta/episode_ends` (strictly increasing, positive). A missing chunk of another
  array reads as zeros, as it did when written; `wmgym verify` notes it. Decode errors and
  truncation are still found; a flipped byte that still decodes is not.

`meta/episode_ends` is checked over all its entries, not just the committed ones: a lost chunk
there would otherwise read as "no episode committed" and `mode="a"` would cut the store to
nothing. (A store whose very first commit was interrupted between zarr's resize and its chunk
write looks the same; it holds no episode, so regenerating it loses nothing.)
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

NEVER_ALL_ZERO = ("data/camera0_rgb", "data/static_scene_rgb", "data/grippers_rgb", "meta/goal_rgb",
                  "meta/episode_ends")
"""Arrays whose chunks can never be all zero, so a missing chunk file is damage in any store."""
MAX_LISTED = 4  # chunks named per array in a one-line error
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def checksummed_codecs() -> tuple:
    """The compressors of a new store's arrays: zarr's default (zstd level 0), then crc32c."""
    return (ZstdCodec(level=0, checksum=False), Crc32cCodec())


def is_checksummed(array: zarr.Array) -> bool:
    """Whether `array`'s chunks carry a checksum (crc32c, or zstd's own)."""
    codecs = getattr(array.metadata, "codecs", ())
    return any(isinstance(c, Crc32cCodec) or (isinstance(c, ZstdCodec) and c.checksum) for c in codecs)


# ---------------------------------------------------------------------- chunk geometry
def chunks_of_rows(array: zarr.Array, rows: slice) -> list[tuple[int, ...]]:
    """Grid coordinates of the chunks holding rows `rows` (axis 0) of `array`, every column."""
    stop = min(rows.stop, array.shape[0])
    if rows.start >= stop:
        return []
    first, last = rows.start // array.chunks[0], (stop - 1) // array.chunks[0]
    tail = [range(math.ceil(n / c)) for n, c in zip(array.shape[1:], array.chunks[1:])]
    return [(i, *rest) for i in range(first, last + 1) for rest in np.ndindex(*[len(r) for r in tail])]


def chunk_rows(array: zarr.Array, coords: tuple[int, ...]) -> slice:
    size = array.chunks[0]
    return slice(coords[0] * size, min((coords[0] + 1) * size, array.shape[0]))


def chunk_key(array: zarr.Array, coords: tuple[int, ...]) -> str:
    """The chunk's file name inside the array's directory, e.g. "c/3/0/0/0"."""
    return array.metadata.encode_chunk_key(coords)


def store_path(array: zarr.Array) -> Path:
    """The directory of the (local) store holding `array`."""
    return Path(getattr(array.store, "root", str(array.store)))


def has_chunk_file(array: zarr.Array, coords: tuple[int, ...]) -> bool:
    """Whether the chunk's file exists: one stat, no data read (a store of 89k frames at 64
    frames a chunk has ~1,400 files an image array, so checking them all is cheap)."""
    return os.path.isfile(os.path.join(store_path(array), array.path, chunk_key(array, coords)))


def committed_rows(key: str, array: zarr.Array, ends: np.ndarray) -> int:
    """Rows of `array` that committed episodes use (all of meta/episode_ends; see the module docstring)."""
    if key == "meta/episode_ends":
        return array.shape[0]
    return len(ends) if key.startswith("meta/") else (int(ends[-1]) if len(ends) else 0)


def episodes_of_rows(key: str, rows: slice, ends: np.ndarray | None) -> np.ndarray | None:
    """Committed episodes with a row in `rows` of array `key` (None when `ends` is unknown)."""
    if ends is None:
        return None
    if key.startswith("meta/"):
        return np.arange(rows.start, max(rows.start, min(rows.stop, len(ends))))
    stop = min(rows.stop, int(ends[-1]) if len(ends) else 0)
    if rows.start >= stop:
        return np.zeros(0, np.int64)
    return np.arange(np.searchsorted(ends, rows.start, "right"), np.searchsorted(ends, stop - 1, "right") + 1)


def describe_episodes(episodes: np.ndarray | None) -> str:
    """"episode 4", "episodes 0-2, 7", or what to say when there are none."""
    if episodes is None:
        return "episodes unknown (meta/episode_ends is unreadable)"
    if len(episodes) == 0:
        return "no committed episode (rows past the last commit)"
    episodes = np.unique(episodes)
    runs = np.split(episodes, np.flatnonzero(np.diff(episodes) != 1) + 1)
    text = ", ".join(f"{r[0]}" if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
    return f"episode{'s' if len(episodes) > 1 else ''} {text}"


def committed_prefix(ends: np.ndarray) -> np.ndarray:
    """The strictly increasing positive prefix of meta/episode_ends (see `EpisodeStore`)."""
    bad = np.flatnonzero(np.diff(np.concatenate([[0], ends])) <= 0)
    return ends[: bad[0]] if len(bad) else ends


def ends_of(array: zarr.Array) -> np.ndarray | None:
    """The committed episode ends of the store holding `array`, or None if unreadable."""
    try:
        return committed_prefix(zarr.open_group(array.store, mode="r")["meta/episode_ends"][:])
    except Exception:
        return None


# ---------------------------------------------------------------------- checking one chunk
def chunk_problem(array: zarr.Array, coords: tuple[int, ...]) -> str | None:
    """What is wrong with an existing chunk file ("checksum mismatch", "truncated (...)",
    "decode error (...)"), or None when it reads back (or is absent: see `missing_chunks`)."""
    try:
        raw = Path(store_path(array), array.path, chunk_key(array, coords)).read_bytes()
    except FileNotFoundError:
        return None
    codecs = getattr(array.metadata, "codecs", ())
    has_crc = any(isinstance(c, Crc32cCodec) for c in codecs)
    if len(raw) < (4 if has_crc else 1):
        return f"truncated ({len(raw)} bytes)"
    payload = raw[:-4] if has_crc else raw
    if any(isinstance(c, ZstdCodec) for c in codecs):
        need = zstd_frame_size(payload)
        if need is not None and need > len(payload):
            return f"truncated ({len(raw)} bytes, its zstd frame needs {need + 4 * has_crc})"
    if has_crc and np.uint32(google_crc32c.value(payload)).tobytes() != raw[-4:]:
        return "checksum mismatch"
    try:
        array[tuple(slice(i * c, (i + 1) * c) for i, c in zip(coords, array.chunks))]
    except MemoryError:
        raise
    except Exception as error:
        return f"decode error ({one_line_error(error)})"
    return None


def zstd_frame_size(data: bytes) -> int | None:
    """Bytes the zstd frame starting `data` occupies, from its block headers (RFC 8878 section 3.1.1);
    None when `data` does not start with a zstd frame. Larger than len(data): cut off."""
    if data[:4] != _ZSTD_MAGIC or len(data) < 5:
        return None
    descriptor = data[4]
    fcs_flag, single_segment = descriptor >> 6, (descriptor >> 5) & 1
    has_checksum, dictionary_flag = (descriptor >> 2) & 1, descriptor & 3
    position = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dictionary_flag]
    position += (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    while True:
        if position + 3 > len(data):
            return position + 3
        header = int.from_bytes(data[position: position + 3], "little")
        last, block_type, size = header & 1, (header >> 1) & 3, header >> 3
        position += 3 + (1 if block_type == 1 else size)  # RLE blocks store one byte
        if last:
            return position + 4 * has_checksum


def one_line_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


# ---------------------------------------------------------------------- damage on read
@contextmanager
def naming_damage(array: zarr.Array, rows: slice, path=None, ends: np.ndarray | None = None):
    """Re-raise any error reading rows `rows` of `array` as one ValueError naming the store, the
    array, the episodes and the chunks at fault (found by reading each chunk of `rows` again)."""
    try:
        yield
    except MemoryError:
        raise
    except Exception as error:
        path = store_path(array) if path is None else path
        ends = ends_of(array) if ends is None else ends
        bad = [(coords, why) for coords in chunks_of_rows(array, rows) if (why := chunk_problem(array, coords))]
        key = array.path
        if bad:
            hit = [slice(max(rows.start, chunk_rows(array, c).start), min(rows.stop, chunk_rows(array, c).stop)) for c, _ in bad]
            episodes = [episodes_of_rows(key, h, ends) for h in hit]
            episodes = None if any(e is None for e in episodes) else np.concatenate(episodes)
            chunks = "; ".join(f"chunk {chunk_key(array, c)}: {why}" for c, why in bad[:MAX_LISTED])
            more = f" and {len(bad) - MAX_LISTED} more chunks" if len(bad) > MAX_LISTED else ""
            cause, state = f"{chunks}{more}", " is damaged:"
        else:  # no chunk of `rows` fails on its own: name the error as it came
            episodes, cause, state = episodes_of_rows(key, rows, ends), one_line_error(error), ":"
        raise ValueError(f"episode store {path}{state} cannot read {key} of {describe_episodes(episodes)} "
                         f"({cause}); run `wmgym verify {path}` to list all damage") from error


# ---------------------------------------------------------------------- missing chunks
def missing_chunks(root: zarr.Group, ends: np.ndarray) -> dict[str, list[tuple[int, ...]]]:
    """{array key: chunks of committed rows whose files are missing and that is damage (see the
    module docstring)}, from the file system's metadata alone; no data is read."""
    missing = {}
    for key, array in store_arrays(root):
        if not (is_checksummed(array) or key in NEVER_ALL_ZERO):
            continue
        lost = [c for c in chunks_of_rows(array, slice(0, committed_rows(key, array, ends)))
                if not has_chunk_file(array, c)]
        if lost:
            missing[key] = lost
    return missing


def check_chunk_files(root: zarr.Group, ends: np.ndarray, path) -> None:
    """Raise ValueError naming each array, chunk and episode whose chunk file is missing."""
    missing = missing_chunks(root, ends)
    if missing:
        raise ValueError(f"episode store {path} is damaged: chunk files of committed episodes are missing (they "
                         f"would read as zeros): {describe_missing(root, missing, ends)}; run `wmgym verify {path}` "
                         "to list all damage")


def describe_missing(root: zarr.Group, missing: dict, ends: np.ndarray) -> str:
    """One line: each array with missing chunks, which, and the episodes they hold."""
    parts = []
    for key, lost in missing.items():
        array = root[key]
        episodes = np.concatenate([episodes_of_rows(key, chunk_rows(array, c), ends) for c in lost])
        names = ", ".join(chunk_key(array, c) for c in lost[:MAX_LISTED])
        names += f" and {len(lost) - MAX_LISTED} more" if len(lost) > MAX_LISTED else ""
        hit = "the commit record of every episode" if key == "meta/episode_ends" else describe_episodes(episodes)
        parts.append(f"{key} ({names}: {hit})")
    return "; ".join(parts)


def store_arrays(root: zarr.Group) -> list[tuple[str, zarr.Array]]:
    """Every array of the store, with its key ("data/camera0_rgb"), sorted."""
    found = []
    for group in ("data", "meta"):
        if group in root:
            found += [(f"{group}/{name}", array) for name, array in root[group].arrays()]
    return sorted(found, key=lambda item: item[0])
