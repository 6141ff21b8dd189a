"""Per-step trust scores: how far to believe an imagined frame, from what sampling already computed.

Every `Imagination.step` leaves three by-products per row, at no extra denoiser call:
`disagreement` (the mean squared latent difference between the sampler's first clean estimate
and the finished frame: how much the second denoiser call had to correct the first, the
denoiser's self-consistency), `change` (the finished frame against the row's previous one: how
much the model moved the scene) and `gated` (the action lay outside the training support and
was replaced by the null action, `WorldModel.out_of_support`). `TrustTracker` keeps their
running sums per row since the row's reset and turns them, with the step count, into the
features `TRUST_FEATURES`; a logistic model (`TrustCalibration`, the world model's
`trust.json`) maps those to

    trust = P(the frame is not bad | features),   bad = PSNR against the simulator more than
            3 dB below the rollout's median, or below 24 dB,

fitted on simulator rollouts of expert, noisy, perturbed, random, uniform-random and
hold-still behaviour (`wmgym calibrate-trust`, `wmgym.eval.trust`). The features use nothing
but the model's own sampling; the simulator only provides the labels it is fitted on.

Dimension legend: b rows, F features.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

TRUST_FILE = "trust.json"
"""Where a world model's trust calibration lives: beside its config.json (`TrustCalibration.load`)."""
TRUST_FEATURES = ("step", "log_cum_disagreement", "log_disagreement", "log_cum_change", "log_change",
                  "step_x_log_cum_disagreement", "step_x_log_cum_change", "log_cum_disagreement_over_first")
"""The features, in order: step = frames generated since the reset / 16; logs of the running
sums and of the newest values of `disagreement` and `change`; two interactions with the step;
the running disagreement against the first step's (a rollout that has grown less sure than it began)."""
STEP_SCALE = 16.0
MIN_SAMPLER_STEPS = 2
"""Trust reads how much the sampler's second denoiser call corrected the first: a one-step sampler has none."""
_TINY = 1e-6  # keeps the logs finite for a row whose latents did not move at all


def trust_features(steps: torch.Tensor, disagreement: torch.Tensor, cum_disagreement: torch.Tensor,
                   first_disagreement: torch.Tensor, change: torch.Tensor, cum_change: torch.Tensor) -> torch.Tensor:
    """Features (b, F) of `TRUST_FEATURES` from per-row tensors (b,): `steps` frames generated since
    the reset (>= 1), the newest `disagreement` and `change`, their running sums and the first
    step's disagreement."""
    t = steps.float() / STEP_SCALE
    log_cd, log_cc = (cum_disagreement + _TINY).log(), (cum_change + _TINY).log()
    return torch.stack([t, log_cd, (disagreement + _TINY).log(), log_cc, (change + _TINY).log(),
                        t * log_cd, t * log_cc, log_cd - (first_disagreement + _TINY).log()], dim=-1)


