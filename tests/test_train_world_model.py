"""The world-model training loop: exact resume, pickle-free checkpoints, learning, DDP, CLI."""

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import as_conditions
from wmgym.cli import main
from wmgym.data.dataset import WindowDataset, split_episodes
from wmgym.data.generate import GenerateConfig, generate
from wmgym.data.store import EpisodeStore
from wmgym.model.world_model import WorldModel
from wmgym.train.wm_build import with_condition_views, with_held_conditioning, with_pose_conditioning
from wmgym.train.world_model import TrainWorldModelConfig, train_world_model

pytestmark = pytest.mark.usefixtures("one_thread")

STATE = "training_state.safetensors"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.zarr"
    generate(GenerateConfig(out=str(path), episodes=4, resolution=16, workers=1, show_progress=False))
    return path


def tiny(store: Path, out: Path, **overrides) -> TrainWorldModelConfig:
    """16x16 frames, 16 tokens a frame, 3 train episodes = 39 windows: 4 batches of 8 an epoch."""
    config = TrainWorldModelConfig(data=str(store), out=str(out), steps=6, batch_size=8, width=32, depth=2, num_heads=2,
                                   patch_size=4, warmup_steps=2, checkpoint_every=3, log_every=1, validate_every=100,
                                   val_batches=1, num_steps=2, device="cpu")
    return replace(config, **overrides)


def _forbidden(*args, **kwargs):
    raise AssertionError("training must not pickle anything")


@pytest.fixture(scope="module")
def straight_run(store, tmp_path_factory) -> Path:
    """Six steps in one go, with every pickling entry point booby-trapped."""
    out = tmp_path_factory.mktemp("straight")
    # Import the libraries first: their import-time code (e.g. transformers, pulled in by
    # diffusers) may pickle small objects; the trap is for what training itself writes.
    import accelerate  # noqa: F401
    import diffusers.training_utils  # noqa: F401
    with pytest.MonkeyPatch.context() as patch:
        for target in ("torch.save", "torch.load", "pickle.dump", "pickle.dumps"):
            patch.setattr(target, _forbidden)
        train_world_model(tiny(store, out))
    return out


def test_resume_continues_identically(store, straight_run, tmp_path):
    # Stop after 3 steps (mid-epoch), then resume for 3 more across the epoch boundary.
    train_world_model(tiny(store, tmp_path, stop_after=3))
    assert (tmp_path / "latest").read_text().strip() == "step_0000003"
    train_world_model(tiny(store, tmp_path, resume=True))
    straight = load_file(straight_run / "checkpoints/step_0000006" / STATE)
    resumed = load_file(tmp_path / "checkpoints/step_0000006" / STATE)
    assert straight.keys() == resumed.keys()
    assert any(k.startswith("optimizer/") for k in straight) and any(k.startswith("ema/") for k in straight)
    for key in straight:  # raw weights, EMA shadow, Adam moments and step counts, RNG states
        assert torch.equal(straight[key], resumed[key]), key
    meta = [json.loads((run / "checkpoints/step_0000006/training_state.json").read_text()) for run in (straight_run, tmp_path)]
    assert meta[0] == meta[1]
    # Every step's loss is the same too: same batches, same noise.
    losses = [[r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]
              for run in (straight_run, tmp_path)]
    assert len(losses[0]) == 6 and losses[0] == losses[1]


