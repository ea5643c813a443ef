r"""Catalogue glue for the RBM families: ``rbm`` (binary) and ``gbrbm`` (Gaussian-Bernoulli).

Wiring, like :mod:`ppl_models.catalogue`: it joins the energy models of
:mod:`ppl_models.rbm` to the inference that trains them
(:func:`inference.contrastive_divergence.fit`, CD-k / PCD-k whose negative
phase is the :class:`~inference.block_gibbs.BlockGibbs` kernel), scores them
(:func:`inference.ais.ais_log_partition`, and
:func:`inference.exact_enumeration.log_partition` when the hidden layer has at
most 20 units) and samples them (block Gibbs, clamped for completions).

Evaluation: the test log-likelihood :math:`\log p(v) = -F(v) - \log \hat Z`
with :math:`\log \hat Z` from AIS, run as two independent halves so that a
reader sees whether the estimate is stable (the halves should agree), its
:math:`\pm 3\sigma` interval (Salakhutdinov & Murray 2008), the exact value
when the model is small enough, scikit-learn's pseudo-likelihood (binary) and
the reconstruction error.

The ``gbrbm`` family models grey levels. With ``model.standardize`` (the
default) each pixel is z-scored with the training split's mean and standard
deviation (floored at ``model.min_scale``, since border pixels barely vary),
and the RBM sees :math:`u = (x - m) / s` with fixed unit variances, the usual
protocol (Hinton's practical guide, Sec. 13.2; Cho et al. 2011). The offsets
and scales are saved with the weights (buffers ``data_offset`` and
``data_scale``). Log-likelihoods are densities of the *pixel values* (the
Jacobian :math:`-\sum_i \log s_i` is added), so they do not depend on the
scaling chosen; they are densities of continuous values and not comparable to
a binary RBM's log-probabilities.

Sampling modes (``ppl-models sample DIR --mode ...``): ``samples`` (default)
runs independent Gibbs chains from random states for ``sweeps`` sweeps and
shows :math:`E[v \mid h]` of the last state; ``completion`` clamps the top half
of test images and samples the bottom half by clamped Gibbs.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from inference.ais import ais_log_partition, default_schedule
from inference.block_gibbs import BlockGibbs, check_k
from inference.checkpoint import save_trained
from inference.contrastive_divergence import fit, pseudo_log_likelihood, reconstruction_error
from inference.exact_enumeration import MAX_ENUMERATED_UNITS, log_partition
from inference.devices import resolve_device

from .data import BINARIZE_OPTIONS, DATASETS, check_binary, load_dataset
from .errors import DataError, SpecError
from .rbm import RBM, GaussianBernoulliRBM
from .run_spec import DataSpec
from .specs import option

SAMPLE_MODES = ("samples", "completion")


@dataclass
class RBMModelSpec:
    num_hidden: int = option(500, doc="hidden units", min=1)
    num_visible: Optional[int] = option(None, doc="visible units; None: pixels per image of the data", min=1)
    weight_scale: float = option(0.01, doc="std of the initial weights (Hinton's guide: 0.01)", min=0.0)
    base_rate_init: bool = option(True, doc="start the visible biases at the training data's log-odds / means")


@dataclass
class GBRBMModelSpec(RBMModelSpec):
    num_hidden: int = option(200, doc="hidden units", min=1)
    sigma: float = option(1.0, doc="initial (or fixed) std of every visible unit, in standardised units",
                          min_exclusive=0.0)
    learn_sigma: bool = option(False, doc="train the per-unit log std (Cho et al. 2011)")
    standardize: bool = option(True, doc="z-score each pixel with the training split's mean and std")
    min_scale: float = option(0.1, doc="floor of the per-pixel std used by standardize (grey levels in [0, 1])",
                              min_exclusive=0.0)


@dataclass
class CDObjectiveSpec:
    name: str = option("pcd", doc="pcd: persistent chains (Tieleman 2008); cd: chains restart at the data",
                       choices=("pcd", "cd"))
    k: int = option(1, doc="Gibbs sweeps per parameter update", min=1)
    num_chains: Optional[int] = option(100, doc="persistent chains of PCD (None: batch_size)", min=1)
    sparsity_target: Optional[float] = option(None, doc="target mean activation of each hidden unit",
                                              min_exclusive=0.0)
    sparsity_cost: float = option(0.1, doc="weight of the sparsity penalty", min=0.0)

    def validate(self):
        if self.sparsity_target is not None and self.sparsity_target >= 1:
            raise SpecError(f"objective.sparsity_target must lie in (0, 1), got {self.sparsity_target!r}")


@dataclass
class RBMTrainSpec:
    epochs: int = option(100, doc="passes over the training split", min=1)
    batch_size: int = option(20, doc="minibatch size", min=1)
    lr: float = option(0.01, doc="SGD learning rate", min_exclusive=0.0)
    lr_schedule: str = option("linear", doc="learning-rate schedule (linear: down to lr_final x lr at the last "
                             "update; raising epochs on resume stretches it)", choices=("constant", "linear", "exponential"))
    lr_final: float = option(0.0, doc="linear: fraction of lr reached at the last update", min=0.0)
    lr_decay: float = option(0.9, doc="exponential: factor per epoch", min_exclusive=0.0)
    momentum: float = option(0.9, doc="momentum of the parameter velocity, in [0, 1)", min=0.0)
    weight_decay: float = option(1e-3, doc="L2 penalty on the weights (smoother models, and AIS that agrees "
                                 "with itself: see benchmarks/rbm_mnist5k.py)", min=0.0)
    seed: int = option(0, doc="random seed")
    device: str = option("auto", doc="auto, cpu, cuda or cuda:N")
    eval_particles: int = option(100, doc="AIS runs (importance samples of log Z), split into two halves", min=1)
    ais_temperatures: int = option(14500, doc="AIS temperatures (Salakhutdinov & Murray's schedule, scaled)", min=3)
    ais_schedule: Optional[list[float]] = option(None, doc="explicit AIS temperatures, increasing from 0 to 1 "
                                                 "(overrides ais_temperatures)")
    sample_sweeps: int = option(1000, doc="Gibbs sweeps per picture in samples.png", min=1)

    def validate(self):
        if self.momentum >= 1:
            raise SpecError(f"train.momentum must lie in [0, 1), got {self.momentum!r}")
        s = self.ais_schedule
        if s is not None:
            if len(s) < 2 or s[0] != 0 or s[-1] != 1:
                raise SpecError(f"train.ais_schedule must start at 0 and end at 1 (at least 2 values), got {s!r}")
            for i in range(1, len(s)):
                if s[i] <= s[i - 1]:
                    raise SpecError(f"train.ais_schedule must be strictly increasing in [0, 1], got {s[i - 1]!r} "
                                    f"then {s[i]!r} at index {i}")


@dataclass
class RBMRunSpec:
    family: str = option("rbm", doc="model family", choices=("rbm",))
    model: RBMModelSpec = field(default_factory=RBMModelSpec)
    objective: CDObjectiveSpec = field(default_factory=CDObjectiveSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: RBMTrainSpec = field(default_factory=RBMTrainSpec)


# The gbrbm defaults differ from the rbm ones field by field (a section's default_factory alone would
# be bypassed as soon as one key of that section is given, e.g. by --dataset or --lr).
@dataclass
class GreyDataSpec(DataSpec):
    dataset: str = option("digits", doc="data set name", choices=tuple(DATASETS))
    binarize: str = option("none", doc="binarisation (grey levels: none)", choices=tuple(BINARIZE_OPTIONS))


@dataclass
class GBRBMTrainSpec(RBMTrainSpec):
    lr: float = option(0.001, doc="SGD learning rate", min_exclusive=0.0)
    weight_decay: float = option(0.0, doc="L2 penalty on the weights", min=0.0)


@dataclass
class GBRBMRunSpec:
    family: str = option("gbrbm", doc="model family", choices=("gbrbm",))
    model: GBRBMModelSpec = field(default_factory=GBRBMModelSpec)
    objective: CDObjectiveSpec = field(default_factory=CDObjectiveSpec)
    data: GreyDataSpec = field(default_factory=GreyDataSpec)
    train: GBRBMTrainSpec = field(default_factory=GBRBMTrainSpec)


def _gaussian(spec) -> bool:
    return spec.family == "gbrbm"


# -- data -----------------------------------------------------------------------
def load_data(spec):
    d = spec.data
    data = load_dataset(d.dataset, path=d.path, binarize=d.binarize, threshold=d.threshold,
                        valid_size=d.valid_size, test_size=d.test_size, split_seed=d.split_seed)
    if not _gaussian(spec):
        if d.binarize == "none":
            raise DataError(f"the rbm family needs binary data but data.binarize is none ({d.dataset} is grey-level); "
                            "use --set data.binarize=threshold or dynamic, or the gbrbm family for grey levels")
        for name in ("valid", "test") + (("train",) if d.binarize == "threshold" else ()):
            split = getattr(data, name)
            if split is not None:
                check_binary(split.x, f"{d.dataset} {name} split")
    return data


def resolve(spec, data) -> None:
    """Fill in ``model.num_visible`` from the data, or say why they disagree."""
    dim = data.train.x.shape[1]
    if spec.model.num_visible is None:
        spec.model.num_visible = dim
    elif spec.model.num_visible != dim:
        raise SpecError(f"model.num_visible is {spec.model.num_visible} but data set {spec.data.dataset} "
                        f"has {dim} pixels per image")


def build(spec):
    m = spec.model
    if m.num_visible is None:
        raise SpecError("model.num_visible is not set; give it or train on a data set (which sets it)")
    if not _gaussian(spec):
        return RBM(m.num_visible, m.num_hidden, weight_scale=m.weight_scale)
    module = GaussianBernoulliRBM(m.num_visible, m.num_hidden, sigma=m.sigma, learn_sigma=m.learn_sigma,
                                  weight_scale=m.weight_scale)
    # pixel x <-> visible unit u = (x - data_offset) / data_scale, saved with the weights
    module.register_buffer("data_offset", torch.zeros(m.num_visible))
    module.register_buffer("data_scale", torch.ones(m.num_visible))
    return module


def _fit_scaling(spec, module, x: torch.Tensor) -> None:
    if _gaussian(spec) and spec.model.standardize:
        with torch.no_grad():
            module.data_offset.copy_(x.mean(0))
            module.data_scale.copy_(x.std(0).clamp_min(spec.model.min_scale))


def to_visible(module, x: torch.Tensor) -> torch.Tensor:
    """Pixels -> the model's visible units (identity for a binary RBM)."""
    if not hasattr(module, "data_offset"):
        return x
    return (x - module.data_offset.to(x)) / module.data_scale.to(x)


