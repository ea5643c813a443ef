"""Model files: a model as a YAML (or JSON) file that a person writes and reads.

A model file holds the sections of the family's spec (``family``, ``model``,
``objective``, ``data``, ``train``); a key left out takes the family's
default, so ``family: sbn`` alone is the default SBN. ``ppl-models spec
MODEL`` writes a family's whole spec as YAML with a comment on every key (its
meaning and allowed values); each family's default file ships in
``ppl_models/models/FAMILY.yaml`` and is that text exactly (regenerate them
all with ``python -m ppl_models.catalogue.write_model_files``).

YAML is read by PyYAML with the YAML 1.2 core schema's scalars, the JSON ones:
``true``/``false`` are the only booleans (``yes``, ``no``, ``on``, ``off`` stay
text, and a boolean key given one says so), ``1e-3`` is a number (YAML 1.1
reads it as text), ``010`` is ten, and dates stay text. A key given twice is an
error, not a silent overwrite. Every problem is one :class:`SpecError` that
names the file (and the line, for a syntax error).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import textwrap
import typing
from typing import Optional

import yaml

from ..errors import SpecError
from ..specs import plain, to_dict
from .registry import FAMILIES
from .run_directory import MODEL_FILES

#: where each family's default model file ships (package data), and the hand-written examples
MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
EXAMPLES_DIR = os.path.join(MODELS_DIR, "examples")
YAML_EXTENSIONS = (".yaml", ".yml")
EXTENSIONS = YAML_EXTENSIONS + (".json",)
SECTION_DOCS = {
    "model": "the architecture",
    "objective": "the training objective and its options",
    "pretrain": "greedy layer-wise pretraining before joint training (deep energy models)",
    "data": "the data set, its binarisation and split",
    "train": "optimiser, learning-rate schedule, stopping, seed, device and evaluation settings",
}
WIDTH = 100


# -- reading -------------------------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the YAML 1.2 core schema's implicit scalars and no duplicate keys."""

    yaml_implicit_resolvers: dict = {}

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is not a name",
                                                        key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    """Writes text that :class:`_Loader` reads back as the same values (quotes what would not be text)."""

    yaml_implicit_resolvers: dict = {}


_CORE = [
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", list("~nN") + [""]),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^[-+]?[0-9]+$", list("-+0123456789")),
    ("tag:yaml.org,2002:float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                                r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", list("-+.0123456789")),
]
for _cls in (_Loader, _Dumper):
    for _tag, _pattern, _first in _CORE:
        _cls.add_implicit_resolver(_tag, re.compile(_pattern), _first)


def _scalar(convert, what):
    def construct(loader, node):
        text = loader.construct_scalar(node)
        try:
            return convert(text)
        except ValueError:
            raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not {what}", node.start_mark) from None
    return construct


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(text)
    return text.lower() == "true"


def _float(text: str) -> float:
    special = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
    return special[text.lower()] if text.lower() in special else float(text)


_Loader.add_constructor("tag:yaml.org,2002:bool", _scalar(_bool, "true or false"))
_Loader.add_constructor("tag:yaml.org,2002:int", _scalar(int, "an integer"))
_Loader.add_constructor("tag:yaml.org,2002:float", _scalar(_float, "a number"))


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """A model file as read: its path, its mapping, and its bytes (which a run directory keeps)."""

    path: str
    data: dict
    raw: bytes

    @property
    def is_yaml(self) -> bool:
        return is_yaml_path(self.path)

    @property
    def run_file_name(self) -> str:
        """The name a run directory keeps this file under."""
        return MODEL_FILES[0] if self.is_yaml else MODEL_FILES[1]

    @property
    def stem(self) -> str:
        return os.path.splitext(os.path.basename(self.path))[0]


def is_yaml_path(path: str) -> bool:
    return path.lower().endswith(YAML_EXTENSIONS)


def is_model_file_path(path: str) -> bool:
    """Whether ``path`` names a model file by its extension (``.yaml``, ``.yml`` or ``.json``)."""
    return path.lower().endswith(EXTENSIONS)


