"""Catalogue glue for the VAE and IWAE families: data, objective, training, evaluation, samples.

Wiring, like :mod:`ppl_models.catalogue`: it joins the model definition
(:mod:`ppl_models.vae`) to the inference that fits and queries it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch

from inference.checkpoint import save_atomic, save_trained
from inference.iwae_elbo import IWAEELBO
from inference.log_likelihood import log_likelihood
from inference.multi_sample_elbo import MultiSampleELBO
from inference.queries import sample_model
from inference.devices import resolve_device
from inference.svi_driver import fit

from .data import check_binary, load_dataset
from .errors import DataError, SpecError
from .plots import save_image_grid, save_training_curve
from .run_spec import DataSpec, ObjectiveSpec, TrainSpec
from .specs import option
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


def load_data(spec):
    d = spec.data
    data = load_dataset(d.dataset, path=d.path, binarize=d.binarize, threshold=d.threshold,
                        valid_size=d.valid_size, test_size=d.test_size, split_seed=d.split_seed)
    if spec.model.likelihood == "bernoulli":
        if d.binarize == "none":
            raise DataError("likelihood bernoulli needs binary data but data.binarize is none; "
                            "use threshold or dynamic, or a grey-level likelihood")
        if d.binarize == "dynamic":  # threshold splits are binary by construction
            for name in ("valid", "test"):
                split = getattr(data, name)
                if split is not None:
                    check_binary(split.x, f"{d.dataset} {name} split")
    return data


def resolve(spec, data) -> None:
    """Fill in what the spec leaves to the data (x_dim), or say why they disagree."""
    dim = data.train.x.shape[1]
    if spec.model.x_dim is None:
        spec.model.x_dim = dim
    elif spec.model.x_dim != dim:
        raise SpecError(f"model.x_dim is {spec.model.x_dim} but data set {spec.data.dataset} has {dim} pixels per image")


def build(spec) -> VAE:
    return VAE(spec.model)


def make_objective(spec):
    o = spec.objective
    if o.name == "iwae":
        return IWAEELBO(num_particles=o.num_particles, dreg=o.dreg)
    return MultiSampleELBO(num_particles=o.num_particles)


def train(spec, out_dir: str, data, progress: bool, log) -> dict:
    module = build(spec)
    t = spec.train
    log(f"training {spec.family} on {spec.data.dataset} ({data.train.x.shape[0]} images, "
        f"{'no' if data.valid is None else data.valid.x.shape[0]} validation) for {t.epochs} epochs -> {out_dir}")
    result = fit(module.model, module.guide, make_objective(spec), (data.train.x,), module=module,
                 epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, lr_schedule=t.lr_schedule, lr_decay=t.lr_decay,
                 clip_norm=t.clip_norm, seed=t.seed, device=t.device,
                 valid=(data.valid.x,) if data.valid is not None else None, patience=t.patience,
                 transform=data.train_transform, checkpoint_path=os.path.join(out_dir, "checkpoint.pt"),
                 progress=progress)
    module.cpu()
    metrics = save_trained(out_dir, module, {
        "family": spec.family, "resumed_from_epoch": result.resumed_from, "stopped_early": result.stopped_early,
        "image_shape": list(data.image_shape), "history": result.history})
    save_training_curve(result.history, os.path.join(out_dir, "training_curve.png"),
                        title=f"{spec.family}: negative {spec.objective.name} bound per image (nats)")
    return metrics


def evaluate(trained, data, num_particles=None, progress=False) -> dict:
    """Test NLL (nats per image) by importance sampling with the guide."""
    spec = trained.spec
    k = num_particles or spec.train.eval_particles
    device = resolve_device(spec.train.device)
    module = trained.module.to(device)
    torch.manual_seed(spec.train.seed)
    started = time.perf_counter()
    ll = log_likelihood(module.model, module.guide, data.test.x.to(device), num_particles=k, progress=progress)
    module.cpu()
    # per-image values, so that two models scored on the same images can be compared pairwise
    save_atomic(ll.cpu(), os.path.join(trained.directory, "test_log_likelihood.pt"))
    metrics = dict(trained.metrics)
    metrics.update(test_nll=-ll.mean().item(), test_nll_stderr=ll.std().item() / len(ll) ** 0.5,
                   eval_particles=k, test_images=len(ll), eval_seconds=time.perf_counter() - started)
    if metrics.get("history"):
        metrics["final_train_loss"] = metrics["history"][-1]["train_loss"]
    return metrics


def summary(metrics: dict) -> str:
    return (f"test NLL {metrics['test_nll']:.2f} ± {metrics['test_nll_stderr']:.2f} nats/image "
            f"(k={metrics['eval_particles']} importance samples, {metrics['test_images']} test images)")


def sample_images(trained, n: int, **options) -> torch.Tensor:
    """Mean images E[x | z] for ``n`` draws z ~ p(z)."""
    if options:
        raise SpecError(f"{trained.spec.family} samples take no options, got {', '.join(options)}")
    return sample_model(trained.module.model, n)["x_mean"]


def sample_grid(trained, n: int, path: str, **options) -> None:
    images = sample_images(trained, n, **options)
    save_image_grid(images, trained.image_shape, path,
                    title=f"{trained.spec.family}: {n} samples (mean of p(x|z), z ~ p(z))")
