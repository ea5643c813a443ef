"""The catalogue: which families exist, their specs, and train / evaluate / sample / load for any of them.

The catalogue (with the CLI) is where :mod:`ppl_models` meets :mod:`inference`:
a model file never knows how it is trained, and inference never knows a
concrete model. Every family implements :class:`~ppl_models.catalogue.family.Family`;
:mod:`~ppl_models.catalogue.registry` lists them; a trained model is a
:class:`~ppl_models.catalogue.run_directory.RunDirectory`.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import torch

from inference.devices import resolve_device

from ..errors import SpecError
from ..specs import apply_overrides, describe, from_dict, to_dict
from .family import Family
from .registry import FAMILIES
from .run_directory import SAMPLES, RunDirectory, TrainedModel

__all__ = ["FAMILIES", "Family", "TrainedModel", "build", "default_spec", "evaluate", "family", "load",
           "make_spec", "sample", "spec_keys", "summary", "train"]


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise SpecError(f"unknown model {name!r}; the catalogue has: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def default_spec(name: str) -> dict:
    return to_dict(family(name).spec_class())


def spec_keys(name: str) -> list[str]:
    """One line per key of the family's spec: dotted key, the family's default, its meaning."""
    return describe(family(name).spec_class())


def make_spec(name: Optional[str] = None, spec: Optional[dict | str] = None, overrides: tuple = ()):
    """Build a validated spec from a family name, a dict or JSON file, and ``key=value`` overrides."""
    if isinstance(spec, str):
        if not os.path.exists(spec):
            raise SpecError(f"spec file {spec} does not exist")
        try:
            with open(spec) as f:
                spec = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SpecError(f"spec file {spec} is not valid JSON: {e}") from None
    if spec is not None and not isinstance(spec, dict):
        raise SpecError(f"a spec must be a mapping of sections, got {type(spec).__name__}")
    spec = dict(spec or {})
    name = name or spec.get("family")
    if name is None:
        raise SpecError("spec has no 'family' key; expected one of: " + ", ".join(FAMILIES))
    if spec.get("family", name) != name:
        raise SpecError(f"spec.family is {spec['family']!r} but model {name!r} was asked for")
    cls = family(name).spec_class
    spec = apply_overrides(cls, {**spec, "family": name}, list(overrides))
    return from_dict(cls, spec)


def build(spec) -> torch.nn.Module:
    """The untrained model module of a spec (a spec object, a dict, or a JSON file path).

    ``build({"family": "vae", "model": {"x_dim": 784, "z_dim": 20, "hidden": [200]}})``
    """
    if not hasattr(spec, "family"):
        spec = make_spec(spec=spec)
    return family(spec.family).build(spec)


def load(directory: str) -> TrainedModel:
    """A trained run directory: spec, module with its weights (on the CPU, eval mode), metrics."""
    run = RunDirectory(directory)
    spec = make_spec(spec=run.read_spec())
    fam = family(spec.family)
    module = fam.build(spec)
    run.load_weights(module)
    module.eval()
    return TrainedModel(directory, spec, module, run.read_metrics(), fam)


def train(spec, out_dir: str, progress: bool = True, log=print) -> dict:
    """Train ``spec`` into ``out_dir`` (resuming a killed run), evaluate, plot; return the metrics."""
    fam = family(spec.family)
    data = fam.load_data(spec)
    fam.resolve(spec, data)
    resolve_device(spec.train.device)  # fail before writing anything
    run = RunDirectory(out_dir)
    run.prepare(to_dict(spec), normalise=lambda old: to_dict(make_spec(spec=old)))
    torch.manual_seed(spec.train.seed)  # the initial weights are part of what the seed fixes
    fam.train(spec, run, data, progress, log)
    metrics = evaluate(out_dir, progress=progress, data=data)
    sample(out_dir, 64, run.path(SAMPLES), seed=spec.train.seed)
    return metrics


def evaluate(directory: str, num_particles: Optional[int] = None, progress: bool = False, data=None) -> dict:
    """The family's evaluation, stored in metrics.json."""
    trained = load(directory)
    data = data or trained.family.load_data(trained.spec)
    metrics = trained.family.evaluate(trained, data, num_particles=num_particles, progress=progress)
    trained.run.write_metrics(metrics)
    return metrics


def summary(metrics: dict) -> str:
    return family(metrics["family"]).summary_line(metrics)


def sample(directory: str, n: int, path: str, seed: int = 0, **options) -> str:
    """Write a PNG grid of ``n`` model samples and return its path."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SpecError(f"number of samples must be a positive integer, got {n!r}")
    trained = load(directory)
    trained.family.check_options(options)
    torch.manual_seed(seed)
    trained.family.sample_grid(trained, n, path, **options)
    return path

