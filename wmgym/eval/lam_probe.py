"""Linear probes from latent actions to true actions, and the factorisation scores of `wmgym eval-lam`.

Pure NumPy. A probe is ridge regression (closed form, inputs and targets standardised on the
fit set) from one slot's latent action (n, d) to one entity's true action (n, m) (an entity is
a gripper: its position deltas and width, or its whole 10-D action); it is fitted on one set
of transitions and scored on another, so a score is an out-of-sample R^2.

Scores of an R^2 matrix R (slots x entities, each entry clipped at 0 first):
- **matching**: entity g gets slot m(g); with at least as many slots as entities, the
  assignment that maximises the summed R^2 (the Hungarian method, scipy), so a permutation of
  the slots permutes the matching and nothing else; with fewer slots (the monolithic K = 1),
  every entity gets the one slot.
- **own R^2** of entity g: R[m(g), g]; **cross R^2**: the best R^2 of g from a slot matched to
  another entity (for K = 1 the same slot, so cross = own: nothing is factored). With one
  entity (a single arm), cross is its best R^2 from any other slot (none for K = 1: nan).
- **factorisation** = mean over entities of (own - cross) / own, in [0, 1]: 1 when each
  gripper is read from its own slot only, 0 when the other gripper's slot reads it as well.
- **DCI disentanglement** (Eastwood and Williams 2018, with R^2 as the importance): for each
  slot, 1 - the entropy (base G) of its importance spread over the G entities, averaged with
  weights proportional to the slot's total importance. 1: every slot informs one entity at most.
"""

from __future__ import annotations

import numpy as np

RIDGE = 1e-3


def r2_score(predicted: np.ndarray, target: np.ndarray) -> float:
    """Uniform average over target columns of 1 - SSE / SST (columns with no variance are left out); nan if none is left."""
    target, predicted = np.asarray(target, np.float64), np.asarray(predicted, np.float64)
    variance = target.var(0)
    keep = variance > 1e-12
    if not keep.any():
        return float("nan")
    sse = ((predicted - target) ** 2).mean(0)[keep]
    return float(np.mean(1.0 - sse / variance[keep]))


def fit_probe(x: np.ndarray, y: np.ndarray, ridge: float = RIDGE):
    """Ridge regression y ~ x on standardised data; returns a function x -> predicted y.
    x (n, d), y (n, m) -> predict((n', d)) -> (n', m)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x must be (n, d) and y (n, m) with the same n, got {x.shape} and {y.shape}")
    x_mean, x_std = x.mean(0), x.std(0) + 1e-8
    y_mean, y_std = y.mean(0), y.std(0) + 1e-8
    xs = np.concatenate([(x - x_mean) / x_std, np.ones((len(x), 1))], 1)
    ys = (y - y_mean) / y_std
    gram = xs.T @ xs + ridge * len(x) * np.eye(xs.shape[1])
    weights = np.linalg.solve(gram, xs.T @ ys)

    def predict(new_x: np.ndarray) -> np.ndarray:
        new_x = np.asarray(new_x, np.float64)
        return (np.concatenate([(new_x - x_mean) / x_std, np.ones((len(new_x), 1))], 1) @ weights) * y_std + y_mean

    return predict


def probe_matrix(latents_fit: np.ndarray, actions_fit: np.ndarray, latents_test: np.ndarray, actions_test: np.ndarray,
                 entities: dict[str, list[int]]) -> np.ndarray:
    """Out-of-sample R^2 of a linear probe from each slot to each entity.

    latents_* (n, K, d) latent actions, actions_* (n, A) true actions, entities: name -> the
    action columns of that entity. -> (K, G) R^2 (entities in dict order)."""
    if latents_fit.ndim != 3 or latents_test.ndim != 3:
        raise ValueError(f"latents must be (n, K, d), got {latents_fit.shape} and {latents_test.shape}")
    matrix = np.zeros((latents_fit.shape[1], len(entities)))
    for k in range(latents_fit.shape[1]):
        for g, columns in enumerate(entities.values()):
            predict = fit_probe(latents_fit[:, k], actions_fit[:, columns])
            matrix[k, g] = r2_score(predict(latents_test[:, k]), actions_test[:, columns])
    return matrix


def match_slots(r2: np.ndarray) -> np.ndarray:
    """(K, G) R^2 -> (G,) the slot matched to each entity (see the module docstring)."""
    from scipy.optimize import linear_sum_assignment

    r2 = np.clip(np.nan_to_num(np.asarray(r2, np.float64), nan=0.0), 0.0, None)
    k, g = r2.shape
    if k < g:
        return np.array([int(np.argmax(r2[:, j])) for j in range(g)])
    rows, columns = linear_sum_assignment(-r2)
    matched = np.zeros(g, np.int64)
    matched[columns] = rows
    return matched


def factorisation_scores(r2: np.ndarray) -> dict:
    """Scores of a (K, G) R^2 matrix: matched slots, own and cross R^2 per entity, the
    factorisation score and DCI disentanglement (see the module docstring)."""
    clipped = np.clip(np.nan_to_num(np.asarray(r2, np.float64), nan=0.0), 0.0, None)
    k, g = clipped.shape
    matched = match_slots(clipped)
    own = clipped[matched, np.arange(g)]
    if g > 1:
        cross = np.array([max(clipped[matched[o], j] for o in range(g) if o != j) for j in range(g)])
    else:  # one entity (a single arm): its best R^2 from any other slot; none for K = 1
        cross = np.array([max((clipped[s, 0] for s in range(k) if s != matched[0]), default=np.nan)])
    factorisation = float(np.mean([(o - c) / o if o > 1e-9 else 0.0 for o, c in zip(own, cross)])) if np.isfinite(cross).all() else float("nan")
    totals = clipped.sum(1)
    if g > 1 and totals.sum() > 1e-12:
        p = clipped / np.maximum(totals[:, None], 1e-12)
        entropy = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(1) / np.log(g)
        dci = float(((1.0 - entropy) * totals / totals.sum()).sum())
    else:
        dci = float("nan")
    return {"matched_slot": matched.tolist(), "own_r2": own.tolist(), "cross_r2": cross.tolist(),
            "factorisation": factorisation, "dci_disentanglement": dci}
