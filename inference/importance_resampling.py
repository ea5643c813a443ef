r"""Sampling importance resampling (SIR) of a directed model's latents given partly observed data.

With the pixels :math:`x_O` of an image observed and the rest :math:`x_M` not, SIR draws
:math:`K` particles :math:`z_k \sim q(z \mid \tilde x)` from the guide, where :math:`\tilde x`
is the image with its missing pixels filled in (the guide needs a whole image), weighs them by

.. math::

    \log w_k = \log p(z_k) + \log p(x_O \mid z_k) - \log q(z_k \mid \tilde x),

resamples :math:`S` of them in proportion to :math:`w_k`, and draws
:math:`x_M \sim p(x_M \mid z)` for each. As :math:`K \to \infty` the resampled latents
follow :math:`p(z \mid x_O)` and the completions :math:`p(x_M \mid x_O)`, whatever the
guide (it only has to cover the posterior); with every pixel observed the resampled
latents are draws of the exact posterior :math:`p(z \mid x)`. The mean weight is an
unbiased estimate of :math:`p(x_O)`.

Generic over Pyro pairs whose ``model(batch_size=n)`` draws ``n`` datapoints with the
observed site ``x`` inside ``pyro.plate("data")`` and a likelihood that factorises over
pixels given the latents (an ``Independent`` of an elementwise distribution: Bernoulli,
Gaussian, continuous Bernoulli). Model latents the guide does not sample (a mixture's
component, summed out in training) are drawn from their prior, which cancels from the weight.

References: D. Rubin, "Using the SIR algorithm to simulate posterior distributions",
Bayesian Statistics 3 (1988); A. Smith, A. Gelfand, "Bayesian statistics without tears",
The American Statistician 46 (1992).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample
from torch.distributions import Independent

from .errors import SpecError
from .importance_weights import PARTICLE_PLATE, per_datum_log_prob

__all__ = ["Resampled", "importance_resample"]


@dataclass
class Resampled:
    """What :func:`importance_resample` returns for ``N`` inputs, ``K`` particles, ``S`` draws.

    :ivar dict latents: every latent site of the guide, resampled: ``(N, S, ...)``.
    :ivar torch.Tensor x: ``(N, S, D)`` completions: observed pixels as given, the others drawn
        from :math:`p(x_M \\mid z)`.
    :ivar torch.Tensor x_mean: ``(N, S, D)``: observed pixels as given, the others :math:`E[x_M \\mid z]`.
    :ivar torch.Tensor log_weights: ``(K, N)`` unnormalised log weights.
    """

    latents: dict
    x: torch.Tensor
    x_mean: torch.Tensor
    log_weights: torch.Tensor

    @property
    def effective_sample_size(self) -> torch.Tensor:
        """Kish's :math:`(\\sum w)^2 / \\sum w^2` per input, ``(N,)``: how many of the ``K`` particles count."""
        w = torch.softmax(self.log_weights.double(), 0)
        return 1.0 / (w ** 2).sum(0)

    @property
    def log_marginal(self) -> torch.Tensor:
        """:math:`\\log \\hat p(x_O)`, the log of the mean weight, ``(N,)``."""
        return torch.logsumexp(self.log_weights.double(), 0) - math.log(self.log_weights.shape[0])

    @property
    def log_marginal_stderr(self) -> torch.Tensor:
        """Standard error of :attr:`log_marginal` by the delta method: the mean weight's relative standard error."""
        k = self.log_weights.shape[0]
        w = torch.exp(self.log_weights.double() - self.log_weights.double().max(0).values)
        return w.std(0, unbiased=k > 1) / (w.mean(0) * math.sqrt(k))


def _elementwise(fn):
    while isinstance(fn, Independent):
        fn = fn.base_dist
    return fn


