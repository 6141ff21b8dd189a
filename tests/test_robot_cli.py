"""Issue 38's path from the command line alone: an unseen LeRobot v2.1 dataset of another robot
(two cameras, non-square frames, a 7-D state, 6-D actions) -> `wmgym import` (default options)
-> `wmgym train-wm` -> `wmgym bundle --data` -> `gym.make("wmgym/WorldModel-v0")` -> `wmgym eval
--data`; and the importer's choices and errors on the trimmed real samples and a UMI zarr."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import wmgym  # noqa: F401  (registers the envs)
from test_robot_readers import BRIDGE, DATA, make_umi, write_mp4
from wmgym.cli import main
from wmgym.data.store import EpisodeStore

H, W, FPS, EPISODES, FRAMES = 40, 72, 10, 20, 8  # 20 episodes: 2 held out
CAMERAS = ("observation.images.wrist", "observation.images.front")
STATE = ["x", "y", "z", "qx", "qy", "qz", "grip"]
ACTION = ["vx", "vy", "vz", "wx", "wy", "wz"]


def write_lerobot_v21(root: Path) -> Path:
    """A LeRobot v2.1 dataset as LeRobot writes it: info.json, episodes.jsonl, tasks.jsonl, one
    parquet table and one H.264 video per camera per episode. Each episode shows a bright square
    that moves by its actions' first two values, so actions and frames agree."""
    rng = np.random.default_rng(0)
    features = {camera: {"dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channel"],
                         "info": {"video.fps": FPS, "video.codec": "h264"}} for camera in CAMERAS}
    features.update({"observation.state": {"dtype": "float32", "shape": [7], "names": STATE},
                     "action": {"dtype": "float32", "shape": [6], "names": {"motors": ACTION}},
                     **{k: {"dtype": d, "shape": [1], "names": None} for k, d in
                        (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                         ("index", "int64"), ("task_index", "int64"))}})
    tasks = ["push the block left", "push the block right"]
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps({
        "codebase_version": "v2.1", "robot_type": "toy_arm", "total_episodes": EPISODES, "total_frames": EPISODES * FRAMES,
        "total_tasks": 2, "chunks_size": 1000, "fps": FPS, "splits": {"train": f"0:{EPISODES}"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4", "features": features}))
    (root / "meta" / "tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(tasks)))
    lines = []
    for e in range(EPISODES):
        actions = rng.uniform(-3, 3, (FRAMES, 6)).astype(np.float32)
        position = np.cumsum(np.concatenate([[[20.0, 10.0]], actions[:-1, :2]]), axis=0)
        frames = np.full((FRAMES, H, W, 3), 30, np.uint8)
        for t, (x, y) in enumerate(position):
            x, y = int(np.clip(x, 0, W - 8)), int(np.clip(y, 0, H - 8))
            frames[t, y: y + 8, x: x + 8] = (230, 200, 40)
        for c, camera in enumerate(CAMERAS):
            write_mp4(root / "videos" / "chunk-000" / camera / f"episode_{e:06d}.mp4", frames if c == 0 else frames[:, ::-1], FPS)
        state = np.concatenate([np.c_[position / 100, np.zeros(FRAMES)], rng.normal(size=(FRAMES, 3)), np.ones((FRAMES, 1))], 1)
        table = pa.table({"observation.state": pa.array(list(state.astype(np.float32)), pa.list_(pa.float32(), 7)),
                          "action": pa.array(list(actions), pa.list_(pa.float32(), 6)),
                          "timestamp": pa.array(np.arange(FRAMES, dtype=np.float32) / FPS),
                          "frame_index": pa.array(np.arange(FRAMES)), "episode_index": pa.array(np.full(FRAMES, e)),
                          "index": pa.array(e * FRAMES + np.arange(FRAMES)), "task_index": pa.array(np.full(FRAMES, e % 2))})
        (root / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / "data" / "chunk-000" / f"episode_{e:06d}.parquet")
        lines.append(json.dumps({"episode_index": e, "tasks": [tasks[e % 2]], "length": FRAMES}) + "\n")
    (root / "meta" / "episodes.jsonl").write_text("".join(lines))
    return root


def test_an_unseen_robot_goes_from_import_to_eval_from_the_command_line(tmp_path, capsys):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    source = write_lerobot_v21(tmp_path / "toy_arm")
    store, run, bundle, out = (str(tmp_path / name) for name in ("toy.zarr", "run", "bundle", "eval"))
    main(["import", str(source), "--out", store])
    said = capsys.readouterr().out
    assert "camera 'observation.images.wrist' 40x72 -> 40x72" in said and "native (6 values: vx, vy" in said
    main(["train-wm", "--data", store, "--out", run, "--steps", "2", "--batch-size", "4", "--width", "32", "--depth", "1",
          "--num-heads", "2", "--checkpoint-every", "2", "--validate-every", "100", "--num-steps", "2", "--device", "cpu"])
    main(["bundle", "--world-model", run, "--data", store, "--out", bundle])
    env = gym.make("wmgym/WorldModel-v0", checkpoint=bundle, device="cpu")
    assert env.action_space.shape == (6,) and env.observation_space.shape == (H, W, 3)
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped)
    observation, _ = env.reset(seed=0)
    observation, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert observation.shape == (H, W, 3) and np.isfinite(reward)
    main(["eval", "--checkpoint", bundle, "--data", store, "--out", out, "--episodes", "2", "--horizon", "4",
          "--swap-episodes", "2", "--device", "cpu"])
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    assert metrics["episodes"] == 2 and len(metrics["psnr_by_step"]) == 4 and metrics["swap_pairs"] == 2


def test_the_importer_resumes_and_refuses_other_settings(tmp_path, capsys):
    store = tmp_path / "b.zarr"
    main(["import", str(BRIDGE), "--out", str(store), "--episodes", "0:1", "--no-show-progress"])
    with pytest.raises(SystemExit, match="already exists"):
        main(["import", str(BRIDGE), "--out", str(store), "--no-show-progress"])
    with pytest.raises(SystemExit, match="other settings"):
        main(["import", str(BRIDGE), "--out", str(store), "--resume", "--stride", "2", "--no-show-progress"])
    main(["import", str(BRIDGE), "--out", str(store), "--episodes", "0:1", "--resume", "--no-show-progress"])
    assert EpisodeStore.open(store).num_episodes == 1


def test_bridge_poses_become_bimanual_actions_over_a_stride(tmp_path):
    from wmgym.actions import poses_from_actions
    from wmgym.data.lerobot import open_lerobot
    from wmgym.data.robot_actions import BRIDGE_GRIPPER, BRIDGE_ROTATION, PARKED_RIGHT_POSE, PARKED_WIDTH, EefPoseLayout, poses_from_state

    store = tmp_path / "eef.zarr"
    main(["import", str(BRIDGE), "--out", str(store), "--actions", "eef-pose", "--euler", "xyz", "--gripper-range", "0", "1",
          "--stride", "3", "--no-show-progress"])
    episode = EpisodeStore.open(store).read_episode(1)
    state = open_lerobot(BRIDGE).read_episode(1, cameras=[]).state[::3]  # the kept rows
    truth = poses_from_state(state, EefPoseLayout.bridge(), BRIDGE_ROTATION, BRIDGE_GRIPPER)
    left, right, _ = poses_from_actions(truth.left_poses[0], PARKED_RIGHT_POSE, episode["actions"],
                                        truth.left_widths[0], PARKED_WIDTH)
    np.testing.assert_allclose(left, truth.left_poses, atol=1e-5)  # recomputed over the stride, not summed
    np.testing.assert_allclose(right, np.broadcast_to(PARKED_RIGHT_POSE, right.shape), atol=1e-6)  # the parked hand
    assert len(episode["camera"]) == len(state) == 4  # 10 frames, every third kept


def test_a_umi_zarr_imports_with_its_poses(tmp_path):
    make_umi(tmp_path / "umi.zarr")
    store = tmp_path / "umi_store.zarr"
    main(["import", str(tmp_path / "umi.zarr"), "--out", str(store), "--actions", "eef-pose", "--no-show-progress"])
    imported = EpisodeStore.open(store)
    assert imported.num_episodes == 2 and imported.read_episode(0)["actions"].shape[1] == 20


@pytest.mark.parametrize("arguments, message", [
    (["--actions", "eef-pose"], "rotation convention"),
    (["--camera", "observation.images.depth"], "is not in"),
    (["--episodes", "5"], "selects"),
    (["--actions", "eef-pose", "--rotation", "euler"], "rotation convention must be given"),
])
def test_importer_choices_that_do_not_fit_are_refused_before_anything_is_written(tmp_path, arguments, message):
    with pytest.raises(SystemExit, match=message):
        main(["import", str(BRIDGE), "--out", str(tmp_path / "x.zarr"), "--no-show-progress", *arguments])
    assert not (tmp_path / "x.zarr").exists()


def test_an_unknown_format_is_refused(tmp_path):
    (tmp_path / "folder").mkdir()
    shutil.copy(DATA / "README.md", tmp_path / "folder" / "README.md") if (DATA / "README.md").exists() else None
    with pytest.raises(SystemExit, match="not a dataset wmgym can import"):
        main(["import", str(tmp_path / "folder"), "--out", str(tmp_path / "x.zarr")])
