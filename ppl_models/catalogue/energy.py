r"""The base of every energy family: an energy with a Gibbs kernel, trained by CD / PCD through the shared driver.

What an energy family shares: binary data checked where the visible units are
binary, the visible size read from the data, training by
:class:`~inference.contrastive_divergence.ContrastiveDivergence` through
:func:`inference.training.fit` (SGD with momentum, weight decay on the
couplings the model declares in ``parameter_roles``), per-epoch monitors,
AIS evaluation in two independent groups with its interval and stability
rule (:func:`inference.ais.ais_log_partition`), exact values when the model
is small enough to enumerate, Gibbs samples and clamped completions through
the MCMC driver (:mod:`inference.queries`). A family supplies its spec and
:meth:`build`; the module implements :class:`inference.energy.AnnealableEnergy`
plus ``to_visible`` / ``to_pixels`` / ``log_jacobian`` (pixel values <-> the
model's units, identity for binary units).

The queries (``ppl-models query``) are :class:`~ppl_models.catalogue.energy_queries.EnergyQueries`.

Evaluation: :math:`\log p(x) = -F(v(x)) + \log|dv/dx| - \log \hat Z`, with
:math:`\log \hat Z` from AIS (Salakhutdinov & Murray 2008).
"""

from __future__ import annotations

import math
import time

import torch

from inference.ais import ais_log_partition, default_schedule
from inference.contrastive_divergence import ContrastiveDivergence
from inference.devices import resolve_device
from inference.energy_monitors import free_energy_gap, pseudo_log_likelihood, reconstruction_error
from inference.exact_enumeration import MAX_ENUMERATED_UNITS, log_partition
from inference.queries import complete, gibbs_visible_means
from inference.training import fit

from ..errors import SpecError
from .energy_plots import save_energy_curves, save_gibbs_grid
from .energy_queries import EnergyQueries
from .family import Family, count
from .plots import save_completion_figure
from .run_directory import CHECKPOINT, CURVE

#: the per-epoch exact validation log-likelihood is computed up to this many hidden units
#: (2^16 states; at 20 units an MNIST epoch's monitor would cost more than the epoch)
MAX_MONITORED_UNITS = 16
MONITOR_SIZE = 1000  # training images scored by the per-epoch monitors
SAMPLE_MODES = ("samples", "completion")


def top_half_mask(image_shape: tuple, like: torch.Tensor) -> torch.Tensor:
    """True on the pixels of the top half of an image (rows < height / 2), flattened row-major."""
    h, w = image_shape
    return torch.arange(h, device=like.device).repeat_interleave(w) < h // 2


def num_visible(spec) -> int:
    """The spec's visible units, or a one-line error when neither the spec nor a data set has set them."""
    if spec.model.num_visible is None:
        raise SpecError("model.num_visible is not set; give it or train on a data set (which sets it)")
    return spec.model.num_visible


def ais_clause(metrics: dict) -> str:
    """"AIS log Z ... (runs x temperatures, seconds; halves)" of an evaluation's metrics, for summary lines."""
    halves = metrics["ais_log_z_halves"]
    agree = f"; halves {halves[0]:.2f} / {halves[1]:.2f}" if len(halves) == 2 else ""
    return (f"AIS log Z {metrics['ais_log_z']:.2f} ± {metrics['ais_log_z_std']:.3f} ({metrics['ais_runs']} runs x "
            f"{metrics['ais_temperatures']} temperatures, {metrics['ais_seconds']:.0f}s{agree})")


def _finite_or_none(value: float):
    return value if math.isfinite(value) else None