def parse(text: str, path: str, as_yaml: bool):
    """The value a model file's text holds; a syntax error is one :class:`SpecError` with its line."""
    if not as_yaml:
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"model file {path} is not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (_Loader is a SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = _one_line(e.problem or e.context or "syntax error")
        problem = problem[len("but "):] if problem.startswith("but ") else problem
        context = (f" ({_one_line(e.context)}, line {e.context_mark.line + 1})"
                   if e.context and e.problem and e.context_mark is not None else "")
        where = f": line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SpecError(f"model file {path} is not valid YAML{where}: {problem}{context}") from None
    except yaml.reader.ReaderError as e:  # a control character: the reader counts characters, we count lines
        line = text.count("\n", 0, e.position) + 1
        code = e.character if isinstance(e.character, int) else ord(str(e.character)[:1] or "\0")
        raise SpecError(f"model file {path} is not valid YAML: line {line}: character #x{code:04x} is not "
                        "allowed in YAML") from None
    except yaml.YAMLError as e:  # pragma: no cover (every error PyYAML raises today is one of the above)
        raise SpecError(f"model file {path} is not valid YAML: {_one_line(str(e))}") from None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def read(path: str) -> ModelFile:
    """Read a model file: YAML for ``.yaml`` / ``.yml``, JSON otherwise. Its top level must be a mapping."""
    if not os.path.exists(path):
        raise SpecError(f"model file {path} does not exist")
    if os.path.isdir(path):
        raise SpecError(f"model file {path} is a directory")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError(f"model file {path} is not UTF-8 text (byte {e.start})") from None
    data = parse(text, path, is_yaml_path(path))
    if data is None:
        raise SpecError(f"model file {path} is empty; start from `ppl-models spec MODEL > {path}`")
    if not isinstance(data, dict):
        raise SpecError(f"model file {path}: a spec must be a mapping of sections (family, model, objective, data, "
                        f"train), got {_kind_of(data)}")
    return ModelFile(path, data, raw)


def _kind_of(value) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the text {value!r}"
    return f"{type(value).__name__} {value!r}"


# -- writing -------------------------------------------------------------------------------------------

def _number(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _bounds(meta) -> str:
    lo, lo_x, hi = meta.get("min"), meta.get("min_exclusive"), meta.get("max")
    if (lo is not None or lo_x is not None) and hi is not None:
        return f"in {'[' if lo is not None else '('}{_number(lo if lo is not None else lo_x)}, {_number(hi)}]"
    if lo is not None:
        return f">= {_number(lo)}"
    if lo_x is not None:
        return f"> {_number(lo_x)}"
    if hi is not None:
        return f"<= {_number(hi)}"
    return ""


_TYPE_NAMES = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("text", "texts"),
               bool: ("true or false", "booleans")}


def _allowed(tp, meta) -> str:
    """What a key takes, in words: ``an integer >= 1, or null``, ``one of: adam, sgd``, ``a list of ...``."""
    optional = typing.get_origin(tp) is typing.Union and type(None) in typing.get_args(tp)
    if optional:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    choices = meta.get("choices")
    bounds = _bounds(meta)
    if choices:
        words = "one of: " + ", ".join(map(str, choices))
    elif typing.get_origin(tp) in (list, tuple):
        (item,) = typing.get_args(tp)[:1]
        if dataclasses.is_dataclass(item):
            words = "a list of mappings, each with the keys below"
        else:
            words = f"a list of {_TYPE_NAMES.get(item, (None, _type_name(item)))[1]}" + (f" {bounds}" if bounds else "")
    else:
        words = _TYPE_NAMES.get(tp, (_type_name(tp),))[0] + (f" {bounds}" if bounds else "")
    return words + (", or null" if optional else "")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _yaml_value(value) -> str:
    text = yaml.dump(value, Dumper=_Dumper, default_flow_style=True, sort_keys=False, width=math.inf,
                     allow_unicode=True)
    if text.endswith("\n...\n"):  # the end-of-document marker after a lone scalar
        text = text[:-len("...\n")]
    return text.strip()


