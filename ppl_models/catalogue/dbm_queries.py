r"""The queries of the ``dbm`` family, on top of the energy families' (:mod:`.energy_queries`).

A DBM's Gibbs state is its even block :math:`[v, h^2, h^4, \dots]`: clamping a
completion holds pixels of :math:`v` and never the hidden layers in it, and
pictures show :math:`v` alone. What differs from an RBM:

- ``log_prob``: ``--estimator bound`` (or ``ais``), the variational lower bound :math:`-E(v, \mu) + \mathrm H(\mu) - \log Z` (mean-field
  :math:`\mu`, :math:`\log Z` by AIS or exact), said to be a bound; with at most 20 odd-layer units the
  exact :math:`\log p(v)` (odd layers enumerated, the even ones summed in closed form) instead.
- ``posterior``: ``--estimator mean_field`` (default), the mean-field posterior of every hidden layer
  (a deterministic approximation), or ``gibbs``, block Gibbs with the data layer clamped (exact in the limit).
"""

from __future__ import annotations

import torch

from inference.exact_enumeration import MAX_ENUMERATED_UNITS, log_partition, log_prob_observed
from inference.mean_field import mean_field
from inference.queries import complete, gibbs_chains

from ..errors import SpecError
from .answers import Answer, draws_to_inference_data, estimate
from .query_io import choice, positive


def _pad(module, mask, values):
    """A pixel clamp (mask over the data layer, its values) as one over the even block: hidden layers free."""
    if mask is None or mask.shape[-1] == module.num_visible:
        return mask, values
    rest = module.num_visible - module.num_data
    mask = torch.cat([mask, mask.new_zeros(*mask.shape[:-1], rest)], -1)
    values = torch.cat([values, values.new_zeros(*values.shape[:-1], rest)], -1)
    return mask, values


