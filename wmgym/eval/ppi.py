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


# ---------------------------------------------------------------- pooled double sampling
_STRENGTHS = np.logspace(-1, 1.5, 41)
_MEANS = np.linspace(0.005, 0.995, 199)


def _pooled_draws(successes: np.ndarray, trials: np.ndarray, rng: np.random.Generator, draws: int) -> np.ndarray:
    """Posterior draws (draws, P) of a probability that may differ by policy, from per-policy
    (successes (P,), trials (P,)), partially pooled.

    Policy p's probability is Beta(x_p + m s, n_p - x_p + (1 - m) s) around a shared mean m. The
    strength s (in [0.1, 31.6]: never more than a few dozen pseudo-pairs, so ten pairs of a
    policy always weigh) maximises the beta-binomial marginal likelihood over a grid
    (empirical Bayes: alike policies pool, unlike ones stay apart); the mean m is drawn anew for
    every draw from its own posterior Beta(sum x + 1/2, sum (n - x) + 1/2), so that the pooled
    mean's own uncertainty reaches every policy (with s fixed at a plug-in value it would not)."""
    from scipy.special import betaln

    x, n = np.asarray(successes, np.float64), np.asarray(trials, np.float64)
    strength = 1.0
    if n.sum() > 0:
        a = _MEANS[:, None] * _STRENGTHS[None, :]
        b = (1 - _MEANS[:, None]) * _STRENGTHS[None, :]
        loglik = sum(betaln(xi + a, ni - xi + b) - betaln(a, b) for xi, ni in zip(x, n) if ni > 0)
        strength = float(_STRENGTHS[np.unravel_index(np.argmax(loglik), loglik.shape)[1]])
    mean = rng.beta(x.sum() + 0.5, (n - x).sum() + 0.5, (draws, 1))
    return rng.beta(x + mean * strength, n - x + (1 - mean) * strength)


def pooled_success_rates(policies: list[tuple], confidence: float = 0.9, draws: int = 2000, seed: int = 0) -> list[dict]:
    """Every policy's success rate from its imagined verdicts and K paired ones, pooling the
    judge's error rates across policies.

    The judge's verdict f on an episode whose truth is Y says "success" with probability
    se = P(f | Y) (sensitivity) or fpr = P(f | not Y) (false positives), so an imagined rate q =
    theta se + (1 - theta) fpr (Rogan and Gladen, "Estimating prevalence from the results of a
    screening test", Am. J. Epidemiol. 107, 1978; with a validation subsample: Tenenbein, JASA 65,
    1970). The K pairs of each policy measure se and fpr, partially pooled across the policies
    (`_pooled_draws`): where the judge's errors look alike the policies share strength, a policy
    whose errors differ keeps a wide posterior. Theta's posterior on a grid (uniform prior)
    multiplies the likelihood of the K true verdicts and of the N other imagined ones, averaged
    over `draws` posterior draws of (se, fpr) (seeded: same inputs, same numbers). The estimate is
    its mean, the interval its highest-density `confidence` credible interval.

    Args:
        policies: one (imagined bool (N,), paired_truth bool (K,), paired_imagined bool (K,)) per
            policy, as `ppi_success_rate` takes them (imagined: the episodes not paired).
    Returns:
        one dict per policy: "estimate", "low", "high", "raw" (the world model's rate over all
        N + K), "paired", "paired_low", "paired_high" (Wilson on the K alone), "n", "k",
        "confidence", and the posterior means "sensitivity" and "false_positive_rate".
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not policies:
        raise ValueError("need at least one policy")
    counts = []
    for imagined, truth, paired in policies:
        f, y, g = (np.asarray(x, bool).ravel() for x in (imagined, truth, paired))
        if len(y) != len(g) or len(y) < 2:
            raise ValueError(f"need K >= 2 paired verdicts (truth and imagined, same length), got {len(y)} and {len(g)}")
        counts.append((int(f.sum()), len(f), int((y & g).sum()), int(y.sum()), int((~y & g).sum()), int((~y).sum()),
                       int(g.sum())))
    c = np.array(counts)
    rng = np.random.default_rng(seed)
    sensitivity = _pooled_draws(c[:, 2], c[:, 3], rng, draws)  # (draws, P)
    false_positive = _pooled_draws(c[:, 4], c[:, 5], rng, draws)
    grid = np.linspace(0.0, 1.0, 1001)
    out = []
    for p, (said, n, hits, successes, false_alarms, failures, said_paired) in enumerate(counts):
        k = successes + failures
        se, fpr = sensitivity[:, p:p + 1], false_positive[:, p:p + 1]
        q = np.clip(grid * se + (1 - grid) * fpr, 1e-12, 1 - 1e-12)  # (draws, grid)
        with np.errstate(divide="ignore"):  # theta = 0 or 1 is impossible once a pair says otherwise
            loglik = (said * np.log(q) + (n - said) * np.log1p(-q)
                      + (successes * np.log(grid) if successes else 0.0) + (failures * np.log1p(-grid) if failures else 0.0))
        lik = np.exp(loglik - loglik.max(axis=1, keepdims=True))
        posterior = (lik / lik.sum(axis=1, keepdims=True)).mean(axis=0)  # mixture over the (se, fpr) draws
        # The highest-density interval: near 0 or 1 it reaches the boundary, where an equal-tailed one would stop short.
        order = np.argsort(-posterior, kind="stable")
        kept = order[: int(np.searchsorted(np.cumsum(posterior[order]), confidence)) + 1]
        low, high = float(grid[kept].min()), float(grid[kept].max())
        # As Brown, Cai and DasGupta's modified Jeffreys interval (Statistical Science 16, 2001): when
        # every paired episode failed (succeeded), the interval reaches 0 (1).
        low, high = (0.0 if successes == 0 else low), (1.0 if failures == 0 else high)
        paired_low, paired_high = wilson_interval(successes, k, confidence)
        out.append({"estimate": float((grid * posterior).sum()), "low": low, "high": high,
                    "raw": (said + said_paired) / (n + k), "paired": successes / k, "paired_low": paired_low,
                    "paired_high": paired_high, "n": n, "k": k, "confidence": confidence,
                    "sensitivity": float(se.mean()), "false_positive_rate": float(fpr.mean())})
    return out
