"""Inverse dynamics: the model, its training loop, R² metrics and pseudo-labelling."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from wmgym.data.generate import GenerateConfig, generate
from wmgym.data.store import EpisodeStore
from wmgym.model.world_model import WorldModel
from wmgym.policies import idm as idm_module
from wmgym.policies.idm import IDMConfig, InverseDynamicsModel
from wmgym.policies.idm_metrics import COMPONENT_NAMES, idm_r2, idm_r2_on_world_model, r2_scores
from wmgym.policies.pseudo_label import follow_actions, is_action_free, pseudo_label, strip_actions
from wmgym.sim.tasks import TASKS
from wmgym.train.idm import TrainIDMConfig, train_idm

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 64
TINY = dict(channels=(8, 16, 16, 16), hidden=64)


def tiny_model(seed: int = 0, future_frames: int = 0) -> InverseDynamicsModel:
    torch.manual_seed(seed)
    return InverseDynamicsModel(IDMConfig(**TINY, future_frames=future_frames), device="cpu")


def random_frames(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, SIZE, SIZE, 3), dtype=np.uint8)


def tiny_training(store: Path, out: Path, **overrides) -> TrainIDMConfig:
    args = dict(data=str(store), out=str(out), steps=6, batch_size=8, warmup_steps=2, log_every=2, validate_every=3,
                checkpoint_every=3, val_fraction=0.2, device="cpu", show_progress=False, **TINY)
    return TrainIDMConfig(**{**args, **overrides})


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """5 simulated episodes of 4 actions at 64x64 (20 transitions)."""
    path = tmp_path_factory.mktemp("idm") / "store.zarr"
    generate(GenerateConfig(out=str(path), episodes=5, resolution=SIZE, tasks=TASKS, horizon=4, workers=1,
                            batch_episodes=5, show_progress=False))
    return path


def same_figures(a: dict, b: dict) -> bool:
    """Equal R² dicts, nan included (nan != nan in a plain ==)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def episodes_of(path: Path) -> tuple[np.ndarray, np.ndarray]:
    store = EpisodeStore.open(path)
    eps = [store.read_episode(i) for i in range(store.num_episodes)]
    return np.stack([e["camera"] for e in eps]), np.stack([e["actions"] for e in eps])


# ---------------------------------------------------------------- the model
def test_save_load_roundtrip_is_exact(tmp_path):
    model = tiny_model()
    model.config.action_mean = [0.01 * k for k in range(20)]  # non-default statistics must travel too
    model = InverseDynamicsModel(model.config, device="cpu")
    model.save_pretrained(tmp_path / "idm")
    loaded = InverseDynamicsModel.from_pretrained(tmp_path / "idm", device="cpu")
    assert loaded.config == model.config
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, SIZE, SIZE, 3), dtype=np.uint8)
    np.testing.assert_array_equal(loaded.predict(frames[0], frames[1]), model.predict(frames[0], frames[1]))
    assert set(load_file(tmp_path / "idm" / "model.safetensors")) == set(model.state_dict())