class DBMQueries:
    """The DBM's ``query_<kind>`` methods and clamping, mixed in before :class:`~.energy.EnergyFamily`."""

    def _chains(self, module, *args, clamp_mask=None, clamp_values=None, **kwargs):
        clamp_mask, clamp_values = _pad(module, clamp_mask, clamp_values)
        return gibbs_chains(module, *args, clamp_mask=clamp_mask, clamp_values=clamp_values, **kwargs)

    def complete(self, module, x, image_shape, sweeps, per_image=1, progress=False):
        from .energy import top_half_mask

        like = next(module.parameters())
        x = x.to(like)
        mask, values = _pad(module, top_half_mask(image_shape, like), x)
        return module.to_pixels(complete(module, values, mask, sweeps, per_image, progress))

    @torch.no_grad()
    def posterior(self, trained, x, num_samples: int = 1) -> dict:
        """Mean-field posterior means of every hidden layer, ``{"h1": (N, H1), ...}``."""
        module = trained.module
        result = mean_field(module, x.to(next(module.parameters())), **self.mean_field_options(trained.spec, True))
        return {f"h{k + 1}": m for k, m in enumerate(result.means)}

    # -- sample: the data layer of each chain only ----------------------------------------------
    def query_sample(self, trained, inputs, num_samples: int = 16, sweeps: int = None, draws: int = 100,
                     thin: int = 1) -> Answer:
        answer = super().query_sample(trained, inputs, num_samples, sweeps, draws, thin)
        answer.tensors["v"] = trained.module.to_pixels(answer.tensors["v"])
        answer.numbers["chains_over"] = "the even layers (v, h2, ...) given the odd ones, then the odd given the even"
        return answer

    # -- log_prob -----------------------------------------------------------------------------------
    def query_log_prob(self, trained, inputs, estimator: str = "auto", num_particles: int = None,
                       temperatures: int = None) -> Answer:
        choice("estimator", estimator, ("auto", "exact", "bound", "ais"))  # ais: the bound with AIS log Z
        runs = positive("num_particles", num_particles, allow_none=True)
        temperatures = positive("temperatures", temperatures, allow_none=True)
        module = trained.module
        enumerable = module.num_hidden <= MAX_ENUMERATED_UNITS
        if estimator == "auto":
            estimator = "exact" if enumerable else "bound"
        if estimator == "exact" and not enumerable:
            raise SpecError(f"{self.name}: exact log p(v) enumerates the odd layers, at most {MAX_ENUMERATED_UNITS} "
                            f"units; the model has {module.num_hidden}; use --estimator bound")
        x = inputs.x
        if estimator == "exact":
            log_z = log_partition(module)
            ll = log_prob_observed(module, x, log_z)
            how = {"estimator": "exact: the odd layers enumerated, the even hidden layers summed out in closed form",
                   "is_bound": False, "settings": {}}
            log_z, log_z_se = float(log_z), 0.0
        else:
            log_z, log_z_se, how = self._log_z(trained, "ais", runs, temperatures)
            result = mean_field(module, x, **self.mean_field_options(trained.spec, True))
            ll = -module.mean_field_free_energy(x, result.means).double() - log_z
            how = {**how, "estimator": "variational LOWER BOUND on log p(v): -E(v, mu) + H(mu) - log Z with mu the "
                                       "mean-field posterior; log Z by AIS (odd layers summed out), so the bound itself "
                                       "is estimated (it errs high by AIS's error in log Z)",
                   "is_bound": True, "mean_field": {"iterations": result.iterations, "converged": result.converged,
                                                    "max_change": result.max_change}}
        se = torch.full_like(ll, log_z_se)
        numbers = {**how, "settings": how.get("settings", {}), "log_z": estimate(log_z, log_z_se),
                   "units": "nats per binary image", "mean": float(ll.mean()),
                   "inputs": [{"input": name, "log_prob": float(ll[i]), "stderr": float(se[i])}
                              for i, name in enumerate(inputs.names)]}
        return Answer("log_prob", numbers, {"log_prob": ll, "stderr": se})

    # -- posterior ----------------------------------------------------------------------------------
    def query_posterior(self, trained, inputs, estimator: str = "mean_field", num_samples: int = 100,
                        sweeps: int = None, thin: int = 1) -> Answer:
        choice("estimator", estimator, ("mean_field", "gibbs"))
        s = positive("num_samples", num_samples)
        module, x = trained.module, inputs.x
        n = x.shape[0]
        if estimator == "mean_field":
            result = mean_field(module, x, **self.mean_field_options(trained.spec, True))
            means = {f"h{k + 1}": m for k, m in enumerate(result.means)}
            draws = {name: torch.bernoulli(m.expand(s, *m.shape)) for name, m in means.items()}
            latents = {name: {"mean": m, "sd": (m * (1 - m)).sqrt()} for name, m in means.items()}
            numbers = {"estimator": "mean-field: the factorised q(h | v) minimising E_q[E] - H(q), by fixed-point "
                                    "iteration; an approximation (the layers are not independent given v)",
                       "settings": {"num_samples": s, "iterations": result.iterations, "converged": result.converged,
                                    "max_change": result.max_change}, "latents": latents}
        else:
            warmup, _, thin = self._chain_settings(trained, sweeps, 1, thin)
            mask = torch.ones(module.num_data, dtype=torch.bool, device=x.device)
            g = self._chains(module, n, warmup, s, thin, clamp_mask=mask, clamp_values=x, diagnose=False)
            even, odd = g.result.samples["v"], g.result.samples["h"]  # (n, s, block)
            layers = module.layers(even, odd)[1:]
            draws = {f"h{k + 1}": layer.transpose(0, 1) for k, layer in enumerate(layers)}  # (s, n, H)
            latents = {name: {"mean": d.mean(0), "sd": d.std(0) if s > 1 else torch.zeros_like(d[0])}
                       for name, d in draws.items()}
            numbers = {"estimator": "block Gibbs with the data layer clamped (exact in the limit): one chain per "
                                    "input, its draws after the warm-up",
                       "settings": {"num_samples": s, "warmup_sweeps": warmup * thin, "sweeps_between_draws": thin},
                       "latents": latents}
        tensors = {**{f"{k}_mean": v["mean"] for k, v in numbers["latents"].items()}, **draws}
        return Answer("posterior", numbers, tensors, draws_to_inference_data(draws, inputs.names))