@dataclass
class TrustCalibration:
    """The logistic model behind `trust`: standardised features -> logit of "bad".

    Attributes:
        features: the feature names (`TRUST_FEATURES`; a file with others is refused).
        mean, std: per-feature standardisation (F,).
        weights: (F,) and bias: the logit of a bad frame.
        label: what "bad" meant in the fit (for the reader).
        fitted_on: how it was fitted (command, rollouts, seeds).
    """

    features: list
    mean: list
    std: list
    weights: list
    bias: float
    label: str = "PSNR more than 3 dB below the rollout's median, or below 24 dB"
    fitted_on: dict | None = None

    def __post_init__(self):
        if list(self.features) != list(TRUST_FEATURES):
            raise ValueError(f"trust calibration features {self.features} are not this version's {list(TRUST_FEATURES)}; "
                             "refit it with `wmgym calibrate-trust`")
        for name in ("mean", "std", "weights"):
            values = getattr(self, name)
            if len(values) != len(TRUST_FEATURES) or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                raise ValueError(f"trust calibration {name} must be {len(TRUST_FEATURES)} finite numbers, got {values!r}")
        if not all(v > 0 for v in self.std):
            raise ValueError(f"trust calibration std must be > 0, got {self.std}")
        if not (isinstance(self.bias, (int, float)) and math.isfinite(self.bias)):
            raise ValueError(f"trust calibration bias must be a finite number, got {self.bias!r}")

    def trust(self, features: torch.Tensor) -> torch.Tensor:
        """features (..., F) -> trust (...,) in [0, 1] (float32): 1 - P(bad)."""
        mean, std, weights = (torch.tensor(getattr(self, n), dtype=torch.float32, device=features.device)
                              for n in ("mean", "std", "weights"))
        logit = ((features.float() - mean) / std) @ weights + float(self.bias)
        return 1.0 - torch.sigmoid(logit)

    def save(self, path: str | os.PathLike) -> Path:
        from wmgym.train.checkpoint import write_text_atomic

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrustCalibration":
        """Read a trust.json; ValueError naming the file when it is damaged."""
        try:
            raw = json.loads(Path(path).read_text())
            return cls(**raw)
        except (json.JSONDecodeError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: not a valid trust calibration ({error}); refit it with `wmgym calibrate-trust`") from None

    @classmethod
    def of_model_dir(cls, directory: str | os.PathLike, num_steps: int | None = None) -> "TrustCalibration | None":
        """The calibration saved beside a world model's config.json, or None when it has none or
        when the sampler takes `num_steps` < `MIN_SAMPLER_STEPS` (None: not checked)."""
        path = Path(directory) / TRUST_FILE
        if not path.is_file() or (num_steps is not None and num_steps < MIN_SAMPLER_STEPS):
            return None
        return cls.load(path)


def fit_trust(features: np.ndarray, bad: np.ndarray, l2: float = 1e-3, fitted_on: dict | None = None) -> TrustCalibration:
    """Logistic regression (L2 on the weights, L-BFGS) of bad (N,) bool on features (N, F)."""
    from scipy.optimize import minimize

    x, y = np.asarray(features, np.float64), np.asarray(bad, np.float64)
    if x.ndim != 2 or x.shape[1] != len(TRUST_FEATURES) or y.shape != (len(x),):
        raise ValueError(f"need features (N, {len(TRUST_FEATURES)}) and labels (N,), got {x.shape} and {y.shape}")
    if not 0 < y.sum() < len(y):
        raise ValueError(f"need both good and bad frames to fit trust, got {int(y.sum())} bad of {len(y)}")
    mean, std = x.mean(0), x.std(0) + 1e-9
    z = np.concatenate([(x - mean) / std, np.ones((len(x), 1))], axis=1)

    def loss(w):
        p = 1 / (1 + np.exp(-(z @ w)))
        value = -np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12)) + l2 * np.sum(w[:-1] ** 2)
        grad = z.T @ (p - y) / len(y)
        grad[:-1] += 2 * l2 * w[:-1]
        return value, grad

    w = minimize(loss, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B").x
    return TrustCalibration(list(TRUST_FEATURES), mean.tolist(), std.tolist(), w[:-1].tolist(), float(w[-1]), fitted_on=fitted_on)


class TrustTracker:
    """Running trust state of b rows over one `Imagination`.

    `reset(rows)` when rows restart; `update(imagination)` after every `Imagination.step` returns
    the features (b, F) and, with a calibration, `trust` (b,) in [0, 1] (NaN without one).
    """

    def __init__(self, batch_size: int, device: torch.device | str, calibration: TrustCalibration | None = None):
        self.calibration = calibration
        zeros = lambda: torch.zeros(batch_size, device=device)
        self.steps, self.cum_disagreement, self.cum_change, self.first_disagreement = zeros(), zeros(), zeros(), zeros()
        self.trust = torch.full((batch_size,), float("nan"), device=device)

    def reset(self, rows=None) -> None:
        rows = slice(None) if rows is None else torch.as_tensor(list(rows), dtype=torch.long, device=self.steps.device)
        for x in (self.steps, self.cum_disagreement, self.cum_change, self.first_disagreement):
            x[rows] = 0.0
        self.trust[rows] = 1.0 if self.calibration is not None else float("nan")  # a start frame is the given one

    def update(self, imagination) -> torch.Tensor | None:
        """Features (b, F) after the imagination's newest step; sets `trust`. None (and NaN trust)
        for an imagination that does not track them (`Imagination.track_trust` False)."""
        if imagination.disagreement is None:
            return None
        disagreement, change = imagination.disagreement.float(), imagination.change.float()
        first = self.steps == 0
        self.first_disagreement = torch.where(first, disagreement, self.first_disagreement)
        self.steps += 1
        self.cum_disagreement += disagreement
        self.cum_change += change
        features = trust_features(self.steps, disagreement, self.cum_disagreement, self.first_disagreement, change, self.cum_change)
        if self.calibration is not None:
            self.trust = self.calibration.trust(features)
        return features
