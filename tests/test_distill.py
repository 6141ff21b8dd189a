"""`wmgym distill`: progressive distillation of the 2-step sampler into a one-step denoiser that the
sampler uses for num_steps=1 only; the loss falls, the written world model loads, a run resumes,
bad input is refused."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import as_conditions
from wmgym.cli import main
from wmgym.data.batch import WindowBatch
from wmgym.data.dataset import WindowDataset
from wmgym.data.generate import GenerateConfig, generate
from wmgym.model.denoiser import DenoiserConfig
from wmgym.model.imagination import Imagination
from wmgym.model.world_model import ONE_STEP_WEIGHTS, SamplerDefaults, WorldModel, WorldModelConfig
from wmgym.model.world_model_config import HELD_VECTOR
from wmgym.train.distill import Distiller, distill, sampler_history, step_seed
from wmgym.train.distill_config import DistillConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 16


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.zarr"
    generate(GenerateConfig(out=str(path), episodes=4, resolution=SIZE, workers=1, show_progress=False))
    return path


def tiny_teacher(num_steps: int = 2, seed: int = 0) -> WorldModel:
    """16x16 frames, 16 tokens a frame, conditioned like the shipped model (grippers view + grasp
    state), residual prediction, window of 4 with the first frame kept; random weights."""
    denoiser = DenoiserConfig(latent_channels=3, latent_height=SIZE, latent_width=SIZE, patch_size=4, width=32, depth=2,
                              num_heads=2, condition_channels=3 + 2, vector_dim=2)
    config = WorldModelConfig(height=SIZE, width=SIZE, denoiser=asdict(denoiser), prediction="residual",
                              sampler=asdict(SamplerDefaults(num_steps=num_steps, window_frames=4)),
                              condition_views=("grippers",), condition_vectors={"held": dict(HELD_VECTOR)})
    model = WorldModel(config, device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.denoiser.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "wm"
    tiny_teacher().save_pretrained(path)
    (path / "trust.json").write_text("{}")  # a file the distilled directory must carry over as it is
    return path


def tiny(store: Path, teacher: Path, out: Path, **overrides) -> DistillConfig:
    config = DistillConfig(data=str(store), out=str(out), world_model=str(teacher), steps=6, batch_size=8,
                           learning_rate=1e-3, warmup_steps=2, checkpoint_every=3, log_every=1, validate_every=100,
                           val_windows=8, device="cpu", show_progress=False)
    return replace(config, **overrides)


@pytest.fixture(scope="module")
def distilled(store, teacher_dir, tmp_path_factory) -> Path:
    """Forty steps: enough for the student to move measurably towards the teacher's two steps."""
    out = tmp_path_factory.mktemp("distilled") / "run"
    distill(tiny(store, teacher_dir, out, steps=40, checkpoint_every=100, log_every=5, validate_every=40))
    return out


def fixed_loss(teacher: WorldModel, student, store: Path, seeds=range(6)) -> float:
    """The distillation loss on fixed train clips and noise, averaged over a few draws of the frame to generate."""
    data = WindowDataset(store, num_actions=8, split="train", views=("grippers",), held=True)
    batch = WindowBatch.collate([data[i] for i in range(0, len(data), 2)])
    distiller = Distiller(teacher, student, Path("."), action_dropout=0.1)
    with torch.no_grad():
        return float(np.mean([float(distiller(batch.frames, batch.actions, batch.conditions,
                                              torch.Generator().manual_seed(step_seed(0, 0, s)))) for s in seeds]))


def test_sampler_history_keeps_the_first_frame_and_the_newest_of_the_window():
    assert sampler_history(1, 4, True) == [0]
    assert sampler_history(4, 4, True) == [0, 1, 2, 3]  # everything still fits
    assert sampler_history(9, 4, True) == [0, 6, 7, 8]  # the window slid: the first frame stays
    assert sampler_history(9, 4, False) == [5, 6, 7, 8]
    assert sampler_history(9, None, True) == list(range(9))


