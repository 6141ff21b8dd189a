"""Specs of `wmgym eval`: metrics, the action cross-swap figure, the report (tiny bundle)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from wmgym.cli import main
from wmgym.data.generate import plan_episodes
from wmgym.eval.fidelity import EvalConfig, evaluate, psnr, ssim, swap_controllability
from wmgym.rewards.lpips_head import default_trunk_path
from wmgym.sim.episode import EpisodeSpec, replay_actions, run_episode
from wmgym.sim.tasks import TASKS

pytestmark = pytest.mark.usefixtures("one_thread")


def test_psnr_and_ssim_known_values():
    a = torch.full((2, 8, 8, 3), 100, dtype=torch.uint8)
    b = a + 1  # every pixel off by one: MSE 1
    assert torch.allclose(psnr(a, b), torch.full((2,), 10 * math.log10(255.0**2)))
    assert torch.allclose(psnr(a, a), torch.full((2,), 100.0))  # identical images: capped
    image = torch.randint(0, 256, (3, 16, 16, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert torch.allclose(ssim(image, image), torch.ones(3), atol=1e-5)
    noisy = (image.float() + torch.randn(image.shape, generator=torch.Generator().manual_seed(1)) * 40).clamp(0, 255).to(torch.uint8)
    assert (ssim(image, noisy) < 0.9).all() and ssim(image[None], noisy[None]).shape == (1, 3)


def test_replay_of_an_episodes_own_actions_reproduces_it():
    spec = EpisodeSpec("fold_left_sleeve", seed=11, kind="perturbed", noise=0.02, horizon=6)
    record = run_episode(spec)
    np.testing.assert_array_equal(replay_actions(spec, record.actions), record.camera)
    with pytest.raises(ValueError, match="20"):
        replay_actions(spec, record.actions[:, :10])
    with pytest.raises(ValueError, match=r"\(T, 20\)"):
        replay_actions(spec, record.actions[0])


@pytest.fixture(scope="module")
def swap_truth():
    """Three short random-action episodes and the simulator's 3 x 3 cross-swap frames."""
    specs = [EpisodeSpec(TASKS[i], seed=100 + i, kind="random", horizon=4) for i in range(3)]
    actions = [run_episode(s).actions for s in specs]
    swapped = np.stack([np.stack([replay_actions(specs[i], actions[j])[1:] for j in range(3)]) for i in range(3)])
    return torch.from_numpy(swapped)


def test_swap_controllability_rewards_following_the_actions(swap_truth):
    original = torch.stack([swap_truth[i, i] for i in range(3)])
    follows = swap_controllability(swap_truth, swap_truth, original)  # the simulator itself
    assert follows["swap_controllability"] == 1.0 and follows["swap_pairs_total"] == 6 and follows["swap_pairs_counted"] >= 1
    assert swap_controllability(swap_truth, swap_truth, original, visible_db=100.0)["swap_pairs_counted"] == 6
    blind = original[:, None].expand_as(swap_truth)  # ignores the actions: always its own episode
    assert swap_controllability(blind, swap_truth, original)["swap_controllability"] == 0.0
    none_visible = swap_controllability(blind, swap_truth, original, visible_db=0.0)
    assert none_visible["swap_pairs_counted"] == 0 and math.isnan(none_visible["swap_controllability"])
    with pytest.raises(ValueError, match="K, K, T"):
        swap_controllability(swap_truth[:2], swap_truth, original)


def test_eval_writes_metrics_report_and_plots(tiny_bundle, tmp_path):
    config = EvalConfig(checkpoint=str(tiny_bundle), out=str(tmp_path / "eval"), episodes=3, horizon=4, swap_episodes=2,
                        long_episodes=1, long_horizon=32, speed_envs=2, curve_num_steps=(1, 2), curve_guidance=(1.0,),
                        curve_episodes=2, behaviour_episodes=2, device="cpu", precision="bf16", num_steps=1)
    with warnings.catch_warnings():  # without LPIPS trunk weights (CI) the fallback warns; metrics.json flags it
        warnings.simplefilter("ignore", UserWarning)
        metrics = evaluate(config)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["psnr_mean"] == pytest.approx(metrics["psnr_mean"])
    assert saved["lpips_pretrained"] is default_trunk_path("alex").is_file()
    for key in ("psnr", "ssim", "lpips", "psnr_copy_first", "psnr_null_action"):
        assert len(saved[f"{key}_by_step"]) == 4
    assert len(saved["psnr_by_step_long"]) == 32 and saved["swap_pairs_total"] == 2
    # The copy-first baseline is the documented held-out plan's first frames, measured independently.
    specs = plan_episodes(3, config.seed, TASKS, 64, 64, 4)
    truth = torch.from_numpy(np.stack([run_episode(s).camera for s in specs]))
    expected = psnr(truth[:, :1].expand(-1, 4, -1, -1, -1), truth[:, 1:]).mean()
    assert saved["psnr_copy_first_mean"] == pytest.approx(float(expected), abs=1e-4)
    assert saved["psnr_gain_over_copy_first"] == pytest.approx(saved["psnr_mean"] - saved["psnr_copy_first_mean"])
    assert [p["num_steps"] for p in saved["quality_speed"]] == [1, 2] and saved["env_steps_per_s"] > 0
    assert {t["target"].split(" ")[0] for t in saved["targets"]} >= {"psnr_mean", "swap_controllability", "env_steps_per_s"}
    assert set(saved["behaviours"]) == {"expert", "noisy", "perturbed", "random", "uniform", "hold-still"}
    assert saved["psnr_uniform_episodes"] == 2 and saved["psnr_uniform_min_step"] <= saved["behaviours"]["uniform"]["psnr_mean"]
    assert "trust_auroc" not in saved  # the tiny bundle has no trust.json
    assert saved["precision"] == "bf16" and saved["num_steps"] == 1  # --precision and --num-steps override the checkpoint's
    for name in ("psnr_by_step", "ssim_by_step", "lpips_by_step", "psnr_by_step_long", "quality_speed", "swap_grid", "rollouts",
                 "psnr_by_behaviour"):
        assert (tmp_path / "eval" / f"{name}.png").stat().st_size > 1000
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "## Action cross-swap" in report and "swap_grid.png" in report and "| psnr_mean >= 24 dB |" in report


