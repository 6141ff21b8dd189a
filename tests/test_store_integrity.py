"""Specs of episode-store integrity (issue 36, item 4): checksums on every chunk, every chunk
written, missing chunk files refused on open, read errors that name the store, the array and the
episode, and `wmgym verify`. Stores are tiny: 3 episodes of 3 frames at 16x16, one episode per
image chunk, so a damaged chunk hits exactly one episode."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import wmgym.data.store as store_module
from wmgym.cli import main
from wmgym.data.dataset import WindowDataset
from wmgym.data.generate import plan_episodes
from wmgym.data.store import EpisodeStore
from wmgym.data.chunks import is_checksummed

from test_data import SIZE, TASKS, assert_records_equal, fake_run_episode

HORIZON = 2  # 3 frames an episode


def make_records(num_episodes: int = 3, held: bool = True):
    records = [fake_run_episode(s) for s in plan_episodes(num_episodes, 0, TASKS, SIZE, SIZE, HORIZON)]
    if not held:  # grasps nothing: all-zero held_particles, a chunk zarr would skip by default
        records = [dataclasses.replace(r, held_particles=np.zeros_like(r.held_particles)) for r in records]
    return records


@pytest.fixture
def one_episode_per_chunk(monkeypatch):
    monkeypatch.setattr(store_module, "CHUNK_FRAMES", HORIZON + 1)


@pytest.fixture
def store(tmp_path, one_episode_per_chunk):
    path = tmp_path / "s.zarr"
    with EpisodeStore.create(path, SIZE, SIZE, TASKS) as writer:
        writer.append(make_records())
    return path


def flip_byte(file) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x10
    file.write_bytes(bytes(data))


def verify(path, capsys) -> tuple[int, str]:
    """Run `wmgym verify PATH`; return (exit status, stdout + stderr)."""
    try:
        main(["verify", str(path), "--no-show-progress"])
        status = 0
    except SystemExit as exit:
        status = 0 if exit.code in (None, 0) else 1
        print(exit.code)
    out = capsys.readouterr()
    return status, out.out + out.err


def test_an_intact_store_verifies_with_a_one_line_summary(store, capsys):
    status, output = verify(store, capsys)
    assert status == 0
    assert output.strip().splitlines() == [output.strip()]
    assert "s.zarr is intact: 3 episodes, 9 frames" in output and "crc32c checksum" in output


def test_every_array_of_a_new_store_carries_a_checksum(store):
    store_object = EpisodeStore.open(store)
    for group in ("data", "meta"):
        for name, array in store_object.root[group].arrays():
            assert is_checksummed(array), f"{group}/{name}"


def test_a_deleted_camera_chunk_fails_open_naming_the_array_and_episode(store, capsys):
    (store / "data/camera0_rgb/c/1/0/0/0").unlink()
    for mode in ("r", "a"):
        with pytest.raises(ValueError, match=r"s\.zarr is damaged: chunk files .* missing .*"
                                             r"data/camera0_rgb \(c/1/0/0/0: episode 1\)"):
            EpisodeStore.open(store, mode=mode)
    status, output = verify(store, capsys)
    assert status != 0
    assert "data/camera0_rgb: 1 damaged chunk holding episode 1: c/1/0/0/0 missing" in output
    assert "is damaged: 1 damaged chunk in 1 array" in output


def test_a_deleted_commit_record_is_damage_not_an_empty_store(store, capsys):
    (store / "meta/episode_ends/c/0").unlink()  # would read as zeros: "no episode committed"
    with pytest.raises(ValueError, match=r"meta/episode_ends \(c/0: the commit record of every episode\)"):
        EpisodeStore.open(store, mode="a")  # and mode="a" would have cut every array to nothing
    assert (store / "data/camera0_rgb/c/2/0/0/0").is_file()
    assert verify(store, capsys)[0] != 0


def test_flipped_bytes_in_a_chunk_fail_the_read_naming_store_array_and_episode(store, capsys):
    flip_byte(store / "data/grippers_rgb/c/2/0/0/0")
    reader = EpisodeStore.open(store)  # a listing finds nothing wrong; the read does
    reader.read_episode(1)
    expected = r"s\.zarr is damaged: cannot read data/grippers_rgb of episode 2 \(chunk c/2/0/0/0: checksum mismatch\)"
    with pytest.raises(ValueError, match=expected):
        reader.read_episode(2)
    with pytest.raises(ValueError, match=expected):
        reader.read_record(-1)
    with pytest.raises(ValueError, match=r"s\.zarr is damaged: cannot read data/grippers_rgb of episode 2 "):
        WindowDataset(store, num_actions=1, split="all", views=("grippers",))
    status, output = verify(store, capsys)
    assert status != 0 and "data/grippers_rgb: 1 damaged chunk holding episode 2: c/2/0/0/0 checksum mismatch" in output


def test_a_truncated_chunk_fails_the_read_naming_the_store_and_verify_says_truncated(store, capsys):
    for chunk in ("data/camera0_rgb/c/1/0/0/0", "data/action/c/0/0"):
        data = (store / chunk).read_bytes()
        (store / chunk).write_bytes(data[: len(data) // 2])
    reader = EpisodeStore.open(store)
    with pytest.raises(ValueError, match=r"s\.zarr is damaged: cannot read data/camera0_rgb of episode 1 "
                                         r"\(chunk c/1/0/0/0: truncated"):
        reader.read_episode(1)
    with pytest.raises(ValueError, match=r"s\.zarr is damaged: cannot read data/action of episode 0 "
                                         r"\(chunk c/0/0: truncated"):
        reader.read_episode(0)
    with pytest.raises(ValueError, match=r"s\.zarr is damaged: cannot read data/camera0_rgb of episode 1 "
                                         r"\(chunk c/1/0/0/0: truncated \(\d+ bytes, its zstd frame needs \d+\)\)"):
        WindowDataset(store, num_actions=1, split="all")
    status, output = verify(store, capsys)
    assert status != 0
    assert "data/camera0_rgb: 1 damaged chunk holding episode 1: c/1/0/0/0 truncated" in output
    assert "data/action: 1 damaged chunk holding episodes 0-2: c/0/0 truncated" in output


def test_new_stores_write_every_chunk_even_all_zero_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "CHUNK_ROWS", 3)  # one chunk of the small arrays per episode
    path = tmp_path / "s.zarr"
    records = make_records(held=False)
    with EpisodeStore.create(path, SIZE, SIZE, TASKS) as writer:
        writer.append(records[:2])
    with EpisodeStore.open(path, mode="a") as writer:  # zarr forgets the setting on reopening
        writer.append(records[2:])
    for episode in range(3):
        assert (path / f"data/robot0_held_particles/c/{episode}").is_file()
    (path / "data/robot1_held_particles/c/1").unlink()
    with pytest.raises(ValueError, match=r"data/robot1_held_particles \(c/1: episode 1\)"):
        EpisodeStore.open(path)


def make_old_store(path, records, monkeypatch) -> None:
    """A store the way `EpisodeStore` wrote them before issue 36: no checksum codec, and zarr's
    default of skipping chunks that are all zero."""
    with monkeypatch.context() as old:
        old.setattr(store_module, "CHECKED", {})
        old.setattr(EpisodeStore, "_array", lambda self, key: self.root[key])
        with EpisodeStore.create(path, SIZE, SIZE, TASKS) as writer:
            writer.append(records)


def test_a_store_written_before_checksums_still_opens_reads_and_verifies(tmp_path, monkeypatch, capsys):
    path, records = tmp_path / "old.zarr", make_records(held=False)
    make_old_store(path, records, monkeypatch)
    assert not (path / "data/robot0_held_particles/c/0").exists()  # skipped: all zero, as zarr did
    reader = EpisodeStore.open(path)
    assert not is_checksummed(reader.root["data/camera0_rgb"])
    for i, record in enumerate(records):
        assert_records_equal(reader.read_record(i), record)
    status, output = verify(path, capsys)
    assert status == 0 and "old.zarr is intact: 3 episodes" in output
    assert "written before checksums" in output and "decode-level checks only" in output
    assert "note: data/robot0_held_particles: 1 chunk of committed rows absent, read as zeros" in output
    with EpisodeStore.open(path, mode="a") as writer:  # and takes new episodes
        writer.append(make_records(4)[3:])
    assert EpisodeStore.open(path).num_episodes == 4


def test_a_store_written_before_checksums_still_refuses_a_missing_image_chunk(tmp_path, monkeypatch, capsys):
    path = tmp_path / "old.zarr"
    make_old_store(path, make_records(), monkeypatch)
    (path / "data/static_scene_rgb/c/0/0/0/0").unlink()  # a rendered view is never all black
    with pytest.raises(ValueError, match=r"old\.zarr is damaged: .*data/static_scene_rgb \(c/0/0/0/0: episodes 0-2\)"):
        EpisodeStore.open(path)
    status, output = verify(path, capsys)
    assert status != 0 and "data/static_scene_rgb: 1 damaged chunk holding episodes 0-2: c/0/0/0/0 missing" in output


def test_a_decode_error_in_a_store_written_before_checksums_names_the_store(tmp_path, monkeypatch, capsys):
    path = tmp_path / "old.zarr"
    make_old_store(path, make_records(), monkeypatch)
    (path / "data/score/c/0").write_bytes(b"\x00" * 7)  # not a zstd frame: a numcodecs error before
    with pytest.raises(ValueError, match=r"old\.zarr is damaged: cannot read data/score of episode 1 "
                                         r"\(chunk c/0: decode error \(RuntimeError: Zstd"):
        EpisodeStore.open(path).read_episode(1)
    status, output = verify(path, capsys)
    assert status != 0 and "data/score: 1 damaged chunk holding episodes 0-2: c/0 decode error" in output
