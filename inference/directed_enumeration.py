"""Exact log p(x, h), log q(h | x) and log p(x) for directed models with few binary latents, by enumeration.

Every estimator of the directed families (the importance-sampled NLL, the
k-sample bound, NVIL, VIMCO, reweighted wake-sleep) is tested against these
sums: with :math:`B` latent bits in all there are :math:`2^B` joint states
:math:`h`, and

.. math::

    \\log p(x) = \\log \\sum_h p(x, h), \\qquad
    \\mathcal{L}_{ELBO}(x) = \\sum_h q(h \\mid x) [\\log p(x, h) - \\log q(h \\mid x)].

Generic over Pyro pairs whose latent sites are vectors of 0/1 values inside
the data plate (``max_plate_nesting = 1``): the model and the guide are run
once per chunk of states, conditioned on them, with the states along an
extra plate, so the results keep their autograd graph (exact gradients).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample
from torch.distributions import constraints

from .errors import SpecError
from .importance_weights import per_datum_log_prob

STATE_PLATE = "_enumerated_states"
MAX_BITS = 20


def binary_states(num_bits: int, like: torch.Tensor) -> torch.Tensor:
    """All ``2**num_bits`` 0/1 vectors, ``(2**num_bits, num_bits)``, in the dtype and device of ``like``."""
    codes = torch.arange(2 ** num_bits, device=like.device)
    return ((codes.unsqueeze(-1) >> torch.arange(num_bits, device=like.device)) & 1).to(like.dtype)


def latent_sizes(guide, x: torch.Tensor, *args, **kwargs) -> dict[str, int]:
    """The guide's latent sites and their sizes (units per datapoint), in sampling order."""
    with torch.no_grad(), pyro.validation_enabled(False):
        trace = poutine.trace(guide).get_trace(x[:1], *[a[:1] for a in args], **kwargs)
    sizes = {}
    for name, s in trace.nodes.items():
        if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s):
            sizes[name] = int(s["value"][0].numel())
    return sizes


@dataclass
class Enumerated:
    """``log_p`` and ``log_q`` are ``(S, N)`` over the ``S = 2**B`` joint states; ``states[site]`` is ``(S, size)``."""

    log_p: torch.Tensor
    log_q: torch.Tensor | None
    states: dict

    @property
    def log_marginal(self) -> torch.Tensor:
        """Exact :math:`\\log p(x)`, ``(N,)``."""
        return torch.logsumexp(self.log_p, dim=0)

    @property
    def log_posterior(self) -> torch.Tensor:
        """Exact :math:`\\log p(h \\mid x)`, ``(S, N)``."""
        return self.log_p - self.log_marginal

    @property
    def posterior_marginals(self) -> dict:
        """Exact :math:`p(h_j = 1 \\mid x)` of every latent unit, ``{site: (N, size)}``."""
        post = self.log_posterior.exp()
        return {name: post.T @ states.to(post.dtype) for name, states in self.states.items()}

    @property
    def elbo(self) -> torch.Tensor:
        """Exact :math:`\\mathbb{E}_q[\\log p(x, h) - \\log q(h \\mid x)]`, ``(N,)``."""
        return (self.log_q.exp() * (self.log_p - self.log_q)).sum(0)


def enumerable_bits(model, guide, x: torch.Tensor, *args, **kwargs) -> int | None:
    """The number of latent bits when enumeration applies (every latent site of the model is a 0/1 site
    of the guide), else None (continuous or categorical latents, or model latents the guide does not
    sample, as a mixture's component summed out in training)."""
    with torch.no_grad(), pyro.validation_enabled(False):
        model_trace = poutine.trace(model).get_trace(x[:1], *[a[:1] for a in args], **kwargs)
        guide_trace = poutine.trace(guide).get_trace(x[:1], *[a[:1] for a in args], **kwargs)

    def latent(trace):
        return {n: s for n, s in trace.nodes.items()
                if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)}

    guide_sites = latent(guide_trace)
    if set(latent(model_trace)) != set(guide_sites):
        return None
    for site in guide_sites.values():
        support = site["fn"].support
        while hasattr(support, "base_constraint"):  # independent(boolean, 1) -> boolean
            support = support.base_constraint
        if support is not constraints.boolean:
            return None
    return sum(int(s["value"][0].numel()) for s in guide_sites.values())