def test_null_action_rollout_ignores_the_actions(tiny_bundle):
    from wmgym.model.world_model import WorldModel

    model = WorldModel.from_pretrained(tiny_bundle / "world_model", device="cpu")
    start = torch.zeros(2, 1, 64, 64, 3, dtype=torch.uint8) + 90
    actions = torch.randn(2, 3, 20, generator=torch.Generator().manual_seed(0)) * 0.01
    run = lambda a, drop: model.rollout(start, a, generator=torch.Generator().manual_seed(1), drop_actions=drop)
    torch.testing.assert_close(run(actions, True), run(actions * 3, True))  # null actions: the actions do not matter
    assert not torch.equal(run(actions, False), run(actions * 3, False))


def test_eval_command_rejects_bad_settings(capsys):
    with pytest.raises(SystemExit) as error:
        main(["eval", "--episodes", "0", "--out", "/tmp/never"])
    assert "episodes must be >= 1" in str(error.value)
    with pytest.raises(SystemExit) as error:
        main(["eval", "--long-horizon", "20", "--out", "/tmp/never"])
    assert "long_horizon must be >= 32" in str(error.value)
    with pytest.raises(SystemExit) as error:
        main(["eval", "--precision", "fp16", "--out", "/tmp/never"])
    assert "precision must be one of" in str(error.value)
    with pytest.raises(SystemExit) as error:
        main(["eval", "--num-steps", "0", "--out", "/tmp/never"])
    assert "num_steps must be >= 1" in str(error.value)


# ---------------------------------------------------------------- a world model conditioned on the grippers view
def _tiny_config(bundle, out, **overrides) -> EvalConfig:
    settings = dict(checkpoint=str(bundle), out=str(out), episodes=3, horizon=4, swap_episodes=2, long_episodes=1,
                    long_horizon=32, speed_envs=2, curve_num_steps=(1,), curve_guidance=(1.0,), curve_episodes=2, device="cpu")
    return EvalConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def grippers_eval(tiny_grippers_bundle, tmp_path_factory):
    """`evaluate` of the grippers-conditioned tiny bundle, recording every batch `model.rollout` receives."""
    from wmgym.model.world_model import WorldModel

    calls, original = [], WorldModel.rollout

    def recording(self, context, actions, **kwargs):
        given = kwargs.get("conditions")  # Conditions: recorded as its views stacked (b, t, V, H, W, 3)
        calls.append({"actions": np.asarray(actions),
                      "conditions": None if given is None else torch.stack(list(given.views.values()), dim=2),
                      "drop_actions": kwargs.get("drop_actions", False), "num_steps": kwargs.get("num_steps")})
        return original(self, context, actions, **kwargs)

    config = _tiny_config(tiny_grippers_bundle, tmp_path_factory.mktemp("eval_grippers"))
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        patch.setattr(WorldModel, "rollout", recording)
        warnings.simplefilter("ignore", UserWarning)
        metrics = evaluate(config)
    return config, metrics, calls


def test_eval_of_a_grippers_conditioned_model_writes_metrics(grippers_eval):
    config, metrics, calls = grippers_eval
    saved = json.loads((Path(config.out) / "metrics.json").read_text())
    assert saved["condition_views"] == ["grippers"] and saved["psnr_mean"] == pytest.approx(metrics["psnr_mean"])
    assert len(saved["psnr_by_step"]) == 4 and len(saved["psnr_by_step_long"]) == 32 and saved["swap_pairs_total"] == 2
    assert [p["num_steps"] for p in saved["quality_speed"]] == [1] and saved["env_steps_per_s"] > 0
    assert all(math.isfinite(saved[k]) for k in ("psnr_mean", "psnr_null_action_mean", "psnr_long_step32"))
    assert "hold-still action" in (Path(config.out) / "report.md").read_text()
    # fidelity, null action, swaps, long, one curve point: every rollout got one grippers view per frame
    assert len(calls) == 5
    for call in calls:
        b, t = call["actions"].shape[:2]
        assert call["conditions"] is not None and tuple(call["conditions"].shape) == (b, t + 1, 1, 64, 64, 3)


