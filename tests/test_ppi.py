"""Prediction-powered success rates (`wmgym.eval.ppi`): intervals that cover a known rate."""

from __future__ import annotations

import numpy as np
import pytest

from wmgym.eval.ppi import pooled_success_rates, ppi_success_rate, wilson_interval


@pytest.mark.parametrize("rate, false_positive, false_negative", [(0.3, 0.1, 0.2), (0.8, 0.2, 0.1), (0.5, 0.05, 0.05)])
def test_the_interval_covers_a_known_rate_and_is_narrower_than_the_paired_episodes_alone(rate, false_positive,
                                                                                          false_negative):
    rng = np.random.default_rng(0)
    trials, covered, width, paired_width = 400, 0, 0.0, 0.0
    for _ in range(trials):  # a biased judge: it misses successes and invents some
        truth = rng.random(110) < rate
        verdicts = np.where(truth, rng.random(110) > false_negative, rng.random(110) < false_positive)
        result = ppi_success_rate(verdicts[10:], truth[:10], verdicts[:10], confidence=0.9)
        covered += result["low"] <= rate <= result["high"]
        width += result["high"] - result["low"]
        paired_width += result["paired_high"] - result["paired_low"]
    assert covered / trials >= 0.85  # a 90% interval, with ten paired episodes
    assert width < paired_width  # the imagined episodes make it narrower than Wilson's on the ten alone


def test_a_perfect_judge_gives_its_own_rate_and_a_biased_one_is_corrected():
    truth = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 0], bool)
    imagined = np.tile(truth, 10)
    perfect = ppi_success_rate(imagined, truth, truth)
    assert perfect["estimate"] == pytest.approx(0.5) and perfect["raw"] == pytest.approx(0.5)
    always = ppi_success_rate(np.ones(100, bool), truth, np.ones(10, bool))  # a judge that always says success
    assert always["raw"] == 1.0 and always["estimate"] == pytest.approx(0.5) and always["low"] < 0.5 < always["high"]
    assert 0 <= perfect["low"] < perfect["estimate"] < perfect["high"] <= 1  # never a zero-width interval


def test_bad_inputs_and_wilson():
    with pytest.raises(ValueError, match="K >= 2"):
        ppi_success_rate(np.ones(5, bool), np.ones(1, bool), np.ones(1, bool))
    with pytest.raises(ValueError, match="same length"):
        ppi_success_rate(np.ones(5, bool), np.ones(3, bool), np.ones(4, bool))
    with pytest.raises(ValueError, match="confidence"):
        ppi_success_rate(np.ones(5, bool), np.ones(3, bool), np.ones(3, bool), confidence=1.5)
    low, high = wilson_interval(3, 10, 0.9)
    assert low < 0.3 < high and wilson_interval(0, 10)[0] == 0.0


def _policies(rng, rates, false_positive, false_negative, episodes=102, k=10):
    out = []
    for rate, fp, fn in zip(rates, false_positive, false_negative):
        truth = rng.random(episodes) < rate
        verdicts = np.where(truth, rng.random(episodes) > fn, rng.random(episodes) < fp)
        out.append((verdicts[k:], truth[:k], verdicts[:k]))
    return out


RATES = [1.0, 0.94, 0.53, 0.22, 0.09, 0.22, 0.11, 0.16, 0.59, 0.21, 0.02, 0.06]


def test_pooling_the_judges_errors_covers_known_rates_with_narrower_intervals_than_wilson():
    rng = np.random.default_rng(1)
    covered = width = paired_width = count = 0
    for _ in range(40):  # 12 policies judged by one judge that misses 15% of successes and invents 10%
        for rate, result in zip(RATES, pooled_success_rates(_policies(rng, RATES, [0.1] * 12, [0.15] * 12), draws=500)):
            covered += result["low"] <= rate <= result["high"]
            width += result["high"] - result["low"]
            paired_width += result["paired_high"] - result["paired_low"]
            count += 1
    assert covered / count >= 0.85
    assert width < 0.75 * paired_width


def test_pooling_still_covers_when_the_judges_errors_differ_by_policy():
    rng = np.random.default_rng(2)
    fp = [0.02, 0.05, 0.1, 0.15, 0.05, 0.1, 0.03, 0.3, 0.1, 0.05, 0.02, 0.05]
    fn = [0.1, 0.15, 0.3, 0.3, 0.4, 0.3, 0.5, 0.2, 0.3, 0.2, 0.1, 0.3]
    covered = count = 0
    for _ in range(40):
        for rate, result in zip(RATES, pooled_success_rates(_policies(rng, RATES, fp, fn), draws=500)):
            covered += result["low"] <= rate <= result["high"]
            count += 1
    assert covered / count >= 0.8  # partial pooling: a policy whose errors differ is not forced to the others'


def test_pooled_rates_are_seeded_and_reach_the_boundary():
    rng = np.random.default_rng(3)
    policies = _policies(rng, [1.0, 0.0, 0.5], [0.05] * 3, [0.05] * 3)
    first, again = pooled_success_rates(policies, seed=4), pooled_success_rates(policies, seed=4)
    assert first == again
    assert first[0]["high"] == 1.0 and first[1]["low"] == 0.0  # a highest-density interval at a sure rate
    assert all(0 <= r["low"] <= r["estimate"] <= r["high"] <= 1 for r in first)
    with pytest.raises(ValueError, match="K >= 2"):
        pooled_success_rates([(np.ones(5, bool), np.ones(1, bool), np.ones(1, bool))])
