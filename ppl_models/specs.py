"""Declarative specs: typed dataclasses read from plain dicts / JSON.

A spec is a tree of dataclasses. :func:`from_dict` builds one from a plain dict
and rejects unknown keys and ill-typed values by name (``spec.model.z_dim``),
so a typo never silently falls back to a default. :func:`apply_overrides`
implements the CLI's ``--set key=value``.

Fields may carry ``metadata`` with ``choices`` (allowed values), ``min`` /
``min_exclusive``, ``max`` (numeric bounds) and ``doc`` (shown by ``ppl-models spec``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from typing import Any

from .errors import SpecError


def option(default, *, doc: str = "", choices=None, min=None, min_exclusive=None, max=None):
    """A spec field with validation metadata; lists get a default factory."""
    meta = {"doc": doc, "choices": choices, "min": min, "min_exclusive": min_exclusive, "max": max}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def to_dict(spec) -> dict:
    return dataclasses.asdict(spec)


def plain(value):
    """A leaf value as plain JSON data: a list of dataclasses (DCIM's layers) as a list of mappings."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value, tp, where: str):
    """Check ``value`` against the annotation ``tp``; return it in canonical form."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{where} must be a list of {_type_name(args[0])}, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            hint = (" (write true or false: yes/no/on/off are text in a model file)"
                    if isinstance(value, str) and value.lower() in ("yes", "no", "on", "off", "y", "n") else "")
            raise SpecError(f"{where} must be true or false, got {value!r}{hint}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise SpecError(f"{where} must be finite, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(f"{where} must be a string, got {value!r}")
        return value
    return value


def _check_bounds(value, meta, where: str):
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise SpecError(f"{where} must be one of {list(choices)}, got {value!r}")
    values = value if isinstance(value, list) else [value]
    for v in values:
        if v is None or isinstance(v, (str, bool)):
            continue
        lo, lo_x = meta.get("min"), meta.get("min_exclusive")
        if lo is not None and v < lo:
            raise SpecError(f"{where} must be >= {lo}, got {value!r}")
        if lo_x is not None and v <= lo_x:
            raise SpecError(f"{where} must be > {lo_x}, got {value!r}")
        hi = meta.get("max")
        if hi is not None and v > hi:
            raise SpecError(f"{where} must be <= {hi}, got {value!r}")


def from_dict(cls, data: Any, where: str = "spec"):
    """Build dataclass ``cls`` from ``data``, naming any unknown or ill-typed key."""
    if isinstance(data, cls):
        data = to_dict(data)
    if not isinstance(data, dict):
        got = "nothing (an empty section: give its keys, or leave it out)" if data is None else type(data).__name__
        raise SpecError(f"{where} must be a mapping of keys to values, got {got}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SpecError(f"unknown key {where}.{unknown[0]}; expected one of: {', '.join(fields)}")
    kwargs = {}
    defaults = None
    for name, value in data.items():
        f = fields[name]
        key = f"{where}.{name}"
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            # A partly given section keeps *this* spec's defaults for the rest (IWAE's objective
            # is iwae with k=5 even when only num_particles is set), not the section class's own.
            defaults = defaults if defaults is not None else cls()
            value = {**to_dict(getattr(defaults, name)), **value}
        kwargs[name] = _coerce(value, hints[name], key)
        _check_bounds(kwargs[name], f.metadata, key)
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check()
    return obj


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _leaf_paths(cls, prefix=()):
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _leaf_paths(tp, prefix + (f.name,))
        else:
            yield prefix + (f.name,)


def apply_overrides(cls, data: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` strings to a spec dict (values parsed as JSON).

    ``key`` is a dotted path (``model.z_dim``) or, when unambiguous, a bare
    field name (``z_dim``).
    """
    data = json.loads(json.dumps(data))
    paths = list(_leaf_paths(cls))
    for item in overrides:
        if "=" not in item:
            raise SpecError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        parts = tuple(key.strip().split("."))
        matches = [p for p in paths if p == parts or (len(parts) == 1 and p[-1] == parts[0])]
        if not matches:
            raise SpecError(f"unknown spec key {key!r}; known keys: {', '.join('.'.join(p) for p in paths)}")
        if len(matches) > 1:
            options = " or ".join(".".join(p) for p in matches)
            raise SpecError(f"spec key {key!r} is ambiguous: use {options}")
        node = data
        for part in matches[0][:-1]:
            node = node.setdefault(part, {})
        node[matches[0][-1]] = _parse_value(text)
    return data


def describe(spec, prefix: str = "") -> list[str]:
    """One line per leaf field of a spec *instance*: dotted key, its value there, and its doc.

    Give the family's default spec (``SpecClass()``), not a section class: a family's
    defaults (IWAE's objective, DCIM's epochs) live in the instance, not in the sections.
    """
    if isinstance(spec, type):
        spec = spec()
    lines = []
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if dataclasses.is_dataclass(value):
            lines += describe(value, prefix + f.name + ".")
            continue
        doc = f.metadata.get("doc", "")
        choices = f.metadata.get("choices")
        if choices:
            doc = f"{doc} (one of {', '.join(map(str, choices))})".strip()
        lines.append(f"{prefix + f.name:28s} {json.dumps(plain(value), separators=(',', ':')):12s} {doc}")
    return lines
