r"""The queries every energy family answers, routed to the Gibbs kernel, AIS and exact enumeration.

- ``sample``: one block-Gibbs chain per image from a random state, through the MCMC driver
  (:func:`inference.queries.gibbs_chains`), with R-hat and ESS over the chains.
- ``log_prob``: :math:`\log p(x) = -F(v(x)) + \log|dv/dx| - \log Z`, the free energy exact and
  :math:`\log Z` exact when a layer is small enough to enumerate (:mod:`inference.exact_enumeration`),
  else estimated by AIS (:mod:`inference.ais`): the run's stored estimate, or a new one.
- ``posterior``: :math:`p(h \mid v)`, exact: the hidden units are independent given the visible ones.
- ``complete``: clamped block Gibbs, several chains per image, R-hat and ESS over each image's chains.
"""

from __future__ import annotations

import math

import torch

from inference.ais import ais_log_partition, default_schedule
from inference.exact_enumeration import MAX_ENUMERATED_UNITS, log_partition
from inference.mcmc_driver import to_inference_data
from inference.queries import gibbs_chains, grouped_chain_diagnostics

from ..errors import SpecError
from .answers import Answer, draws_to_inference_data, estimate
from .energy_plots import save_gibbs_grid
from .plots import save_completion_figure
from .query_io import choice, make_mask, positive


def _diagnostics(r_hat: dict, ess: dict, threshold: float = 1.05, min_ess: float = 100.0) -> dict:
    """R-hat and ESS per summary, and whether every one passes (a constant summary, NaN, passes; with one
    draw per chain there is nothing to diagnose: ``mixed`` is None)."""
    ok = all(not (r > threshold) for r in r_hat.values()) and all(not (e < min_ess) for e in ess.values())
    if all(math.isnan(r) for r in r_hat.values()):
        ok = None
    return {"r_hat_max": r_hat, "ess_min": ess, "mixed": ok,
            "rule": f"mixed when every R-hat < {threshold} and every ESS >= {min_ess:g}"}


def _every(thin: int) -> str:
    """How far apart the kept draws are, for a picture's title."""
    return "every sweep" if thin == 1 else f"every {thin} sweeps"


