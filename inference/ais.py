r"""Annealed importance sampling (AIS) for the log partition function of an RBM.

Following Salakhutdinov & Murray (2008), the chain of distributions runs from
a *base-rate* model :math:`p_A` with no hidden interactions (visible biases from
the data's marginals) to the RBM :math:`p_B`, through

.. math::

    f_\beta(v) = (1-\beta) \log p_A^*(v) - \beta\, E_v(v)
                 + \sum_j \operatorname{softplus}\big(\beta\, x_j(v)\big),
    \qquad 0 = \beta_0 < \beta_1 < \dots < \beta_K = 1,

where :math:`E_v` is the part of the energy depending on :math:`v` alone
(``visible_energy``) and :math:`x_j(v)` the input of hidden unit :math:`j`
(``hidden_logits``). Each :math:`f_\beta` is itself an RBM with weights scaled
by :math:`\beta`, so the transition at :math:`\beta_k` is one block-Gibbs
sweep of that RBM. With :math:`v^{(1)} \sim p_A` and
:math:`v^{(k+1)} \sim T_k(v^{(k)})`, the importance weight of a run is
:math:`\log w = \sum_{k=1}^{K} f_{\beta_k}(v^{(k)}) - f_{\beta_{k-1}}(v^{(k)})`, and
:math:`\hat Z_B = Z_A \cdot \operatorname{mean}(w)` is unbiased.

Binary visible units: :math:`\log p_A^*(v) = b_A^\top v` with
:math:`b_A = \operatorname{logit}` of the smoothed data means. Gaussian visible
units: :math:`\log p_A^*(v) = -\sum_i (v_i - m_i)^2 / 2 s_i^2` with the data
mean :math:`m` and the model's own :math:`s`, so every intermediate keeps the
variances :math:`s^2` and :math:`v \mid h` is
:math:`\mathcal N((1-\beta) m + \beta\,\text{visible\_mean}(h), s^2)`.
:math:`\log Z_A` includes :math:`H \log 2` for the hidden units at
:math:`\beta = 0`.

Reference: R. Salakhutdinov, I. Murray, "On the quantitative analysis of deep
belief networks", ICML 2008; R. Neal, "Annealed importance sampling",
Statistics and Computing 11 (2001).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from .errors import SpecError

from .block_gibbs import bernoulli_draw

__all__ = ["AISResult", "ais_log_partition", "base_rate_visible", "default_schedule", "mean_log_likelihood"]


@dataclasses.dataclass
class AISResult:
    """:ivar float log_z: the estimate :math:`\\log \\hat Z`.
    :ivar float log_z_std: standard deviation of :math:`\\log \\hat Z` (delta method:
        std of the weights / (sqrt(runs) * mean weight)).
    :ivar float log_z_lower: :math:`\\log(\\hat Z - 3\\hat\\sigma)` (-inf when that is <= 0), Salakhutdinov & Murray's interval.
    :ivar float log_z_upper: :math:`\\log(\\hat Z + 3\\hat\\sigma)`.
    :ivar torch.Tensor log_weights: per run.
    :ivar float log_z_base: :math:`\\log Z_A`.
    :ivar int num_temperatures: :math:`K + 1`.
    """

    log_z: float
    log_z_std: float
    log_z_lower: float
    log_z_upper: float
    log_weights: torch.Tensor
    log_z_base: float
    num_temperatures: int


def default_schedule(num_temperatures: int = 14500, *, like: torch.Tensor | None = None) -> torch.Tensor:
    """Salakhutdinov & Murray's schedule, scaled to ``num_temperatures``: 500 / 4000 / 10000 of
    14500 spaced uniformly in [0, 0.5], [0.5, 0.9], [0.9, 1]."""
    if isinstance(num_temperatures, bool) or not isinstance(num_temperatures, int) or num_temperatures < 3:
        raise SpecError(f"num_temperatures must be an integer >= 3, got {num_temperatures!r}")
    n1 = max(1, round(num_temperatures * 500 / 14500))
    n2 = max(1, round(num_temperatures * 4000 / 14500))
    n3 = max(1, num_temperatures - n1 - n2)
    kwargs = {"dtype": torch.float64, "device": like.device if like is not None else None}
    return torch.cat([
        torch.linspace(0, 0.5, n1 + 1, **kwargs)[:-1],
        torch.linspace(0.5, 0.9, n2 + 1, **kwargs)[:-1],
        torch.linspace(0.9, 1.0, n3, **kwargs),
    ])


def _check_schedule(betas) -> torch.Tensor:
    betas = torch.as_tensor(betas, dtype=torch.float64)
    if betas.dim() != 1 or betas.numel() < 2:
        raise SpecError(f"schedule must be a 1-d sequence of at least 2 temperatures, got shape {tuple(betas.shape)}")
    if not bool(torch.isfinite(betas).all()) or betas[0] != 0 or betas[-1] != 1:
        raise SpecError(f"schedule must start at 0 and end at 1, got {betas[0].item()!r} ... {betas[-1].item()!r}")
    steps = betas[1:] - betas[:-1]
    if bool((steps <= 0).any()):
        i = int((steps <= 0).nonzero()[0])
        raise SpecError(
            f"schedule must be strictly increasing in [0, 1], got {betas[i].item()!r} then {betas[i + 1].item()!r} at index {i + 1}"
        )
    return betas


@torch.no_grad()
def base_rate_visible(model, data: torch.Tensor | None, smoothing: float = 0.05) -> torch.Tensor:
    """The base-rate model's visible parameter: logits of smoothed data means (binary) or the data mean (Gaussian).

    Without data: zero logits (uniform) or the model's visible bias. ``smoothing`` is a pseudo-count
    per state, so no logit is infinite.
    """
    w = model.weight
    if data is None:
        return w.new_zeros(model.num_visible) if model.visible_type == "bernoulli" else model.visible_bias.detach().clone()
    model.validate_visible(data, "data")
    data = data.reshape(-1, model.num_visible).to(w)
    if model.visible_type == "gaussian":
        return data.mean(0)
    p = (data.sum(0) + smoothing) / (data.shape[0] + 2 * smoothing)
    return torch.logit(p)


class _AnnealedRBM:
    """Intermediate distributions f_beta and their Gibbs transitions (see the module docstring)."""

    def __init__(self, model, base):
        self.model, self.base = model, base
        self.gaussian = model.visible_type == "gaussian"
        H = model.num_hidden
        if self.gaussian:
            s = model.sigma.detach()
            self.s = s
            self.log_z_base = float(model.log_sigma.sum() + model.num_visible * 0.5 * math.log(2 * math.pi) + H * math.log(2))
        else:
            self.log_z_base = float(F.softplus(base).sum() + H * math.log(2))

    def base_log_density(self, v):
        if self.gaussian:
            return -(((v - self.base) / self.s) ** 2).sum(-1) / 2
        return v @ self.base

    def sample_base(self, num_runs):
        if self.gaussian:
            return self.base + self.s * torch.randn(num_runs, self.base.shape[0], dtype=self.base.dtype, device=self.base.device)
        return bernoulli_draw(torch.sigmoid(self.base).expand(num_runs, -1).contiguous())

    def log_f_step(self, v, beta_prev, beta, hidden_input):
        """f_beta(v) - f_beta_prev(v), as a difference of small terms (float32 keeps its precision)."""
        step = beta - beta_prev
        linear = -step * (self.base_log_density(v) + self.model.visible_energy(v))
        return linear + (F.softplus(beta * hidden_input) - F.softplus(beta_prev * hidden_input)).sum(-1)

    def transition(self, beta, hidden_input):
        h = bernoulli_draw(torch.sigmoid(beta * hidden_input))
        if self.gaussian:
            mean = (1 - beta) * self.base + beta * self.model.visible_mean(h)
            return mean + self.s * torch.randn_like(mean)
        # (1 - beta) b_A + beta (b + W h), with the bias mix done on a vector and beta folded into the GEMM
        mixed_bias = torch.add(self.base, self.model.visible_bias.detach() - self.base, alpha=beta)
        return bernoulli_draw(torch.sigmoid(torch.addmm(mixed_bias, h, self.model.weight.detach().t(), alpha=beta)))


@torch.no_grad()
def ais_log_partition(model, data: torch.Tensor | None = None, *, num_runs: int = 100, schedule=None,
                      num_temperatures: int = 14500, base=None) -> AISResult:
    """Estimate :math:`\\log Z` of ``model`` (``RBM`` or ``GaussianBernoulliRBM``) by AIS, all runs in parallel.

    :param torch.Tensor data: training data for the base-rate model (see :func:`base_rate_visible`).
    :param int num_runs: independent AIS runs (importance samples).
    :param schedule: increasing temperatures from 0 to 1 (default :func:`default_schedule`).
    :param int num_temperatures: length of the default schedule.
    :param torch.Tensor base: the base model's visible parameter, overriding ``data``.
    :returns: :class:`AISResult`.

    Example::

        >>> from ppl_models.rbm import RBM
        >>> result = ais_log_partition(RBM(6, 3), num_runs=20, num_temperatures=100)
        >>> abs(result.log_z - 9 * math.log(2)) < 0.05   # weights ~ 0: log Z ~ (6 + 3) log 2
        True
    """
    if isinstance(num_runs, bool) or not isinstance(num_runs, int) or num_runs < 1:
        raise SpecError(f"num_runs must be a positive integer, got {num_runs!r}")
    betas = _check_schedule(default_schedule(num_temperatures) if schedule is None else schedule)
    model.validate_parameters()
    base = base_rate_visible(model, data) if base is None else torch.as_tensor(base).to(model.weight)
    path = _AnnealedRBM(model, base.detach())
    v = path.sample_base(num_runs)
    log_w = torch.zeros(num_runs, dtype=torch.float64, device=v.device)
    beta_list = betas.tolist()
    for k in range(1, len(beta_list)):
        hidden_input = model.hidden_logits(v)  # shared by the weight update and the transition
        log_w += path.log_f_step(v, beta_list[k - 1], beta_list[k], hidden_input).double()
        if k < len(beta_list) - 1:
            v = path.transition(beta_list[k], hidden_input)
    log_mean_w = torch.logsumexp(log_w, 0) - math.log(num_runs)
    log_z = path.log_z_base + float(log_mean_w)
    # relative std of the mean weight, then the +-3 sigma interval in log space
    rel_std = float((log_w - log_mean_w).exp().std(unbiased=num_runs > 1) / math.sqrt(num_runs)) if num_runs > 1 else float("nan")
    lower = log_z + math.log(1 - 3 * rel_std) if rel_std < 1 / 3 else float("-inf")
    upper = log_z + math.log1p(3 * rel_std) if rel_std == rel_std else float("nan")
    return AISResult(
        log_z=log_z,
        log_z_std=rel_std,
        log_z_lower=lower,
        log_z_upper=upper,
        log_weights=log_w,
        log_z_base=path.log_z_base,
        num_temperatures=len(beta_list),
    )


@torch.no_grad()
def mean_log_likelihood(model, data: torch.Tensor, log_z: float) -> float:
    """Average :math:`\\log p(v) = -F(v) - \\log Z` over the rows of ``data`` (with an AIS or exact ``log_z``)."""
    model.validate_visible(data, "data")
    return float(-model.free_energy(data).double().mean() - log_z)
