"""`wmgym eval --data STORE`: a world model measured on held-out real episodes (`wmgym.eval.robot`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_robot_store import record, robot_store
from wmgym.eval.fidelity_config import EvalConfig
from wmgym.eval.robot import evaluate_robot, swap_motion


def test_swap_motion_tells_a_model_that_follows_the_actions_from_one_that_ignores_them():
    rng = np.random.default_rng(0)
    k, t = 3, 4
    truth = torch.from_numpy(rng.integers(0, 256, (k, t + 1, 8, 8, 3), dtype=np.uint8))
    start = truth[:, 0].int()
    motion = truth[:, 1:].int() - truth[:, :1].int()  # each episode's recorded motion, frame by frame
    # follows: start i plus episode j's motion (clipped to uint8, as frames are)
    follows = (start[:, None, None] + motion[None, :]).clamp(0, 255).to(torch.uint8)  # (K, K, T, H, W, 3)
    ignores = follows[torch.arange(k), torch.arange(k)][:, None].expand(k, k, t, 8, 8, 3)  # own actions always
    good, bad = swap_motion(follows, truth), swap_motion(ignores, truth)
    assert good["swap_pairs"] == bad["swap_pairs"] == 6
    assert good["swap_toward_fraction"] == 1.0 and bad["swap_toward_fraction"] == 0.0
    assert bad["swap_psnr_to_own"] == pytest.approx(100.0) and good["swap_psnr_to_own"] < 20
    with pytest.raises(ValueError, match="model_swaps"):
        swap_motion(follows[:2], truth)


def test_eval_on_a_robot_store_writes_figures_against_both_baselines(tmp_path):
    from wmgym.train.wm_config import TrainWorldModelConfig
    from wmgym.train.world_model import train_world_model

    robot_store(tmp_path / "r.zarr", [record(i, 7, size=(32, 48)) for i in range(20)], size=(32, 48))  # LPIPS needs >= 31 px
    run = train_world_model(TrainWorldModelConfig(
        data=str(tmp_path / "r.zarr"), out=str(tmp_path / "run"), steps=2, batch_size=4, width=32, depth=1, num_heads=2,
        patch_size=8, warmup_steps=1, checkpoint_every=2, log_every=1, validate_every=100, val_batches=1, num_steps=2,
        device="cpu"))
    config = EvalConfig(checkpoint=str(tmp_path / "run"), data=str(tmp_path / "r.zarr"), out=str(tmp_path / "eval"),
                        episodes=4, horizon=5, swap_episodes=3, val_fraction=0.25, device="cpu", batch_size=8)
    metrics = evaluate_robot(config)
    assert metrics["episodes"] == 4 and metrics["horizon"] == 5 and metrics["swap_pairs"] == 6
    for name in ("", "_copy_last", "_null_action"):
        assert len(metrics[f"psnr{name}_by_step"]) == 5 and np.isfinite(metrics[f"lpips{name}_mean"])
    assert metrics["psnr_gain_over_copy_last"] == pytest.approx(metrics["psnr_mean"] - metrics["psnr_copy_last_mean"])
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["store_episodes"] == metrics["store_episodes"]
    for picture in ("psnr_by_step.png", "ssim_by_step.png", "lpips_by_step.png", "rollouts.png", "swap_grid.png", "report.md"):
        assert (tmp_path / "eval" / picture).is_file()
    assert run.exists()