def test_conditioned_rollouts_receive_the_simulators_grippers_views(grippers_eval):
    from wmgym.sim.episode import start_gripper_state
    from wmgym.sim.gripper_track import gripper_views

    config, _, calls = grippers_eval
    fidelity, null, swaps, long, curve = calls
    assert not fidelity["drop_actions"] and null["drop_actions"] and curve["num_steps"] == 1
    specs = plan_episodes(3, config.seed, TASKS, 64, 64, 4)
    records = [run_episode(s) for s in specs]
    sim_grippers = np.stack([r.grippers for r in records])  # (3, 5, H, W, 3)
    np.testing.assert_array_equal(np.asarray(fidelity["conditions"])[:, :, 0], sim_grippers)
    np.testing.assert_array_equal(np.asarray(curve["conditions"])[:, :, 0], sim_grippers[:2])
    assert len({v.tobytes() for v in sim_grippers[0]}) > 1  # the grippers move in these episodes
    long_specs = plan_episodes(1, config.seed + 1, TASKS, 64, 64, 32)
    np.testing.assert_array_equal(np.asarray(long["conditions"])[0, :, 0], run_episode(long_specs[0]).grippers)
    # swaps: row i*k + j is start i's grippers driven by episode j's actions
    for i in range(2):
        for j in range(2):
            expected = gripper_views([start_gripper_state(specs[i])], records[j].actions[None])[0]
            np.testing.assert_array_equal(np.asarray(swaps["conditions"])[2 * i + j, :, 0], expected)
            np.testing.assert_array_equal(swaps["actions"][2 * i + j], records[j].actions)


def test_null_action_baselines_grippers_do_not_move(grippers_eval):
    config, _, calls = grippers_eval
    null = np.asarray(calls[1]["conditions"])[:, :, 0]  # (3, T+1, H, W, 3)
    specs = plan_episodes(3, config.seed, TASKS, 64, 64, 4)
    starts = np.stack([run_episode(s).grippers[0] for s in specs])
    np.testing.assert_array_equal(null, np.repeat(starts[:, None], 5, axis=1))  # the start view at every step


def test_eval_rejects_condition_views_it_cannot_render(tiny_grippers_bundle, tmp_path):
    import shutil

    bundle = shutil.copytree(tiny_grippers_bundle, tmp_path / "bundle")
    config_file = bundle / "world_model" / "config.json"
    raw = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**raw, "condition_views": ["static_scene"]}))
    with pytest.raises(ValueError, match="'grippers' condition view can be rendered"):
        evaluate(_tiny_config(bundle, tmp_path / "eval"))


def test_eval_gives_a_pose_conditioned_model_the_simulators_gripper_poses(tiny_pose_bundle, tmp_path):
    from wmgym.model.world_model import WorldModel
    from wmgym.sim.gripper_track import pose_vectors

    calls, original = [], WorldModel.rollout

    def recording(self, context, actions, **kwargs):
        given = kwargs.get("conditions")  # Conditions: recorded as its views stacked (b, t, V, H, W, 3)
        calls.append({"actions": np.asarray(actions),
                      "conditions": None if given is None else torch.stack(list(given.views.values()), dim=2),
                      "poses": None if given is None else given.vectors.get("poses")})
        return original(self, context, actions, **kwargs)

    config = _tiny_config(tiny_pose_bundle, tmp_path / "eval_pose")
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        patch.setattr(WorldModel, "rollout", recording)
        warnings.simplefilter("ignore", UserWarning)
        metrics = evaluate(config)
    assert math.isfinite(metrics["psnr_mean"]) and len(calls) == 5
    for call in calls:  # fidelity, null action, swaps, long, one curve point
        b, t = call["actions"].shape[:2]
        assert tuple(call["poses"].shape) == (b, t + 1, 8) and tuple(call["conditions"].shape) == (b, t + 1, 1, 64, 64, 3)
    records = [run_episode(s) for s in plan_episodes(3, config.seed, TASKS, 64, 64, 4)]
    expected = np.stack([pose_vectors(r.eef_pos, r.gripper_width) for r in records])  # (3, 5, 8)
    np.testing.assert_allclose(np.asarray(calls[0]["poses"]), expected, atol=1e-6)
    null = np.asarray(calls[1]["poses"])
    np.testing.assert_allclose(null, np.repeat(expected[:, :1], 5, axis=1), atol=1e-6)  # hold still: the start pose throughout