def test_future_window_roundtrip_and_old_configs_load(tmp_path):
    """A k=2 model keeps its window through save/load; a config.json from before the window reads as k=0."""
    model = tiny_model(future_frames=2)
    assert model.encoder[0][0].in_channels == 9 + 3 * 2
    model.save_pretrained(tmp_path / "k2")
    loaded = InverseDynamicsModel.from_pretrained(tmp_path / "k2", device="cpu")
    assert loaded.config == model.config and loaded.config.future_frames == 2
    frames = random_frames(0, 6)
    np.testing.assert_array_equal(loaded.predict_episode(frames), model.predict_episode(frames))

    pair = tiny_model()
    pair.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["future_frames"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    old = InverseDynamicsModel.from_pretrained(tmp_path / "old", device="cpu")
    assert old.config.future_frames == 0
    np.testing.assert_array_equal(old.predict(frames[:-1], frames[1:]), pair.predict(frames[:-1], frames[1:]))


def test_predict_episode_matches_predict_with_explicit_windows(monkeypatch):
    """Transition t's window is frames t+2 .. t+1+k, the episode's last frame repeated past its end."""
    frames = random_frames(1, 6)  # T = 5 transitions, last frame 5
    model = tiny_model(future_frames=2)
    future = np.stack([frames[[min(t + 2, 5), min(t + 3, 5)]] for t in range(5)])  # (5, 2, H, W, 3)
    np.testing.assert_array_equal(future[3], frames[[5, 5]])  # padded: t + 3 = 6 is past the end
    expected = model.predict(frames[:-1], frames[1:], future)
    np.testing.assert_array_equal(model.predict_episode(frames), expected)
    monkeypatch.setattr(idm_module, "PREDICT_BATCH", 2)  # windows split across batches
    np.testing.assert_allclose(model.predict_episode(torch.from_numpy(frames)), expected, atol=1e-6)
    pair = tiny_model()
    np.testing.assert_array_equal(pair.predict_episode(frames), pair.predict(frames[:-1], frames[1:]))
    assert model.predict_episode(frames[:1]).shape == (0, 20)


def test_future_frames_change_the_prediction():
    """A k=1 model reads its window: only the frame after t+1 differs, and so does the action."""
    frames, future = random_frames(2, 2, 3), random_frames(3, 2, 3, 1)
    model = tiny_model(future_frames=1)
    a, b = model.predict(frames[0], frames[1], future[0]), model.predict(frames[0], frames[1], future[1])
    assert np.abs(a - b).max() > 1e-4


def test_width_reader_reads_the_widths_from_the_next_frame_alone(tmp_path):
    """With a width reader the two width outputs depend on o_{t+1} only (o_t changes the
    motion, not them), and they are the reader's; the reader survives save/load."""
    torch.manual_seed(0)
    model = InverseDynamicsModel(IDMConfig(**TINY, width_channels=(8, 8, 16)), device="cpu")
    assert model.width_reader[0][0].stride == (1, 1)  # the first level keeps the resolution
    frames = random_frames(4, 3, 2)
    a, b = model.predict(frames[0], frames[2]), model.predict(frames[1], frames[2])
    np.testing.assert_array_equal(a[:, [9, 19]], b[:, [9, 19]])
    assert np.abs(a - b)[:, [0, 1, 2, 10, 11, 12]].max() > 1e-4
    with torch.no_grad():
        read = model.width_reader(model.to_input(frames[2])).numpy()
    np.testing.assert_allclose(model.predict(frames[0], frames[2])[:, [9, 19]], read, atol=1e-6)  # mean 0, std 1
    assert model.predict(frames[0], frames[1])[:, [9, 19]].tolist() != a[:, [9, 19]].tolist()
    model.save_pretrained(tmp_path / "reader")
    loaded = InverseDynamicsModel.from_pretrained(tmp_path / "reader", device="cpu")
    assert loaded.config.width_channels == (8, 8, 16)
    np.testing.assert_array_equal(loaded.predict(frames[0], frames[2]), a)
    with pytest.raises(ValueError, match="width_channels"):
        IDMConfig(**TINY, width_channels=(8, 0))
    with pytest.raises(ValueError, match="divide"):
        IDMConfig(height=48, width=48, channels=(8,), width_channels=(8, 8, 8, 8, 8, 8))


def test_predict_returns_raw_action_units():
    """The network's output is normalised; predict maps it back with the config's mean and std."""
    model = tiny_model()
    frames = np.random.default_rng(1).integers(0, 256, (2, 4, SIZE, SIZE, 3), dtype=np.uint8)
    with torch.no_grad():
        normalised = model(model.to_input(frames[0]), model.to_input(frames[1])).numpy()
    mean, std = np.arange(20) * 0.1, np.arange(1, 21) * 0.5
    scaled = InverseDynamicsModel(replace(model.config, action_mean=mean.tolist(), action_std=std.tolist()), device="cpu")
    scaled.load_state_dict(model.state_dict())
    predicted = scaled.predict(frames[0], frames[1])
    assert predicted.shape == (4, 20) and predicted.dtype == np.float32
    np.testing.assert_allclose(predicted, normalised * std + mean, rtol=1e-5, atol=1e-5)


def test_bad_input_raises_value_error(tmp_path, store):
    model = tiny_model()
    frames = np.zeros((2, SIZE, SIZE, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        model.predict(frames.astype(np.float32), frames)
    with pytest.raises(ValueError, match=r"\(b, 64, 64, 3\)"):
        model.predict(frames[:, :32], frames[:, :32])
    with pytest.raises(ValueError, match="same number"):
        model.predict(frames, frames[:1])
    windowed = tiny_model(future_frames=2)
    with pytest.raises(ValueError, match="predict_episode"):
        windowed.predict(frames, frames)
    with pytest.raises(ValueError, match=r"future must be uint8 \(b=2, 2, 64, 64, 3\)"):
        windowed.predict(frames, frames, np.zeros((2, 1, SIZE, SIZE, 3), np.uint8))
    with pytest.raises(ValueError, match="future_frames=2"):
        windowed(windowed.to_input(frames), windowed.to_input(frames))
    with pytest.raises(ValueError, match="future_frames must be >= 0"):
        IDMConfig(future_frames=-1)
    with pytest.raises(ValueError, match="divide"):
        IDMConfig(height=60, width=64)
    with pytest.raises(ValueError, match="20 numbers"):
        IDMConfig(action_mean=[0.0] * 19)
    with pytest.raises(ValueError, match=r"\(N, 20\)"):
        r2_scores(np.zeros((5, 20)), np.zeros((5, 19)))
    with pytest.raises(ValueError, match="finite"):
        r2_scores(np.zeros((5, 20)), np.full((5, 20), np.nan))
    with pytest.raises(ValueError, match=r"actions must be \(n=1, T=2, 20\)"):
        idm_r2(model, np.zeros((1, 3, SIZE, SIZE, 3), np.uint8), np.zeros((1, 3, 20), np.float32))
    with pytest.raises(ValueError, match="steps must be at least 1"):
        train_idm(tiny_training(store, tmp_path / "bad", steps=0))
    small = InverseDynamicsModel(IDMConfig(height=32, width=32, **TINY), device="cpu")
    with pytest.raises(ValueError, match="32x32"):
        pseudo_label(small, store, tmp_path / "labelled.zarr", show_progress=False)
    with pytest.raises(FileNotFoundError):
        InverseDynamicsModel.from_pretrained(tmp_path / "nowhere")


# ---------------------------------------------------------------- metrics
def test_r2_scores_known_values():
    rng = np.random.default_rng(0)
    actions = rng.normal(size=(200, 20)) * 0.05
    actions[:, 5] = 0.0  # exactly constant: R² is 0/0
    actions[:, 3] = 1.0 + rng.normal(size=200) * 1e-4  # nearly constant: listed as ill-defined
    perfect = r2_scores(actions, actions)
    assert perfect["components"]["left_dx"] == pytest.approx(1.0)
    assert np.isnan(perfect["components"]["left_r20"])
    assert perfect["ill_defined"] == ["left_r00", "left_r20"]
    assert perfect["groups"]["left_rotation"] == pytest.approx(1.0)  # from r10, r01, r11, r21 only

    mean = np.broadcast_to(actions.mean(0), actions.shape)
    assert r2_scores(mean, actions)["components"]["right_width"] == pytest.approx(0.0, abs=1e-12)

    noisy = actions.copy()
    noisy[:, 0] += rng.normal(size=200) * 0.05  # error variance == signal variance: R² ~ 0
    noisy[:, 1] = actions[:, 1] * 0.5 + actions[:, 1].mean() * 0.5  # R² = 1 - 0.25 = 0.75 exactly
    scores = r2_scores(noisy, actions)
    assert scores["components"]["left_dy"] == pytest.approx(0.75)
    sse = ((noisy[:, :3] - actions[:, :3]) ** 2).sum()
    sst = ((actions[:, :3] - actions[:, :3].mean(0)) ** 2).sum()
    assert scores["groups"]["left_position"] == pytest.approx(1 - sse / sst)  # pooled, not averaged
    assert list(scores["components"]) == list(COMPONENT_NAMES)


def test_idm_overfits_a_handful_of_transitions(tmp_path, store):
    """Trained on the 20 transitions of the store by `train_idm` itself, the IDM reads them back."""
    out = train_idm(tiny_training(store, tmp_path / "idm", steps=250, batch_size=10, learning_rate=3e-3,
                                  warmup_steps=10, val_fraction=0.0, blur_probability=0.0, checkpoint_every=1000,
                                  log_every=50))
    model = InverseDynamicsModel.from_pretrained(out, device="cpu")
    frames, actions = episodes_of(store)
    scores = idm_r2(model, frames, actions)
    untrained = idm_r2(tiny_model(), frames, actions)
    for group in ("position", "width"):
        assert scores["groups"][group] > 0.9, scores["groups"]
        assert untrained["groups"][group] < 0.5
    assert not (out / "training_state.safetensors").exists()  # a finished run keeps no optimizer state
    assert (out / "log.jsonl").read_text().count('"loss"') == 5


def test_init_from_and_width_weight(tmp_path, store):
    first = train_idm(tiny_training(store, tmp_path / "first"))
    # A negligible learning rate keeps the weights of the model it starts from.
    again = train_idm(tiny_training(store, tmp_path / "again", init_from=str(first), learning_rate=1e-12, channels=(4,)))
    a, b = load_file(first / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)
    assert InverseDynamicsModel.from_pretrained(again).config.channels == TINY["channels"]  # the source's, not the config's
    # The first logged loss (same data, weights and augmentation) grows with the widths' weight:
    # the two width terms are added (w - 1) more times.
    def first_loss(name, weight):
        out = train_idm(tiny_training(store, tmp_path / name, steps=1, log_every=1, width_weight=weight))
        return json.loads((out / "log.jsonl").read_text().splitlines()[0])["loss"]
    assert first_loss("w5", 5.0) > first_loss("w1", 1.0)
    with pytest.raises(ValueError, match="width_weight"):
        train_idm(tiny_training(store, tmp_path / "bad", width_weight=0.0))
    with pytest.raises(FileNotFoundError, match="init_from"):
        train_idm(tiny_training(store, tmp_path / "bad", init_from=str(tmp_path / "nowhere")))


def test_train_with_future_frames(tmp_path, store):
    """The training windows stay in their episode; the saved model keeps k and its validation R² is logged."""
    from wmgym.train.idm import _Transitions

    windows = _Transitions(str(store), "train", 0.0, None, future_frames=2)  # 5 episodes of 5 frames
    np.testing.assert_array_equal(windows.starts[:5], [0, 1, 2, 3, 5])
    np.testing.assert_array_equal(windows.future[:5], [[2, 3], [3, 4], [4, 4], [4, 4], [7, 8]])
    assert windows[3][2].shape == (2, SIZE, SIZE, 3)

    out = train_idm(tiny_training(store, tmp_path / "k1", future_frames=1))
    model = InverseDynamicsModel.from_pretrained(out, device="cpu")
    assert model.config.future_frames == 1
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "val/r2_position" in e] == [3, 6]
    again = train_idm(tiny_training(store, tmp_path / "again", init_from=str(out), steps=1))
    assert InverseDynamicsModel.from_pretrained(again).config.future_frames == 1  # the source's
    with pytest.raises(ValueError, match="future_frames=2"):
        train_idm(tiny_training(store, tmp_path / "bad", init_from=str(out), future_frames=2))


def test_init_from_adds_a_width_reader_and_keeps_the_trunk(tmp_path, store):
    """`--width-channels` with `init_from` a model without a reader: the trunk's weights are
    kept bit for bit (at a negligible learning rate), a fresh reader is trained; a model
    that has another reader is refused."""
    first = train_idm(tiny_training(store, tmp_path / "first"))
    out = train_idm(tiny_training(store, tmp_path / "reader", init_from=str(first), width_channels=(8, 8, 16),
                                  learning_rate=1e-12))
    model = InverseDynamicsModel.from_pretrained(out, device="cpu")
    assert model.config.width_channels == (8, 8, 16)
    a, b = load_file(first / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(b) - set(a) == {k for k in b if k.startswith("width_reader.")} != set()
    assert all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)
    same = train_idm(tiny_training(store, tmp_path / "same", init_from=str(out), width_channels=(8, 8, 16), steps=1))
    assert InverseDynamicsModel.from_pretrained(same).config.width_channels == (8, 8, 16)
    with pytest.raises(ValueError, match="has a width reader"):
        train_idm(tiny_training(store, tmp_path / "bad", init_from=str(out), width_channels=(8, 16)))
    scratch = train_idm(tiny_training(store, tmp_path / "scratch", width_channels=(8, 8)))
    assert InverseDynamicsModel.from_pretrained(scratch).config.width_channels == (8, 8)


@pytest.mark.parametrize("future_frames", [0, 1])
def test_resume_matches_uninterrupted_run(tmp_path, store, future_frames):
    straight = train_idm(tiny_training(store, tmp_path / "straight", future_frames=future_frames))
    train_idm(tiny_training(store, tmp_path / "split", stop_after=3, future_frames=future_frames))
    assert (tmp_path / "split" / "training_state.safetensors").is_file()
    with pytest.raises(FileExistsError):
        train_idm(tiny_training(store, tmp_path / "split"))
    resumed = train_idm(tiny_training(store, tmp_path / "split", resume=True, future_frames=future_frames))
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_world_model_r2_equals_simulator_r2_for_a_perfect_world_model(store):
    """A world model that returns the simulator's own frames scores exactly the simulator R²."""
    frames, actions = episodes_of(store)

    class Replay:  # rolls out by replaying the recorded episode: perfectly controllable
        config = replace(tiny_model().config)
        device = torch.device("cpu")

        def rollout(self, context, acts, num_steps=None, generator=None):
            index = [int(np.flatnonzero((actions == a).all(axis=(1, 2)))[0]) for a in acts]
            assert np.array_equal(context, frames[index, :1])
            return torch.from_numpy(frames[index, 1:])

    model = tiny_model()
    result = idm_r2_on_world_model(model, Replay(), episodes=(frames, actions), batch_size=2)
    assert same_figures(result["world_model"], result["simulator"])
    assert same_figures(result["simulator"], idm_r2(model, frames, actions))
    assert result["num_episodes"] == 5


def test_world_model_r2_uses_generated_frames(tiny_bundle):
    """With a real (tiny, untrained) world model the IDM sees generated frames, not the simulator's."""
    from wmgym.data.generate import plan_episodes
    from wmgym.policies.idm_metrics import simulate_episodes

    world_model = WorldModel.from_pretrained(tiny_bundle / "world_model", device="cpu")
    frames, actions = simulate_episodes(plan_episodes(3, 2, TASKS, SIZE, SIZE, 3))
    model = tiny_model()
    result = idm_r2_on_world_model(model, world_model, episodes=(frames, actions), batch_size=2, seed=0)
    assert result["world_model"]["num_transitions"] == 9
    assert not same_figures(result["world_model"], result["simulator"])
    assert result["world_model"]["components"]["left_dx"] != result["simulator"]["components"]["left_dx"]
    again = idm_r2_on_world_model(model, world_model, episodes=(frames, actions), batch_size=2, seed=0)
    assert same_figures(again, result)  # same seed, same frames, same figures
    with pytest.raises(ValueError, match="exactly one"):
        idm_r2_on_world_model(model, world_model)


class RecordingWorldModel:
    """Wraps a world model and records the `conditions` and `poses` of every rollout call."""

    def __init__(self, inner):
        self.inner, self.config, self.device = inner, inner.config, inner.device
        self.is_pose_conditioned, self.conditions, self.poses = inner.is_pose_conditioned, [], []

    def rollout(self, context, acts, **kwargs):
        given = kwargs.get("conditions")  # Conditions: its views stacked (n, t, V, H, W, 3), its poses
        self.conditions.append(np.asarray(torch.stack(list(given.views.values()), dim=2)) if given is not None and given.views else None)
        self.poses.append(np.asarray(None if given is None else given.vectors.get("poses")))
        return self.inner.rollout(context, acts, **kwargs)


def test_world_model_r2_gives_a_grippers_conditioned_model_the_episodes_grippers_views(tiny_grippers_bundle):
    """Specs are simulated and their grippers views rendered; episodes need grippers= (views or start states)."""
    from wmgym.data.generate import plan_episodes
    from wmgym.sim.episode import run_episode, start_gripper_state

    specs = plan_episodes(3, 2, TASKS, SIZE, SIZE, 3)
    records = [run_episode(spec) for spec in specs]
    frames, actions = np.stack([r.camera for r in records]), np.stack([r.actions for r in records])
    views = np.stack([r.grippers for r in records])  # the simulator's grippers views (3, 4, H, W, 3)
    world_model = RecordingWorldModel(WorldModel.from_pretrained(tiny_grippers_bundle / "world_model", device="cpu"))
    model = tiny_model()
    result = idm_r2_on_world_model(model, world_model, specs=specs, batch_size=2, seed=0)
    np.testing.assert_array_equal(np.concatenate(world_model.conditions)[:, :, 0], views)
    assert result["world_model"]["num_transitions"] == 9 and not same_figures(result["world_model"], result["simulator"])
    for grippers in (views, [start_gripper_state(spec) for spec in specs]):
        again = idm_r2_on_world_model(model, world_model, episodes=(frames, actions), grippers=grippers, batch_size=2, seed=0)
        assert same_figures(again, result)
    with pytest.raises(ValueError, match="grippers"):
        idm_r2_on_world_model(model, world_model, episodes=(frames, actions))
    with pytest.raises(ValueError, match="grippers"):
        idm_r2_on_world_model(model, world_model, episodes=(frames, actions), grippers=views[:, 1:])
    black = idm_r2_on_world_model(model, world_model, episodes=(frames, actions), grippers=np.zeros_like(views), seed=0)
    assert not same_figures(black["world_model"], result["world_model"])  # the views steer the generated frames


# ---------------------------------------------------------------- pseudo-labelling
def test_pseudo_labels_are_the_idm_predictions(tmp_path, store):
    free = strip_actions(store, tmp_path / "free.zarr")
    source = EpisodeStore.open(store)
    stripped = EpisodeStore.open(free)
    assert is_action_free(stripped) and not is_action_free(source)
    assert np.isnan(stripped.root["data/action"][:]).all() and np.isnan(stripped.root["data/robot0_eef_pos"][:]).all()
    assert source.has_held_particles and not stripped.has_held_particles  # no video shows the simulator's grasp state
    np.testing.assert_array_equal(stripped.root["data/camera0_rgb"][:], source.root["data/camera0_rgb"][:])

    model = tiny_model()
    out = pseudo_label(model, free, tmp_path / "labelled.zarr", show_progress=False)
    labelled = EpisodeStore.open(out)
    assert labelled.attrs["actions"] == "pseudo-labelled" and labelled.num_episodes == 5
    rows = labelled.root["data/action"][:]
    assert rows.shape == (source.num_frames, 20) and np.isfinite(rows).all()
    for i in range(labelled.num_episodes):
        episode = labelled.read_episode(i)
        expected = model.predict(episode["camera"][:-1], episode["camera"][1:])
        np.testing.assert_allclose(episode["actions"], expected, atol=1e-6)  # batched differently: float rounding only
        hold = rows[labelled.episode_slice(i).stop - 1]  # the padding row: stay put at the last widths
        np.testing.assert_array_equal(hold[[0, 1, 2, 10, 11, 12]], 0.0)
        np.testing.assert_allclose(hold[[9, 19]], expected[-1, [9, 19]], atol=1e-6)
    assert is_action_free(EpisodeStore.open(free))  # the source is left alone
    for name, values in follow_actions(source, rows, show_progress=False).items():  # the grippers follow the labels
        np.testing.assert_array_equal(labelled.root[f"data/{name}"][:], values, err_msg=name)
    with pytest.raises(FileExistsError):
        pseudo_label(model, free, out, show_progress=False)

    windowed = tiny_model(future_frames=2)  # each episode's windows end at its own last frame
    labelled = EpisodeStore.open(pseudo_label(windowed, free, tmp_path / "windowed.zarr", show_progress=False))
    for i in range(labelled.num_episodes):
        episode = labelled.read_episode(i)
        np.testing.assert_allclose(episode["actions"], windowed.predict_episode(episode["camera"]), atol=1e-6)


def test_follow_actions_remakes_the_grippers_view_from_the_actions(store):
    source = EpisodeStore.open(store)
    true_rows = source.root["data/action"][:]
    followed = follow_actions(source, true_rows, show_progress=False)
    assert set(followed) == {"grippers_rgb"} | {f"robot{r}_{n}" for r in (0, 1)
                                               for n in ("eef_pos", "eef_rot_axis_angle", "gripper_width")}
    for name, values in followed.items():  # the true actions give back the simulator's own arrays
        np.testing.assert_allclose(values, source.root[f"data/{name}"][:], atol=1e-6, err_msg=name)
    moved = true_rows.copy()
    moved[:, 0] += 0.01  # the left gripper 1 cm further along x every step
    other = follow_actions(source, moved, show_progress=False)
    first = source.episode_ends[0]
    assert np.array_equal(other["grippers_rgb"][0], followed["grippers_rgb"][0])  # the start is not an action's
    assert not np.array_equal(other["grippers_rgb"][1:first], followed["grippers_rgb"][1:first])
    shift = other["robot0_eef_pos"][first - 1, 0] - followed["robot0_eef_pos"][first - 1, 0]
    assert 0.9 * 0.01 * (first - 1) < shift <= 0.01 * (first - 1) + 1e-6  # less only where a step meets the action bounds
    np.testing.assert_array_equal(other["robot1_eef_pos"], followed["robot1_eef_pos"])
    with pytest.raises(ValueError, match="actions must be"):
        follow_actions(source, true_rows[:-1], show_progress=False)


def test_world_model_r2_gives_a_pose_conditioned_model_the_episodes_gripper_poses(tiny_pose_bundle):
    from wmgym.data.generate import plan_episodes
    from wmgym.sim.episode import run_episode, start_gripper_state
    from wmgym.sim.gripper_track import pose_vectors

    specs = plan_episodes(3, 2, TASKS, SIZE, SIZE, 3)
    records = [run_episode(spec) for spec in specs]
    frames, actions = np.stack([r.camera for r in records]), np.stack([r.actions for r in records])
    world_model = RecordingWorldModel(WorldModel.from_pretrained(tiny_pose_bundle / "world_model", device="cpu"))
    model = tiny_model()
    result = idm_r2_on_world_model(model, world_model, specs=specs, batch_size=2, seed=0)
    np.testing.assert_allclose(np.concatenate(world_model.poses),
                               np.stack([pose_vectors(r.eef_pos, r.gripper_width) for r in records]), atol=1e-6)
    again = idm_r2_on_world_model(model, world_model, episodes=(frames, actions), batch_size=2, seed=0,
                                  grippers=[start_gripper_state(spec) for spec in specs])
    assert same_figures(again, result)
    with pytest.raises(ValueError, match="GripperStates"):  # views alone do not give the pose
        idm_r2_on_world_model(model, world_model, episodes=(frames, actions), grippers=np.stack([r.grippers for r in records]))
