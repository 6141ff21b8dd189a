"""benchmarks/agreement_spread.py: the bootstrap spread of eval-policies' rank correlation."""

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "agreement_spread.py"
_spec = importlib.util.spec_from_file_location("agreement_spread", _PATH)
agreement_spread = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(agreement_spread)


def _result(sim, model, episodes):
    rows = [{"policy": f"p{i}", "sim_success_rate": s, "model_success_rate": m} for i, (s, m) in enumerate(zip(sim, model))]
    return {"policies": rows, "episodes": episodes}


def test_the_spread_narrows_with_more_episodes_and_contains_the_measured_order():
    sim = [0.95, 0.8, 0.6, 0.4, 0.2, 0.05]
    small = agreement_spread.spread(_result(sim, sim, 20), draws=800, seed=0)
    large = agreement_spread.spread(_result(sim, sim, 2000), draws=800, seed=0)
    assert abs(small["spearman"] - 1.0) < 1e-9 and abs(large["spearman"] - 1.0) < 1e-9
    small_width = small["spearman_q05_q50_q95"][2] - small["spearman_q05_q50_q95"][0]
    large_width = large["spearman_q05_q50_q95"][2] - large["spearman_q05_q50_q95"][0]
    assert large_width < small_width
    assert large["p_spearman_ge_0.9"] > 0.99 and small["p_spearman_ge_0.9"] < large["p_spearman_ge_0.9"]


def test_reversed_worlds_give_a_negative_interval():
    sim = [0.9, 0.7, 0.5, 0.3, 0.1]
    f = agreement_spread.spread(_result(sim, sim[::-1], 500), draws=400, seed=1)
    assert abs(f["spearman"] + 1.0) < 1e-9 and f["spearman_q05_q50_q95"][2] < -0.8 and f["p_spearman_ge_0.9"] == 0.0
