r"""Mixture of multivariate Bernoullis, as a Pyro model with the component enumerated and as an EM model.

.. math::

    p(x) = \sum_{k=1}^K \pi_k \prod_{d=1}^D \mu_{kd}^{x_d} (1 - \mu_{kd})^{1 - x_d},
    \qquad \pi = \mathrm{softmax}(a), \quad \mu_{kd} = \sigma(l_{kd}),

so :math:`\log p(x | k) = x \cdot l_k - \sum_d \mathrm{softplus}(l_{kd})` and
:math:`\log p(x)` is an exact log-sum-exp over :math:`k`. In Pyro the component
``z`` is enumerated in parallel, so ``TraceEnum_ELBO(max_plate_nesting=1)`` with
the site-free :meth:`BernoulliMixture.guide` is exactly :math:`-\log p(x)` and
its gradient. EM (:mod:`inference.expectation_maximization`) uses the additive
statistics :math:`N_k = \sum_n r_{nk}`, :math:`S_{kd} = \sum_n r_{nk} x_{nd}` of
the responsibilities :math:`r_{nk} = p(k | x_n)` and the MAP M-step under a
symmetric :math:`\mathrm{Beta}(1+c, 1+c)` prior on each :math:`\mu_{kd}` and a
:math:`\mathrm{Dirichlet}(1+c_\pi)` prior on :math:`\pi` (``c`` pseudo-counts):

.. math::

    \mu_{kd} = \frac{S_{kd} + c}{N_k + 2c}, \qquad \pi_k = \frac{N_k + c_\pi}{N + K c_\pi},

so with :math:`c, c_\pi > 0` no probability is exactly 0 or 1.

References:
 [1] Bishop. Pattern Recognition and Machine Learning, section 9.3.3. Springer 2006.
 [2] Everitt, Hand. Finite Mixture Distributions, chapter 5. Chapman & Hall 1981.

Example::

    mix = BernoulliMixture(MixtureArchitecture(x_dim=784, num_components=20))
    mix.init_from_data(x)
    em = ExpectationMaximization(mix)   # inference.expectation_maximization
    for _ in range(30):
        em.loss_and_grads(x); em.end_epoch()
    mix.log_prob(x_test).mean()         # exact test log-likelihood, nats
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .errors import DataError, SpecError
from .specs import option

__all__ = ["MixtureArchitecture", "BernoulliMixture"]

INITS = ("data", "random")


@dataclass
class MixtureArchitecture:
    x_dim: Optional[int] = option(None, doc="pixels per image; None: read from the data", min=1)
    num_components: int = option(10, doc="mixture components K", min=1)
    init: str = option("data", doc="data: K random images blended with the data mean; random: N(0, init_scale^2) logits",
                       choices=INITS)
    init_scale: float = option(1.0, doc="spread of the random initial pixel logits (breaks the symmetry)", min=0)
    prior_count: float = option(0.1, doc="pseudo-counts c of the Beta(1+c, 1+c) prior on each pixel probability",
                                min_exclusive=0)
    weight_prior_count: float = option(1.0, doc="pseudo-counts of the Dirichlet(1+c) prior on the weights",
                                       min_exclusive=0)


class BernoulliMixture(nn.Module):
    """Mixture of ``K`` product-Bernoulli components over ``x_dim`` binary pixels.

    Parameters are unconstrained: ``weight_logits`` ``(K,)`` and ``pixel_logits`` ``(K, D)``,
    the latter drawn from torch's global RNG (seed it for reproducibility).
    """

    def __init__(self, arch: MixtureArchitecture):
        super().__init__()
        if arch.x_dim is None:
            raise SpecError("model.x_dim must be set (it is read from the data when training)")
        self.arch = arch
        self.weight_logits = nn.Parameter(torch.zeros(arch.num_components))
        self.pixel_logits = nn.Parameter(arch.init_scale * torch.randn(arch.num_components, arch.x_dim))

    def check_data(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as a ``(N, x_dim)`` tensor of 0/1 in the parameters' dtype, or a one-line :class:`DataError`."""
        if not torch.is_tensor(x) or x.dim() != 2 or x.shape[1] != self.arch.x_dim:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise DataError(f"x must be (N, {self.arch.x_dim}) binary images, got shape {shape}")
        bad = (x != 0) & (x != 1)
        if bool(bad.any()):
            raise DataError(f"x must hold only 0 and 1 (binarise the data first), found {x[bad][0].item()!r}")
        return x.to(self.pixel_logits.dtype)

    def _log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """log pi_k + log p(x_n | k), shape (N, K)."""
        x = self.check_data(x)
        log_px_k = x @ self.pixel_logits.T - F.softplus(self.pixel_logits).sum(-1)
        return F.log_softmax(self.weight_logits, -1) + log_px_k

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x_n)`` per datapoint, shape ``(N,)``."""
        return torch.logsumexp(self._log_joint(x), -1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior ``p(k | x_n)``, shape ``(N, K)``; rows sum to one."""
        return torch.softmax(self._log_joint(x), -1)

    def log_prior(self) -> torch.Tensor:
        """Log density of the Beta / Dirichlet priors of the M-step, up to a constant."""
        c, cw = self.arch.prior_count, self.arch.weight_prior_count
        pixels = F.logsigmoid(self.pixel_logits) + F.logsigmoid(-self.pixel_logits)
        return c * pixels.sum() + cw * F.log_softmax(self.weight_logits, -1).sum()

    def model(self, x: Optional[torch.Tensor] = None, batch_size: Optional[int] = None):
        """p(z) p(x | z) with ``z`` enumerated; with ``x=None`` draws ``batch_size`` images."""
        pyro.module("mixture", self)
        if x is not None:
            x = self.check_data(x)
        n = x.shape[0] if x is not None else batch_size
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Categorical(logits=self.weight_logits), infer={"enumerate": "parallel"})
            return pyro.sample("x", dist.Bernoulli(logits=self.pixel_logits[z]).to_event(1), obs=x)

    def guide(self, x: Optional[torch.Tensor] = None, batch_size: Optional[int] = None):
        """No latent sites: ``z`` is summed out exactly in the model."""
        pyro.module("mixture", self)

    @torch.no_grad()
    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` binary images and their component means ``sigmoid(l_z)``, each ``(n, x_dim)``."""
        z = torch.multinomial(torch.softmax(self.weight_logits, -1), n, replacement=True)
        means = torch.sigmoid(self.pixel_logits[z])
        return torch.bernoulli(means), means

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, blend: float = 0.5) -> None:
        """Each component the blend ``(1-blend) x_i + blend * mean(x)`` of a distinct random image
        ``x_i`` (torch's global RNG), smoothed as an M-step with ``N/K`` images per component; equal weights."""
        x = self.check_data(x)
        k, n = self.arch.num_components, x.shape[0]
        if n < k:
            raise DataError(f"init_from_data needs at least num_components={k} images, got {n}")
        rows = x[torch.randperm(n)[:k]]
        means = (1 - blend) * rows + blend * x.mean(0)
        self.maximize({"counts": torch.full_like(self.weight_logits, n / k), "sums": means * (n / k)})

    @torch.no_grad()
    def expected_statistics(self, x: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """E-step: ``({"counts": N_k (K,), "sums": S_kd (K, D)}`` summed over the batch, ``log p(x_n)`` (N,))."""
        x = self.check_data(x)
        log_joint = self._log_joint(x)
        log_px = torch.logsumexp(log_joint, -1)
        r = torch.exp(log_joint - log_px[:, None])
        return {"counts": r.sum(0), "sums": r.T @ x}, log_px

    @torch.no_grad()
    def maximize(self, stats: dict) -> None:
        """MAP M-step from summed statistics, written into the logits in place (see the module docstring)."""
        c, cw = self.arch.prior_count, self.arch.weight_prior_count
        counts, sums = stats["counts"], stats["sums"]
        # logits from counts in log space: finite even when a pixel is always on or always off
        self.pixel_logits.copy_(torch.log(sums + c) - torch.log((counts[:, None] - sums).clamp(min=0) + c))
        self.weight_logits.copy_(F.log_softmax(torch.log(counts + cw), -1))