def _conditioned_log_prob(fn, x, args, kwargs, values: dict, num_states: int) -> torch.Tensor:
    plated = pyro.plate(STATE_PLATE, num_states, dim=-2)(poutine.condition(fn, data=values))
    with pyro.validation_enabled(False):
        trace = poutine.trace(plated).get_trace(x, *args, **kwargs)
    total = None
    for site in trace.nodes.values():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        lp = per_datum_log_prob(site["fn"].log_prob(site["value"]), site, -2, "data", num_states)
        total = lp if total is None else total + lp
    return total


def _state_values(sizes: dict, states: torch.Tensor, n: int) -> dict:
    values, offset = {}, 0
    for name, size in sizes.items():
        values[name] = states[:, offset:offset + size].unsqueeze(1).expand(states.shape[0], n, size)
        offset += size
    return values


def _check_bits(sizes: dict, max_bits: int) -> int:
    bits = sum(sizes.values())
    if bits > max_bits:
        raise SpecError(f"exact enumeration needs at most {max_bits} latent bits, the model has {bits} "
                        f"({', '.join(f'{k}: {v}' for k, v in sizes.items())})")
    return bits


def enumerate_latents(model, guide, x: torch.Tensor, *args, with_guide: bool = True, max_bits: int = MAX_BITS,
                      **kwargs) -> Enumerated:
    """:math:`\\log p(x, h)` (and :math:`\\log q(h \\mid x)`) for every joint state of the latent bits,
    with their autograd graph (for exact gradients of tiny models).

    :param guide: used for the latent sites' names and sizes (and scored when ``with_guide``).
    :raises SpecError: when the latents have more than ``max_bits`` bits in all.
    """
    sizes = latent_sizes(guide, x, *args, **kwargs)
    states = binary_states(_check_bits(sizes, max_bits), x)
    values = _state_values(sizes, states, x.shape[0])
    log_p = _conditioned_log_prob(model, x, args, kwargs, values, states.shape[0])
    log_q = _conditioned_log_prob(guide, x, args, kwargs, values, states.shape[0]) if with_guide else None
    return Enumerated(log_p, log_q, {k: v[:, 0] for k, v in values.items()})


def exact_log_marginal(model, guide, x: torch.Tensor, *args, batch_size: int = 100, max_bits: int = MAX_BITS,
                       max_elements: int = 2 ** 24, **kwargs) -> torch.Tensor:
    """Exact :math:`\\log p(x)` per datapoint, ``(N,)``, without gradients: datapoints in batches and the
    states in chunks of at most ``max_elements / (batch * pixels)``, combined by a running log-sum-exp."""
    sizes = latent_sizes(guide, x, *args, **kwargs)
    states = binary_states(_check_bits(sizes, max_bits), x)
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb, rest = x[start:start + batch_size], [a[start:start + batch_size] for a in args]
            chunk = max(1, max_elements // (xb.shape[0] * max(1, xb[0].numel())))
            acc = None
            for s0 in range(0, states.shape[0], chunk):
                part = states[s0:s0 + chunk]
                lp = _conditioned_log_prob(model, xb, rest, kwargs, _state_values(sizes, part, xb.shape[0]), part.shape[0])
                lse = torch.logsumexp(lp, dim=0)
                acc = lse if acc is None else torch.logaddexp(acc, lse)
            out.append(acc)
    return torch.cat(out)


def posterior_table(model, guide, x: torch.Tensor, *args, max_bits: int = MAX_BITS, max_elements: int = 2 ** 24,
                    **kwargs) -> Enumerated:
    """:math:`\\log p(x, h)` of every joint state, ``(2**B, N)``, without gradients and with the states in
    chunks of at most ``max_elements / (N * pixels)`` (so a 16-bit posterior of a batch of MNIST images
    fits in memory); its :attr:`~Enumerated.log_posterior` and :attr:`~Enumerated.posterior_marginals`
    are the exact posterior."""
    sizes = latent_sizes(guide, x, *args, **kwargs)
    states = binary_states(_check_bits(sizes, max_bits), x)
    chunk = max(1, max_elements // (x.shape[0] * max(1, x[0].numel())))
    parts = []
    with torch.no_grad():
        for s0 in range(0, states.shape[0], chunk):
            part = states[s0:s0 + chunk]
            parts.append(_conditioned_log_prob(model, x, args, kwargs, _state_values(sizes, part, x.shape[0]),
                                               part.shape[0]))
    return Enumerated(torch.cat(parts), None, {k: v[:, 0] for k, v in _state_values(sizes, states, 1).items()})
