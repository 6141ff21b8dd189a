"""Specs of the data layer: episode store, dataset generation, training windows.

The simulator is replaced by `fake_run_episode`, a pure function of the spec, so these tests
are fast and independent of `wmgym.sim`'s physics.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import zarr

from wmgym.data.generate import GenerateConfig, generate, plan_episodes
from wmgym.data.store import EpisodeStore
from wmgym.sim.episode import EPISODE_KINDS, EpisodeRecord, EpisodeSpec

TASKS = ("fold_left_sleeve", "fold_right_sleeve", "fold_half")
SIZE = 16


def fake_run_episode(spec: EpisodeSpec) -> EpisodeRecord:
    """A random but deterministic record of `spec`; module level so worker processes can pickle it."""
    entropy = [spec.seed, TASKS.index(spec.task), EPISODE_KINDS.index(spec.kind),
               int(round(spec.noise * 1000))]
    rng = np.random.default_rng(entropy)
    frames, shape = spec.horizon + 1, (spec.height, spec.width, 3)
    image = lambda *lead: rng.integers(0, 256, (*lead, *shape), dtype=np.uint8)
    return EpisodeRecord(
        spec=spec, task_id=TASKS.index(spec.task), camera=image(frames),
        static_scene=image(frames), grippers=image(frames),
        eef_pos=rng.normal(size=(frames, 2, 3)).astype(np.float32),
        eef_rot_axis_angle=rng.normal(size=(frames, 2, 3)).astype(np.float32),
        gripper_width=rng.uniform(0, 0.08, (frames, 2)).astype(np.float32),
        actions=rng.normal(size=(spec.horizon, 20)).astype(np.float32),
        score=rng.random(frames).astype(np.float32), success=bool(rng.random() < 0.5),
        caption=f"{spec.kind} episode {spec.seed} of {spec.task}",
        goal_caption=f"do {spec.task}", goal_image=image(),
        held_particles=rng.integers(0, 40, (frames, 2)).astype(np.int16))


def marked_record(episode: int, horizon: int, task: str = "fold_half") -> EpisodeRecord:
    """A record whose frame t is filled with (t, episode, 7) and whose a_t[0] = 100 episode + t."""
    record = fake_run_episode(EpisodeSpec(task, seed=episode, height=SIZE, width=SIZE,
                                          horizon=horizon))
    for t in range(horizon + 1):
        record.camera[t] = (t, episode, 7)
        record.grippers[t] = (t, episode, 9)
    record.actions[:, 0] = 100 * episode + np.arange(horizon)
    return record


def config(tmp_path, name="store.zarr", **overrides) -> GenerateConfig:
    args = dict(out=str(tmp_path / name), episodes=10, resolution=SIZE, tasks=TASKS, horizon=4,
                workers=1, batch_episodes=3, show_progress=False)
    return GenerateConfig(**{**args, **overrides})


def store_contents(path) -> dict:
    """Every array (all rows on disk, committed or not) and every attribute of a store."""
    root = zarr.open_group(path, mode="r")
    contents = {f"{g}/{name}": root[f"{g}/{name}"][:] for g in ("data", "meta")
                for name in root[g].array_keys()}
    return {**contents, "attrs": dict(root.attrs)}


def assert_same_contents(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert a["attrs"] == b["attrs"]
    for key in a.keys() - {"attrs"}:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def assert_records_equal(got: EpisodeRecord, want: EpisodeRecord) -> None:
    assert got.spec == want.spec
    for name in ("camera", "static_scene", "grippers", "eef_pos", "eef_rot_axis_angle",
                 "gripper_width", "actions", "score", "goal_image", "held_particles"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert (got.task_id, got.success, got.caption, got.goal_caption) == \
        (want.task_id, want.success, want.caption, want.goal_caption)


# ---------------------------------------------------------------- store


def test_store_roundtrip_is_exact(tmp_path):
    specs = plan_episodes(5, 3, TASKS, SIZE, SIZE, horizon=4)
    specs[4] = EpisodeSpec("fold_half", 99, "random", 0.0, SIZE, SIZE, horizon=6)  # other length
    records = [fake_run_episode(s) for s in specs]
    store = EpisodeStore.create(tmp_path / "s.zarr", SIZE, SIZE, TASKS)
    store.append(records[:2])
    store.append(records[2:])

    reopened = EpisodeStore.open(tmp_path / "s.zarr")
    assert reopened.num_episodes == 5 and reopened.num_frames == 4 * 5 + 7
    np.testing.assert_array_equal(reopened.episode_ends, [5, 10, 15, 20, 27])
    assert reopened.episode_slice(4) == slice(20, 27)
    for i, record in enumerate(records):
        assert_records_equal(reopened.read_record(i), record)
    episode = reopened.read_episode(1)
    assert episode["task"] == specs[1].task and episode["kind"] == specs[1].kind
    assert episode["camera"].dtype == np.uint8 and episode["actions"].shape == (4, 20)


def test_many_episodes_read_at_once_equal_the_records(tmp_path, monkeypatch):
    import wmgym.data.store_reads as store_module

    monkeypatch.setattr(store_module, "READ_BLOCK_FRAMES", 4)  # blocks that cut through episodes
    specs = plan_episodes(4, 3, TASKS, SIZE, SIZE, horizon=4)
    specs[2] = EpisodeSpec("fold_half", 99, "random", 0.0, SIZE, SIZE, horizon=6)
    records = [fake_run_episode(s) for s in specs]
    store = EpisodeStore.create(tmp_path / "s.zarr", SIZE, SIZE, TASKS)
    store.append(records)
    rows, lengths = store.read_frames([1, 2], ["camera0_rgb", "action", "robot1_gripper_width"])
    np.testing.assert_array_equal(lengths, [5, 7])
    np.testing.assert_array_equal(rows["camera0_rgb"], np.concatenate([records[1].camera, records[2].camera]))
    np.testing.assert_array_equal(rows["action"][:4], records[1].actions)  # row 4 is episode 1's padding
    np.testing.assert_array_equal(rows["action"][5:11], records[2].actions)
    np.testing.assert_array_equal(rows["robot1_gripper_width"][:, 0], np.concatenate([records[1].gripper_width[:, 1],
                                                                                       records[2].gripper_width[:, 1]]))
    np.testing.assert_array_equal(store.read_meta("episode_success", [0, 3]), [records[0].success, records[3].success])
    keep = np.zeros(store.num_frames, bool)
    keep[[0, 6, 13]] = True  # any rows: frame 0 of episode 0, frame 1 of episode 1, frame 3 of episode 2
    sampled = store.read_rows(keep, ["camera0_rgb"])["camera0_rgb"]
    np.testing.assert_array_equal(sampled, np.stack([records[0].camera[0], records[1].camera[1], records[2].camera[3]]))


def test_store_without_held_particles_still_opens_and_appends(tmp_path):
    """A store made before the grasp state was recorded: its episodes read back with
    held_particles None, and new episodes go in without it."""
    records = [fake_run_episode(s) for s in plan_episodes(3, 0, TASKS, SIZE, SIZE, horizon=4)]
    store = EpisodeStore.create(tmp_path / "old.zarr", SIZE, SIZE, TASKS)
    for robot in (0, 1):
        del store.root[f"data/robot{robot}_held_particles"]
    store.append(records[:2])
    store.close()  # one writer at a time
    appended = EpisodeStore.open(tmp_path / "old.zarr", mode="a")
    assert not appended.has_held_particles
    appended.append([dataclasses.replace(records[2], held_particles=None)])
    reopened = EpisodeStore.open(tmp_path / "old.zarr")
    assert reopened.num_episodes == 3 and reopened.read_episode(2)["held_particles"] is None
    np.testing.assert_array_equal(reopened.read_record(1).score, records[1].score)


def test_a_store_with_held_particles_refuses_a_record_without_them(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", SIZE, SIZE, TASKS)
    record = fake_run_episode(plan_episodes(1, 0, TASKS, SIZE, SIZE, 4)[0])
    with pytest.raises(ValueError, match="no held_particles"):
        store.append([dataclasses.replace(record, held_particles=None)])
    with pytest.raises(ValueError, match=r"held_particles has shape \(4, 2\), expected \(5, 2\)"):
        store.append([dataclasses.replace(record, held_particles=record.held_particles[:4])])
    del store.root["data/robot1_held_particles"]
    with pytest.raises(ValueError, match="robot0_held_particles.*but not.*robot1_held_particles"):
        EpisodeStore.open(tmp_path / "s.zarr")


def test_last_frame_of_each_episode_stores_a_hold_action(tmp_path):
    records = [fake_run_episode(s) for s in plan_episodes(3, 0, TASKS, SIZE, SIZE, horizon=4)]
    store = EpisodeStore.create(tmp_path / "s.zarr", SIZE, SIZE, TASKS)
    store.append(records)
    actions = store.root["data/action"][:]
    for i, record in enumerate(records):
        rows = store.episode_slice(i)
        np.testing.assert_array_equal(actions[rows][:-1], record.actions)
        hold = actions[rows][-1]
        np.testing.assert_array_equal(hold[[0, 1, 2, 10, 11, 12]], 0)
        np.testing.assert_array_equal(hold[3:9], [1, 0, 0, 0, 1, 0])
        np.testing.assert_array_equal(hold[13:19], [1, 0, 0, 0, 1, 0])
        np.testing.assert_array_equal(hold[[9, 19]], record.gripper_width[-1])


def test_validate_names_a_missing_array(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", SIZE, SIZE, TASKS)
    store.append([fake_run_episode(plan_episodes(1, 0, TASKS, SIZE, SIZE, 4)[0])])
    del store.root["data/grippers_rgb"]
    with pytest.raises(ValueError, match="data/grippers_rgb"):
        EpisodeStore.open(tmp_path / "s.zarr")


def test_validate_names_a_short_array_and_its_length(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", SIZE, SIZE, TASKS)
    store.append([fake_run_episode(s) for s in plan_episodes(2, 0, TASKS, SIZE, SIZE, 4)])
    store.root["data/score"].resize((7,))
    store.close()  # one writer at a time
    with pytest.raises(ValueError, match=r"data/score has length 7.*10 frames"):
        EpisodeStore.open(tmp_path / "s.zarr", mode="a")


def test_validate_names_a_missing_attribute(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", SIZE, SIZE, TASKS)
    del store.root.attrs["goal_captions"]
    with pytest.raises(ValueError, match="goal_captions"):
        EpisodeStore.open(tmp_path / "s.zarr")


def test_open_missing_store_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        EpisodeStore.open(tmp_path / "nothing_here.zarr")


def test_create_refuses_an_existing_store_and_overwrite_replaces_it(tmp_path):
    path = tmp_path / "s.zarr"
    EpisodeStore.create(path, SIZE, SIZE, TASKS).append(
        [fake_run_episode(plan_episodes(1, 0, TASKS, SIZE, SIZE, 4)[0])])
    with pytest.raises(FileExistsError, match=r"s\.zarr.*--resume.*--overwrite"):
        EpisodeStore.create(path, SIZE, SIZE, TASKS)
    EpisodeStore.create(path, 2 * SIZE, SIZE, TASKS[:1], overwrite=True)
    store = EpisodeStore.open(path)
    assert (store.num_episodes, store.height, store.tasks) == (0, 2 * SIZE, TASKS[:1])


def test_readers_ignore_uncommitted_rows_and_append_mode_drops_them(tmp_path):
    path = tmp_path / "s.zarr"
    records = [fake_run_episode(s) for s in plan_episodes(4, 0, TASKS, SIZE, SIZE, 4)]
    store = EpisodeStore.create(path, SIZE, SIZE, TASKS)
    store.append(records[:2])
    # A commit cut off after zarr resized meta/episode_ends but before its values landed.
    store.root["meta/episode_ends"].resize((3,))
    store.root["data/score"].resize((13,))
    assert EpisodeStore.open(path).num_episodes == 2
    store.close()  # one writer at a time
    appending = EpisodeStore.open(path, mode="a")
    assert store_contents(path)["data/score"].shape == (10,)
    assert store_contents(path)["meta/episode_ends"].shape == (2,)
    appending.append(records[2:])
    for i, record in enumerate(records):
        assert_records_equal(EpisodeStore.open(path).read_record(i), record)


# ---------------------------------------------------------------- generation


def test_plan_is_deterministic_and_independent_of_episode_count():
    plan = plan_episodes(200, 5, TASKS, SIZE, SIZE, 4)
    assert plan == plan_episodes(200, 5, TASKS, SIZE, SIZE, 4)
    assert plan[:37] == plan_episodes(37, 5, TASKS, SIZE, SIZE, 4)
    assert plan != plan_episodes(200, 6, TASKS, SIZE, SIZE, 4)
    assert [s.task for s in plan[:4]] == [TASKS[0], TASKS[1], TASKS[2], TASKS[0]]
    assert len({s.seed for s in plan}) == 200
    kinds = [s.kind for s in plan]
    assert (kinds.count("demo"), kinds.count("perturbed"), kinds.count("random")) == (110, 50, 40)
    demo_noise = [s.noise for s in plan if s.kind == "demo"]
    assert demo_noise[:8] == [0.0, 0.01, 0.02, 0.04] * 2
    assert {s.noise for s in plan if s.kind == "perturbed"} == {0.02}
    assert {s.noise for s in plan if s.kind == "random"} == {0.0}


def test_kinds_cycle_sets_each_episodes_kind():
    plan = plan_episodes(9, 5, TASKS, SIZE, SIZE, 4, kinds="DXX")
    assert [s.kind for s in plan] == ["demo", "replay", "replay"] * 3
    assert [s.noise for s in plan if s.kind == "demo"] == [0.0, 0.01, 0.02]
    assert {s.noise for s in plan if s.kind == "replay"} == {0.0}
    # the same seeds as the default cycle: only the kinds differ
    assert [s.seed for s in plan] == [s.seed for s in plan_episodes(9, 5, TASKS, SIZE, SIZE, 4)]
    proposals = plan_episodes(4, 5, TASKS, SIZE, SIZE, 4, kinds="G")
    assert [(s.kind, s.noise) for s in proposals] == [("proposal", 0.01)] * 4  # wmgym plan's default 1 cm


def test_proposal_noise_sets_only_the_proposals_noise():
    plan = plan_episodes(6, 5, TASKS, SIZE, SIZE, 4, kinds="DG", proposal_noise=0.005)
    default = plan_episodes(6, 5, TASKS, SIZE, SIZE, 4, kinds="DG")
    assert [s.noise for s in plan if s.kind == "proposal"] == [0.005] * 3
    assert [s for s in plan if s.kind == "demo"] == [s for s in default if s.kind == "demo"]
    assert [s.seed for s in plan] == [s.seed for s in default]
    with pytest.raises(ValueError, match="proposal_noise"):
        plan_episodes(2, 5, TASKS, SIZE, SIZE, 4, kinds="G", proposal_noise=-0.01)


def test_generate_writes_the_planned_episodes(tmp_path):
    cfg = config(tmp_path)
    assert generate(cfg, run_episode=fake_run_episode) == cfg.out
    store = EpisodeStore.open(cfg.out)
    plan = plan_episodes(10, 0, TASKS, SIZE, SIZE, 4)
    assert store.num_episodes == 10
    for i in (0, 4, 9):
        assert_records_equal(store.read_record(i), fake_run_episode(plan[i]))


class FailAfter:
    """run_episode that dies with the simulator after `count` episodes (in-process only)."""

    def __init__(self, count: int):
        self.remaining = count

    def __call__(self, spec: EpisodeSpec) -> EpisodeRecord:
        if self.remaining == 0:
            raise RuntimeError("simulated crash")
        self.remaining -= 1
        return fake_run_episode(spec)


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path):
    generate(config(tmp_path, "whole.zarr"), run_episode=fake_run_episode)
    cfg = config(tmp_path, "resumed.zarr")
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate(cfg, run_episode=FailAfter(7))  # batches of 3: 6 committed, 1 lost
    assert EpisodeStore.open(cfg.out).num_episodes == 6
    generate(config(tmp_path, "resumed.zarr", resume=True), run_episode=fake_run_episode)
    assert_same_contents(store_contents(cfg.out), store_contents(tmp_path / "whole.zarr"))


def test_resume_after_a_write_cut_before_the_commit_equals_an_uninterrupted_run(
        tmp_path, monkeypatch):
    generate(config(tmp_path, "whole.zarr"), run_episode=fake_run_episode)
    cfg = config(tmp_path, "resumed.zarr")
    calls = {"count": 0}
    original = EpisodeStore._write_episode_ends

    def commit_twice_then_die(self, start, new_ends):
        if calls["count"] == 2:  # data, meta and captions of batch 3 are written; ends are not
            raise KeyboardInterrupt
        calls["count"] += 1
        original(self, start, new_ends)

    monkeypatch.setattr(EpisodeStore, "_write_episode_ends", commit_twice_then_die)
    with pytest.raises(KeyboardInterrupt):
        generate(cfg, run_episode=fake_run_episode)
    monkeypatch.setattr(EpisodeStore, "_write_episode_ends", original)
    on_disk = store_contents(cfg.out)
    assert on_disk["data/camera0_rgb"].shape[0] == 9 * 5 and len(on_disk["meta/episode_ends"]) == 6
    assert len(on_disk["attrs"]["episode_captions"]) == 9
    assert EpisodeStore.open(cfg.out).num_episodes == 6

    generate(config(tmp_path, "resumed.zarr", resume=True), run_episode=fake_run_episode)
    assert_same_contents(store_contents(cfg.out), store_contents(tmp_path / "whole.zarr"))


def test_generating_in_chunks_equals_one_run(tmp_path):
    generate(config(tmp_path, "whole.zarr"), run_episode=fake_run_episode)
    generate(config(tmp_path, "chunks.zarr", episodes=4), run_episode=fake_run_episode)
    generate(config(tmp_path, "chunks.zarr", episodes=10, resume=True),
             run_episode=fake_run_episode)
    assert_same_contents(store_contents(tmp_path / "chunks.zarr"),
                         store_contents(tmp_path / "whole.zarr"))


def test_two_workers_write_the_same_store_as_one(tmp_path):
    generate(config(tmp_path, "one.zarr"), run_episode=fake_run_episode)
    generate(config(tmp_path, "two.zarr", workers=2), run_episode=fake_run_episode)
    assert_same_contents(store_contents(tmp_path / "two.zarr"),
                         store_contents(tmp_path / "one.zarr"))


@pytest.mark.parametrize("overrides, error, pattern", [
    (dict(episodes=0), ValueError, "episodes"),
    (dict(resolution=8), ValueError, "at least 16"),
    (dict(tasks=("fold_towel",)), ValueError, r"fold_towel.*fold_left_sleeve.*fold_half"),
    (dict(kinds="DQ"), ValueError, r"letters DPRXG.*X replay.*G proposal.*'DQ'"),
    (dict(kinds=""), ValueError, r"non-empty"),
    (dict(proposal_noise=float("nan")), ValueError, r"proposal_noise"),
])
def test_generate_rejects_bad_config(tmp_path, overrides, error, pattern):
    with pytest.raises(error, match=pattern):
        generate(config(tmp_path, **overrides), run_episode=fake_run_episode)


def test_generate_refuses_an_existing_store_without_resume_or_overwrite(tmp_path):
    generate(config(tmp_path, episodes=2), run_episode=fake_run_episode)
    with pytest.raises(FileExistsError, match="--resume.*--overwrite"):
        generate(config(tmp_path, episodes=2), run_episode=fake_run_episode)
    generate(config(tmp_path, episodes=3, seed=1, overwrite=True), run_episode=fake_run_episode)
    assert EpisodeStore.open(tmp_path / "store.zarr").num_episodes == 3


@pytest.mark.parametrize("overrides", [dict(resolution=32), dict(tasks=TASKS[:2]),
                                       dict(seed=1), dict(horizon=5), dict(kinds="X"), dict(proposal_noise=0.005)])
def test_resume_with_different_settings_is_refused(tmp_path, overrides):
    generate(config(tmp_path, episodes=2), run_episode=fake_run_episode)
    with pytest.raises(ValueError, match="cannot resume"):
        generate(config(tmp_path, episodes=4, resume=True, **overrides),
                 run_episode=fake_run_episode)


def test_resume_checks_a_non_default_proposal_noise(tmp_path):
    generate(config(tmp_path, episodes=2, kinds="G", proposal_noise=0.005), run_episode=fake_run_episode)
    with pytest.raises(ValueError, match="proposal_noise: store has 0.005, asked for 0.01"):
        generate(config(tmp_path, episodes=4, kinds="G", resume=True), run_episode=fake_run_episode)
    generate(config(tmp_path, episodes=4, kinds="G", proposal_noise=0.005, resume=True), run_episode=fake_run_episode)
    noise = np.asarray(EpisodeStore.open(tmp_path / "store.zarr").root["meta"]["episode_noise"][:])
    np.testing.assert_allclose(noise, 0.005)