def test_checkpoint_is_loadable_and_pickle_free(store, straight_run):
    checkpoint = straight_run / "checkpoints/step_0000006"
    files = [p for p in checkpoint.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".json", ".safetensors"}
    for path in files:  # neither a pickle stream (0x80 protocol byte) nor a torch.save zip archive
        assert path.read_bytes()[:2] not in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK"), path
    model = WorldModel.from_pretrained(checkpoint / "model", device="cpu")
    shadow = load_file(checkpoint / STATE)
    for name, param in model.denoiser.named_parameters():  # users load the EMA weights
        assert torch.equal(param, shadow[f"ema/{name}"]), name
    # Action statistics come from the train split, without each episode's padding row.
    episodes = EpisodeStore.open(store)
    train = np.concatenate([episodes.read_episode(int(i))["actions"] for i in split_episodes(4, "train")]).astype(np.float64)
    np.testing.assert_allclose(model.config.action_mean, train.mean(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(model.config.action_std, np.maximum(train.std(0), 1e-3), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(model.config.action_min, train.min(0), rtol=1e-6)  # the clamp range
    np.testing.assert_allclose(model.config.action_max, train.max(0), rtol=1e-6)
    frames = torch.from_numpy(episodes.read_episode(0)["camera"][None, :2])
    out = model.rollout(frames, torch.from_numpy(episodes.read_episode(0)["actions"][None, 1:3]), generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 2, 16, 16, 3)


def test_overfit_four_episodes_loss_drops_tenfold(store, tmp_path):
    # 600 steps of batch 8 (~11 s on one thread): seeds 0-3 gave 27-36x; learning_rate=1e-6 gives 0.98x.
    # v-prediction: a residual model starts near the copy-last-frame loss, so tenfold is not its yardstick.
    config = tiny(store, tmp_path, steps=600, prediction="v", width=64, warmup_steps=10, learning_rate=3e-3, lr_schedule="constant",
                  checkpoint_every=1000, log_every=1, validate_every=1000)
    train_world_model(config)
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines()) if "loss" in r]
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert first > 10 * last, (first, last)


def test_two_processes_take_identical_steps(store, tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    script = tmp_path / "wmgym_main.py"  # the console script's entry point, as a file the launcher can run
    script.write_text("from wmgym.cli import main\nmain()\n")
    # `accelerate launch --cpu` starts several processes only through mpirun; --multi_gpu goes through torchrun,
    # and with ACCELERATE_USE_CPU=1 and no CUDA Accelerate makes that MULTI_CPU with gloo.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
               "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script), "train-wm",
               "--data", str(store), "--out", str(tmp_path / "ddp"), "--steps", "2", "--batch-size", "4", "--width", "32",
               "--depth", "2", "--num-heads", "2", "--patch-size", "4", "--warmup-steps", "1", "--num-steps", "2",
               "--val-batches", "1", "--device", "cpu"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((tmp_path / "ddp/checkpoints/step_0000002/training_state.json").read_text())
    assert meta["num_processes"] == 2
    digests = meta["weight_digests"]  # one sha256 of the raw weights per process
    assert len(digests) == 2 and digests[0] == digests[1]
    # And the processes did see different data: one process alone takes different steps.
    train_world_model(tiny(store, tmp_path / "single", steps=2, batch_size=4, warmup_steps=1, checkpoint_every=2))
    single = json.loads((tmp_path / "single/checkpoints/step_0000002/training_state.json").read_text())
    assert single["weight_digests"][0] != digests[0]


def test_cli_train_wm_runs_and_refuses_to_overwrite(store, tmp_path):
    args = ["train-wm", "--data", str(store), "--out", str(tmp_path), "--steps", "2", "--batch-size", "4", "--width", "32",
            "--depth", "2", "--num-heads", "2", "--patch-size", "4", "--num-steps", "2", "--val-batches", "1"]
    main(args)
    assert (tmp_path / "latest").read_text().strip() == "step_0000002"
    assert WorldModel.from_pretrained(tmp_path / "checkpoints/step_0000002/model", device="cpu").config.height == 16
    with pytest.raises(SystemExit, match="pass --resume"):
        main(args)


def test_trained_codec_is_frozen_and_shipped_in_the_checkpoint(store, tmp_path):
    from wmgym.train.codec import TrainCodecConfig, load_codec, train_codec

    codec_dir = train_codec(TrainCodecConfig(data=str(store), out=str(tmp_path / "codec"), steps=1, batch_size=4,
                                             block_out_channels=(8, 8), norm_num_groups=4, val_frames=4, device="cpu"))
    train_world_model(tiny(store, tmp_path / "wm", steps=2, patch_size=2, codec=str(codec_dir)))
    model = WorldModel.from_pretrained(tmp_path / "wm/checkpoints/step_0000002/model", device="cpu")
    assert model.config.codec["type"] == "autoencoder_kl"
    assert (model.denoiser.config.latent_channels, model.denoiser.config.latent_height) == (4, 8)  # 16x16 / 2
    trained = load_codec(codec_dir).state_dict()
    for key, value in model.codec.state_dict().items():  # frozen: the world model never changed it
        assert torch.equal(value, trained[key]), key


def test_init_from_starts_a_fresh_run_from_saved_weights(store, straight_run, tmp_path):
    saved = straight_run / "checkpoints/step_0000006/model"
    train_world_model(tiny(store, tmp_path / "ft", steps=1, checkpoint_every=1, width=64, init_from=str(saved)))
    source = WorldModel.from_pretrained(saved, device="cpu")
    tuned = WorldModel.from_pretrained(tmp_path / "ft/checkpoints/step_0000001/model", device="cpu")
    assert tuned.config == source.config  # the saved model's architecture wins over --width
    state = json.loads((tmp_path / "ft/checkpoints/step_0000001/training_state.json").read_text())
    assert state["step"] == 1  # a fresh schedule, not the source run's step 6
    moved = [not torch.equal(a, b) for a, b in zip(source.denoiser.parameters(), tuned.denoiser.parameters())]
    close = [torch.allclose(a, b, atol=0.05) for a, b in zip(source.denoiser.parameters(), tuned.denoiser.parameters())]
    assert any(moved) and all(close)  # one small step from the saved weights, not from a new initialisation
    with pytest.raises(ValueError, match="makes 16x16 frames"):
        other = tmp_path / "data32.zarr"
        generate(GenerateConfig(out=str(other), episodes=2, resolution=32, workers=1, show_progress=False))
        train_world_model(tiny(other, tmp_path / "ft32", init_from=str(saved)))


def test_init_from_with_grippers_view_starts_equal_then_learns_to_use_it(store, straight_run, tmp_path):
    saved = straight_run / "checkpoints/step_0000006/model"
    source = WorldModel.from_pretrained(saved, device="cpu")
    conditioned = with_condition_views(source, ("grippers",))
    assert conditioned.config.condition_views == ("grippers",)
    frames = torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8)
    views = torch.randint(0, 256, (2, 3, 1, 16, 16, 3), dtype=torch.uint8)
    actions = torch.zeros(2, 2, 20)
    a = source.compute_loss(frames, actions, generator=torch.Generator().manual_seed(0))[0]
    b = conditioned.compute_loss(frames, actions, as_conditions(views), generator=torch.Generator().manual_seed(0))[0]
    assert torch.equal(a, b)  # the zero-initialised condition input changes nothing yet
    with pytest.raises(ValueError, match="already conditioned"):
        with_condition_views(conditioned, ("grippers",))

    train_world_model(tiny(store, tmp_path / "grip", steps=2, checkpoint_every=2, init_from=str(saved),
                           condition_views=("grippers",)))
    tuned = WorldModel.from_pretrained(tmp_path / "grip/checkpoints/step_0000002/model", device="cpu")
    assert tuned.config.condition_views == ("grippers",)
    assert tuned.denoiser.condition_in.weight.abs().sum() > 0  # trained on the store's grippers views
    log = [json.loads(line) for line in (tmp_path / "grip/log.jsonl").read_text().splitlines()]
    assert any("val/x0_psnr" in entry for entry in log)  # validation ran with the views


@pytest.mark.parametrize("pose_input", ["embedding", "channels"])
def test_init_from_with_pose_conditioning_starts_equal_then_learns_to_use_the_pose(store, straight_run, tmp_path, pose_input):
    saved = straight_run / "checkpoints/step_0000006/model"
    source = with_condition_views(WorldModel.from_pretrained(saved, device="cpu"), ("grippers",))
    source.denoiser.condition_in.weight.data.normal_()  # a model that already uses its grippers view
    posed = with_pose_conditioning(source, [0.1] * 8, [0.5] * 8, pose_input=pose_input)
    assert posed.is_pose_conditioned and not source.is_pose_conditioned
    assert posed.denoiser.config.condition_channels == 3 + 8
    assert posed.denoiser.config.vector_dim == (8 if pose_input == "embedding" else 0)
    frames = torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8)
    views = torch.randint(0, 256, (2, 3, 1, 16, 16, 3), dtype=torch.uint8)
    poses = torch.randn(2, 3, 8)
    actions = torch.zeros(2, 2, 20)
    a = source.compute_loss(frames, actions, as_conditions(views), generator=torch.Generator().manual_seed(0))[0]
    b = posed.compute_loss(frames, actions, as_conditions(views, poses), generator=torch.Generator().manual_seed(0))[0]
    torch.testing.assert_close(a, b)  # every old weight was kept; the pose's path starts at zero
    with pytest.raises(ValueError, match="pass poses"):
        posed.compute_loss(frames, actions, as_conditions(views))
    with pytest.raises(ValueError, match="not pose-conditioned"):
        source.compute_loss(frames, actions, as_conditions(views, poses))
    with pytest.raises(ValueError, match="already pose-conditioned"):
        with_pose_conditioning(posed, [0.0] * 8, [1.0] * 8)
    with pytest.raises(ValueError, match="pose_input"):
        with_pose_conditioning(source, [0.0] * 8, [1.0] * 8, pose_input="tokens")
    with pytest.raises(ValueError, match="already conditioned"):
        with_condition_views(with_pose_conditioning(WorldModel.from_pretrained(saved, device="cpu"), [0.0] * 8, [1.0] * 8),
                             ("grippers",))

    train_world_model(tiny(store, tmp_path / "pose", steps=2, checkpoint_every=2, init_from=str(saved),
                           condition_views=("grippers",), pose_conditioning=True, pose_input=pose_input))
    tuned = WorldModel.from_pretrained(tmp_path / "pose/checkpoints/step_0000002/model", device="cpu")
    assert tuned.is_pose_conditioned and tuned.config.condition_views == ("grippers",)
    store_poses = WindowDataset(store, split="train", poses=True).poses.numpy().astype(np.float64)
    np.testing.assert_allclose(tuned.config.condition_vectors["poses"]["mean"], store_poses.mean(0), atol=1e-5)  # the train split's statistics
    if pose_input == "embedding":
        first_effect = tuned.denoiser.vector_embed[2].weight  # the embedding's last layer, zero at the start
        assert tuned.denoiser.condition_in.weight.shape[1] == 3 * 4 * 4  # the views' columns only
    else:
        first_effect = tuned.denoiser.condition_in.weight[:, 3 * 4 * 4:]  # channel-major patches: the pose's come last
    assert first_effect.abs().sum() > 0  # trained on the store's poses
    log = [json.loads(line) for line in (tmp_path / "pose/log.jsonl").read_text().splitlines()]
    assert any("val/x0_psnr" in entry for entry in log)  # validation ran with views and poses


