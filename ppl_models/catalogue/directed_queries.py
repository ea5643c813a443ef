"""The queries every directed family answers, routed to the generic estimators of :mod:`inference`.

- ``sample``: ancestral draws through :class:`pyro.infer.Predictive` (:func:`inference.queries.ancestral_samples`).
- ``log_prob``: exact where the family's estimator is (a mixture, an autoregressive model) or the latents
  have at most :attr:`DirectedQueries.exact_bits` bits (:mod:`inference.directed_enumeration`), else
  importance sampling with the guide (:func:`inference.log_likelihood.log_likelihood_with_stderr`), a
  stochastic lower bound; for a family with a standard-normal latent and a decoder (:meth:`DirectedQueries.
  latent_decoder`: the VAE), ``--estimator latent_ais`` anneals over the latent with HMC instead
  (:mod:`inference.latent_ais`, Wu et al. 2017), with no guide involved.
- ``posterior``: exact by enumeration for small binary latents, else draws of the guide, or importance
  resampling of the guide's draws (:mod:`inference.importance_resampling`), which targets the exact posterior.
- ``complete``: importance resampling of the latents given the observed pixels, then the missing pixels
  drawn given the latents.

A model without latent variables (an autoregressive one) answers ``sample`` and ``log_prob`` only.
"""

from __future__ import annotations

import math

import torch

from inference.directed_enumeration import enumerable_bits, exact_log_marginal, posterior_table
from inference.importance_resampling import importance_resample
from inference.latent_ais import latent_ais
from inference.log_likelihood import log_likelihood_with_stderr
from inference.queries import ancestral_samples, latent_sites, posterior_latents

from ..errors import SpecError
from .answers import Answer, draw_summary, draws_to_inference_data, estimate, plain
from .plots import save_completion_figure, save_image_grid
from .query_io import choice, make_mask, positive

IMPORTANCE = ("importance sampling with the guide q(z | x) as proposal: log of the mean of k weights "
              "p(x, z) / q(z | x) (the IWAE bound L_k)")
LOWER_BOUND = "a stochastic lower bound: E[estimate] <= log p(x) (Jensen), tightening as k grows"
LATENT_AIS = ("annealed importance sampling over the latent z (Wu et al. 2017): from p(z) = N(0, I) to "
              "p(z) p(x | z) along p(z) p(x | z)^beta, HMC transitions with adapted step sizes, log of the mean "
              "of the runs' weights; no guide involved")
#: latent AIS defaults: runs per image, temperatures and leapfrog steps per HMC transition
LATENT_AIS_RUNS, LATENT_AIS_TEMPERATURES, LATENT_AIS_LEAPFROG = 16, 500, 10
SIR = ("sampling importance resampling: k particles z ~ q(z | x~) from the guide, weighted by "
       "p(z) p(x_observed | z) / q(z | x~) and resampled; missing pixels drawn from p(x_missing | z). "
       "Consistent for p(x_missing | x_observed) as k grows; the ESS says how many particles counted")


def _per_input(names, values: dict) -> list:
    """``[{"input": name, key: value[i], ...}]`` for per-input tensors, as plain numbers and lists (what the JSON
    holds; a 0-dim tensor in ``numbers`` would surprise a Python user)."""
    return [{"input": name, **{k: plain(v[i]) for k, v in values.items()}} for i, name in enumerate(names)]


def _mean_over_draws(v: torch.Tensor) -> dict:
    """The mean of every value of ``n`` independent draws ``(n, ...)``, with its standard error over the draws;
    for integer draws (a class, a component), the frequency of each value."""
    if not v.is_floating_point():
        return {"frequencies": torch.bincount(v.flatten().long()).double() / v.numel()}
    per_draw = v.double().reshape(v.shape[0], -1).mean(1)
    n = per_draw.numel()
    return estimate(per_draw.mean(), per_draw.std() / math.sqrt(n) if n > 1 else math.nan)