def _doc(text: str) -> str:
    return re.sub(r"\bNone\b", "null", text)


def _comment(text: str, indent: str, hang: str = "") -> list[str]:
    """``text`` as comment lines of at most :data:`WIDTH` characters; short bracketed groups (``[0, 1]``)
    are never split."""
    keep = re.sub(r"[\[(][^\[\]()]{0,16}[\])]", lambda m: m.group().replace(" ", "\x00"), text)
    lines = textwrap.wrap(keep, width=WIDTH, initial_indent=indent + "# " + hang,
                          subsequent_indent=indent + "# " + hang + ("  " if hang else ""),
                          break_on_hyphens=False, break_long_words=False)
    return [line.replace("\x00", " ") for line in lines]


def _render(spec, indent: str = "") -> list[str]:
    lines = []
    hints = typing.get_type_hints(type(spec))
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if dataclasses.is_dataclass(value):
            if lines:
                lines.append("")
            if not indent and f.name in SECTION_DOCS:
                lines += _comment(f"{f.name}: {SECTION_DOCS[f.name]}", indent)
            lines.append(f"{indent}{f.name}:")
            lines += _render(value, indent + "  ")
            continue
        doc = _doc(f.metadata.get("doc", ""))
        allowed = _allowed(hints[f.name], f.metadata)
        lines += _comment(f"{doc} ({allowed})" if doc else allowed, indent)
        item = typing.get_args(hints[f.name])[:1]
        if typing.get_origin(hints[f.name]) in (list, tuple) and item and dataclasses.is_dataclass(item[0]):
            item_hints = typing.get_type_hints(item[0])
            for g in dataclasses.fields(item[0]):
                default = g.default if g.default is not dataclasses.MISSING else g.default_factory()
                lines += _comment(f"{g.name}: {_doc(g.metadata.get('doc', ''))} "
                                  f"({_allowed(item_hints[g.name], g.metadata)}; default {_yaml_value(default)})",
                                  indent, hang="  ")
        value = plain(value)
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{indent}{f.name}:")  # one item (a layer) a line
            lines += [f"{indent}  - {_yaml_value(v)}" for v in value]
        else:
            lines.append(f"{indent}{f.name}: {_yaml_value(value)}")
    return lines


def to_yaml(spec) -> str:
    """A spec object (or a family name, for its defaults) as a commented YAML model file."""
    if isinstance(spec, str):
        spec = FAMILIES[spec].spec_class() if spec in FAMILIES else _unknown(spec)
    family = FAMILIES[spec.family]
    header = [f"{family.name}: {family.summary}", ""]
    lines = [line for text in header for line in (_comment(text, "") or ["#"])]
    lines += _comment("A ppl-models model file: train it with `ppl-models train THIS_FILE [--set KEY=VALUE ...]`. "
                      "Every key but family may be left out, and then takes the family's default (the value shown "
                      f"by `ppl-models spec {family.name}`). Each comment gives the key's meaning and allowed values.",
                      "")
    return "\n".join(lines + [""] + _render(spec)) + "\n"


def to_json(spec) -> str:
    return json.dumps(to_dict(spec), indent=2)


def _unknown(name):
    raise SpecError(f"unknown model {name!r}; the catalogue has: {', '.join(FAMILIES)}")


# -- the shipped files ------------------------------------------------------------------------------------

def default_file(name: str) -> str:
    """Where family ``name``'s default model file ships."""
    return os.path.join(MODELS_DIR, f"{name}.yaml")


def example_files() -> list[str]:
    """The hand-written example model files that ship beside the defaults."""
    if not os.path.isdir(EXAMPLES_DIR):
        return []
    return sorted(os.path.join(EXAMPLES_DIR, f) for f in os.listdir(EXAMPLES_DIR) if is_model_file_path(f))


def write_default_files(directory: Optional[str] = None) -> list[str]:
    """(Re)write every family's default model file; returns the paths written."""
    directory = directory or MODELS_DIR
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name in FAMILIES:
        path = os.path.join(directory, f"{name}.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(to_yaml(name))
        paths.append(path)
    return paths