def to_pixels(module, v: torch.Tensor) -> torch.Tensor:
    """The model's visible units -> pixels (identity for a binary RBM)."""
    if not hasattr(module, "data_offset"):
        return v
    return v * module.data_scale.to(v) + module.data_offset.to(v)


def _log_jacobian(module) -> float:
    """log |dv/dx| per image: what turns a density of visible units into one of pixels."""
    return -float(module.data_scale.log().sum()) if hasattr(module, "data_offset") else 0.0


@torch.no_grad()
def _base_visible(module, x_train: torch.Tensor, smoothing: float = 0.05) -> torch.Tensor:
    """AIS base-rate parameter from the training split (inference.ais.base_rate_visible's formula).
    Computed from the means directly so that grey training data under dynamic binarisation
    (whose means are the binary images' expected means) need no binarising first."""
    if module.visible_type == "gaussian":
        return x_train.mean(0)
    return torch.logit((x_train.sum(0) + smoothing) / (x_train.shape[0] + 2 * smoothing))


# -- training -------------------------------------------------------------------
def cd_config(spec) -> dict:
    o, t = spec.objective, spec.train
    return {"k": o.k, "persistent": o.name == "pcd", "num_chains": o.num_chains, "epochs": t.epochs,
            "batch_size": t.batch_size, "lr": t.lr, "lr_schedule": t.lr_schedule, "lr_final": t.lr_final,
            "lr_decay": t.lr_decay, "momentum": t.momentum, "weight_decay": t.weight_decay,
            "sparsity_target": o.sparsity_target, "sparsity_cost": o.sparsity_cost, "seed": t.seed}


