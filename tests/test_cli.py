"""The `wmgym` console script, run through its real entry point with tiny budgets."""

import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from wmgym.cli import COMMANDS, main
from wmgym.data.store import EpisodeStore


def test_generate_then_show_writes_three_view_video(tmp_path):
    store_path = tmp_path / "tiny.zarr"
    main(["generate", "--out", str(store_path), "--episodes", "2", "--resolution", "32", "--workers", "1", "--no-show-progress"])
    store = EpisodeStore.open(store_path)
    assert store.num_episodes == 2
    assert store.num_frames == 2 * 17
    video = tmp_path / "ep.gif"
    main(["show", "--data", str(store_path), "--episode", "1", "--out", str(video), "--scale", "1"])
    frames = iio.imread(video)
    # Three 32-pixel views side by side with 2-pixel spacers, one frame per stored frame.
    assert frames.shape[:3] == (17, 32, 3 * 32 + 2 * 2)
    episode = store.read_episode(1)
    np.testing.assert_allclose(frames[0][:, :32, :3].astype(float), episode["camera"][0].astype(float), atol=40)


def test_rollout_of_expert_writes_a_video_of_a_successful_fold(tmp_path, capsys):
    video = tmp_path / "fold.gif"
    main(["rollout", "--task", "fold_left_sleeve", "--resolution", "32", "--out", str(video)])
    assert "success True" in capsys.readouterr().out
    frames = iio.imread(video)
    assert frames.shape[1:3] == (32, 3 * 32 + 2 * 2)
    assert 2 <= frames.shape[0] <= 17


def test_rollout_in_the_world_model_shows_simulator_beside_model(tiny_grippers_bundle, tmp_path, capsys):
    video = tmp_path / "wm.gif"
    main(["rollout", "--env", "WMFold-v0", "--checkpoint", str(tiny_grippers_bundle), "--device", "cpu", "--out", str(video)])
    printed = capsys.readouterr().out
    assert "SimFold-v0 | WMFold-v0" in printed and "PSNR" in printed
    frames = iio.imread(video)
    size = frames.shape[1]
    assert frames.shape[2] == 2 * size + 2 and 2 <= frames.shape[0] <= 17  # two views side by side, a 2-pixel spacer


def test_bad_input_exits_with_a_message_not_a_traceback(tmp_path):
    with pytest.raises(SystemExit) as error:
        main(["generate", "--out", str(tmp_path / "x.zarr"), "--episodes", "0"])
    assert "episodes must be positive" in str(error.value.code)
    with pytest.raises(SystemExit) as error:
        main(["show", "--data", str(tmp_path / "missing.zarr")])
    assert "missing.zarr" in str(error.value.code)


HELP_SCRIPT = """
import sys
from wmgym.cli import COMMANDS, main
for argv in [["--help"]] + [[name, "--help"] for name in COMMANDS]:
    try:
        main(argv)
    except SystemExit:
        pass
print("torch imported:", "torch" in sys.modules, file=sys.stderr)
"""


def test_help_describes_every_subcommand_without_importing_torch():
    # `wmgym --help` and `wmgym <command> --help` for every command, in a fresh interpreter: help
    # must not pay for importing torch (issue 37), and each command reads as a sentence, not tyro's
    # "Arguments of ..." boilerplate taken from a config docstring.
    env = {**os.environ, "COLUMNS": "240"}  # one line per command in the listing
    result = subprocess.run([sys.executable, "-c", HELP_SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "torch imported: False" in result.stderr
    listing = result.stdout.split("subcommands", 1)[1].split("usage:", 1)[0]
    for name in COMMANDS:
        line = next(line for line in listing.splitlines() if f"• {name} " in line)
        description = line.split(f"• {name} ", 1)[1].strip(" │")
        assert len(description.split()) >= 5 and not description.startswith("Arguments of"), (name, description)
    assert result.stdout.count("usage: ") == 1 + len(COMMANDS) and "Arguments of" not in result.stdout


def test_train_wm_gripper_dilation_default_is_the_models():
    # The config lives apart from torch (wmgym.train.wm_config), so it spells out the model's default.
    from dataclasses import fields

    from wmgym.model.world_model import GRIPPER_DILATION
    from wmgym.train.wm_config import TrainWorldModelConfig

    assert next(f.default for f in fields(TrainWorldModelConfig) if f.name == "gripper_dilation") == GRIPPER_DILATION
