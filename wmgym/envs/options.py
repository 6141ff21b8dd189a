"""Checking the `options` and per-env seeds of an environment's `reset`, the same way in every wmgym env."""

from __future__ import annotations

import numbers


def checked_reset_options(options, allowed: tuple[str, ...]) -> dict:
    """A copy of `reset(options=...)` as a dict; ValueError for anything but None or a dict whose
    keys are all in `allowed`."""
    if options is not None and not isinstance(options, dict):
        raise ValueError(f"reset(options=...) takes None or a dict with keys from {allowed}, got {type(options).__name__}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(allowed), key=str)
    if unknown:
        raise ValueError(f"unknown reset options {unknown}; expected one of {allowed}")
    return options


def is_int(x) -> bool:
    """An int (Python or NumPy), not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def checked_row_seeds(seeds, num_envs: int) -> list[int | None]:
    """A per-env seed list, checked: num_envs entries, each a non-negative int or None."""
    seeds = list(seeds)
    if len(seeds) != num_envs or not all(s is None or (is_int(s) and s >= 0) for s in seeds):
        raise ValueError(f"reset(seed=...) takes one int, or a list of {num_envs} non-negative ints or None (one per env), "
                         f"got {seeds!r}")
    return [None if s is None else int(s) for s in seeds]