def _exact_enumerable(module) -> bool:
    return module.num_hidden <= MAX_ENUMERATED_UNITS


#: the per-epoch exact validation log-likelihood is computed up to this many hidden units
#: (2^16 states; at 20 units an MNIST epoch's monitor would cost more than the epoch)
MAX_MONITORED_UNITS = 16


def save_rbm_curves(history: list, path: str, title: str) -> None:
    """Per-epoch monitors: pseudo-likelihood (binary) or exact log-likelihood, and reconstruction error."""
    from .plots import new_figure, save_png

    epochs = [h["epoch"] for h in history]
    fig, (left, right) = new_figure(1, 2, figsize=(9, 3.2))
    keys = [("pseudo_ll", "train pseudo-LL"), ("valid_pseudo_ll", "valid pseudo-LL"),
            ("valid_exact_ll", "valid exact LL")]
    for key, label in keys:
        if any(key in h for h in history):
            left.plot(epochs, [h.get(key, float("nan")) for h in history], label=label)
    if not left.get_lines() and any("free_energy_gap" in h for h in history):
        # no log-likelihood monitor (grey levels, large hidden layer): the overfitting monitor instead
        left.plot(epochs, [h.get("free_energy_gap", float("nan")) for h in history], label="F(valid) - F(train)")
    left.set_ylabel("nats per image")
    for key, label in (("recon_error", "train"), ("valid_recon_error", "valid")):
        if any(key in h for h in history):
            right.plot(epochs, [h.get(key, float("nan")) for h in history], label=label)
    right.set_ylabel("reconstruction error (visible units)")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    save_png(fig, path)


