"""The examples run end to end on a tiny bundle (tiny budgets; their figures need the shipped one)."""

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("bundle", ["tiny_bundle", "tiny_grippers_bundle"])
def test_random_rollout_writes_a_video(bundle, tmp_path, request):
    checkpoint = request.getfixturevalue(bundle)  # the second is conditioned on the grippers view: the sim's grippers start it
    path = load("random_rollout").main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "r.gif"), "--steps", "3", "--device", "cpu"])
    assert Path(path).stat().st_size > 0


def test_best_of_n_executes_the_best_candidate(tiny_bundle):
    result = load("best_of_n").main(["--checkpoint", str(tiny_bundle), "--n", "3", "--horizon", "4", "--lpips-offline", "--device", "cpu"])
    assert 0 <= result["best"] < 3 and 0.0 <= result["best_sim_score"] <= 1.0


def test_best_of_n_ranks_with_the_shipped_calibrated_lpips():
    result = load("best_of_n").main(["--n", "2", "--horizon", "2", "--lpips-calibrated", "--device", "cpu"])  # the default bundle
    assert 0 <= result["best"] < 2 and result["best_lpips"] >= 0.0


def test_ppo_in_imagination_trains_and_evaluates_in_the_simulator(tiny_bundle):
    result = load("ppo_imagination").main(["--checkpoint", str(tiny_bundle), "--num-envs", "2", "--timesteps", "64", "--n-steps", "32",
                                           "--eval-episodes", "1", "--reward", "lpips-offline", "--device", "cpu"])
    assert 0.0 <= result["success_rate"] <= 1.0