class EnergyQueries:
    """The ``query_<kind>`` methods of :class:`~ppl_models.catalogue.energy.EnergyFamily`."""

    queries = ("sample", "log_prob", "posterior", "complete")

    def _chains(self, module, *args, **kwargs):
        """Gibbs chains of ``module`` through the MCMC driver (:func:`inference.queries.gibbs_chains`, block
        Gibbs); a family whose model needs another kernel overrides this, with the same arguments and result."""
        return gibbs_chains(module, *args, **kwargs)

    def _chain_settings(self, trained, sweeps, draws, thin) -> tuple:
        """(warm-up steps, draws, sweeps per step): the warm-up is at least ``sweeps`` sweeps, in whole steps."""
        sweeps = positive("sweeps", sweeps, allow_none=True) or trained.spec.train.sample_sweeps
        thin = positive("thin", thin)
        return -(-sweeps // thin), positive("draws", draws), thin

    # -- sample ---------------------------------------------------------------------------
    def query_sample(self, trained, inputs, num_samples: int = 16, sweeps: int = None, draws: int = 100,
                     thin: int = 1) -> Answer:
        n = positive("num_samples", num_samples)
        warmup, draws, thin = self._chain_settings(trained, sweeps, draws, thin)
        module = trained.module
        g = self._chains(module, n, warmup, draws, thin)
        images = module.to_pixels(g.v_mean).clamp(0, 1)
        result = g.result
        numbers = {"estimator": "block Gibbs through pyro.infer.MCMC (inference.mcmc_driver.run_mcmc): one chain per "
                                "sample from a random state",
                   "settings": {"chains": n, "warmup_sweeps": warmup * thin, "draws": draws,
                                "sweeps_between_draws": thin},
                   "images_shown": "E[v | h] of each chain's last state",
                   "diagnostics": {**_diagnostics(result.r_hat, result.ess), "message": result.message}}
        image_shape = trained.image_shape
        return Answer("sample", numbers, {"images": images, "v": g.v}, result.inference_data,
                      lambda path: save_gibbs_grid(images, image_shape, path,
                                                   title=f"{self.name}: {n} Gibbs chains, E[v|h] after "
                                                         f"{warmup * thin} sweeps and {draws} draws "
                                                         f"{_every(thin)}"))

    # -- log_prob -------------------------------------------------------------------------
    def _enumerable(self, module) -> bool:
        return module.num_hidden <= MAX_ENUMERATED_UNITS or (
            module.visible_type == "bernoulli" and module.num_visible <= MAX_ENUMERATED_UNITS)

    def _log_z(self, trained, estimator, runs, temperatures) -> tuple[float, float, dict]:
        """log Z, its standard error and how it was had."""
        module, t, metrics = trained.module, trained.spec.train, trained.metrics
        if estimator == "exact":
            return float(log_partition(module)), 0.0, {"estimator": "exact: log Z by enumerating the smaller layer"}
        note = ("AIS estimate of log Z (Salakhutdinov & Murray's base-rate path) with the exact free energy: "
                "log p(x) is a stochastic estimate, not a bound on each image; E[log Z_hat] <= log Z, so it errs high "
                "on average; its standard error is log Z's (delta method), the same for every image")
        if runs is None and temperatures is None and "ais_log_z" in metrics:
            return metrics["ais_log_z"], metrics["ais_log_z_std"], {
                "estimator": note, "log_z_from": "the run's evaluation (metrics.json; --particles or --temperatures "
                                                 "run AIS again)",
                "settings": {"runs": metrics.get("ais_runs"), "temperatures": metrics.get("ais_temperatures")},
                "ais": {"halves": metrics.get("ais_log_z_halves"), "stable": metrics.get("ais_stable"),
                        "interval_3sigma": metrics.get("ais_log_z_interval_3sigma")}}
        runs = runs or t.eval_particles
        if temperatures is None and t.ais_schedule is not None:
            schedule = torch.tensor(t.ais_schedule, dtype=torch.float64)
        else:
            schedule = default_schedule(temperatures or t.ais_temperatures)
        like = next(module.parameters())
        base = module.base_rate(module.to_visible(trained.data().train.x.to(like)))
        ais = ais_log_partition(module, num_runs=runs, schedule=schedule, base=base, groups=min(2, runs))
        return ais.log_z, ais.log_z_std, {
            "estimator": note, "log_z_from": "this query",
            "settings": {"runs": runs, "temperatures": int(schedule.numel())},
            "ais": {"halves": ais.group_log_z, "stable": ais.stable,
                    "interval_3sigma": [ais.log_z_lower, ais.log_z_upper]}}

    def query_log_prob(self, trained, inputs, estimator: str = "auto", num_particles: int = None,
                       temperatures: int = None) -> Answer:
        choice("estimator", estimator, ("auto", "exact", "ais"))
        runs = positive("num_particles", num_particles, allow_none=True)
        temperatures = positive("temperatures", temperatures, allow_none=True)
        module = trained.module
        if estimator == "auto":
            estimator = "exact" if self._enumerable(module) else "ais"
        if estimator == "exact" and not self._enumerable(module):
            raise SpecError(f"{self.name}: exact log Z needs a layer of at most {MAX_ENUMERATED_UNITS} units, the "
                            f"model has {module.num_visible} visible and {module.num_hidden} hidden; use --estimator ais")
        log_z, log_z_se, how = self._log_z(trained, estimator, runs, temperatures)
        v = module.to_visible(inputs.x)
        ll = -module.free_energy(v).double() + module.log_jacobian() - log_z
        se = torch.full_like(ll, log_z_se)
        units = ("nats per binary image" if self.needs_binary_data(trained.spec)
                 else "nats per image, a density of grey levels in pixel units (it can be positive)")
        numbers = {**how, "is_bound": False, "settings": how.get("settings", {}), "log_z": estimate(log_z, log_z_se),
                   "units": units, "mean": float(ll.mean()),
                   "inputs": [{"input": name, "log_prob": float(ll[i]), "stderr": float(se[i])}
                              for i, name in enumerate(inputs.names)]}
        return Answer("log_prob", numbers, {"log_prob": ll, "stderr": se})

    # -- posterior ------------------------------------------------------------------------
    def query_posterior(self, trained, inputs, num_samples: int = 100) -> Answer:
        s = positive("num_samples", num_samples)
        module = trained.module
        probs = module.hidden_probs(module.to_visible(inputs.x))
        draws = {"h": torch.bernoulli(probs.expand(s, *probs.shape))}
        numbers = {"estimator": "exact: p(h_j = 1 | v) = sigmoid(c_j + W_j v~), the hidden units independent given v; "
                                "draws are exact and independent",
                   "settings": {"num_samples": s},
                   "latents": {"h": {"mean": probs, "sd": (probs * (1 - probs)).sqrt(),
                                     "mean_stderr": torch.zeros_like(probs)}}}
        return Answer("posterior", numbers, {"h_probs": probs, **draws}, draws_to_inference_data(draws, inputs.names))

    # -- complete -------------------------------------------------------------------------
    def query_complete(self, trained, inputs, mask="top", mask_seed: int = 0, num_samples: int = 3,
                       sweeps: int = None, draws: int = 100, thin: int = 1) -> Answer:
        s = positive("num_samples", num_samples)
        warmup, draws, thin = self._chain_settings(trained, sweeps, draws, thin)
        module, x = trained.module, inputs.x
        n = x.shape[0]
        observed, mask_text = make_mask(mask, trained.image_shape, n, mask_seed)
        observed = observed.to(x.device)
        values = module.to_visible(x).repeat_interleave(s, 0)
        clamp = observed if observed.dim() == 1 else observed.repeat_interleave(s, 0)
        g = self._chains(module, n * s, warmup, draws, thin, clamp_mask=clamp, clamp_values=values, diagnose=False)
        completions = module.to_pixels(g.v).reshape(n, s, -1)
        means = module.to_pixels(g.v_mean).reshape(n, s, -1)
        v = g.result.samples["v"]  # (n * s, draws, V): the chains of one image are s consecutive ones
        free_energy = module.free_energy(v).unsqueeze(-1)
        r_free, ess_free = grouped_chain_diagnostics(free_energy, n) if draws > 1 else (math.nan, math.nan)
        r_units, ess_units = grouped_chain_diagnostics(v, n) if draws > 1 else (math.nan, math.nan)
        missing = ~observed.expand_as(x)
        error = ((means.mean(1) - x).abs() * missing).sum(1) / missing.sum(1)
        numbers = {"estimator": "clamped block Gibbs through pyro.infer.MCMC: the observed pixels held, chains from "
                                "random states target p(v_missing | v_observed); the last state of each chain is a "
                                "completion",
                   "mask": mask_text,
                   "settings": {"chains_per_image": s, "warmup_sweeps": warmup * thin, "draws": draws,
                                "sweeps_between_draws": thin, "mask_seed": mask_seed},
                   "diagnostics": {**_diagnostics({"free_energy": r_free, "visible_units": r_units},
                                                  {"free_energy": ess_free, "visible_units": ess_units}),
                                   "over": "the chains of each image (never across images)"},
                   "images_shown": "per row: the image, its observed part (missing grey), then E[v_missing | h] of "
                                   "each chain's last state",
                   "inputs": [{"input": name, "missing_pixels_mean_abs_error": float(error[i])}
                              for i, name in enumerate(inputs.names)]}
        chains = module.to_pixels(v).reshape(n, s, draws, -1).permute(1, 2, 0, 3)  # (chain, draw, image, pixel)
        data = to_inference_data({"x": chains.float()}, dims={"x": ["input", "pixel"]},
                                 coords={"input": list(inputs.names)})
        image_shape = trained.image_shape
        return Answer("complete", numbers, {"completions": completions, "completion_means": means, "mask": observed},
                      data, lambda path: save_completion_figure(
                          x.cpu(), observed.cpu(), means.cpu(), image_shape, path,
                          title=f"{self.name}: completion by clamped Gibbs ({warmup * thin} sweeps + {draws} "
                                f"draws {_every(thin)}), {mask_text}"))