def train(spec, out_dir: str, data, progress: bool, log) -> dict:
    t = spec.train
    device = resolve_device(t.device)
    module = build(spec)
    x = data.train.x
    _fit_scaling(spec, module, x)
    module.to(device)
    x = to_visible(module, x.to(device))
    if spec.model.base_rate_init:
        with torch.no_grad():
            base = _base_visible(module, x)
            module.visible_bias.copy_(base if module.visible_type == "gaussian" else base.clamp(-8, 8))
    valid = to_visible(module, data.valid.x.to(device)) if data.valid is not None else None
    log(f"training {spec.family} {module.num_visible}x{module.num_hidden} by {spec.objective.name.upper()}-"
        f"{spec.objective.k} on {spec.data.dataset} ({x.shape[0]} images, "
        f"{'no' if valid is None else valid.shape[0]} validation) for {t.epochs} epochs -> {out_dir}")
    exact = module.num_hidden <= MAX_MONITORED_UNITS
    clock = [time.perf_counter()]

    @torch.no_grad()
    def on_epoch_end(epoch, metrics):
        # validation monitors: the same statistics as the training ones, plus the exact LL of small models
        now = time.perf_counter()
        metrics["seconds"] = now - clock[0]
        if valid is not None:
            metrics["valid_recon_error"] = reconstruction_error(module, valid)
            # Hinton's overfitting monitor: mean free energy of held-out minus training images
            metrics["free_energy_gap"] = float(module.free_energy(valid).mean() - module.free_energy(x[: len(valid)]).mean())
            if module.visible_type == "bernoulli":
                gen = torch.Generator(device=valid.device).manual_seed(epoch)
                metrics["valid_pseudo_ll"] = pseudo_log_likelihood(module, valid, gen)
            if exact:
                log_z = log_partition(module)
                metrics["valid_exact_ll"] = float((-module.free_energy(valid).double() - log_z).mean()) \
                    + _log_jacobian(module)
        clock[0] = time.perf_counter()

    transform = data.train_transform if not _gaussian(spec) else None
    result = fit(module, x, cd_config(spec), checkpoint=os.path.join(out_dir, "checkpoint.pt"),
                 progress=progress, callback=on_epoch_end, transform=transform)
    module.cpu()
    history = result.history
    metrics = save_trained(out_dir, module, {
        "family": spec.family, "num_visible": module.num_visible, "num_hidden": module.num_hidden,
        "training": f"{spec.objective.name.upper()}-{spec.objective.k}",
        "image_shape": list(data.image_shape), "history": history})
    save_rbm_curves(history, os.path.join(out_dir, "training_curve.png"),
                    title=f"{spec.family} {module.num_visible}x{module.num_hidden}, "
                          f"{metrics['training']} on {spec.data.dataset}")
    # the completion demo beside samples.png (which catalogue.train writes)
    torch.manual_seed(t.seed)
    _completion_figure(module, data.test.x, tuple(data.image_shape), 16, t.sample_sweeps,
                       os.path.join(out_dir, "completion.png"), spec.family)
    return metrics


