"""The catalogue: which families exist, their specs, and the dispatch of train /
evaluate / sample / load to each family's glue module (``catalogue_<family>.py``).

The catalogue and its glue modules are the wiring of ``ppl_models`` (with the
CLI): the only modules here that import :mod:`inference`; a model file never
knows how it is trained.

A trained model is a directory::

    spec.json          the full spec (model, objective, data, train)
    checkpoint.pt      the driver's per-epoch checkpoint (resume)
    model.pt           final weights
    metrics.json       evaluation (e.g. test_nll in nats/image) and the per-epoch history
    test_log_likelihood.pt  per-image test log-likelihoods (directed models), for paired comparisons
    samples.png        a grid of model samples
    training_curve.png the training objective per epoch
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Optional

import torch

from . import catalogue_dcim, catalogue_rbm, catalogue_vae
from .errors import CheckpointError, SpecError
from inference.fileio import write_json_atomic
from .run_spec import RESUMABLE_CHANGES
from .specs import apply_overrides, describe, from_dict, to_dict


@dataclass(frozen=True)
class Family:
    name: str
    kind: str
    summary: str
    spec: type
    glue: ModuleType


FAMILIES = {
    "vae": Family("vae", "directed", "variational autoencoder, Gaussian latent, Bernoulli / grey-level likelihood "
                  "(Kingma & Welling 2014)", catalogue_vae.VAESpec, catalogue_vae),
    "iwae": Family("iwae", "directed", "importance-weighted autoencoder: the VAE pair on the k-sample bound, "
                   "optional DReG gradients (Burda et al. 2016)", catalogue_vae.IWAESpec, catalogue_vae),
    "dcim": Family("dcim", "directed", "deep conditional independent model: a sigmoid DNN and its tied generator, "
                   "learned generatively (Flach, Shekhovtsov & Fikar 2017)", catalogue_dcim.DCIMRunSpec, catalogue_dcim),
    "rbm": Family("rbm", "energy", "binary restricted Boltzmann machine, CD-k / PCD-k by block Gibbs, AIS log Z "
                  "(Hinton 2002; Tieleman 2008; Salakhutdinov & Murray 2008)", catalogue_rbm.RBMRunSpec, catalogue_rbm),
    "gbrbm": Family("gbrbm", "energy", "Gaussian-Bernoulli RBM for grey levels, per-pixel standardised, optional "
                    "learned variances (Cho, Ilin & Raiko 2011)", catalogue_rbm.GBRBMRunSpec, catalogue_rbm),
}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise SpecError(f"unknown model {name!r}; the catalogue has: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def default_spec(name: str) -> dict:
    return to_dict(family(name).spec())


def spec_keys(name: str) -> list[str]:
    return describe(family(name).spec)


def make_spec(name: Optional[str] = None, spec: Optional[dict | str] = None, overrides: tuple = ()):
    """Build a validated spec from a family name, a dict or JSON file, and ``key=value`` overrides."""
    if isinstance(spec, str):
        if not os.path.exists(spec):
            raise SpecError(f"spec file {spec} does not exist")
        try:
            with open(spec) as f:
                spec = json.load(f)
        except json.JSONDecodeError as e:
            raise SpecError(f"spec file {spec} is not valid JSON: {e}") from None
    spec = dict(spec or {})
    name = name or spec.get("family")
    if name is None:
        raise SpecError("spec has no 'family' key; expected one of: " + ", ".join(FAMILIES))
    if spec.get("family", name) != name:
        raise SpecError(f"spec.family is {spec['family']!r} but model {name!r} was asked for")
    cls = family(name).spec
    spec = apply_overrides(cls, {**spec, "family": name}, list(overrides))
    return from_dict(cls, spec)


def build(spec) -> torch.nn.Module:
    """The untrained model module of a spec (a spec object, a dict, or a JSON file path).

    ``build({"family": "vae", "model": {"x_dim": 784, "z_dim": 20, "hidden": [200]}})``
    """
    if not hasattr(spec, "family"):
        spec = make_spec(spec=spec)
    return family(spec.family).glue.build(spec)


def _differences(a: dict, b: dict, prefix=()) -> list:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, prefix + (key,))
        elif va != vb and prefix + (key,) not in RESUMABLE_CHANGES:
            out.append((".".join(prefix + (key,)), va, vb))
    return out


def _read_json(path: str, what: str):
    from inference.checkpoint import read_json

    return read_json(path, what)


def _prepare_directory(out_dir: str, spec_dict: dict) -> None:
    """Refuse a directory that holds another model or foreign files; never overwrite one."""
    path = os.path.join(out_dir, "spec.json")
    if os.path.exists(path):
        diffs = _differences(_read_json(path, "spec"), spec_dict)
        if diffs:
            key, was, now = diffs[0]
            raise CheckpointError(f"{out_dir} already holds a different model ({key}: {was!r} there, {now!r} now); "
                                  "choose another --out or remove it")
    elif os.path.isdir(out_dir) and os.listdir(out_dir):
        raise CheckpointError(f"{out_dir} exists and is not a ppl-models run directory (no spec.json); choose another --out")


@dataclass
class TrainedModel:
    """A model directory loaded back: the spec, the module with its weights, the metrics."""

    directory: str
    spec: object
    module: torch.nn.Module
    metrics: dict

    @property
    def glue(self) -> ModuleType:
        return family(self.spec.family).glue

    @property
    def image_shape(self) -> tuple:
        return tuple(self.metrics.get("image_shape") or (1, -1))

    def sample(self, n: int, **options) -> torch.Tensor:
        """``n`` images from the model (what a family draws: see its glue's ``sample_images``)."""
        return self.glue.sample_images(self, n, **options)

    def log_likelihood(self, x: torch.Tensor, num_particles: int = 5000) -> torch.Tensor:
        """Importance-sampled log p(x) per image (nats), for directed families."""
        from inference.log_likelihood import log_likelihood

        return log_likelihood(self.module.model, self.module.guide, x, num_particles=num_particles)


def load(directory: str) -> TrainedModel:
    from inference.checkpoint import load_checkpoint

    spec = make_spec(spec=_read_json(os.path.join(directory, "spec.json"), "spec"))
    module = family(spec.family).glue.build(spec)
    weights = os.path.join(directory, "model.pt")
    if not os.path.exists(weights):
        raise CheckpointError(f"{directory} has no model.pt: training has not finished (re-run train to resume)")
    module.load_state_dict(load_checkpoint(weights, map_location="cpu"))
    module.eval()
    metrics_path = os.path.join(directory, "metrics.json")
    metrics = _read_json(metrics_path, "metrics") if os.path.exists(metrics_path) else {}
    return TrainedModel(directory, spec, module, metrics)


def train(spec, out_dir: str, progress: bool = True, log=print) -> dict:
    """Train ``spec`` into ``out_dir`` (resuming a killed run), evaluate, plot; return the metrics."""
    from inference.devices import resolve_device

    glue = family(spec.family).glue
    data = glue.load_data(spec)
    glue.resolve(spec, data)
    spec_dict = to_dict(spec)
    _prepare_directory(out_dir, spec_dict)
    resolve_device(spec.train.device)  # fail before writing anything
    write_json_atomic(spec_dict, os.path.join(out_dir, "spec.json"))
    torch.manual_seed(spec.train.seed)  # the initial weights are part of what the seed fixes
    glue.train(spec, out_dir, data, progress, log)
    metrics = evaluate(out_dir, progress=progress, data=data)
    sample(out_dir, 64, os.path.join(out_dir, "samples.png"), seed=spec.train.seed)
    return metrics


def evaluate(directory: str, num_particles: Optional[int] = None, progress: bool = False, data=None) -> dict:
    """The family's evaluation (test NLL for directed models), stored in metrics.json."""
    trained = load(directory)
    glue = trained.glue
    data = data or glue.load_data(trained.spec)
    metrics = glue.evaluate(trained, data, num_particles=num_particles, progress=progress)
    write_json_atomic(metrics, os.path.join(directory, "metrics.json"))
    return metrics


def summary(metrics: dict) -> str:
    return family(metrics["family"]).glue.summary(metrics)


def sample(directory: str, n: int, path: str, seed: int = 0, **options) -> str:
    """Write a PNG grid of ``n`` model samples and return its path."""
    if n < 1:
        raise SpecError(f"number of samples must be positive, got {n}")
    trained = load(directory)
    torch.manual_seed(seed)
    trained.glue.sample_grid(trained, n, path, **options)
    return path
