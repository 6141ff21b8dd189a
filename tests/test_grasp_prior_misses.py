"""Spec of benchmarks/grasp_prior_misses.py: p(held) split by the simulator's verdict and kind."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import tiny_grasp_prior

spec = importlib.util.spec_from_file_location("grasp_prior_misses", Path(__file__).parents[1] / "benchmarks" / "grasp_prior_misses.py")
misses = importlib.util.module_from_spec(spec)
spec.loader.exec_module(misses)


def record(kind: str, held: bool):
    widths = np.full((6, 2), 0.08, np.float32)
    widths[2:4, 1] = 0.0  # one closing of the right gripper
    particles = np.zeros((6, 2), np.int32)
    particles[3, 1] = 5 if held else 0
    return SimpleNamespace(spec=SimpleNamespace(kind=kind), eef_pos=np.zeros((6, 2, 3), np.float32), gripper_width=widths,
                           held_particles=particles)


def test_closings_are_split_by_the_simulators_grasp_and_the_episode_kind():
    records = [record("replay", False), record("replay", True), record("demo", False)]
    store = SimpleNamespace(has_held_particles=True, num_episodes=3, read_record=records.__getitem__)
    for bias, p in ((20.0, 1.0), (-20.0, 0.0)):
        out = misses.closing_probabilities(tiny_grasp_prior(bias), store)
        assert out["replay"] == {"missed": [pytest.approx(p, abs=1e-6)], "held": [pytest.approx(p, abs=1e-6)]}
        assert out["demo"] == {"missed": [pytest.approx(p, abs=1e-6)], "held": []}


def test_a_store_without_the_grasp_state_is_refused():
    with pytest.raises(ValueError, match="grasp state"):
        misses.closing_probabilities(tiny_grasp_prior(), SimpleNamespace(has_held_particles=False))