def test_distillation_loss_decreases(distilled, teacher_dir, store):
    teacher = WorldModel.from_pretrained(teacher_dir, device="cpu")
    trained = WorldModel.from_pretrained(distilled, device="cpu").one_step_denoiser
    before, after = fixed_loss(teacher, copy.deepcopy(teacher.denoiser), store), fixed_loss(teacher, trained, store)
    assert after < 0.7 * before, (before, after)
    log = [json.loads(line) for line in (distilled / "log.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    assert len(losses) == 8 and np.mean(losses[-2:]) < np.mean(losses[:2])
    val = next(entry for entry in log if "val/student_psnr" in entry)
    assert val["step"] == 40 and all(np.isfinite(val[k]) for k in val)


def test_written_directory_is_the_teachers_plus_the_student_and_one_step_uses_it(distilled, teacher_dir):
    teacher_files = sorted(p.relative_to(teacher_dir) for p in teacher_dir.rglob("*") if p.is_file())
    for name in teacher_files:
        assert (distilled / name).read_bytes() == (teacher_dir / name).read_bytes(), name
    assert (distilled / ONE_STEP_WEIGHTS).is_file() and not (distilled / "training_state.safetensors").exists()
    model, teacher = (WorldModel.from_pretrained(d, device="cpu") for d in (distilled, teacher_dir))
    assert teacher.one_step_denoiser is None and model.one_step_denoiser is not None
    assert model.sampling_denoiser(1) is model.one_step_denoiser and model.sampling_denoiser(2) is model.denoiser
    assert sorted(model.state_dict()) == sorted(teacher.state_dict())  # the student stays out of the module tree

    rng = np.random.default_rng(0)
    context = rng.integers(0, 256, (2, 1, SIZE, SIZE, 3), dtype=np.uint8)
    actions = rng.normal(size=(2, 6, 20)).astype(np.float32) * 0.5
    grippers = torch.from_numpy(rng.integers(0, 256, (2, 7, 1, SIZE, SIZE, 3), dtype=np.uint8))
    conditions = as_conditions(views=grippers, held=torch.from_numpy(rng.integers(0, 2, (2, 7, 2)).astype(np.float32)))
    run = lambda m, steps, **kw: m.rollout(context, actions, num_steps=steps, conditions=conditions,
                                           generator=torch.Generator().manual_seed(1), **kw)
    # The student, called directly: a model whose denoiser is the student, sampling one step.
    direct = WorldModel(model.config, device="cpu")
    direct.codec.load_state_dict(model.codec.state_dict())
    direct.denoiser.load_state_dict(load_file(distilled / ONE_STEP_WEIGHTS))
    one = run(model, 1)
    assert torch.equal(one, run(direct, 1))  # every denoiser call, cache writes included, is the student's
    assert (one.int() - run(model, 1, use_cache=False).int()).abs().max() <= 1  # the uncached reference too
    assert not torch.equal(one, run(teacher, 1))
    assert torch.equal(run(model, 2), run(teacher, 2))  # other step counts: the teacher's denoiser, unchanged
    assert torch.equal(run(model, None), run(teacher, None))  # the default (2 steps) too
    assert Imagination(model, 1, num_steps=1).denoiser is model.one_step_denoiser

    resaved = model.save_pretrained(distilled.parent / "resaved")  # save_pretrained keeps the student
    assert torch.equal(run(WorldModel.from_pretrained(resaved, device="cpu"), 1), one)


def test_resume_continues_from_the_checkpoint(store, teacher_dir, tmp_path):
    distill(tiny(store, teacher_dir, tmp_path / "straight"))
    distill(tiny(store, teacher_dir, tmp_path / "resumed", stop_after=3))
    assert (tmp_path / "resumed" / "training_state.safetensors").is_file()
    assert json.loads((tmp_path / "resumed" / "training_state.json").read_text())["step"] == 3
    with pytest.raises(FileExistsError):  # an unfinished run is not silently restarted
        distill(tiny(store, teacher_dir, tmp_path / "resumed"))
    distill(tiny(store, teacher_dir, tmp_path / "resumed", resume=True))
    straight, resumed = (load_file(tmp_path / run / ONE_STEP_WEIGHTS) for run in ("straight", "resumed"))
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=1e-5, atol=1e-6)
    first = load_file(teacher_dir / "denoiser.safetensors")
    assert any(not torch.equal(straight[key], first[key]) for key in first)  # the student did move
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="finished run"):
        distill(tiny(store, teacher_dir, tmp_path / "resumed", resume=True))


def test_a_teacher_with_another_default_step_count_is_distilled_from_two_steps(store, tmp_path):
    tiny_teacher(num_steps=4).save_pretrained(tmp_path / "wm4")
    out = distill(tiny(store, tmp_path / "wm4", tmp_path / "run", steps=1, val_fraction=0.0))
    model = WorldModel.from_pretrained(out, device="cpu")
    assert model.sampler.num_steps == 4 and model.one_step_denoiser is not None


def test_bad_input_is_refused_with_a_clear_error(store, teacher_dir, tmp_path):
    with pytest.raises(ValueError, match="steps must be >= 1"):
        distill(tiny(store, teacher_dir, tmp_path / "a", steps=0))
    with pytest.raises(ValueError, match="teacher_steps must be >= 2"):
        distill(tiny(store, teacher_dir, tmp_path / "b", teacher_steps=1))
    with pytest.raises(SystemExit, match="steps must be >= 1"):  # the CLI: a message, no traceback
        main(["distill", "--data", str(store), "--world-model", str(teacher_dir), "--out", str(tmp_path / "c"),
              "--steps", "0"])
    with pytest.raises(FileNotFoundError, match="no world model"):
        distill(tiny(store, tmp_path / "nothing", tmp_path / "d"))
    # A store without the model's condition views: a robot store has no grippers view.
    from wmgym.data.robot_data import RobotRecord
    from wmgym.data.store import EpisodeStore

    robot = EpisodeStore.create_robot(tmp_path / "robot.zarr", SIZE, SIZE, tasks=["pick"], action_names=[f"a{i}" for i in range(20)])
    rng = np.random.default_rng(0)
    robot.append([RobotRecord(camera=rng.integers(0, 256, (12, SIZE, SIZE, 3), dtype=np.uint8),
                              actions=rng.normal(size=(12, 20)).astype(np.float32), timestamps=np.arange(12) / 5.0,
                              task="pick", source_index=i) for i in range(3)])
    robot.close()
    with pytest.raises(ValueError, match=r"cannot feed the world model .*grippers"):
        distill(tiny(store, teacher_dir, tmp_path / "e", data=str(tmp_path / "robot.zarr")))
    big = tiny_teacher()
    big_config = WorldModelConfig(**{**asdict(big.config), "height": 32, "width": 32,
                                     "denoiser": {**big.config.denoiser, "latent_height": 32, "latent_width": 32}})
    WorldModel(big_config, device="cpu").save_pretrained(tmp_path / "wm32")
    with pytest.raises(ValueError, match="makes 32x32 frames"):
        distill(tiny(store, tmp_path / "wm32", tmp_path / "f"))
