"""Factored latent action models: the model, `wmgym train-lam` and `wmgym eval-lam` (issue 40)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from wmgym.cli import main
from wmgym.data.generate import GenerateConfig, generate
from wmgym.data.store import EpisodeStore
from wmgym.eval.lam import evaluate_lam
from wmgym.eval.lam_config import EvalLAMConfig
from wmgym.model.lam import LAMConfig, LatentActionModel, kl_per_slot
from wmgym.policies.pseudo_label import strip_actions
from wmgym.sim.tasks import TASKS
from wmgym.train import lam as train_module
from wmgym.train.lam import TrainLAMConfig, train_lam

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(channels=(8, 16), slot_dim=16, hidden=8)


def tiny_model(slots=2, latent_dim=4, seed=0) -> LatentActionModel:
    torch.manual_seed(seed)
    return LatentActionModel(LAMConfig(slots=slots, latent_dim=latent_dim, heads=2, **TINY))


def frames(seed: int, b: int = 2, t: int = 4) -> torch.Tensor:
    return torch.rand(b, t, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def tiny_training(store, out, **overrides) -> TrainLAMConfig:
    args = dict(data=str(store), out=str(out), steps=6, batch_size=4, num_frames=4, warmup_steps=2, beta_warmup_steps=2,
                log_every=2, validate_every=3, checkpoint_every=3, val_fraction=0.2, val_clips=4, latent_dim=4,
                device="cpu", show_progress=False, **TINY)
    return TrainLAMConfig(**{**args, **overrides})


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """5 simulated episodes of 5 frames at 64x64."""
    path = tmp_path_factory.mktemp("lam") / "store.zarr"
    generate(GenerateConfig(out=str(path), episodes=5, resolution=64, tasks=TASKS, horizon=4, workers=1,
                            batch_episodes=5, show_progress=False))
    return path


@pytest.mark.parametrize("slots", [1, 2, 4])
def test_shapes_of_factors_latents_and_rollouts(slots):
    model = tiny_model(slots=slots, latent_dim=8).eval()
    x = frames(0, b=2, t=5)
    inferred = model.infer_latents(x)
    assert inferred["mean"].shape == (2, 4, slots, 8 // slots) == inferred["log_var"].shape
    assert inferred["masks"].shape == (2, 5, slots, 16, 16)
    assert torch.allclose(inferred["masks"].sum(2), torch.ones(2, 5, 16, 16), atol=1e-5)  # a softmax over slots
    assert inferred["states"].shape == (2, 5, slots, 16)
    out = model.reconstruct(x)
    assert out["frames"].shape == (2, 5, 3, 64, 64) and torch.equal(out["frames"][:, 0], x[:, 0])
    assert out["weights"].shape == (2, 4, slots, 16, 16)
    assert float(out["frames"].abs().max()) <= 1.0
    with pytest.raises(ValueError, match="latents must be"):
        model.rollout(x[:, 0], inferred["mean"][..., :1])


def test_bad_configs_and_frames_are_refused():
    with pytest.raises(ValueError, match="divide by slots"):
        LAMConfig(slots=3, latent_dim=16)
    with pytest.raises(ValueError, match="slots must be"):
        LAMConfig(slots=0)
    with pytest.raises(ValueError, match="frames must be"):
        tiny_model().infer_latents(torch.zeros(2, 3, 64, 64))


def test_the_untrained_model_copies_the_last_frame():
    model = tiny_model().eval()
    x = frames(1, t=3)
    assert torch.allclose(model.reconstruct(x)["frames"][:, 1], x[:, 0], atol=1e-6)


def test_slots_and_latents_are_causal_in_time():
    """Nothing at time t depends on a later frame: change the last frame, everything before stays."""
    model = tiny_model().eval()
    x = frames(2, t=5)
    y = x.clone()
    y[:, -1] = -y[:, -1]
    a, b = model.infer_latents(x), model.infer_latents(y)
    for key in ("masks", "slots", "states"):
        assert torch.allclose(a[key][:, :-1], b[key][:, :-1], atol=1e-6), key
        assert not torch.allclose(a[key][:, -1], b[key][:, -1], atol=1e-4), key
    assert torch.allclose(a["mean"][:, :-1], b["mean"][:, :-1], atol=1e-6)  # the last transition alone sees frame 4


def test_kl_term_matches_the_closed_form_and_enters_the_loss_times_beta():
    mean, log_var = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.2, -0.3]])
    expected = sum(0.5 * (m * m + np.exp(v) - v - 1) for m, v in zip([0.5, -1.0], [0.2, -0.3]))
    assert float(kl_per_slot(mean, log_var)) == pytest.approx(expected, rel=1e-6)
    assert float(kl_per_slot(torch.zeros(3), torch.zeros(3))) == 0.0
    model = tiny_model()
    x = frames(3)
    zero, one = (model.compute_loss(x, beta, torch.Generator().manual_seed(0)) for beta in (0.0, 1.0))
    assert one["kl_per_slot"].shape == (2,) and float(one["kl"].detach()) > 0
    assert float(one["kl"].detach()) == pytest.approx(float(one["kl_per_slot"].detach().sum()))
    assert float(zero["loss"]) == pytest.approx(float(zero["mse"]))
    assert float(one["loss"]) == pytest.approx(float(one["mse"] + one["kl"]), rel=1e-5)


def test_dynamics_are_shared_by_the_slots_and_each_slots_latent_steers_the_prediction():
    """One inverse/forward model serves every slot: permuting the slots (masks, states, latents
    together) leaves the predicted frame as it is; changing one slot's latent changes it."""
    model = tiny_model(slots=3, latent_dim=6).eval()
    for last in (model.decoder_coarse[-1], model.decoder_fine[-1]):
        torch.nn.init.normal_(last.weight, std=0.1)
    x = frames(4, t=3)
    inferred = model.infer_latents(x)
    args = (inferred["features"][:, 0], inferred["masks"][:, 0], inferred["states"][:, 0], inferred["mean"][:, 0])
    with torch.no_grad():
        base, weights = model.predict_next(x[:, 0], *args)
        order = [2, 0, 1]
        permuted, permuted_weights = model.predict_next(x[:, 0], args[0], *(a[:, order] for a in args[1:]))
        assert torch.allclose(base, permuted, atol=1e-5)
        assert torch.allclose(weights[:, order], permuted_weights, atol=1e-6)
        edited = args[3].clone()
        edited[:, 1] += 3.0
        assert not torch.allclose(base, model.predict_next(x[:, 0], *args[:3], edited)[0], atol=1e-4)


