"""The factorisation probe of `wmgym eval-lam` on synthetic latents with a known answer."""

import numpy as np
import pytest

from wmgym.eval.lam_probe import factorisation_scores, fit_probe, match_slots, probe_matrix, r2_score

ENTITIES = {"left": [0, 1], "right": [2, 3]}


def _factored(n, seed, slots=2, mix=0.0):
    """Latents (n, slots, 2) where slot 0 encodes the left action, slot 1 the right one (plus `mix` of the other)."""
    rng = np.random.default_rng(seed)
    actions = rng.normal(size=(n, 4))
    latents = rng.normal(scale=0.05, size=(n, slots, 2))
    latents[:, 0] += actions[:, 0:2] + mix * actions[:, 2:4]
    latents[:, 1] += actions[:, 2:4] + mix * actions[:, 0:2]
    return latents, actions


def test_r2_score_is_one_for_a_perfect_fit_and_zero_for_the_mean():
    y = np.random.default_rng(0).normal(size=(100, 3))
    assert r2_score(y, y) == pytest.approx(1.0)
    assert r2_score(np.broadcast_to(y.mean(0), y.shape), y) == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(r2_score(np.zeros((5, 1)), np.ones((5, 1))))  # no variance to explain


def test_fit_probe_recovers_a_linear_map():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 3))
    y = x @ np.array([[1.0, 0.0], [2.0, -1.0], [0.0, 0.5]]) + 3.0
    assert r2_score(fit_probe(x, y)(x), y) > 0.999
    with pytest.raises(ValueError, match="same n"):
        fit_probe(x, y[:10])


def test_factored_latents_score_high_own_and_low_cross_r2():
    fit, test = _factored(800, 0), _factored(400, 1)
    r2 = probe_matrix(fit[0], fit[1], test[0], test[1], ENTITIES)
    assert r2.shape == (2, 2)
    scores = factorisation_scores(r2)
    assert scores["matched_slot"] == [0, 1]
    assert min(scores["own_r2"]) > 0.95 and max(scores["cross_r2"]) < 0.05
    assert scores["factorisation"] > 0.95 and scores["dci_disentanglement"] > 0.9


def test_entangled_latents_score_low_factorisation():
    fit, test = _factored(800, 0, mix=1.0), _factored(400, 1, mix=1.0)
    scores = factorisation_scores(probe_matrix(fit[0], fit[1], test[0], test[1], ENTITIES))
    assert scores["factorisation"] < 0.3 and scores["dci_disentanglement"] < 0.3


def test_permuting_the_slots_permutes_the_matching_and_keeps_the_scores():
    fit, test = _factored(800, 0, slots=3), _factored(400, 1, slots=3)
    order = [2, 0, 1]  # new slot i = old slot order[i]
    base = factorisation_scores(probe_matrix(fit[0], fit[1], test[0], test[1], ENTITIES))
    permuted = factorisation_scores(probe_matrix(fit[0][:, order], fit[1], test[0][:, order], test[1], ENTITIES))
    assert base["matched_slot"] == [0, 1]
    assert permuted["matched_slot"] == [order.index(0), order.index(1)]  # [1, 2]
    assert permuted["own_r2"] == pytest.approx(base["own_r2"])
    assert permuted["factorisation"] == pytest.approx(base["factorisation"])


def test_one_slot_is_matched_to_every_entity_and_scores_no_factorisation():
    assert match_slots(np.array([[0.8, 0.7]])).tolist() == [0, 0]
    scores = factorisation_scores(np.array([[0.8, 0.7]]))
    assert scores["cross_r2"] == pytest.approx(scores["own_r2"])  # the other gripper's slot is the same slot
    assert scores["factorisation"] == pytest.approx(0.0)


def test_one_entity_is_scored_against_the_other_slots():
    scores = factorisation_scores(np.array([[0.1], [0.7], [0.2]]))
    assert scores["matched_slot"] == [1] and scores["own_r2"] == [0.7]
    assert scores["cross_r2"] == pytest.approx([0.2]) and scores["factorisation"] == pytest.approx(0.5 / 0.7)
    assert np.isnan(factorisation_scores(np.array([[0.7]]))["factorisation"])  # one slot, one entity: nothing to compare