@pytest.mark.parametrize("with_pose", [False, True])
def test_init_from_with_held_conditioning_starts_equal_then_learns_to_use_the_grasp_state(store, straight_run, tmp_path,
                                                                                           with_pose):
    saved = straight_run / "checkpoints/step_0000006/model"
    source = with_condition_views(WorldModel.from_pretrained(saved, device="cpu"), ("grippers",))
    source.denoiser.condition_in.weight.data.normal_()  # a model that already uses its grippers view
    if with_pose:
        source = with_pose_conditioning(source, [0.1] * 8, [0.5] * 8)
        source.denoiser.vector_embed[2].weight.data.normal_()  # ... and its pose
    held_model = with_held_conditioning(source)
    assert held_model.is_held_conditioned and not source.is_held_conditioned
    assert held_model.denoiser.config.condition_channels == 3 + 8 * with_pose + 2
    assert held_model.denoiser.config.vector_dim == 8 * with_pose + 2
    frames = torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8)
    views = torch.randint(0, 256, (2, 3, 1, 16, 16, 3), dtype=torch.uint8)
    poses = torch.randn(2, 3, 8) if with_pose else None
    held = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 0.5], [0.0, 0.0]]])
    loss = lambda model, held=None: model.compute_loss(frames, actions, as_conditions(views, poses, held),
                                                       generator=torch.Generator().manual_seed(0))[0]
    actions = torch.zeros(2, 2, 20)
    torch.testing.assert_close(loss(source), loss(held_model, held=held))  # old weights kept, the new path starts at zero
    with pytest.raises(ValueError, match="pass held"):
        loss(held_model)
    with pytest.raises(ValueError, match="not held-conditioned"):
        loss(source, held=held)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        loss(held_model, held=held * 2)
    with pytest.raises(ValueError, match="already held-conditioned"):
        with_held_conditioning(held_model)
    with pytest.raises(ValueError, match="already (pose|held)-conditioned"):
        with_pose_conditioning(held_model, [0.0] * 8, [1.0] * 8)
    with pytest.raises(ValueError, match="constant channels"):
        with_held_conditioning(with_pose_conditioning(WorldModel.from_pretrained(saved, device="cpu"), [0.0] * 8, [1.0] * 8,
                                                      pose_input="channels"))
    held_model.denoiser.vector_embed[2].weight.data.normal_()
    for block in held_model.denoiser.blocks:  # the frame vector acts through the adaLN modulation, near zero here
        block.modulation[1].weight.data.normal_(0, 0.1)
    held_model.denoiser.patch_out.weight.data.normal_(0, 0.1)  # and the output layer, near zero after 6 steps
    if with_pose:
        held_model.denoiser.vector_embed[0].weight.data[:, -2:].normal_()
    assert not torch.allclose(loss(held_model, held=held), loss(held_model, held=1 - held))  # the grasp state now matters

    train_world_model(tiny(store, tmp_path / "held", steps=2, checkpoint_every=2, init_from=str(saved),
                           condition_views=("grippers",), held_conditioning=True, pose_conditioning=with_pose))
    tuned = WorldModel.from_pretrained(tmp_path / "held/checkpoints/step_0000002/model", device="cpu")
    assert tuned.is_held_conditioned and tuned.is_pose_conditioned == with_pose
    assert tuned.denoiser.vector_embed[2].weight.abs().sum() > 0  # trained on the store's grasp state
    log = [json.loads(line) for line in (tmp_path / "held/log.jsonl").read_text().splitlines()]
    assert any("val/x0_psnr" in entry for entry in log)  # validation ran with the grasp state


