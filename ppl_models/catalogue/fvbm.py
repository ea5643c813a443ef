"""The ``fvbm`` family: a fully visible Boltzmann machine (:mod:`ppl_models.fvbm`), trained by PCD.

What differs from the RBM families is the kernel: the units are coupled to each
other, so chains (PCD's negative phase, samples, completions, AIS transitions)
are single-site Gibbs sweeps (:class:`inference.single_site_gibbs.SingleSiteGibbs`)
through the same drivers. Log-likelihoods: exact when the image has at most
20 pixels (:math:`\\log Z` by enumerating the :math:`2^D` states), else with
:math:`\\log Z` from AIS along the base-rate path (each temperature one
single-site sweep of the tempered model). Besag's pseudo-likelihood, exact
here (every unit's conditional), is the per-epoch monitor. There are no latent
variables: ``posterior`` queries are refused; ``trained.posterior(x)`` gives
the conditionals :math:`p(v_i = 1 \\mid v_{-i})`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from inference.ais import ais_log_partition, default_schedule
from inference.contrastive_divergence import ContrastiveDivergence
from inference.devices import resolve_device
from inference.exact_enumeration import MAX_ENUMERATED_UNITS, log_partition
from inference.mcmc_driver import run_mcmc
from inference.queries import GibbsDraws
from inference.single_site_gibbs import SingleSiteGibbs, gibbs_sweep

from ..errors import SpecError
from ..fvbm import FullyVisibleBM
from ..specs import option
from .energy import EnergyFamily, _finite_or_none, num_visible, top_half_mask
from .plots import save_completion_figure
from .rbm import EnergyTrainSpec
from .sections import DataSpec

#: the per-epoch exact validation log-likelihood is computed up to this many units (2^16 states)
MAX_MONITORED_UNITS = 16
MONITOR_SIZE = 1000


@dataclass
class FVBMModelSpec:
    num_visible: Optional[int] = option(None, doc="units; None: pixels per image of the data", min=1)
    weight_scale: float = option(0.01, doc="std of the initial lateral weights", min=0.0)
    base_rate_init: bool = option(True, doc="start the biases at the training data's log-odds")


@dataclass
class FVBMObjectiveSpec:
    name: str = option("pcd", doc="pcd: persistent chains (Tieleman 2008); cd: chains restart at the data",
                       choices=("pcd", "cd"))
    k: int = option(1, doc="single-site Gibbs sweeps per parameter update", min=1)
    num_chains: Optional[int] = option(100, doc="persistent chains of PCD (None: batch_size)", min=1)
    fused_sgd: bool = option(True, doc="with SGD and no weight decay (train.weight_decay 0; any train.momentum): fold the update, or the momentum's, into the statistic's GEMM (the same update up to rounding, without a pass over the weights); false: the optimiser applies it")


@dataclass
class FVBMRunSpec:
    family: str = option("fvbm", doc="model family", choices=("fvbm",))
    model: FVBMModelSpec = field(default_factory=FVBMModelSpec)
    objective: FVBMObjectiveSpec = field(default_factory=FVBMObjectiveSpec)
    data: DataSpec = field(default_factory=DataSpec)
    # a sweep is D sequential unit updates: 1000 AIS temperatures already cost 1000 x 784 of them on MNIST
    train: EnergyTrainSpec = field(default_factory=lambda: EnergyTrainSpec(epochs=20, ais_temperatures=3000,
                                                                           sample_sweeps=200))


class FVBMFamily(EnergyFamily):
    name = "fvbm"
    summary = ("fully visible Boltzmann machine: symmetric lateral weights, PCD by single-site Gibbs, exact log Z "
               "up to 20 units, else AIS (Ackley, Hinton & Sejnowski 1985)")
    spec_class = FVBMRunSpec
    queries = ("sample", "log_prob", "complete")

    def build(self, spec) -> FullyVisibleBM:
        return FullyVisibleBM(num_visible(spec), weight_scale=spec.model.weight_scale, transition=gibbs_sweep)

    def make_objective(self, spec, module) -> ContrastiveDivergence:
        o = spec.objective
        return ContrastiveDivergence(module, k=o.k, persistent=o.name == "pcd", num_chains=o.num_chains,
                                     kernel_class=SingleSiteGibbs, fused_sgd=o.fused_sgd)

    @staticmethod
    def _monitors(module, x, valid, transform):
        monitor = x[:MONITOR_SIZE]
        if transform is not None:  # its own generator: a monitor must not move the training RNG stream
            monitor = transform(monitor, generator=torch.Generator(device=x.device).manual_seed(0))
        exact = module.num_visible <= MAX_MONITORED_UNITS

        @torch.no_grad()
        def on_epoch_end(metrics):
            metrics["pseudo_ll"] = float(module.pseudo_log_likelihood(monitor).mean())
            if valid is None:
                return
            metrics["valid_pseudo_ll"] = float(module.pseudo_log_likelihood(valid).mean())
            metrics["free_energy_gap"] = float(module.energy(valid).mean() - module.energy(monitor[:len(valid)]).mean())
            if exact:
                log_z = log_partition(module, layer="visible")
                metrics["valid_exact_ll"] = float((-module.energy(valid).double() - log_z).mean())

        return on_epoch_end

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, trained, data, num_particles=None, progress=False, seed=None, temperatures=None) -> dict:
        """AIS test log-likelihood (two groups of runs), exact as well when at most 20 units, and the
        pseudo-likelihood."""
        t = trained.spec.train
        device = resolve_device(t.device)
        module = trained.module.to(device)
        x_test = data.test.x.to(device)
        runs = num_particles or t.eval_particles
        if temperatures is not None or t.ais_schedule is None:
            schedule, note = default_schedule(temperatures or t.ais_temperatures), "Salakhutdinov & Murray 2008, scaled"
        else:
            schedule, note = torch.tensor(t.ais_schedule, dtype=torch.float64), "explicit (train.ais_schedule)"
        base = module.base_rate(data.train.x.to(device))
        torch.manual_seed(t.seed if seed is None else seed)
        started = time.perf_counter()
        ais = ais_log_partition(module, num_runs=runs, schedule=schedule, base=base, groups=min(2, runs),
                                progress=progress)
        ais_seconds = time.perf_counter() - started
        neg_e = -module.energy(x_test).double()
        ll = neg_e - ais.log_z
        metrics = dict(trained.metrics)
        for key in ("exact_log_z", "test_log_likelihood_exact", "ais_error"):
            metrics.pop(key, None)
        metrics.update(
            test_log_likelihood=float(ll.mean()), test_log_likelihood_stderr=float(ll.std() / math.sqrt(len(ll))),
            test_log_likelihood_interval=[_finite_or_none(float(neg_e.mean()) - ais.log_z_upper),
                                          _finite_or_none(float(neg_e.mean()) - ais.log_z_lower)],
            ais_log_z=ais.log_z, ais_log_z_std=ais.log_z_std,
            ais_log_z_interval_3sigma=[_finite_or_none(ais.log_z_lower), _finite_or_none(ais.log_z_upper)],
            ais_log_z_halves=list(ais.group_log_z), ais_runs=runs, ais_temperatures=int(schedule.numel()),
            ais_schedule=note, ais_base="base-rate model from the training split's pixel marginals; transitions: "
                                        "single-site Gibbs sweeps", ais_seconds=ais_seconds, test_images=len(ll),
            ais_stable=bool(ais.stable), log_likelihood_units="nats per binary image",
            test_pseudo_likelihood=float(module.pseudo_log_likelihood(x_test).mean()))
        if module.num_visible <= MAX_ENUMERATED_UNITS:
            exact = float(log_partition(module, layer="visible"))
            metrics.update(exact_log_z=exact, test_log_likelihood_exact=float((neg_e - exact).mean()),
                           ais_error=ais.log_z - exact)
        module.cpu()
        metrics["eval_seconds"] = time.perf_counter() - started
        return metrics

    # -- chains: single-site Gibbs through the MCMC driver ----------------------------------------
    def _chains(self, module, num_chains, warmup, draws, thin=1, clamp_mask=None, clamp_values=None,
                diagnose=True, progress=False) -> GibbsDraws:
        """As :func:`inference.queries.gibbs_chains`, with single-site sweeps; the "mean" of a chain's last
        state is :math:`p(v_i = 1 \\mid v_{-i})` of each free unit (observed units as given)."""
        for name, value in (("warmup (steps)", warmup), ("draws", draws), ("thin", thin)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name.startswith("warmup") else 1):
                raise SpecError(f"{name} must be a {'non-negative' if name.startswith('warmup') else 'positive'} "
                                f"integer, got {value!r}")
        kernel = SingleSiteGibbs(module, num_chains=num_chains, k=thin, clamp_mask=clamp_mask, clamp_values=clamp_values)
        result = run_mcmc(kernel, num_samples=draws, warmup_steps=warmup, save_params=["v"], warn=False,
                          disable_progbar=True, diagnose=diagnose and draws > 1)
        v = result.samples["v"][:, -1]
        mean = torch.sigmoid(module.conditional_logits(v))
        if clamp_mask is not None:
            mean = torch.where(clamp_mask, v, mean)
        return GibbsDraws(v, mean, result)

    def complete(self, module, x, image_shape, sweeps, per_image=1, progress=False) -> torch.Tensor:
        like = next(module.parameters())
        x = x.to(like).repeat_interleave(per_image, 0)
        mask = top_half_mask(image_shape, like)
        g = self._chains(module, x.shape[0], sweeps - 1, 1, clamp_mask=mask, clamp_values=x, diagnose=False)
        return g.v_mean.reshape(-1, per_image, x.shape[-1])

    def _completion_figure(self, module, x_test, image_shape, n, sweeps, path, progress=False) -> None:
        x = x_test[:min(n, x_test.shape[0])]
        completions = self.complete(module, x, image_shape, sweeps, per_image=3, progress=progress).cpu()
        save_completion_figure(x, top_half_mask(image_shape, x), completions, image_shape, path,
                               title=f"fvbm: completion of test images by clamped single-site Gibbs ({sweeps} sweeps)\n"
                                     "per row: image, top half given, 3 completions (p(v_i = 1 | v_-i) of the bottom half)")

    def sample_title(self, trained, n: int, sweeps: int) -> str:
        return f"fvbm: {n} chains, p(v_i = 1 | v_-i) after {sweeps} single-site Gibbs sweeps"

    def sample(self, trained, n: int, progress: bool = False, **options) -> torch.Tensor:
        """``n`` images: p(v_i = 1 | v_-i) at the last state of ``sweeps`` single-site sweeps from random states
        (``mode="samples"``), or completions of test images (``mode="completion"``)."""
        mode, sweeps = self._options(trained, options)
        if mode == "completion":
            x = self.load_data(trained.spec).test.x[:n]
            return self.complete(trained.module, x, trained.image_shape, sweeps, progress=progress)[:, 0]
        with torch.no_grad():
            return self._chains(trained.module, n, sweeps - 1, 1, diagnose=False).v_mean

    def query_sample(self, trained, inputs, num_samples: int = 16, sweeps: Optional[int] = None, draws: int = 100,
                     thin: int = 1):
        answer = super().query_sample(trained, inputs, num_samples, sweeps, draws, thin)
        answer.numbers["estimator"] = ("single-site Gibbs (systematic scan) through pyro.infer.MCMC "
                                       "(inference.mcmc_driver.run_mcmc): one chain per sample from a random state")
        answer.numbers["images_shown"] = "p(v_i = 1 | v_-i) at each chain's last state"
        return answer

    def query_complete(self, trained, inputs, mask="top", mask_seed: int = 0, num_samples: int = 3,
                       sweeps: Optional[int] = None, draws: int = 100, thin: int = 1):
        answer = super().query_complete(trained, inputs, mask, mask_seed, num_samples, sweeps, draws, thin)
        answer.numbers["estimator"] = ("clamped single-site Gibbs through pyro.infer.MCMC: the observed pixels held, "
                                       "chains from random states target p(v_missing | v_observed); the last state of "
                                       "each chain is a completion")
        answer.numbers["images_shown"] = ("per row: the image, its observed part (missing grey), then p(v_i = 1 | v_-i) "
                                          "of the missing pixels at each chain's last state")
        return answer

    def posterior(self, trained, x, num_samples: int = 1) -> dict:
        """No latent variables: ``{"conditionals": p(v_i = 1 | v_-i)}``, ``(N, D)``, exact."""
        module = trained.module
        with torch.no_grad():
            return {"conditionals": torch.sigmoid(module.conditional_logits(x.to(next(module.parameters()))))}

    def why_not(self, trained, kind: str):
        if kind == "posterior":
            return "it has no latent variables: every unit is visible"
        return super().why_not(trained, kind)

    # -- log_prob: the visible units are what is enumerated
    def _enumerable(self, module) -> bool:
        return module.num_visible <= MAX_ENUMERATED_UNITS

    def _log_z(self, trained, estimator, runs, temperatures):
        if estimator == "exact":
            return (float(log_partition(trained.module, layer="visible")), 0.0,
                    {"estimator": "exact: log Z by enumerating the 2^D states of the units"})
        return super()._log_z(trained, estimator, runs, temperatures)