def test_save_load_roundtrip_is_exact(tmp_path):
    model = tiny_model(slots=4, latent_dim=8)
    model.save_pretrained(tmp_path / "m")
    loaded = LatentActionModel.from_pretrained(tmp_path / "m", device="cpu")
    x = frames(5)
    assert torch.equal(model.eval().infer_latents(x)["mean"], loaded.infer_latents(x)["mean"])


def test_train_lam_never_reads_actions(tmp_path, store, monkeypatch):
    """An action-free copy of the store trains bit-identical weights, and no read names an action array."""
    asked = []
    original = EpisodeStore.read_frames

    def spy(self, indices, names):
        asked.extend(names)
        return original(self, indices, names)

    monkeypatch.setattr(EpisodeStore, "read_frames", spy)
    with_actions = train_lam(tiny_training(store, tmp_path / "a"))
    assert asked and set(asked) == {"camera0_rgb"}
    free = strip_actions(store, tmp_path / "free.zarr")
    without = train_lam(tiny_training(free, tmp_path / "b"))
    a, b = load_file(with_actions / "model.safetensors"), load_file(without / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (with_actions / "log.jsonl").read_text().splitlines()]
    assert any("kl_per_slot" in entry for entry in log) and any("val/rollout_psnr" in entry for entry in log)


def test_resume_matches_uninterrupted_run(tmp_path, store):
    straight = train_lam(tiny_training(store, tmp_path / "straight"))
    train_lam(tiny_training(store, tmp_path / "split", stop_after=3))
    assert (tmp_path / "split" / "training_state.safetensors").is_file()
    with pytest.raises(FileExistsError):
        train_lam(tiny_training(store, tmp_path / "split"))
    resumed = train_lam(tiny_training(store, tmp_path / "split", resume=True))
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_beta_is_zero_during_warmup_then_ramps():
    config = tiny_training("s", "o", beta=1e-3, beta_warmup_steps=10)
    assert [train_module._beta(s, config) for s in (0, 9, 10, 15, 20, 40)] == pytest.approx([0, 0, 0, 5e-4, 1e-3, 1e-3])


