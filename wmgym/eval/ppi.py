"""Success rates with honest error bars: prediction-powered inference for a policy's success rate.

A world model gives many cheap but biased verdicts (the success judge on imagined episodes);
ground truth (the simulator here, real rollouts for a user) gives a few expensive, unbiased
ones. Prediction-powered inference (Angelopoulos, Bates, Fannjiang, Jordan, Zrnic, "Prediction-
powered inference", Science 382, 2023) combines them: the mean of the N imagined verdicts f,
corrected by the mean error Y - f on K paired episodes (same start, both worlds). With the
power-tuned weight lambda of PPI++ (Angelopoulos, Duchi, Zrnic, 2023), the estimate is

    theta = lambda * mean_N(f) + mean_K(Y - lambda * f),

unbiased for any lambda, with variance lambda^2 var(f) / N + var(Y - lambda f) / K; lambda =
cov(Y, f) / ((1 + K / N) var(f)), clipped to [0, 1], minimises it (lambda = 0 is the paired
episodes alone; lambda = 1 is plain PPI). Written here because it is a dozen lines of arithmetic
(the `ppi_py` package would bring its own dependencies for it).

Small K: with ten paired episodes the sample variance of Y - lambda f is often zero (all
verdicts agree), which would give a zero-width interval. It is floored at the variance of one
more, disagreeing pair, q (1 - q) with q = 1 / (K + 1) (in the spirit of Agresti and Coull's
pseudo-observations for a binomial interval), and the quantile is Student's t with K - 1
degrees of freedom. The estimate itself uses the data only.
"""

from __future__ import annotations

import math

import numpy as np


def _t_quantile(confidence: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, max(dof, 1)))


def wilson_interval(successes: int, n: int, confidence: float = 0.9) -> tuple[float, float]:
    """Wilson's score interval of a binomial rate (the K-episode estimate alone, for comparison)."""
    from scipy.stats import norm

    if n < 1:
        return 0.0, 1.0
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def ppi_success_rate(imagined, paired_truth, paired_imagined, confidence: float = 0.9, power_tuning: bool = True) -> dict:
    """A policy's success rate from N imagined verdicts and K paired (truth, imagined) verdicts.

    Args:
        imagined: bool (N,) the world model's verdicts on N episodes (the paired starts may be among them).
        paired_truth: bool (K,) the ground truth on K episodes.
        paired_imagined: bool (K,) the world model's verdicts from the same K starts.
        confidence: the interval's coverage (0.9: a 90% interval).
        power_tuning: PPI++'s lambda (False: plain PPI, lambda = 1).
    Returns:
        {"estimate", "low", "high": the bias-corrected rate and its interval, clipped to [0, 1];
         "lambda"; "raw": mean_N(f), the world model's own rate; "paired": mean_K(Y) and
         "paired_low", "paired_high": Wilson's interval from the K episodes alone; "n", "k"}.
    """
    f = np.asarray(imagined, dtype=np.float64).ravel()
    y = np.asarray(paired_truth, dtype=np.float64).ravel()
    g = np.asarray(paired_imagined, dtype=np.float64).ravel()
    if len(y) != len(g) or len(y) < 2 or len(f) < 1:
        raise ValueError(f"need K >= 2 paired verdicts (truth and imagined, same length) and N >= 1 imagined ones; "
                         f"got K = {len(y)} and {len(g)}, N = {len(f)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n, k = len(f), len(y)
    var_f = float(np.var(f, ddof=1)) if n > 1 else 0.0
    lam = 1.0
    if power_tuning and var_f > 0:
        covariance = float(np.cov(y, g, ddof=1)[0, 1])
        lam = float(np.clip(covariance / ((1 + k / n) * var_f), 0.0, 1.0))
    estimate = lam * f.mean() + (y - lam * g).mean()
    floor = (1 / (k + 1)) * (1 - 1 / (k + 1))  # as if one more paired episode disagreed (see the module docstring)
    variance = lam**2 * var_f / n + max(float(np.var(y - lam * g, ddof=1)), floor) / k
    half = _t_quantile(confidence, k - 1) * math.sqrt(variance)
    paired_low, paired_high = wilson_interval(int(y.sum()), k, confidence)
    return {"estimate": float(np.clip(estimate, 0, 1)), "low": float(max(0.0, estimate - half)),
            "high": float(min(1.0, estimate + half)), "lambda": lam, "raw": float(f.mean()), "paired": float(y.mean()),
            "paired_low": paired_low, "paired_high": paired_high, "n": n, "k": k, "confidence": confidence}
