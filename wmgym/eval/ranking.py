"""Ranking metrics shared by the benchmarks and the training loops."""

from __future__ import annotations

import numpy as np


def roc_auc(scores, labels) -> float:
    """P(score of a random positive > score of a random negative), ties counted half; nan if one class is missing.

    scores: float (n,); labels: bool (n,)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    positive, negative = scores[labels], scores[~labels]
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    greater = (positive[:, None] > negative[None]).mean()
    ties = (positive[:, None] == negative[None]).mean()
    return float(greater + 0.5 * ties)