def test_fresh_held_conditioned_run_reads_the_grasp_state_through_the_frame_vector(store, tmp_path):
    train_world_model(tiny(store, tmp_path / "fresh_held", steps=1, checkpoint_every=1, held_conditioning=True,
                           pose_conditioning=True))
    model = WorldModel.from_pretrained(tmp_path / "fresh_held/checkpoints/step_0000001/model", device="cpu")
    assert model.is_held_conditioned and model.denoiser.config.vector_dim == 10 and model.frame_vector_dim == 10
    with pytest.raises(ValueError, match="not channels"):
        train_world_model(tiny(store, tmp_path / "bad", steps=1, held_conditioning=True, pose_conditioning=True,
                               pose_input="channels"))


def test_fresh_pose_conditioned_run_reads_the_pose_through_its_embedding(store, tmp_path):
    train_world_model(tiny(store, tmp_path / "fresh_pose", steps=1, checkpoint_every=1, pose_conditioning=True))
    model = WorldModel.from_pretrained(tmp_path / "fresh_pose/checkpoints/step_0000001/model", device="cpu")
    assert model.is_pose_conditioned and model.denoiser.config.vector_dim == 8
    assert model.denoiser.config.condition_channels == 8 and model.denoiser.condition_in is None


def test_fresh_run_with_grippers_view_builds_a_conditioned_model(store, tmp_path):
    train_world_model(tiny(store, tmp_path / "fresh", steps=1, checkpoint_every=1, condition_views=("grippers",)))
    model = WorldModel.from_pretrained(tmp_path / "fresh/checkpoints/step_0000001/model", device="cpu")
    assert model.config.condition_views == ("grippers",)
    assert model.denoiser.config.condition_channels == 3