# -- evaluation -----------------------------------------------------------------
def _finite_or_none(value: float):
    return value if math.isfinite(value) else None


@torch.no_grad()
def evaluate(trained, data, num_particles=None, progress=False, num_temperatures=None, seed=None) -> dict:
    """AIS test log-likelihood (two independent halves of the runs, combined), its spread and
    settings; the exact one when the hidden layer has at most 20 units; pseudo-likelihood and
    reconstruction error.

    :param int num_particles: AIS runs (default ``train.eval_particles``).
    :param int num_temperatures: AIS temperatures (default ``train.ais_temperatures`` or the explicit schedule).
    :param int seed: seed of the AIS runs (default ``train.seed``).
    """
    spec = trained.spec
    t = spec.train
    device = resolve_device(t.device)
    module = trained.module.to(device)
    x_train = to_visible(module, data.train.x.to(device))
    x_test = to_visible(module, data.test.x.to(device))
    runs = num_particles or t.eval_particles
    if num_temperatures is not None or t.ais_schedule is None:
        schedule = default_schedule(num_temperatures or t.ais_temperatures)
        schedule_note = "Salakhutdinov & Murray 2008, scaled"
    else:
        schedule = torch.tensor(t.ais_schedule, dtype=torch.float64)
        schedule_note = "explicit (train.ais_schedule)"
    base = _base_visible(module, x_train)
    torch.manual_seed(t.seed if seed is None else seed)
    started = time.perf_counter()
    halves = [runs] if runs < 2 else [runs - runs // 2, runs // 2]
    results = [ais_log_partition(module, num_runs=r, schedule=schedule, base=base) for r in halves]
    ais_seconds = time.perf_counter() - started
    log_w = torch.cat([r.log_weights for r in results])
    log_mean_w = torch.logsumexp(log_w, 0) - math.log(runs)
    log_z = results[0].log_z_base + float(log_mean_w)
    # delta method, as inference.ais: std of log Z-hat = relative std of the mean weight
    rel_std = float((log_w - log_mean_w).exp().std() / math.sqrt(runs)) if runs > 1 else float("nan")
    lower = log_z + math.log(1 - 3 * rel_std) if rel_std < 1 / 3 else float("-inf")
    upper = log_z + math.log1p(3 * rel_std) if rel_std == rel_std else float("nan")

    jacobian = _log_jacobian(module)
    neg_f = -module.free_energy(x_test).double() + jacobian
    ll = neg_f - log_z
    metrics = dict(trained.metrics)
    metrics.update(
        test_log_likelihood=float(ll.mean()), test_log_likelihood_stderr=float(ll.std() / math.sqrt(len(ll))),
        test_log_likelihood_interval=[_finite_or_none(float(neg_f.mean()) - upper),
                                      _finite_or_none(float(neg_f.mean()) - lower)],
        ais_log_z=log_z, ais_log_z_std=rel_std, ais_log_z_interval_3sigma=[_finite_or_none(lower), _finite_or_none(upper)],
        ais_log_z_halves=[r.log_z for r in results], ais_runs=runs, ais_temperatures=int(schedule.numel()),
        ais_schedule=schedule_note, ais_base="base-rate model from the training split's pixel marginals",
        ais_seconds=ais_seconds, test_images=len(ll), ais_stable=_stable(rel_std, [r.log_z for r in results]),
        log_likelihood_units=("nats per image (density of grey levels, pixel units)" if _gaussian(spec)
                              else "nats per binary image"),
        test_recon_error=reconstruction_error(module, x_test),
    )
    for key in ("exact_log_z", "test_log_likelihood_exact", "ais_error", "test_pseudo_likelihood"):
        metrics.pop(key, None)  # values of an earlier evaluation must not outlive it
    if _exact_enumerable(module):
        exact = float(log_partition(module))
        metrics.update(exact_log_z=exact, test_log_likelihood_exact=float((neg_f - exact).mean()),
                       ais_error=log_z - exact)
    if module.visible_type == "bernoulli":
        gen = torch.Generator(device=x_test.device).manual_seed(0)
        metrics["test_pseudo_likelihood"] = pseudo_log_likelihood(module, x_test, gen)
    module.cpu()
    metrics["eval_seconds"] = time.perf_counter() - started
    return metrics


def _stable(rel_std: float, halves: list) -> bool:
    """Whether an AIS estimate looks trustworthy: a small spread (its -3 sigma bound finite, as in
    Salakhutdinov & Murray's tables) and independent halves within half a nat of each other. A
    heavy-tailed weight distribution can hide from its own spread; it rarely hides from both."""
    spread_ok = rel_std < 1 / 3 if rel_std == rel_std else False
    return bool(spread_ok and (len(halves) < 2 or abs(halves[0] - halves[1]) < 0.5))


def summary(metrics: dict) -> str:
    halves = metrics["ais_log_z_halves"]
    agree = (f"; halves {halves[0]:.2f} / {halves[1]:.2f}" if len(halves) == 2 else "")
    line = (f"test log-likelihood {metrics['test_log_likelihood']:.2f} ± {metrics['test_log_likelihood_stderr']:.2f} "
            f"(stderr over {metrics['test_images']} images) {metrics['log_likelihood_units']}; "
            f"AIS log Z {metrics['ais_log_z']:.2f} ± {metrics['ais_log_z_std']:.3f} ({metrics['ais_runs']} runs x "
            f"{metrics['ais_temperatures']} temperatures, {metrics['ais_seconds']:.0f}s{agree})")
    if not metrics.get("ais_stable", True):
        line += ("; WARNING: AIS not stable (spread too large or halves disagree): raise "
                 "--set train.ais_temperatures or --particles")
    if "test_log_likelihood_exact" in metrics:
        line += (f"; exact: log Z {metrics['exact_log_z']:.2f}, test log-likelihood "
                 f"{metrics['test_log_likelihood_exact']:.2f}")
    if "test_pseudo_likelihood" in metrics:
        line += f"; pseudo-likelihood {metrics['test_pseudo_likelihood']:.2f}"
    return line


# -- samples and completions ------------------------------------------------------
@torch.no_grad()
def _gibbs_means(module, num_chains: int, sweeps: int, mask=None, values=None) -> torch.Tensor:
    """E[v | h] of the last state of ``num_chains`` chains after ``sweeps`` sweeps (clamped units kept)."""
    kernel = BlockGibbs(module, num_chains=num_chains, k=sweeps, clamp_mask=mask, clamp_values=values)
    kernel.setup(0)
    state = kernel.sample_chains(1)
    mean = module.visible_mean(state["h"])
    return mean if mask is None else torch.where(mask, values, mean)


def _check_sweeps(sweeps) -> int:
    try:
        return check_k(sweeps)
    except SpecError:
        raise SpecError(f"sweeps (Gibbs sweeps per picture) must be a positive integer, got {sweeps!r}") from None


def top_half_mask(image_shape: tuple, like: torch.Tensor) -> torch.Tensor:
    """True on the pixels of the top half of an image (rows < height / 2), flattened row-major."""
    h, w = image_shape
    rows = torch.arange(h, device=like.device).repeat_interleave(w)
    return rows < h // 2


@torch.no_grad()
def complete(module, x: torch.Tensor, image_shape: tuple, sweeps: int, per_image: int = 1) -> torch.Tensor:
    """Complete the bottom half of images ``x`` (pixels, N x D) given their top half, by clamped Gibbs;
    returns ``(N, per_image, D)`` pixels (clamped pixels as given, free ones E[v | h])."""
    like = next(iter(module.parameters()))
    x = x.to(like)
    mask = top_half_mask(image_shape, like)
    values = to_visible(module, x).repeat_interleave(per_image, 0)
    v = _gibbs_means(module, values.shape[0], sweeps, mask, values)
    return to_pixels(module, v).reshape(x.shape[0], per_image, -1)


def _completion_figure(module, x_test, image_shape, n, sweeps, path, family, per_image=3) -> None:
    from .plots import image_grid, new_figure, save_png

    n = min(n, x_test.shape[0])
    x = x_test[:n]
    completions = complete(module, x, image_shape, sweeps, per_image).cpu()
    observed = torch.where(top_half_mask(image_shape, x), x, torch.full_like(x, 0.5))
    rows = torch.cat([x.unsqueeze(1), observed.unsqueeze(1), completions], 1)  # (n, 2 + per_image, D)
    groups = math.ceil(n / 8)  # at most 8 images per column group
    per_group = math.ceil(n / groups)
    cols = 2 + per_image
    blank = torch.ones(cols, x.shape[1])
    tiles = []
    for r in range(per_group):
        for g in range(groups):
            i = g * per_group + r
            tiles.append(rows[i] if i < n else blank)
    grid = image_grid(torch.cat(tiles), image_shape, nrow=cols * groups)
    fig, ax = new_figure(figsize=(max(3.0, 0.5 * cols * groups + 1), max(3.0, 0.5 * per_group + 1)))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    ax.set_title(f"{family}: completion of test images by clamped Gibbs ({sweeps} sweeps)\n"
                 f"per row: image, top half given, {per_image} completions (E[v|h] of the bottom half)", fontsize=8)
    save_png(fig, path)


def _options(trained, options: dict) -> tuple:
    mode = options.pop("mode", "samples")
    sweeps = _check_sweeps(options.pop("sweeps", trained.spec.train.sample_sweeps))
    if options:
        raise SpecError(f"{trained.spec.family} samples take the options mode and sweeps, got {', '.join(options)}")
    if mode not in SAMPLE_MODES:
        raise SpecError(f"mode must be one of {list(SAMPLE_MODES)} for {trained.spec.family}, got {mode!r}")
    return mode, sweeps


def sample_images(trained, n: int, **options) -> torch.Tensor:
    """``n`` images (pixels, flat ``(n, D)``).

    :param str mode: ``"samples"`` (default): E[v | h] after ``sweeps`` Gibbs sweeps of ``n``
        independent chains from random states; ``"completion"``: the first ``n`` test images with
        their bottom half completed by clamped Gibbs.
    :param int sweeps: Gibbs sweeps (default ``train.sample_sweeps``).
    """
    mode, sweeps = _options(trained, dict(options))
    module = trained.module
    if mode == "completion":
        x = load_data(trained.spec).test.x[:n]
        return complete(module, x, trained.image_shape, sweeps)[:, 0]
    return to_pixels(module, _gibbs_means(module, n, sweeps)).clamp(0, 1)


def sample_grid(trained, n: int, path: str, **options) -> None:
    """A PNG of ``n`` samples (``mode="samples"``) or ``n`` completed test images (``mode="completion"``)."""
    from .plots import image_grid, new_figure, save_png

    mode, sweeps = _options(trained, dict(options))
    if mode == "completion":
        data = load_data(trained.spec)
        _completion_figure(trained.module, data.test.x, trained.image_shape, n, sweeps, path, trained.spec.family)
        return
    images = sample_images(trained, n, mode=mode, sweeps=sweeps)
    per_row = math.ceil(math.sqrt(n))
    grid = image_grid(images, trained.image_shape, nrow=per_row)
    # about 0.6 inch per image whatever its pixel size (8x8 digits would otherwise be stamps)
    fig, ax = new_figure(figsize=(0.6 * per_row + 0.5, 0.6 * math.ceil(n / per_row) + 0.8))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    ax.set_title(f"{trained.spec.family}: {n} Gibbs chains, E[v|h] after {sweeps} sweeps", fontsize=8)
    save_png(fig, path)
