"""The catalogue: which families exist, their specs, and the train / evaluate /
sample / load glue that joins a model definition to the inference that fits it.

This is the one place in ``ppl_models`` that imports :mod:`inference` (with
the CLI): a model file never knows how it is trained.

A trained model is a directory::

    spec.json          the full spec (model, objective, data, train)
    checkpoint.pt      the driver's per-epoch checkpoint (resume)
    model.pt           final weights
    metrics.json       test_nll (nats/image), eval settings, per-epoch history
    samples.png        a grid of model samples
    training_curve.png train / validation objective per epoch
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from .data import check_binary, load_dataset
from .errors import CheckpointError, DataError, SpecError
from .fileio import write_json_atomic
from .plots import save_image_grid, save_training_curve
from .run_spec import RESUMABLE_CHANGES, DataSpec, ObjectiveSpec, TrainSpec
from .specs import apply_overrides, from_dict, option, to_dict
from .vae import VAE, VAEArchitecture


@dataclass
class VAESpec:
    family: str = option("vae", doc="model family", choices=("vae",))
    model: VAEArchitecture = field(default_factory=VAEArchitecture)
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)


@dataclass
class IWAESpec(VAESpec):
    family: str = option("iwae", doc="model family", choices=("iwae",))
    objective: ObjectiveSpec = field(default_factory=lambda: ObjectiveSpec(name="iwae", num_particles=5))


@dataclass(frozen=True)
class Family:
    name: str
    kind: str
    summary: str
    spec: type


FAMILIES = {
    "vae": Family("vae", "directed", "variational autoencoder, Gaussian latent, Bernoulli / grey-level likelihood "
                  "(Kingma & Welling 2014)", VAESpec),
    "iwae": Family("iwae", "directed", "importance-weighted autoencoder: the VAE pair on the k-sample bound, "
                   "optional DReG gradients (Burda et al. 2016)", IWAESpec),
}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise SpecError(f"unknown model {name!r}; the catalogue has: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def default_spec(name: str) -> dict:
    return to_dict(family(name).spec())


def make_spec(name: Optional[str] = None, spec: Optional[dict | str] = None, overrides: tuple = ()):
    """Build a validated spec from a family name, a dict or JSON file, and ``key=value`` overrides."""
    if isinstance(spec, str):
        if not os.path.exists(spec):
            raise SpecError(f"spec file {spec} does not exist")
        try:
            with open(spec) as f:
                spec = json.load(f)
        except json.JSONDecodeError as e:
            raise SpecError(f"spec file is not valid JSON: {e}") from None
    spec = dict(spec or {})
    name = name or spec.get("family")
    if name is None:
        raise SpecError("spec has no 'family' key; expected one of: " + ", ".join(FAMILIES))
    if spec.get("family", name) != name:
        raise SpecError(f"spec.family is {spec['family']!r} but model {name!r} was asked for")
    cls = family(name).spec
    spec = apply_overrides(cls, {**spec, "family": name}, list(overrides))
    return from_dict(cls, spec)


def _differences(a: dict, b: dict, prefix=()) -> list:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, prefix + (key,))
        elif va != vb and prefix + (key,) not in RESUMABLE_CHANGES:
            out.append((".".join(prefix + (key,)), va, vb))
    return out


def _prepare_directory(out_dir: str, spec_dict: dict) -> None:
    """Refuse a directory that holds another model or foreign files; never overwrite one."""
    path = os.path.join(out_dir, "spec.json")
    if os.path.exists(path):
        from inference.checkpoint import read_json

        old = read_json(path, "spec")
        diffs = _differences(old, spec_dict)
        if diffs:
            key, was, now = diffs[0]
            raise CheckpointError(f"{out_dir} already holds a different model ({key}: {was!r} there, {now!r} now); "
                                  "choose another --out or remove it")
    elif os.path.isdir(out_dir) and os.listdir(out_dir):
        raise CheckpointError(f"{out_dir} exists and is not a ppl-models run directory (no spec.json); choose another --out")


def load_data(spec):
    d = spec.data
    data = load_dataset(d.dataset, path=d.path, binarize=d.binarize, threshold=d.threshold,
                        valid_size=d.valid_size, test_size=d.test_size, split_seed=d.split_seed)
    if spec.model.likelihood == "bernoulli":
        if d.binarize == "none":
            raise DataError("likelihood bernoulli needs binary data but data.binarize is none; "
                            "use threshold or dynamic, or a grey-level likelihood")
        for name in ("valid", "test") + (("train",) if data.train_transform is None else ()):
            split = getattr(data, name)
            if split is not None:
                check_binary(split.x, f"{d.dataset} {name} split")
    return data


def _resolve(spec, data) -> None:
    dim = data.train.x.shape[1]
    if spec.model.x_dim is None:
        spec.model.x_dim = dim
    elif spec.model.x_dim != dim:
        raise SpecError(f"model.x_dim is {spec.model.x_dim} but data set {spec.data.dataset} has {dim} pixels per image")


def build(spec) -> torch.nn.Module:
    """The model module of a (resolved) spec."""
    if spec.family in ("vae", "iwae"):
        return VAE(spec.model)
    raise SpecError(f"unknown model {spec.family!r}")


def make_objective(spec):
    from inference.iwae_elbo import IWAEELBO
    from inference.multi_sample_elbo import MultiSampleELBO

    o = spec.objective
    if o.name == "iwae":
        return IWAEELBO(num_particles=o.num_particles, dreg=o.dreg)
    return MultiSampleELBO(num_particles=o.num_particles)


@dataclass
class TrainedModel:
    """A model directory loaded back: the spec, the module with its weights, the metrics."""

    directory: str
    spec: object
    module: torch.nn.Module
    metrics: dict

    def sample(self, n: int) -> torch.Tensor:
        """Mean images E[x | z] for ``n`` draws z ~ p(z)."""
        from inference.queries import sample_model

        return sample_model(self.module.model, n)["x_mean"]

    def log_likelihood(self, x: torch.Tensor, num_particles: int = 5000) -> torch.Tensor:
        """Importance-sampled log p(x) per image (nats)."""
        from inference.log_likelihood import log_likelihood

        return log_likelihood(self.module.model, self.module.guide, x, num_particles=num_particles)


def load(directory: str) -> TrainedModel:
    from inference.checkpoint import load_checkpoint, read_json

    spec = make_spec(spec=read_json(os.path.join(directory, "spec.json"), "spec"))
    module = build(spec)
    weights = os.path.join(directory, "model.pt")
    if not os.path.exists(weights):
        raise CheckpointError(f"{directory} has no model.pt: training has not finished (re-run train to resume)")
    module.load_state_dict(load_checkpoint(weights, map_location="cpu"))
    module.eval()
    metrics_path = os.path.join(directory, "metrics.json")
    metrics = read_json(metrics_path, "metrics") if os.path.exists(metrics_path) else {}
    return TrainedModel(directory, spec, module, metrics)


def train(spec, out_dir: str, progress: bool = True, log=print) -> dict:
    """Train ``spec`` into ``out_dir`` (resuming a killed run), evaluate, plot; return the metrics."""
    from inference.checkpoint import save_atomic
    from inference.svi_driver import fit, resolve_device

    data = load_data(spec)
    _resolve(spec, data)
    spec_dict = to_dict(spec)
    _prepare_directory(out_dir, spec_dict)
    resolve_device(spec.train.device)  # fail before writing anything
    write_json_atomic(spec_dict, os.path.join(out_dir, "spec.json"))
    torch.manual_seed(spec.train.seed)  # the initial weights are part of what the seed fixes
    module = build(spec)
    t = spec.train
    log(f"training {spec.family} on {spec.data.dataset} ({data.train.x.shape[0]} images, "
        f"{'no' if data.valid is None else data.valid.x.shape[0]} validation) for {t.epochs} epochs -> {out_dir}")
    started = time.perf_counter()
    result = fit(module.model, module.guide, make_objective(spec), (data.train.x,), module=module,
                 epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, lr_schedule=t.lr_schedule, lr_decay=t.lr_decay,
                 clip_norm=t.clip_norm, seed=t.seed, device=t.device,
                 valid=(data.valid.x,) if data.valid is not None else None, patience=t.patience,
                 transform=data.train_transform, checkpoint_path=os.path.join(out_dir, "checkpoint.pt"),
                 progress=progress)
    module.cpu()
    save_atomic(module.state_dict(), os.path.join(out_dir, "model.pt"))
    metrics = {"family": spec.family, "train_seconds": time.perf_counter() - started,
               "resumed_from_epoch": result.resumed_from, "stopped_early": result.stopped_early,
               "history": result.history}
    write_json_atomic(metrics, os.path.join(out_dir, "metrics.json"))
    save_training_curve(result.history, os.path.join(out_dir, "training_curve.png"),
                        title=f"{spec.family}: objective per epoch (nats/image)")
    metrics = evaluate(out_dir, progress=progress, data=data)
    sample(out_dir, 64, os.path.join(out_dir, "samples.png"), seed=t.seed)
    return metrics


def evaluate(directory: str, num_particles: Optional[int] = None, progress: bool = False, data=None) -> dict:
    """Test NLL (nats per image) by importance sampling with the guide; stored in metrics.json."""
    from inference.log_likelihood import log_likelihood
    from inference.svi_driver import resolve_device

    trained = load(directory)
    spec = trained.spec
    k = num_particles or spec.train.eval_particles
    data = data or load_data(spec)
    device = resolve_device(spec.train.device)
    module = trained.module.to(device)
    torch.manual_seed(spec.train.seed)
    started = time.perf_counter()
    ll = log_likelihood(module.model, module.guide, data.test.x.to(device), num_particles=k, progress=progress)
    metrics = dict(trained.metrics)
    metrics.update(test_nll=-ll.mean().item(), test_nll_stderr=ll.std().item() / len(ll) ** 0.5,
                   eval_particles=k, test_images=len(ll), eval_seconds=time.perf_counter() - started)
    if metrics.get("history"):
        metrics["final_train_loss"] = metrics["history"][-1]["train_loss"]
    write_json_atomic(metrics, os.path.join(directory, "metrics.json"))
    return metrics


def sample(directory: str, n: int, path: str, seed: int = 0) -> str:
    """Write a PNG grid of ``n`` model samples (mean images) and return its path."""
    if n < 1:
        raise SpecError(f"number of samples must be positive, got {n}")
    trained = load(directory)
    torch.manual_seed(seed)
    images = trained.sample(n)
    shape = load_dataset_shape(trained.spec)
    save_image_grid(images, shape, path, title=f"{trained.spec.family}: {n} samples (mean of p(x|z), z ~ p(z))")
    return path


def load_dataset_shape(spec) -> tuple:
    side = int(round(spec.model.x_dim ** 0.5))
    return (side, side) if side * side == spec.model.x_dim else (1, spec.model.x_dim)


def spec_keys(name: str) -> list[str]:
    from .specs import describe

    return describe(family(name).spec)


__all__ = ["FAMILIES", "make_spec", "default_spec", "build", "train", "evaluate", "sample", "load", "TrainedModel"]