def test_gripper_loss_weight_trains_a_grippers_model_and_refuses_one_without_the_view(store, tmp_path):
    train_world_model(tiny(store, tmp_path / "weighted", steps=1, checkpoint_every=1, condition_views=("grippers",),
                           gripper_loss_weight=4.0))
    log = [json.loads(line) for line in (tmp_path / "weighted/log.jsonl").read_text().splitlines()]
    assert any(math.isfinite(entry.get("loss", math.nan)) for entry in log)
    with pytest.raises(ValueError, match="grippers"):
        train_world_model(tiny(store, tmp_path / "plain", steps=1, gripper_loss_weight=4.0))
    with pytest.raises(ValueError, match="gripper_loss_weight"):
        train_world_model(tiny(store, tmp_path / "negative", steps=1, gripper_loss_weight=-1.0))


def test_extra_data_joins_the_training_windows_andaction_statistics(store, tmp_path):
    from wmgym.data.dataset import WindowDataset
    from wmgym.train.wm_build import action_statistics

    replay = tmp_path / "replay.zarr"
    generate(GenerateConfig(out=str(replay), episodes=4, resolution=16, workers=1, show_progress=False, kinds="X"))
    assert {EpisodeStore.open(replay).read_episode(i)["kind"] for i in range(4)} == {"replay"}
    alone, joined = WindowDataset(store, split="train"), WindowDataset([store, replay], split="train")
    assert len(joined) == 2 * len(alone)  # same horizon and split sizes in both stores
    mean = np.array(action_statistics(joined)[0])
    assert not np.allclose(mean, action_statistics(alone)[0])
    real = joined.actions.numpy()[np.setdiff1d(np.arange(len(joined.actions)), np.cumsum(joined.episode_lengths) - 1)]
    np.testing.assert_allclose(mean, real.astype(np.float64).mean(0), atol=1e-6)
    out = tmp_path / "run"
    main(["train-wm", "--data", str(store), "--extra-data", str(replay), "--out", str(out), "--steps", "2", "--batch-size",
          "8", "--width", "32", "--depth", "2", "--num-heads", "2", "--patch-size", "4", "--num-steps", "2",
          "--val-batches", "1"])
    model = WorldModel.from_pretrained(out / "checkpoints/step_0000002/model", device="cpu")
    np.testing.assert_allclose(model.config.action_mean, mean, atol=1e-6)
    assert json.loads((out / "train_config.json").read_text())["extra_data"] == [str(replay)]


