"""Checks on the configs that rebuild a model, so that a damaged or hand-edited config.json (or a
config built in code) fails at once with one line naming the key and what it should be, and
never later as a TypeError deep inside torch or as all-black frames (issue 36).

`read_config_json` reads a checkpoint's config.json; `check_field_types` checks every field of a
config dataclass against its annotation; `check_known_keys` refuses keys a config class lacks;
`check_statistics` checks a list of normalisation statistics (length, finite, positive where
they divide). Each raises `ValueError` whose message starts with the key (the caller that
knows the file adds its path in front).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import types
import typing
from functools import lru_cache
from pathlib import Path


def read_config_json(path: str | Path) -> dict:
    """The JSON object in `path`; ValueError naming the file when it is not valid JSON or not an object."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object of config keys, got {type(raw).__name__}")
    return raw


def check_known_keys(raw: dict, config_class: type, prefix: str = "") -> None:
    """ValueError naming the keys of `raw` that `config_class` (a dataclass) has no field for."""
    if not isinstance(raw, dict):
        raise ValueError(f"{prefix or config_class.__name__} must be an object of {config_class.__name__} keys, got {raw!r}")
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{prefix + ': ' if prefix else ''}unknown keys {unknown}; expected a subset of {sorted(known)}")


def check_field_types(config, prefix: str = "") -> None:
    """ValueError naming the first field of the dataclass `config` whose value does not match its
    annotation (int, float, bool, str, list, tuple, dict, unions with None; float values must be
    finite). `prefix` ("sampler.") is put before the field's name."""
    for name, hint in _type_hints(type(config)).items():
        value = getattr(config, name)
        if not _matches(value, hint):
            raise ValueError(f"{prefix}{name} must be {_describe(hint)}, got {value!r} ({type(value).__name__})")


def check_statistics(values, name: str, length: int, is_positive: bool = False) -> None:
    """ValueError unless `values` is `length` finite numbers (each > 0 if `is_positive`: a std or
    a scale that something is divided by)."""
    if not isinstance(values, (list, tuple)) or len(values) != length:
        got = f"{len(values)} values" if isinstance(values, (list, tuple)) else repr(values)
        raise ValueError(f"{name} must be a list of {length} numbers, got {got}")
    for index, value in enumerate(values):
        if not _is_real(value) or not math.isfinite(value) or (is_positive and not value > 0):
            need = "a finite number > 0 (it divides)" if is_positive else "a finite number"
            raise ValueError(f"{name}[{index}] must be {need}, got {value!r}")


def is_finite_number(value) -> bool:
    """True for a finite int or float (not a bool)."""
    return _is_real(value) and math.isfinite(value)


# ------------------------------------------------------------ internals
@lru_cache(maxsize=None)
def _type_hints(config_class: type) -> dict:
    names = {f.name for f in dataclasses.fields(config_class)}
    return {k: v for k, v in typing.get_type_hints(config_class).items() if k in names}


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _matches(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return is_finite_number(value)
    if hint is str:
        return isinstance(value, str)
    if hint in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        item = args[0] if args else None
        return item is None or all(_matches(x, item) for x in value)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return True  # an annotation these checks do not know: left to the class


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if hint in (list, tuple) or origin in (list, tuple):
        items = {int: "ints", float: "finite numbers", str: "strings"}.get(args[0], "values") if args else "values"
        return f"a list of {items}"
    names = {type(None): "null", bool: "true or false", int: "an int", float: "a finite number", str: "a string",
             dict: "an object"}
    return names.get(hint, names.get(origin, getattr(hint, "__name__", str(hint))))
