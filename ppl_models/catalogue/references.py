"""Reference answers, posteriordb-style: every README figure of a family kept as a record in the package.

posteriordb keeps, beside each posterior, a reference answer and how it was computed, so that a new
sampler is judged against something written down. Here each family's README figures live in
``ppl_models/references/FAMILY.yaml`` (package data), a list of records, each with:

- ``name`` (unique across the catalogue), ``family``, and ``figure``: the README figure it backs, in words;
- ``data``: ``dataset``, ``binarization`` and ``split``;
- ``metric``: ``key`` and ``stderr_key`` in the run's ``metrics.json`` and what it ``means``;
- ``estimator``: its ``name`` and ``settings``;
- ``value`` with its ``stderr`` (``stderr_meaning`` says over what; null where the README and JSON give none,
  with the reason), the ``command`` that produced it, the ``date`` and the ``source`` (a results JSON or the
  README);
- ``full``: the protocol that re-runs the figure through the catalogue (``overrides``: ``--set`` strings on
  the family's default spec; ``evaluate``: options of a re-evaluation after training: ``particles``,
  ``temperatures``, ``seed``), or ``not_by_check``: why ``ppl-models check`` cannot re-run it and what does;
- ``reduced``: the same at reduced size (fewer epochs, particles, temperatures), with its own expected
  ``value`` and ``tolerance`` (and how the tolerance was had: ``tolerance_from``), the date it was
  ``measured`` and the ``seconds`` it took; or ``not_by_check``.

``ppl-models check MODEL`` (:mod:`ppl_models.catalogue.check`) re-runs them. Every field is validated here,
and a bad one is one :class:`SpecError` naming the file, the record and the field.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Optional

import yaml

from ..errors import SpecError

#: where the records ship (package data: ``ppl_models/references/*.yaml``)
REFERENCES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "references")
EVALUATE_OPTIONS = ("particles", "temperatures", "seed")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_FIELDS = ("name", "family", "figure", "data", "metric", "estimator", "value", "stderr", "stderr_meaning", "command",
           "date", "source", "full", "reduced")


@dataclass(frozen=True)
class Protocol:
    """How ``check`` re-runs a figure: ``--set`` overrides on the family's default spec, then (optionally) a
    re-evaluation with ``evaluate`` options (``particles``, ``temperatures``, ``seed``)."""

    overrides: tuple
    evaluate: dict = field(default_factory=dict)

    def describe(self) -> str:
        parts = [f"--set {o}" for o in self.overrides]
        parts += [f"then evaluate --{k} {v}" for k, v in self.evaluate.items()]
        return " ".join(parts)


@dataclass(frozen=True)
class Reduced(Protocol):
    """A protocol at reduced size, with the value it gave when measured and the tolerance around it."""

    value: float = math.nan
    tolerance: float = math.nan
    tolerance_from: str = ""
    measured: str = ""
    seconds: float = math.nan


@dataclass(frozen=True)
class Record:
    """One reference answer (see the module's docstring for each field)."""

    name: str
    family: str
    figure: str
    data: dict
    metric: dict
    estimator: dict
    value: float
    stderr: Optional[float]
    stderr_meaning: str
    command: str
    date: str
    source: str
    full: Optional[Protocol]
    full_not_by_check: Optional[str]
    reduced: Optional[Reduced]
    reduced_not_by_check: Optional[str]


class _Where:
    """Builds error messages that name the file, the record and the field."""

    def __init__(self, path: str, record: str):
        self.path, self.record = path, record

    def fail(self, key: str, problem: str):
        raise SpecError(f"reference file {self.path}, record {self.record}: {key} {problem}")

    def text(self, raw: dict, key: str) -> str:
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"must be non-empty text, got {value!r}")
        return value

    def number(self, raw: dict, key: str, minimum=None, allow_none=False):
        value = raw.get(key)
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(key, f"must be a finite number{' or null' if allow_none else ''}, got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be >= {minimum}, got {value!r}")
        return float(value)

    def mapping(self, raw: dict, key: str, keys: tuple, optional: tuple = ()) -> dict:
        value = raw.get(key)
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping with {', '.join(keys)}, got {value!r}")
        unknown = sorted(set(value) - set(keys) - set(optional))
        if unknown:
            self.fail(f"{key}.{unknown[0]}", f"is not a field; expected {', '.join(keys + optional)}")
        missing = [k for k in keys if k not in value]
        if missing:
            self.fail(f"{key}.{missing[0]}", "is missing")
        return value

    def date(self, raw: dict, key: str) -> str:
        value = raw.get(key)
        if not isinstance(value, str) or not _DATE.match(value):
            self.fail(key, f"must be a date YYYY-MM-DD, got {value!r}")
        return value