def test_stop_after_minutes_stops_with_a_checkpoint_that_resumes(store, tmp_path, monkeypatch):
    # A clock that advances one minute per reading: the deadline (2 minutes after the start) passes
    # after the first step or two, long before the 6 steps, and the run ends with a checkpoint.
    import wmgym.train.world_model as trainer

    clock = iter(range(10_000))
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: 60.0 * next(clock))
    train_world_model(tiny(store, tmp_path, stop_after_minutes=2.0))
    stopped = int((tmp_path / "latest").read_text().strip().split("_")[1])
    assert 1 <= stopped < 6
    monkeypatch.undo()
    train_world_model(tiny(store, tmp_path, resume=True))  # no limit: it finishes the schedule
    assert (tmp_path / "latest").read_text().strip() == "step_0000006"
    with pytest.raises(ValueError, match="stop_after_minutes"):
        train_world_model(tiny(store, tmp_path / "bad", stop_after_minutes=0.0))


def test_window_offsets_are_each_windows_first_frame_in_its_episode(store):
    data = WindowDataset(store, split="train", num_actions=4)
    expected = np.concatenate([np.arange(n - 4) for n in data.episode_lengths])
    np.testing.assert_array_equal(data.window_offsets, expected)
    first = data[int(np.flatnonzero(data.window_offsets == 3)[0])].frames  # episode 0's window at frame 3
    np.testing.assert_array_equal(first.numpy(), data.frames[3:8].numpy())


def test_focus_windows_are_drawn_focus_repeats_times_per_epoch():
    from wmgym.train.sampling import EpochPermutationSampler, epoch_items

    offsets = np.concatenate([np.arange(10), np.arange(7)])  # two episodes' windows
    np.testing.assert_array_equal(epoch_items(offsets, None, 4), np.arange(17))
    np.testing.assert_array_equal(epoch_items(offsets, (2, 5), 1), np.arange(17))
    items = epoch_items(offsets, (2, 5), 3)
    counts = np.bincount(items, minlength=17)
    focus = (offsets >= 2) & (offsets <= 5)
    assert (counts[focus] == 3).all() and (counts[~focus] == 1).all()
    sampler = EpochPermutationSampler(items, seed=5)
    drawn = list(sampler)
    assert len(drawn) == len(sampler) == 17 + 2 * 8 and sorted(drawn) == sorted(items.tolist())
    sampler.set_epoch(1)
    assert list(sampler) != drawn  # a new order each epoch
    # A plain count draws the same order as before the sampler took index arrays.
    rng = np.random.default_rng(np.random.SeedSequence(5, spawn_key=(0,)))
    assert list(EpochPermutationSampler(17, seed=5)) == rng.permutation(17).tolist()
    with pytest.raises(ValueError, match="no training window starts at frames 20..30"):
        epoch_items(offsets, (20, 30), 2)


