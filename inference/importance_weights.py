"""Per-datapoint log importance weights log p(x, z) - log q(z | x).

Both the IWAE objective and the test-NLL estimator need, for every datapoint
n and particle i, ``log w[i, n] = log p(x_n, z_in) - log q(z_in | x_n)`` with
``z_in ~ q(. | x_n)``. Pyro's own estimators reduce a whole minibatch to one
weight per particle (so ``RenyiELBO`` / ``ReweightedWakeSleep`` give the wrong
bound for batches); here every site's log-density is kept per datapoint by
summing over every dimension except the particle dimension and the data
plate's dimension.

Particles are vectorised by an outermost plate, so ``k`` particles for a batch
cost one pass of the guide and one of the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample

from .errors import SpecError

PARTICLE_PLATE = "_num_particles_vectorized"


@dataclass
class WeightedTraces:
    """Result of :func:`log_importance_weights`.

    ``log_p`` and ``log_q`` are ``(k, batch)``; ``log_q_reparam`` and
    ``log_q_score`` split ``log_q`` into reparameterised and score-function
    sites (the latter need a REINFORCE term in gradients); ``scale`` is the data
    plate's subsampling scale; the traces are kept for callers that need them,
    and ``log_p_sites`` / ``log_q_sites`` hold each site's ``(k, batch)`` term
    (in trace order) for estimators that weigh sites differently (NVIL's
    local learning signals).
    """

    log_p: torch.Tensor
    log_q: torch.Tensor
    log_q_score: torch.Tensor | float
    scale: float
    model_trace: poutine.Trace
    guide_trace: poutine.Trace
    log_p_sites: dict = field(default_factory=dict)
    log_q_sites: dict = field(default_factory=dict)

    @property
    def log_w(self) -> torch.Tensor:
        return self.log_p - self.log_q


def per_datum_log_prob(log_prob: torch.Tensor, site: dict, particle_dim: int, data_plate: str, k: int) -> torch.Tensor:
    """Sum a site's ``log_prob`` over everything but the particle and data-plate dims -> ``(k, batch)``."""
    data_frames = [f for f in site["cond_indep_stack"] if f.name == data_plate]
    if not data_frames:
        raise SpecError(
            f"sample site {site['name']!r} is outside the plate {data_plate!r}: per-datapoint importance "
            "weights need every latent and observed site inside the data plate")
    data_dim = data_frames[0].dim
    nd = -particle_dim
    if log_prob.dim() < nd:
        log_prob = log_prob.reshape((1,) * (nd - log_prob.dim()) + log_prob.shape)
    keep = {log_prob.dim() + particle_dim, log_prob.dim() + data_dim}
    other = [d for d in range(log_prob.dim()) if d not in keep]
    if other:
        log_prob = log_prob.sum(other, keepdim=True)
    log_prob = log_prob.reshape(log_prob.shape[log_prob.dim() + particle_dim], log_prob.shape[log_prob.dim() + data_dim])
    return log_prob.expand(k, log_prob.shape[1]) if log_prob.shape[0] != k else log_prob


def _scale_of(site: dict, data_plate: str) -> float:
    for f in site["cond_indep_stack"]:
        if f.name == data_plate and f.full_size is not None and f.size:
            return f.full_size / f.size
    return 1.0


def log_importance_weights(model, guide, *args, num_particles: int, max_plate_nesting: int,
                           data_plate: str = "data", detach_guide_params: bool = False, constant_samples: bool = False,
                           **kwargs) -> WeightedTraces:
    """Trace ``guide`` with ``num_particles`` vectorised particles, replay ``model`` on them.

    :param int max_plate_nesting: number of plates in model and guide; the
        particle plate goes one dimension further left.
    :param bool detach_guide_params: score ``log q`` with the guide's
        distribution parameters detached but the sample path kept (the
        doubly-reparameterised estimator of Tucker et al. 2018).
    :param bool constant_samples: treat the guide's samples as constants, so
        that gradients reach parameters only through the densities, as
        (reweighted) wake-sleep requires. Discrete samples carry no gradient
        anyway; a guide with reparameterised sites is run a second time,
        replayed on its detached samples, so that no later layer sees the
        sample path either.
    """
    particle_dim = -max_plate_nesting - 1
    if num_particles > 1:
        plate = pyro.plate(PARTICLE_PLATE, num_particles, dim=particle_dim)
        guide, model = plate(guide), plate(model)
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    if constant_samples:
        guide_trace = _replay_detached(guide, guide_trace, args, kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    k = num_particles
    log_p, log_q, log_q_score, scale = None, None, 0.0, 1.0  # None: no needless add-to-zero on the hot path
    log_p_sites, log_q_sites = {}, {}
    for site in model_trace.nodes.values():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        lp = site["fn"].log_prob(site["value"])
        if site["mask"] is not None and site["mask"] is not True:
            lp = lp * site["mask"]
        lp = per_datum_log_prob(lp, site, particle_dim, data_plate, k)
        log_p_sites[site["name"]] = lp
        log_p = lp if log_p is None else log_p + lp
        if site["is_observed"]:
            scale = _scale_of(site, data_plate)
    for site in guide_trace.nodes.values():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        fn = site["fn"]
        reparam = getattr(fn, "has_rsample", False)
        if detach_guide_params and reparam:
            fn = detach_distribution(fn)
        lq = per_datum_log_prob(fn.log_prob(site["value"]), site, particle_dim, data_plate, k)
        log_q_sites[site["name"]] = lq
        log_q = lq if log_q is None else log_q + lq
        if not reparam:
            log_q_score = log_q_score + lq
    if log_q is None:
        log_q = torch.zeros_like(log_p)
    return WeightedTraces(log_p, log_q, log_q_score, scale, model_trace, guide_trace, log_p_sites, log_q_sites)


def _replay_detached(guide, guide_trace: poutine.Trace, args, kwargs) -> poutine.Trace:
    latent = [s for s in guide_trace.nodes.values()
              if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)]
    if not any(getattr(s["fn"], "has_rsample", False) for s in latent):
        return guide_trace
    for site in latent:
        site["value"] = site["value"].detach()
    return poutine.trace(poutine.replay(guide, trace=guide_trace)).get_trace(*args, **kwargs)


def latent_log_prob(trace: poutine.Trace, data_plate: str = "data", max_plate_nesting: int = 1) -> torch.Tensor:
    """Per-datapoint sum of the log-densities of a trace's latent (unobserved) sites, shape ``(batch,)``."""
    total = None
    for site in trace.nodes.values():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        lp = per_datum_log_prob(site["fn"].log_prob(site["value"]), site, -max_plate_nesting - 1, data_plate, 1)[0]
        total = lp if total is None else total + lp
    if total is None:
        raise SpecError("the trace has no latent sample sites to score")
    return total


def detach_distribution(fn):
    """The same distribution with every parameter detached (sample path untouched)."""
    import torch.distributions as tdist

    if isinstance(fn, tdist.Independent):
        return type(fn)(detach_distribution(fn.base_dist), fn.reinterpreted_batch_ndims)
    params = {}
    for name in fn.arg_constraints:
        value = fn.__dict__.get(name)  # lazy properties (logits vs probs) are absent until used
        if isinstance(value, torch.Tensor):
            params[name] = value.detach()
    try:
        return type(fn)(**params)
    except TypeError as e:
        raise SpecError(f"cannot detach parameters of guide distribution {type(fn).__name__} for DReG ({e})") from None