class DirectedQueries:
    """The ``query_<kind>`` methods of :class:`~ppl_models.catalogue.directed.DirectedFamily`."""

    queries = ("sample", "log_prob", "posterior", "complete")
    #: latents with at most this many bits in all are enumerated (2^16 states) for exact answers
    exact_bits = 16

    def why_not(self, trained, kind):
        reason = super().why_not(trained, kind)
        if reason is None and kind in ("posterior", "complete") and not latent_sites(trained.module.model):
            return "it has no latent variables"
        return reason

    def particle_chunk(self, module) -> int:
        """Importance samples per pass of the model (bounds memory)."""
        return 500

    def log_prob_units(self, spec) -> str:
        """What a log_prob answer's numbers are."""
        return ("nats per binary image" if self.needs_binary_data(spec)
                else "nats per image, a density of grey levels (it can be positive)")

    def latent_decoder(self, module):
        """``(z_dim, log_likelihood_of)`` for a model with one latent ``z ~ N(0, I)`` and a decoder ``p(x | z)``,
        where ``log_likelihood_of(x)`` is the callable ``z (R, N, z_dim) -> log p(x_n | z) (R, N)``; None for a
        model of another shape (then ``--estimator latent_ais`` is refused)."""

    def _exact_bits(self, module, x):
        """The latent bits when exact enumeration applies and is small enough, else None."""
        bits = enumerable_bits(module.model, module.guide, x)
        return bits if bits is not None and bits <= self.exact_bits else None

    # -- sample ---------------------------------------------------------------------------
    def query_sample(self, trained, inputs, num_samples: int = 16) -> Answer:
        n = positive("num_samples", num_samples)
        draws = ancestral_samples(trained.module.model, n)
        x, mean = draws.pop("x"), draws.pop("x_mean")
        shown = (mean if mean is not None else x).float().clamp(0, 1)
        what = "E[x | latents] of each draw" if mean is not None else "the draws"
        image_shape = trained.image_shape
        numbers = {
            "estimator": "ancestral sampling through pyro.infer.Predictive: exact, independent draws of the model",
            "settings": {"num_samples": n}, "images_shown": what,
            "mean_pixel_value": _mean_over_draws(x),
            "latents": {site: {"shape": list(v.shape[1:]), "mean": _mean_over_draws(v)} for site, v in draws.items()}}
        per_draw = {site: v.unsqueeze(1) for site, v in {**draws, "x": x}.items()}  # (draws, one "input", ...)
        return Answer("sample", numbers, {"images": shown, "x": x, **draws},
                      draws_to_inference_data(per_draw, ["model"]),
                      lambda path: save_image_grid(shown, image_shape, path,
                                                   title=f"{self.name}: {n} ancestral samples ({what})"))

    # -- log_prob -------------------------------------------------------------------------
    def query_log_prob(self, trained, inputs, num_particles: int = None, estimator: str = "auto",
                       temperatures: int = None) -> Answer:
        choice("estimator", estimator, ("auto", "exact", "importance", "latent_ais"))
        temperatures = positive("temperatures", temperatures, allow_none=True)
        if estimator == "latent_ais":
            return self._latent_ais_log_prob(trained, inputs, positive("num_particles", num_particles, allow_none=True),
                                             temperatures)
        if temperatures is not None:
            raise SpecError("temperatures (--temperatures) is an option of --estimator latent_ais only")
        k = positive("num_particles", num_particles, allow_none=True) or trained.spec.train.eval_particles
        module, x = trained.module, inputs.x
        own_exact = self.estimator.startswith("exact")
        if own_exact and estimator == "importance":
            raise SpecError(f"the {self.name} family's log p(x) is exact ({self.estimator}); "
                            "use --estimator auto or exact")
        bits = None if own_exact else self._exact_bits(module, x)
        exact = own_exact or bits is not None
        if estimator == "exact" and not exact:
            raise SpecError(f"{self.name}: exact log p(x) needs binary latents of at most {self.exact_bits} bits in "
                            f"all; use --estimator importance")
        if exact and estimator != "importance":
            ll = self.log_likelihood(trained, x) if own_exact else exact_log_marginal(module.model, module.guide, x)
            se = torch.zeros_like(ll)
            how = self.estimator if own_exact else f"exact: enumeration of all 2^{bits} latent states"
            numbers = {"estimator": how, "is_bound": False, "settings": {}}
        else:
            ll, se = log_likelihood_with_stderr(module.model, module.guide, x, num_particles=k,
                                                particle_chunk=min(k, self.particle_chunk(module)))
            numbers = {"estimator": IMPORTANCE, "is_bound": True, "bound": LOWER_BOUND,
                       "settings": {"num_particles": k}}
        numbers.update(units=self.log_prob_units(trained.spec), mean=float(ll.mean()),
                       inputs=_per_input(inputs.names, {"log_prob": ll.double(), "stderr": se.double()}))
        return Answer("log_prob", numbers, {"log_prob": ll, "stderr": se})

    def _latent_ais_log_prob(self, trained, inputs, runs, temperatures) -> Answer:
        target = self.latent_decoder(trained.module)
        if target is None:
            raise SpecError(f"--estimator latent_ais needs a model with one N(0, I) latent and a decoder; the "
                            f"{self.name} family has none (use --estimator auto)")
        z_dim, log_likelihood_of = target
        runs, temperatures = runs or LATENT_AIS_RUNS, temperatures or LATENT_AIS_TEMPERATURES
        x = inputs.x
        r = latent_ais(log_likelihood_of(x), x.shape[0], z_dim, num_temperatures=temperatures, num_runs=runs,
                       leapfrog_steps=LATENT_AIS_LEAPFROG, dtype=x.dtype, device=x.device)
        ll, se = r.log_prob, r.stderr
        numbers = {"estimator": LATENT_AIS, "is_bound": True, "bound": LOWER_BOUND.replace("as k grows",
                                                                                            "with more temperatures"),
                   "settings": {"num_particles": runs, "temperatures": r.num_temperatures,
                                "leapfrog_steps": LATENT_AIS_LEAPFROG, "schedule": "sigmoid (Grosse et al. 2015)"},
                   "hmc_acceptance": float(r.acceptance.mean()),
                   "units": self.log_prob_units(trained.spec), "mean": float(ll.mean()),
                   "inputs": _per_input(inputs.names, {"log_prob": ll.double(), "stderr": se.double()})}
        return Answer("log_prob", numbers, {"log_prob": ll, "stderr": se})

    # -- posterior ------------------------------------------------------------------------
    def query_posterior(self, trained, inputs, num_samples: int = 100, estimator: str = "auto",
                        num_particles: int = 1000) -> Answer:
        choice("estimator", estimator, ("auto", "exact", "guide", "importance_resampling"))
        s, k = positive("num_samples", num_samples), positive("num_particles", num_particles)
        module, x = trained.module, inputs.x
        bits = self._exact_bits(module, x)
        if estimator == "auto":
            estimator = "exact" if bits is not None else "guide"
        extra = {}
        if estimator == "exact":
            if bits is None:
                raise SpecError(f"{self.name}: the exact posterior needs binary latents of at most {self.exact_bits} "
                                "bits in all; use --estimator guide or importance_resampling")
            table = posterior_table(module.model, module.guide, x)
            index = torch.distributions.Categorical(logits=table.log_posterior.T).sample((s,))  # (S, N)
            draws = {site: states[index] for site, states in table.states.items()}
            how = f"exact: enumeration of all 2^{bits} latent states; draws from the exact posterior"
            exact = {site: {"mean": m, "sd": (m * (1 - m)).sqrt(), "mean_stderr": torch.zeros_like(m)}
                     for site, m in table.posterior_marginals.items()}  # p(h_j = 1 | x) itself, not its draws'
        elif estimator == "guide":
            draws = posterior_latents(module.guide, x, s)
            how = "draws of the guide q(z | x): the amortised approximation, not the exact posterior"
        else:
            r = importance_resample(module.model, module.guide, x, torch.ones(x.shape[1], dtype=torch.bool),
                                    num_particles=k, num_draws=s)
            draws = {site: v.transpose(0, 1) for site, v in r.latents.items()}
            how = ("sampling importance resampling: k guide draws weighted by p(x, z) / q(z | x), resampled; "
                   "draws of the exact posterior p(z | x) as k grows (draws of one input share k particles)")
            extra["effective_sample_size"] = r.effective_sample_size
        settings = {"num_samples": s, **({"num_particles": k} if estimator == "importance_resampling" else {})}
        ess = extra.get("effective_sample_size")
        summary = exact if estimator == "exact" else {site: draw_summary(v, ess) for site, v in draws.items()}
        if ess is not None:
            extra.update(_ess_verdict(ess, k))
        numbers = {"estimator": how, "settings": settings, "latents": summary, **extra}
        # exact marginals p(h_j = 1 | x) ride along as tensors, as the energy and mixture posteriors' do
        probs = {f"{site}_probs": m for site, m in table.posterior_marginals.items()} if estimator == "exact" else {}
        return Answer("posterior", numbers, {**probs, **draws}, draws_to_inference_data(draws, inputs.names))

    # -- complete -------------------------------------------------------------------------
    def _fill(self, trained, fill):
        """What the guide sees in place of a missing pixel, and that in words."""
        if fill == "mean":
            return trained.data().train.x.mean(0), "the training split's mean of that pixel"
        try:
            value = float(fill)
        except (TypeError, ValueError):
            value = math.nan
        if not 0 <= value <= 1:
            raise SpecError(f"fill must be 'mean' or a number in [0, 1], got {fill!r}")
        return value, f"{value:g}"

    def query_complete(self, trained, inputs, mask="top", mask_seed: int = 0, num_samples: int = 3,
                       num_particles: int = 1000, fill="mean") -> Answer:
        s, k = positive("num_samples", num_samples), positive("num_particles", num_particles)
        module, x = trained.module, inputs.x
        observed, mask_text = make_mask(mask, trained.image_shape, x.shape[0], mask_seed)
        observed = observed.to(x.device)
        guided = bool(posterior_latents(module.guide, x[:1], 1))
        fill_value, fill_text = self._fill(trained, fill) if guided else (0.5, None)  # no guide: it sees nothing
        r = importance_resample(module.model, module.guide, x, observed, num_particles=k, num_draws=s,
                                fill=fill_value.to(x) if torch.is_tensor(fill_value) else fill_value)
        missing = ~observed.expand_as(x)
        error = ((r.x_mean.mean(1) - x).abs() * missing).sum(1) / missing.sum(1)
        numbers = {"estimator": SIR,
                   "proposal": "the guide" if guided else "the prior (the guide samples no latent site)",
                   "guide_input": f"missing pixels filled with {fill_text}" if guided else "none",
                   "mask": mask_text, "settings": {"num_particles": k, "num_samples": s, "mask_seed": mask_seed},
                   "images_shown": "per row: the image, its observed part (missing grey), then E[x_missing | z] of "
                                   "each resampled z",
                   **_ess_verdict(r.effective_sample_size, k),
                   "inputs": _per_input(inputs.names, {
                       "effective_sample_size": r.effective_sample_size,
                       "log_prob_observed": [estimate(v, e) for v, e in zip(r.log_marginal, r.log_marginal_stderr)],
                       "missing_pixels_mean_abs_error": error})}
        image_shape = trained.image_shape
        draws = {"x": r.x.transpose(0, 1), **{site: v.transpose(0, 1) for site, v in r.latents.items()}}
        return Answer("complete", numbers, {"completions": r.x, "completion_means": r.x_mean, "mask": observed,
                                            **r.latents},
                      draws_to_inference_data(draws, inputs.names),
                      lambda path: save_completion_figure(x.cpu(), observed.cpu(), r.x_mean.cpu(), image_shape, path,
                                                          title=f"{self.name}: completion by importance resampling "
                                                                f"(k={k}), {mask_text}"))


#: below this effective sample size a resampled answer rests on a handful of particles
MIN_ESS = 10


def _ess_verdict(ess: torch.Tensor, k: int) -> dict:
    """Whether importance resampling had enough effective particles for every input, as the Gibbs answers say
    whether their chains mixed."""
    low = int((ess < MIN_ESS).sum())
    if not low:
        return {"reliable": True, "message": f"every input's effective sample size is >= {MIN_ESS} (of k={k})"}
    return {"reliable": False,
            "message": f"{low} of {ess.numel()} inputs have an effective sample size below {MIN_ESS} (of k={k}, "
                       f"lowest {float(ess.min()):.1f}): their answers rest on a few particles; raise "
                       "--particles, and read their standard errors as too small"}