def _observed_log_prob(fn, x: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """:math:`\\log p(x_O \\mid z)` of the likelihood ``fn`` (batch ``(K, n)``): the elementwise
    log-densities of the observed pixels, summed; ``x`` and ``mask`` are ``(n, D)``."""
    if not isinstance(fn, Independent):
        raise SpecError(f"completion by importance resampling needs a likelihood that factorises over pixels given "
                        f"the latents (an Independent distribution), got {type(fn).__name__}")
    event = tuple(fn.event_shape)
    base = _elementwise(fn)
    n = x.shape[0]
    lp = base.log_prob(x.reshape(n, *event).to(dtype))
    lp = torch.where(mask.reshape(n, *event), lp, torch.zeros_like(lp))  # missing pixels: no term, not 0 * NaN
    return lp.flatten(-len(event)).sum(-1)


def _pick(value: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``value[index[n, s], n]`` for a ``(K, n, ...)`` tensor and ``(n, S)`` particle indices -> ``(n, S, ...)``."""
    rows = torch.arange(index.shape[0], device=index.device).unsqueeze(1)
    return value[index, rows]


@torch.no_grad()
def _resample_batch(model, guide, x, mask, fill, num_particles, num_draws, site):
    n, plate = x.shape[0], pyro.plate(PARTICLE_PLATE, num_particles, dim=-2)
    x_guide = torch.where(mask, x, fill.expand_as(x).to(x))
    guide_trace = poutine.trace(plate(guide)).get_trace(x_guide)
    model_trace = poutine.trace(poutine.replay(plate(model), trace=guide_trace)).get_trace(batch_size=n)
    observed = model_trace.nodes[site]
    log_w = _observed_log_prob(observed["fn"], x, mask, observed["value"].dtype).expand(num_particles, n)
    latents = {}
    for name, q in guide_trace.nodes.items():
        if q["type"] != "sample" or q["is_observed"] or site_is_subsample(q):
            continue
        p = model_trace.nodes[name]
        log_w = log_w + per_datum_log_prob(p["fn"].log_prob(p["value"]), p, -2, "data", num_particles) \
            - per_datum_log_prob(q["fn"].log_prob(q["value"]), q, -2, "data", num_particles)
        latents[name] = q["value"]  # (K, n, ...): the particle plate broadcasts every site
    index = torch.multinomial(torch.softmax(log_w.double(), 0).T, num_draws, replacement=True)  # (n, S)
    event = observed["fn"].event_shape
    draws = _pick(observed["value"].expand(num_particles, n, *event), index).reshape(n, num_draws, -1)
    mean = _pick(observed["fn"].mean.expand(num_particles, n, *event), index).reshape(n, num_draws, -1)
    keep = mask.unsqueeze(1)
    given = x.unsqueeze(1)
    return ({k: _pick(v, index) for k, v in latents.items()}, torch.where(keep, given, draws.to(x)),
            torch.where(keep, given, mean.to(x)), log_w)


def importance_resample(model, guide, x: torch.Tensor, mask: torch.Tensor, *, num_particles: int = 1000,
                        num_draws: int = 1, fill=0.5, site: str = "x", max_elements: int = 2 ** 24) -> Resampled:
    """SIR of the latents given the pixels of ``x`` where ``mask`` is True, and completions of the rest.

    :param torch.Tensor x: ``(N, D)`` images; only the entries where ``mask`` is True are read
        (the guide sees ``fill`` elsewhere).
    :param torch.Tensor mask: bool ``(D,)`` or ``(N, D)``, True where a pixel is observed.
    :param int num_particles: ``K``, guide draws per input.
    :param int num_draws: ``S``, resampled draws per input (with replacement, from the same ``K``
        particles: draws of one input are not independent; repeat the input for independent ones).
    :param fill: what the guide sees in place of a missing pixel: a number or a ``(D,)`` tensor
        (e.g. the training data's pixel means).
    :param int max_elements: inputs go through in batches of at most ``max_elements / (K * D)``.
    """
    for name, value in (("num_particles", num_particles), ("num_draws", num_draws)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError(f"{name} must be a positive integer, got {value!r}")
    if x.dim() != 2 or mask.shape[-1] != x.shape[-1] or mask.dim() not in (1, 2) or (
            mask.dim() == 2 and mask.shape[0] != x.shape[0]):
        raise SpecError(f"x must be (N, D) and mask (D,) or (N, D), got {tuple(x.shape)} and {tuple(mask.shape)}")
    mask = mask.to(torch.bool).expand_as(x)
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    batch = max(1, max_elements // (num_particles * x.shape[1]))
    parts = []
    with pyro.validation_enabled(False):
        for start in range(0, x.shape[0], batch):
            parts.append(_resample_batch(model, guide, x[start:start + batch], mask[start:start + batch], fill,
                                         num_particles, num_draws, site))
    latents = {name: torch.cat([p[0][name] for p in parts]) for name in parts[0][0]}
    return Resampled(latents, torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts]),
                     torch.cat([p[3] for p in parts], 1))