def test_epoch_loader_draws_whole_batches_in_the_seeded_order_without_the_global_rng():
    import torch

    from wmgym.train.sampling import EpochPermutationSampler, epoch_loader

    data = torch.arange(10)
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    loader = epoch_loader(data, batch_size=3, seed=4)
    batches = [b.tolist() for b in loader]
    assert torch.equal(torch.rand(1), before)  # iterating did not draw from the global RNG
    order = list(EpochPermutationSampler(10, seed=4))
    assert batches == [order[0:3], order[3:6], order[6:9]]  # the last partial batch is dropped
    focused = epoch_loader(data, batch_size=2, seed=4, items=np.array([1, 1, 2, 2]))
    assert sorted(x for b in focused for x in b.tolist()) == [1, 1, 2, 2]


def test_focus_windows_lengthen_the_epoch_and_resume_identically(store, tmp_path):
    focus = dict(focus_window_starts=(2, 5), focus_repeats=3, steps=8, checkpoint_every=4)
    train_world_model(tiny(store, tmp_path / "straight", **focus))
    train_world_model(tiny(store, tmp_path / "halves", stop_after=4, **focus))
    train_world_model(tiny(store, tmp_path / "halves", resume=True, **focus))
    offsets = WindowDataset(store, split="train", num_actions=4).window_offsets
    expected = (len(offsets) + 2 * int(((offsets >= 2) & (offsets <= 5)).sum())) // 8
    for run in ("straight", "halves"):
        state = json.loads((tmp_path / run / "checkpoints/step_0000008" / "training_state.json").read_text())
        assert state["batches_per_epoch"] == expected > len(offsets) // 8
    a = load_file(tmp_path / "straight/checkpoints/step_0000008" / STATE)
    b = load_file(tmp_path / "halves/checkpoints/step_0000008" / STATE)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    with pytest.raises(ValueError, match="focus_window_starts"):
        train_world_model(tiny(store, tmp_path / "bad", focus_window_starts=(5, 2), focus_repeats=2))
    with pytest.raises(ValueError, match="focus_repeats"):
        train_world_model(tiny(store, tmp_path / "bad", focus_window_starts=(2, 5), focus_repeats=0))


def test_pose_lr_scale_scales_the_first_step_of_the_pose_embedding_only(store, straight_run, tmp_path):
    saved = tmp_path / "source"
    WorldModel.from_pretrained(straight_run / "checkpoints/step_0000006/model", device="cpu").save_pretrained(saved)
    common = dict(steps=1, checkpoint_every=1, init_from=str(saved), pose_conditioning=True, pose_input="embedding")
    deltas = {}
    for scale in (1.0, 10.0):
        train_world_model(tiny(store, tmp_path / f"s{scale}", pose_lr_scale=scale, **common))
        tuned = WorldModel.from_pretrained(tmp_path / f"s{scale}/checkpoints/step_0000001/model", device="cpu")
        start = with_pose_conditioning(WorldModel.from_pretrained(saved, device="cpu"), tuned.config.condition_vectors["poses"]["mean"],
                                       tuned.config.condition_vectors["poses"]["std"])
        deltas[scale] = {name: param.detach() - start.denoiser.state_dict()[name]
                         for name, param in tuned.denoiser.named_parameters()}
    # Adam's first step is lr * g / |g| (+ decay, also proportional to lr): the same gradients,
    # so the pose embedding's zero-initialised output layer moves exactly 10 times as far and
    # every old weight the same. (Its first layer starts random; at step 1 it has no gradient.)
    for name, delta in deltas[1.0].items():
        scaled = deltas[10.0][name]
        if name.startswith("vector_embed.0."):
            continue
        if name.startswith("vector_embed."):
            assert delta.abs().sum() > 0, name
            torch.testing.assert_close(scaled, 10 * delta, rtol=1e-4, atol=1e-7, msg=name)
        else:
            torch.testing.assert_close(scaled, delta, rtol=1e-5, atol=1e-7, msg=name)
    with pytest.raises(ValueError, match="pose_lr_scale needs"):
        train_world_model(tiny(store, tmp_path / "noposes", steps=1, pose_lr_scale=10.0))
    with pytest.raises(ValueError, match="pose_lr_scale"):
        train_world_model(tiny(store, tmp_path / "neg", steps=1, pose_lr_scale=0.0))
