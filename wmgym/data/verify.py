"""`wmgym verify`: read every chunk of an episode store and report what is damaged, array by
array, with the episodes hit (what counts as damage: `wmgym.data.chunks`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from wmgym.data.chunks import (NEVER_ALL_ZERO, chunk_key, chunk_problem, chunk_rows, chunks_of_rows, committed_rows,
                                describe_episodes, ends_of, episodes_of_rows, has_chunk_file, is_checksummed,
                                one_line_error, store_arrays)
from wmgym.data.store import EpisodeStore


@dataclass
class Damage:
    """One damaged chunk: its array, file name, what is wrong, the committed episodes it holds."""

    key: str
    chunk: str
    problem: str
    episodes: np.ndarray | None


@dataclass
class VerifyReport:
    path: Path
    num_episodes: int | None
    num_frames: int | None
    num_arrays: int = 0
    num_chunks: int = 0
    checksummed: bool = True
    """Every array carries checksums (a store written since issue 36)."""
    damage: list[Damage] = field(default_factory=list)
    malformed: str | None = None
    """`EpisodeStore.validate`'s complaint, if any."""
    notes: list[str] = field(default_factory=list)

    @property
    def is_intact(self) -> bool:
        return not self.damage and self.malformed is None

    def lines(self) -> list[str]:
        """What `wmgym verify` prints: one summary line when intact, else a line per damaged array."""
        checks = ("every chunk decoded and matched its crc32c checksum" if self.checksummed else
                  "every chunk decoded; the store was written before checksums, so these are decode-level checks "
                  "only (a changed byte that still decodes goes unnoticed)")
        lines = list(self.notes)
        if self.is_intact:
            return lines + [f"episode store {self.path} is intact: {self.num_episodes} episodes, {self.num_frames} frames, "
                            f"{self.num_arrays} arrays, {self.num_chunks} chunks read; {checks}"]
        if self.malformed:
            lines.append(self.malformed)
        for key in dict.fromkeys(d.key for d in self.damage):
            hits = [d for d in self.damage if d.key == key]
            episodes = None if any(d.episodes is None for d in hits) else np.concatenate([d.episodes for d in hits])
            chunks = "; ".join(f"{d.chunk} {d.problem}" for d in hits)
            lines.append(f"{key}: {len(hits)} damaged chunk{'s' * (len(hits) > 1)} holding {describe_episodes(episodes)}: {chunks}")
        return lines

    def summary(self) -> str:
        chunks, arrays = len(self.damage), len({d.key for d in self.damage})
        return (f"episode store {self.path} is damaged: {chunks} damaged chunk{'s' * (chunks != 1)} in "
                f"{arrays} array{'s' * (arrays != 1)}"
                + (" and a malformed layout" if self.malformed else "") + " (listed above)")


def verify_store(path, show_progress: bool = True) -> VerifyReport:
    """Read every chunk of every array of the store at `path`; see the module docstring for what is damage."""
    from tqdm.auto import tqdm

    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise FileNotFoundError(f"no episode store at {path} (expected a zarr group directory made by EpisodeStore.create)")
    root = zarr.open_group(path, mode="r")
    report = VerifyReport(path, None, None)
    try:
        store = EpisodeStore.open(path, mode="r", check_chunks=False)
        ends = store.episode_ends
    except ValueError as error:  # malformed, or meta/episode_ends damaged: still read every chunk
        report.malformed = one_line_error(error).removeprefix("ValueError: ")
        ends = ends_of(root["meta/episode_ends"]) if "meta/episode_ends" in root else None
    if ends is not None:
        report.num_episodes, report.num_frames = len(ends), int(ends[-1]) if len(ends) else 0
    arrays = store_arrays(root)
    report.num_arrays = len(arrays)
    report.checksummed = all(is_checksummed(array) for _, array in arrays)
    total = sum(len(chunks_of_rows(array, slice(0, array.shape[0]))) for _, array in arrays)
    with tqdm(total=total, unit="chunk", desc="verify", disable=not show_progress) as bar:
        for key, array in arrays:
            needed = None if ends is None else committed_rows(key, array, ends)
            absent = 0
            for coords in chunks_of_rows(array, slice(0, array.shape[0])):
                bar.update(1)
                rows = chunk_rows(array, coords)
                if has_chunk_file(array, coords):
                    report.num_chunks += 1
                    problem = chunk_problem(array, coords)
                elif needed is None or rows.start < needed:
                    is_damage = is_checksummed(array) or key in NEVER_ALL_ZERO
                    problem, absent = ("missing", absent) if is_damage else (None, absent + 1)
                else:
                    problem = None  # never written: rows past the last commit
                if problem:  # a damaged commit record hides which episodes there are
                    episodes = None if key == "meta/episode_ends" else episodes_of_rows(key, rows, ends)
                    report.damage.append(Damage(key, chunk_key(array, coords), problem, episodes))
            if absent:
                report.notes.append(f"note: {key}: {absent} chunk{'s' * (absent > 1)} of committed rows absent, read as "
                                    "zeros (a store written before checksums skipped all-zero chunks; not counted as damage)")
    return report