def test_train_lam_refuses_bad_settings(tmp_path, store):
    with pytest.raises(ValueError, match="divide by slots"):
        train_lam(tiny_training(store, tmp_path / "x", slots=3))
    with pytest.raises(ValueError, match="no episode"):
        train_lam(tiny_training(store, tmp_path / "y", num_frames=9))


def test_eval_lam_end_to_end(tmp_path, store):
    runs = [train_lam(tiny_training(store, tmp_path / f"k{k}", slots=k)) for k in (1, 2)]
    out = evaluate_lam(EvalLAMConfig(lam=tuple(str(r) for r in runs), data=str(store), out=str(tmp_path / "eval"),
                                     val_fraction=0.4, horizon=3, probe_episodes=3, counterfactual_pairs=2,
                                     device="cpu", show_progress=False))
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"k1", "k2"}
    for name, slots in (("k1", 1), ("k2", 2)):
        entry = metrics["models"][name]
        assert len(entry["rollout"]["psnr_by_step"]) == 3
        assert np.array(entry["probe"]["pos_width"]["r2"]).shape == (slots, 2)
    assert metrics["models"]["k1"]["probe"]["pos_width"]["factorisation"] == 0.0  # one slot factors nothing
    assert metrics["models"]["k2"]["counterfactual"]["pairs"] == 2
    for picture in ("rollouts.png", "psnr_by_step.png", "probe_r2.png", "masks_k2.png", "counterfactual_k2.png", "report.md"):
        assert (out / picture).is_file(), picture
    with pytest.raises(FileExistsError):
        evaluate_lam(EvalLAMConfig(lam=(str(runs[0]),), data=str(store), out=str(out), val_fraction=0.4, horizon=3,
                                   device="cpu", show_progress=False))


def test_cli_help_names_frames_only(capsys):
    with pytest.raises(SystemExit):
        main(["train-lam", "--help"])
    text = capsys.readouterr().out
    assert "never its actions" in text and "--slots" in text and "--latent-dim" in text


def test_label_lam_keeps_true_labels_and_pseudo_labels_the_rest(tmp_path, store):
    from wmgym.data.dataset import split_episodes
    from wmgym.policies.latent_labels import LabelLAMConfig, label_with_lam
    from wmgym.policies.pseudo_label import follow_actions

    run = train_lam(tiny_training(store, tmp_path / "k2"))
    out = label_with_lam(LabelLAMConfig(lam=str(run), data=str(store), out=str(tmp_path / "pl.zarr"), labelled_fraction=0.5,
                                        labelled_out=str(tmp_path / "few.zarr"), val_fraction=0.2, device="cpu",
                                        show_progress=False))
    source, labelled_store = EpisodeStore.open(store), EpisodeStore.open(out)
    labeller = labelled_store.attrs["action_labeller"]
    labelled = labeller["labelled_episodes"]
    train = split_episodes(source.num_episodes, "train", 0.2)
    assert len(labelled) == 2 and set(labelled) <= set(train.tolist())  # ceil(0.5 * 4), from the train split only
    assert labelled_store.attrs["actions"] == "pseudo-labelled" and labelled_store.num_episodes == source.num_episodes
    assert {"position", "width"} <= set(labeller["pseudo_label_r2"])  # measured against the true actions, beside the labels
    for i in range(source.num_episodes):
        true, written = source.read_episode(i)["actions"], labelled_store.read_episode(i)["actions"]
        assert written.shape == true.shape and np.isfinite(written).all()
        if i in labelled:
            assert np.array_equal(true, written)
        else:
            assert not np.array_equal(true, written)
            assert np.array_equal(source.read_episode(i)["camera"], labelled_store.read_episode(i)["camera"])
    for i in labelled:  # true labels keep the simulator's grippers view; pseudo labels move it
        assert np.array_equal(source.read_episode(i)["grippers"], labelled_store.read_episode(i)["grippers"])
    rows = labelled_store.root["data/action"][:]
    for name, values in follow_actions(labelled_store, rows, show_progress=False).items():
        np.testing.assert_array_equal(labelled_store.root[f"data/{name}"][:], values, err_msg=name)
    few = EpisodeStore.open(tmp_path / "few.zarr")
    assert few.num_episodes == 2
    assert all(np.array_equal(few.read_episode(j)["actions"], source.read_episode(i)["actions"]) for j, i in enumerate(labelled))
    with pytest.raises(FileExistsError):
        label_with_lam(LabelLAMConfig(lam=str(run), data=str(store), out=str(out), device="cpu", show_progress=False))
