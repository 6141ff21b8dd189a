"""LPIPS calibrated on the simulator's fold score: `wmgym train-lpips`, the calibrated head, bundles."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wmgym.data.generate import GenerateConfig, generate
from wmgym.data.store import EpisodeStore
from wmgym.envs.bundle import Bundle, make_bundle
from wmgym.policies.mpc import make_reward_head
from wmgym.rewards.base import to_unit_float
from wmgym.rewards.lpips_head import LPIPSHead, build_lpips, load_calibrated, save_calibrated
from wmgym.train.lpips_calibration import ScoredFrames, TrainLPIPSConfig, ranking_loss, train_lpips

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 32  # AlexNet's pooling needs >= 31 pixels a side


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lpips") / "store.zarr"
    generate(GenerateConfig(out=str(path), episodes=6, resolution=SIZE, horizon=6, workers=1, show_progress=False))
    return path


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lpips_run") / "lpips"
    train_lpips(TrainLPIPSConfig(data=str(store), out=str(out), steps=4, batch_size=8, validate_every=2, checkpoint_every=2,
                                 log_every=1, val_fraction=0.34, show_progress=False, device="cpu"))
    return out


def frames(seed, batch):
    return np.random.default_rng(seed).integers(0, 256, size=(batch, SIZE, SIZE, 3), dtype=np.uint8)


def test_scored_frames_pair_every_frame_with_its_episodes_goal_and_one_minus_score(store):
    part = ScoredFrames(str(store), "all", 0.0)
    raw = EpisodeStore.open(store)
    assert len(part) == raw.num_frames
    np.testing.assert_array_equal(part.frames, raw.root["data/camera0_rgb"][:])
    np.testing.assert_allclose(part.target, 1.0 - raw.root["data/score"][:])
    for e in range(raw.num_episodes):
        rows = raw.episode_slice(e)
        assert (part.episode[rows] == e).all()
        assert part.finals[e] == rows.stop - 1
        np.testing.assert_array_equal(part.goals[e], raw.root["meta/goal_rgb"][e])


def test_ranking_loss_prefers_distances_ordered_like_the_targets():
    target = torch.tensor([0.0, 0.3, 0.6, 0.9])
    ordered = ranking_loss(torch.tensor([0.1, 0.2, 0.3, 0.4]), target, 0.05)
    reversed_ = ranking_loss(torch.tensor([0.4, 0.3, 0.2, 0.1]), target, 0.05)
    assert float(ordered) < 0.2 < 2.0 < float(reversed_)
    # targets within the margin are not ranked: no pairs, zero loss that still has a gradient
    distance = torch.tensor([0.5, 0.1], requires_grad=True)
    tied = ranking_loss(distance, torch.tensor([0.5, 0.51]), 0.05)
    assert float(tied.detach()) == 0.0
    tied.backward()
    assert distance.grad is not None


def test_calibrated_round_trip_gives_the_same_distances(tmp_path):
    model = build_lpips("alex")
    with torch.no_grad():  # make it differ from a fresh build
        for p in model.parameters():
            p.mul_(1.5)
    save_calibrated(model, "alex", tmp_path, {"note": "test"})
    loaded, net = load_calibrated(tmp_path)
    assert net == "alex" and json.loads((tmp_path / "config.json").read_text())["note"] == "test"
    a, b = to_unit_float(torch.from_numpy(frames(0, 3))), to_unit_float(torch.from_numpy(frames(1, 3)))
    with torch.no_grad():
        torch.testing.assert_close(loaded(a, b), model(a, b))
        assert not torch.allclose(build_lpips("alex")(a, b), model(a, b))
    head = LPIPSHead(calibrated=tmp_path, device="cpu")
    assert head.calibration == "simulator" and not head.is_pretrained
    torch.testing.assert_close(head.distance(frames(0, 3), frames(1, 3)), model(a, b).reshape(3))


def test_calibrated_loading_rejects_missing_files_wrong_keys_and_mixed_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-lpips"):
        LPIPSHead(calibrated=tmp_path)
    save_calibrated(build_lpips("squeeze"), "squeeze", tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"net": "alex"}))  # the weights are squeezenet's
    with pytest.raises(ValueError, match="not an LPIPS-alex state dict"):
        load_calibrated(tmp_path)
    with pytest.raises(ValueError, match="leave trunk_weights"):
        LPIPSHead(calibrated=tmp_path, allow_offline_fallback=True)


def test_train_lpips_writes_a_head_that_loads_and_logs_validation(trained, store):
    head = LPIPSHead(calibrated=trained, device="cpu")
    assert head.net == "alex"
    log = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    val = [entry for entry in log if "val/store/spearman" in entry]
    assert [entry["step"] for entry in val] == [2, 4]
    assert all(-1.0 <= entry["val/store/spearman"] <= 1.0 for entry in val)
    assert not (trained / "training_state.safetensors").exists()  # finished runs drop the optimizer state
    config = json.loads((trained / "config.json").read_text())
    assert config["steps"] == 4 and config["stores"] == [str(store)]
    # the linear heads stay non-negative, so distances do too
    assert all(float(lin.model[-1].weight.min()) >= 0 for lin in head.model.lins)
    assert (head.distance(frames(2, 4), frames(3, 4)) >= 0).all()


def test_train_lpips_lowers_the_loss_on_its_data(store, tmp_path):
    out = tmp_path / "lpips"
    config = TrainLPIPSConfig(data=str(store), out=str(out), steps=30, batch_size=16, learning_rate=1e-3, warmup_steps=1,
                              val_fraction=0.0, log_every=10, checkpoint_every=100, show_progress=False, device="cpu", flip=False)
    train_lpips(config)
    losses = [entry["mse"] for entry in map(json.loads, (out / "log.jsonl").read_text().splitlines())]
    assert losses[-1] < losses[0]


def test_train_lpips_resumes_to_the_same_weights(store, tmp_path):
    common = dict(data=str(store), steps=4, batch_size=8, val_fraction=0.0, checkpoint_every=2, show_progress=False, device="cpu")
    train_lpips(TrainLPIPSConfig(out=str(tmp_path / "straight"), **common))
    clock = iter([0.0, 0.0] + [1e9] * 100)  # the run stops after its first step, with a checkpoint
    import wmgym.train.lpips_calibration as module

    original = module.time.perf_counter
    module.time.perf_counter = lambda: next(clock)
    try:
        train_lpips(TrainLPIPSConfig(out=str(tmp_path / "split"), stop_after_minutes=1.0, **common))
    finally:
        module.time.perf_counter = original
    assert json.loads((tmp_path / "split" / "training_state.json").read_text())["step"] == 1
    train_lpips(TrainLPIPSConfig(out=str(tmp_path / "split"), resume=True, **common))
    a, b = load_calibrated(tmp_path / "straight")[0], load_calibrated(tmp_path / "split")[0]
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, msg=name)


def test_train_lpips_rejects_bad_configs(store, tmp_path):
    with pytest.raises(ValueError, match="final_share"):
        train_lpips(TrainLPIPSConfig(data=str(store), out=str(tmp_path / "a"), final_share=1.5))
    with pytest.raises(FileNotFoundError, match="no episode store"):
        train_lpips(TrainLPIPSConfig(data=str(tmp_path / "missing.zarr"), out=str(tmp_path / "b")))
    small = tmp_path / "small.zarr"
    generate(GenerateConfig(out=str(small), episodes=1, resolution=16, horizon=2, workers=1, show_progress=False))
    with pytest.raises(ValueError, match="at least 31 pixels"):
        train_lpips(TrainLPIPSConfig(data=str(small), out=str(tmp_path / "c"), val_fraction=0.0))


def test_bundle_ships_the_calibrated_lpips_as_a_reward(tiny_bundle, trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="lpips-calibrated"):
        make_reward_head("lpips-calibrated", tiny_bundle, "cpu")
    bundle = make_bundle(tmp_path / "bundle", tiny_bundle / "world_model", lpips=trained, num_start_frames=1)
    assert sorted(p.name for p in Bundle.load(bundle).lpips_dir.iterdir()) == ["config.json", "model.safetensors"]
    head = make_reward_head("lpips-calibrated", bundle, "cpu")
    assert head.calibration == "simulator"
    # the bundle stores the weights in float16: half the bytes, and the same distances to 1e-3
    from safetensors.numpy import load_file

    assert all(v.dtype == np.float16 for v in load_file(bundle / "lpips" / "model.safetensors").values())
    a, b = frames(4, 3), frames(5, 3)
    torch.testing.assert_close(head.distance(a, b), LPIPSHead(calibrated=trained, device="cpu").distance(a, b), atol=1e-3, rtol=1e-2)
    with pytest.raises(FileNotFoundError, match="no calibrated LPIPS"):
        make_bundle(tmp_path / "other", tiny_bundle / "world_model", lpips=tmp_path)


def test_wmfold_pays_the_calibrated_distance_as_reward(tiny_bundle, trained, tmp_path):
    import gymnasium as gym

    import wmgym  # noqa: F401  (registers WMFold-v0)
    from wmgym.actions import identity_action

    with pytest.raises(FileNotFoundError, match="wmgym bundle --lpips"):
        gym.make("WMFold-v0", checkpoint=str(tiny_bundle), device="cpu", reward="lpips-calibrated", use_success_judge=False)
    bundle = make_bundle(tmp_path / "bundle", tiny_bundle / "world_model", lpips=trained, num_start_frames=1)
    env = gym.make("WMFold-v0", checkpoint=str(bundle), device="cpu", reward="lpips-calibrated", use_success_judge=False)
    obs, _ = env.reset(seed=0)
    head = LPIPSHead(calibrated=bundle / "lpips", device="cpu")
    goal = Bundle.load(bundle).goals["fold_half"][0]
    before = head.score(obs[None], goal)
    obs, reward, *_, info = env.step(identity_action(0.08, 0.08))
    # the reward is the change of -distance to the task's goal image, from the bundle's model
    assert reward == pytest.approx(float(head.score(obs[None], goal) - before), abs=1e-4)
    assert set(info["reward_terms"]) == {"lpips"}


def test_cli_train_lpips_writes_the_model_and_reports_bad_input(store, tmp_path):
    from wmgym.cli import main

    out = tmp_path / "cli"
    main(["train-lpips", "--data", str(store), "--out", str(out), "--steps", "1", "--batch-size", "4", "--val-fraction", "0",
          "--device", "cpu", "--no-show-progress"])
    assert LPIPSHead(calibrated=out, device="cpu").calibration == "simulator"
    with pytest.raises(SystemExit, match="already exists"):
        main(["train-lpips", "--data", str(store), "--out", str(out), "--steps", "1"])
