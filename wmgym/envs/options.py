"""Checking the `options` of an environment's `reset`, the same way in every wmgym env."""

from __future__ import annotations


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