def _protocol(where: _Where, raw: dict, key: str, reduced: bool):
    """(protocol, None) or (None, reason) of a ``full`` / ``reduced`` entry."""
    extra = ("value", "tolerance", "tolerance_from", "measured", "seconds") if reduced else ()
    value = raw.get(key)
    if isinstance(value, dict) and set(value) == {"not_by_check"}:
        return None, where.text(value, "not_by_check")
    section = where.mapping(raw, key, ("overrides",) + extra, ("evaluate",))
    overrides = section["overrides"]
    if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
        where.fail(f"{key}.overrides", f"must be a list of KEY=VALUE texts, got {overrides!r}")
    evaluate = section.get("evaluate") or {}
    if not isinstance(evaluate, dict) or set(evaluate) - set(EVALUATE_OPTIONS):
        where.fail(f"{key}.evaluate", f"must map some of {', '.join(EVALUATE_OPTIONS)} to integers, got {evaluate!r}")
    for option, v in evaluate.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if option == "seed" else 1):
            where.fail(f"{key}.evaluate.{option}", f"must be a {'non-negative' if option == 'seed' else 'positive'} "
                                                   f"integer, got {v!r}")
    if not reduced:
        return Protocol(tuple(overrides), dict(evaluate)), None
    return Reduced(tuple(overrides), dict(evaluate), value=where.number(section, "value"),
                   tolerance=where.number(section, "tolerance", minimum=1e-12),
                   tolerance_from=where.text(section, "tolerance_from"), measured=where.date(section, "measured"),
                   seconds=where.number(section, "seconds", minimum=0)), None


def parse_record(raw, path: str, index: int, family: Optional[str] = None) -> Record:
    """One record of a reference file, every field checked (``family``: the one its file is named after)."""
    if not isinstance(raw, dict):
        raise SpecError(f"reference file {path}: record {index} must be a mapping, got {raw!r}")
    where = _Where(path, repr(raw.get("name", index)))
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        where.fail(unknown[0], f"is not a field; expected {', '.join(_FIELDS)}")
    name = where.text(raw, "name")
    if not _NAME.match(name):
        where.fail("name", f"must be lower-case letters, digits, '.', '_' or '-', got {name!r}")
    fam = where.text(raw, "family")
    if family is not None and fam != family:
        where.fail("family", f"is {fam!r} but the file holds the {family} family's records")
    data = where.mapping(raw, "data", ("dataset", "binarization", "split"))
    metric = where.mapping(raw, "metric", ("key", "stderr_key", "meaning"))
    for k in ("key", "meaning"):
        where.text(metric, k)
    if metric["stderr_key"] is not None:
        where.text(metric, "stderr_key")
    estimator = where.mapping(raw, "estimator", ("name", "settings"))
    where.text(estimator, "name")
    if not isinstance(estimator["settings"], dict):
        where.fail("estimator.settings", f"must be a mapping, got {estimator['settings']!r}")
    full, full_why = _protocol(where, raw, "full", reduced=False)
    reduced, reduced_why = _protocol(where, raw, "reduced", reduced=True)
    return Record(name=name, family=fam, figure=where.text(raw, "figure"),
                  data={k: where.text(data, k) for k in data}, metric=dict(metric), estimator=dict(estimator),
                  value=where.number(raw, "value"), stderr=where.number(raw, "stderr", minimum=0, allow_none=True),
                  stderr_meaning=where.text(raw, "stderr_meaning"), command=where.text(raw, "command"),
                  date=where.date(raw, "date"), source=where.text(raw, "source"), full=full, full_not_by_check=full_why,
                  reduced=reduced, reduced_not_by_check=reduced_why)


def read_file(path: str, family: Optional[str] = None) -> list[Record]:
    """The records of one reference file (a YAML list of records)."""
    with open(path, encoding="utf-8") as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise SpecError(f"reference file {path} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(raw, list) or not raw:
        raise SpecError(f"reference file {path} must hold a non-empty list of records")
    return [parse_record(r, path, i, family) for i, r in enumerate(raw)]


def all_records(directory: Optional[str] = None) -> dict[str, list[Record]]:
    """Every family's records, ``{family: [Record, ...]}``, from ``directory`` (default
    :data:`REFERENCES_DIR`); names unique across them."""
    directory = directory or REFERENCES_DIR
    out, seen = {}, {}
    for entry in sorted(os.listdir(directory)):
        if not entry.endswith(".yaml"):
            continue
        family = entry[: -len(".yaml")]
        records = read_file(os.path.join(directory, entry), family)
        for r in records:
            if r.name in seen:
                raise SpecError(f"reference record {r.name!r} is in both {seen[r.name]} and {entry}; names are unique")
            seen[r.name] = entry
        out[family] = records
    return out


def records_of(family: str, record: Optional[str] = None, directory: Optional[str] = None) -> list[Record]:
    """One family's records (or only the one named ``record``); an unknown family or record is one line
    naming the known ones."""
    from .registry import FAMILIES

    known = all_records(directory)
    if family not in known:
        if family in FAMILIES:
            raise SpecError(f"{family} has no reference records yet (no README figure); the families with "
                            f"references are: {', '.join(sorted(known))}")
        raise SpecError(f"unknown model {family!r}; the families with references are: {', '.join(sorted(known))}")
    records = known[family]
    if record is None:
        return records
    chosen = [r for r in records if r.name == record]
    if not chosen:
        raise SpecError(f"{family} has no reference record {record!r}; its records are: "
                        f"{', '.join(r.name for r in records)}")
    return chosen