class EnergyFamily(EnergyQueries, Family):
    kind = "energy"
    sample_options = ("mode", "sweeps")
    evaluate_options = ("temperatures",)

    def needs_binary_data(self, spec) -> bool:
        return True

    def resolve(self, spec, data) -> None:
        dim = data.train.x.shape[1]
        if spec.model.num_visible is None:
            spec.model.num_visible = dim
        elif spec.model.num_visible != dim:
            raise SpecError(f"model.num_visible is {spec.model.num_visible} but data set {spec.data.dataset} "
                            f"has {dim} pixels per image")

    # -- training -----------------------------------------------------------------------
    def initialise(self, spec, module, x_pixels: torch.Tensor) -> None:
        """Data-dependent start: the family's pixel scaling, then (``model.base_rate_init``) visible
        biases at the base-rate model's (the data's log-odds or means; Hinton's guide, Sec. 8)."""
        if spec.model.base_rate_init:
            with torch.no_grad():
                base = module.base_rate(module.to_visible(x_pixels))
                module.visible_bias.copy_(base.clamp(-8, 8) if module.visible_type == "bernoulli" else base)

    def make_objective(self, spec, module) -> ContrastiveDivergence:
        """CD-k / PCD-k of ``spec.objective``, its negative phase drawn by block Gibbs (a family whose
        model needs another kernel passes its ``kernel_class``)."""
        o = spec.objective
        return ContrastiveDivergence(module, k=o.k, persistent=o.name == "pcd", num_chains=o.num_chains,
                                     sparsity_target=o.sparsity_target, sparsity_cost=o.sparsity_cost,
                                     fused_sgd=o.fused_sgd)

    def train(self, spec, run, data, progress, log) -> dict:
        o, t = spec.objective, spec.train
        device = resolve_device(t.device)
        module = self.build(spec)
        self.initialise(spec, module, data.train.x)
        module.to(device)
        x = module.to_visible(data.train.x.to(device))
        valid = module.to_visible(data.valid.x.to(device)) if data.valid is not None else None
        transform = data.train_transform if self.needs_binary_data(spec) else None
        log(f"training {spec.family} {module.num_visible}x{module.num_hidden} by {o.name.upper()}-{o.k} on "
            f"{spec.data.dataset} ({x.shape[0]} images, {'no' if valid is None else valid.shape[0]} validation) "
            f"for {count(t.epochs, 'epoch')} -> {run.directory}")
        cd = self.make_objective(spec, module)
        couplings = [name for name, role in module.parameter_roles.items() if role == "coupling"]
        result = fit(cd, (x,), module=module, **t.fit_options(), decay=couplings,
                     valid=(valid,) if valid is not None else None, transform=transform,
                     checkpoint_path=run.path(CHECKPOINT), progress=progress,
                     on_epoch_end=self._monitors(module, x, valid, transform), log=log)
        module.cpu()
        metrics = run.save_trained(module, {
            "family": spec.family, "num_visible": module.num_visible, "num_hidden": module.num_hidden,
            "training": f"{o.name.upper()}-{o.k}", "resumed_from_epoch": result.resumed_from,
            "image_shape": list(data.image_shape), "history": result.history})
        save_energy_curves(result.history, run.path(CURVE), title=f"{spec.family} {module.num_visible}x"
                           f"{module.num_hidden}, {metrics['training']} on {spec.data.dataset}")
        torch.manual_seed(t.seed)  # the completion demo beside samples.png
        self._completion_figure(module, data.test.x, tuple(data.image_shape), 16, t.sample_sweeps,
                                run.path("completion.png"), progress)
        return metrics

    @staticmethod
    def _monitors(module, x, valid, transform):
        monitor = x[:MONITOR_SIZE]
        if transform is not None:  # its own generator: a monitor must not move the training RNG stream
            monitor = transform(monitor, generator=torch.Generator(device=x.device).manual_seed(0))
        binary = module.visible_type == "bernoulli"
        exact = module.num_hidden <= MAX_MONITORED_UNITS

        @torch.no_grad()
        def on_epoch_end(metrics):
            epoch = metrics["epoch"]
            metrics["recon_error"] = reconstruction_error(module, monitor)
            if binary:
                metrics["pseudo_ll"] = pseudo_log_likelihood(module, monitor, torch.Generator(device=x.device).manual_seed(epoch))
            if valid is None:
                return
            metrics["valid_recon_error"] = reconstruction_error(module, valid)
            metrics["free_energy_gap"] = free_energy_gap(module, valid, monitor)
            if binary:
                gen = torch.Generator(device=valid.device).manual_seed(epoch)
                metrics["valid_pseudo_ll"] = pseudo_log_likelihood(module, valid, gen)
            if exact:
                log_z = log_partition(module)
                metrics["valid_exact_ll"] = float((-module.free_energy(valid).double() - log_z).mean()) + module.log_jacobian()

        return on_epoch_end

    # -- evaluation -----------------------------------------------------------------------
    def log_likelihood(self, trained, x, num_particles=None) -> torch.Tensor:
        """log p(x) with the evaluation's log Z (exact when enumerable, else the stored AIS estimate)."""
        module = trained.module
        log_z = trained.metrics.get("exact_log_z", trained.metrics.get("ais_log_z"))
        if log_z is None:
            raise SpecError(f"{trained.directory} has no log Z yet: run `ppl-models evaluate {trained.directory}` first")
        with torch.no_grad():
            return -module.free_energy(module.to_visible(x.to(next(module.parameters())))).double() \
                + module.log_jacobian() - log_z

    @torch.no_grad()
    def evaluate(self, trained, data, num_particles=None, progress=False, seed=None, temperatures=None) -> dict:
        """AIS test log-likelihood (two independent groups of runs, combined), its spread and settings;
        the exact one when the hidden layer is enumerable; pseudo-likelihood and reconstruction error.

        :param int num_particles: AIS runs (default ``train.eval_particles``).
        :param int temperatures: AIS temperatures (default ``train.ais_temperatures`` or the explicit schedule).
        :param int seed: seed of the AIS runs (default ``train.seed``).
        """
        spec, t = trained.spec, trained.spec.train
        device = resolve_device(t.device)
        module = trained.module.to(device)
        x_test = module.to_visible(data.test.x.to(device))
        runs = num_particles or t.eval_particles
        if temperatures is not None or t.ais_schedule is None:
            schedule = default_schedule(temperatures or t.ais_temperatures)
            schedule_note = "Salakhutdinov & Murray 2008, scaled"
        else:
            schedule = torch.tensor(t.ais_schedule, dtype=torch.float64)
            schedule_note = "explicit (train.ais_schedule)"
        base = module.base_rate(module.to_visible(data.train.x.to(device)))
        torch.manual_seed(t.seed if seed is None else seed)
        started = time.perf_counter()
        ais = ais_log_partition(module, num_runs=runs, schedule=schedule, base=base, groups=min(2, runs),
                                progress=progress)
        ais_seconds = time.perf_counter() - started
        neg_f = -module.free_energy(x_test).double() + module.log_jacobian()
        ll = neg_f - ais.log_z
        metrics = dict(trained.metrics)
        metrics.update(
            test_log_likelihood=float(ll.mean()), test_log_likelihood_stderr=float(ll.std() / math.sqrt(len(ll))),
            test_log_likelihood_interval=[_finite_or_none(float(neg_f.mean()) - ais.log_z_upper),
                                          _finite_or_none(float(neg_f.mean()) - ais.log_z_lower)],
            ais_log_z=ais.log_z, ais_log_z_std=ais.log_z_std,
            ais_log_z_interval_3sigma=[_finite_or_none(ais.log_z_lower), _finite_or_none(ais.log_z_upper)],
            ais_log_z_halves=list(ais.group_log_z), ais_runs=runs, ais_temperatures=int(schedule.numel()),
            ais_schedule=schedule_note, ais_base="base-rate model from the training split's pixel marginals",
            ais_seconds=ais_seconds, test_images=len(ll), ais_stable=bool(ais.stable),
            log_likelihood_units=("nats per binary image" if self.needs_binary_data(spec)
                                  else "nats per image (density of grey levels, pixel units)"),
            test_recon_error=reconstruction_error(module, x_test))
        for key in ("exact_log_z", "test_log_likelihood_exact", "ais_error", "test_pseudo_likelihood"):
            metrics.pop(key, None)  # values of an earlier evaluation must not outlive it
        if module.num_hidden <= MAX_ENUMERATED_UNITS:
            exact = float(log_partition(module))
            metrics.update(exact_log_z=exact, test_log_likelihood_exact=float((neg_f - exact).mean()),
                           ais_error=ais.log_z - exact)
        if module.visible_type == "bernoulli":
            metrics["test_pseudo_likelihood"] = pseudo_log_likelihood(
                module, x_test, torch.Generator(device=x_test.device).manual_seed(0))
        module.cpu()
        metrics["eval_seconds"] = time.perf_counter() - started
        return metrics

    def summary_line(self, metrics: dict, directory=None) -> str:
        line = (f"test log-likelihood {metrics['test_log_likelihood']:.2f} ± {metrics['test_log_likelihood_stderr']:.2f} "
                f"(stderr over {metrics['test_images']} images) {metrics['log_likelihood_units']}; {ais_clause(metrics)}")
        if not metrics.get("ais_stable", True):
            again = (f"`ppl-models evaluate {directory} --temperatures {4 * metrics['ais_temperatures']}`"
                     if directory else "`ppl-models evaluate RUN_DIR --temperatures N` with more temperatures")
            line += f"; WARNING: AIS not stable (spread too large or halves disagree): run {again}"
        if "test_log_likelihood_exact" in metrics:
            line += (f"; exact: log Z {metrics['exact_log_z']:.2f}, test log-likelihood "
                     f"{metrics['test_log_likelihood_exact']:.2f}")
        if "test_pseudo_likelihood" in metrics:
            line += f"; pseudo-likelihood {metrics['test_pseudo_likelihood']:.2f}"
        return line

    # -- queries ----------------------------------------------------------------------------
    def complete(self, module, x: torch.Tensor, image_shape: tuple, sweeps: int, per_image: int = 1,
                 progress: bool = False) -> torch.Tensor:
        """The bottom half of images ``x`` (pixels, N x D) completed given their top half by clamped Gibbs:
        ``(N, per_image, D)`` pixels (given pixels as they are, the others E[v | h])."""
        like = next(module.parameters())
        x = x.to(like)
        v = complete(module, module.to_visible(x), top_half_mask(image_shape, like), sweeps, per_image, progress)
        return module.to_pixels(v)

    def _completion_figure(self, module, x_test, image_shape, n, sweeps, path, progress=False) -> None:
        n = min(n, x_test.shape[0])
        x = x_test[:n]
        completions = self.complete(module, x, image_shape, sweeps, per_image=3, progress=progress).cpu()
        save_completion_figure(x, top_half_mask(image_shape, x), completions, image_shape, path,
                               title=f"{self.name}: completion of test images by clamped Gibbs ({sweeps} sweeps)\n"
                                     f"per row: image, top half given, 3 completions (E[v|h] of the bottom half)")

    def _options(self, trained, options: dict) -> tuple:
        self.check_options(options)
        mode = options.get("mode", "samples")
        if mode not in SAMPLE_MODES:
            raise SpecError(f"mode must be one of {list(SAMPLE_MODES)} for {self.name}, got {mode!r}")
        return mode, options.get("sweeps", trained.spec.train.sample_sweeps)

    def sample(self, trained, n: int, progress: bool = False, **options) -> torch.Tensor:
        """``n`` images (pixels, flat): ``mode="samples"`` (default) E[v | h] after ``sweeps`` Gibbs sweeps of
        ``n`` chains from random states; ``mode="completion"`` the first ``n`` test images with their
        bottom half completed by clamped Gibbs."""
        mode, sweeps = self._options(trained, options)
        module = trained.module
        if mode == "completion":
            x = self.load_data(trained.spec).test.x[:n]
            return self.complete(module, x, trained.image_shape, sweeps, progress=progress)[:, 0]
        return module.to_pixels(gibbs_visible_means(module, n, sweeps, progress=progress)).clamp(0, 1)

    def sample_grid(self, trained, n: int, path: str, progress: bool = False, **options) -> None:
        mode, sweeps = self._options(trained, options)
        if mode == "completion":
            data = self.load_data(trained.spec)
            self._completion_figure(trained.module, data.test.x, trained.image_shape, n, sweeps, path, progress)
            return
        save_gibbs_grid(self.sample(trained, n, progress=progress, **options), trained.image_shape, path,
                        title=self.sample_title(trained, n, sweeps))

    def sample_title(self, trained, n: int, sweeps: int) -> str:
        """The title of :meth:`sample_grid`'s picture: what the images are (a family with another sampler says so)."""
        return f"{trained.spec.family}: {n} Gibbs chains, E[v|h] after {sweeps} sweeps"

    def posterior(self, trained, x, num_samples: int = 1) -> dict:
        """p(h_j = 1 | x) of every hidden unit, exact (the hidden units are independent given v)."""
        module = trained.module
        with torch.no_grad():
            return {"h": module.hidden_probs(module.to_visible(x.to(next(module.parameters()))))}
