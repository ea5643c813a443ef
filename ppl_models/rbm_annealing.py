"""The annealing path of AIS for the RBMs of :mod:`ppl_models.rbm`: model maths, run by :mod:`inference.ais`.

Reference: R. Salakhutdinov, I. Murray, "On the quantitative analysis of deep
belief networks", ICML 2008.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import SpecError
from .rbm import bernoulli_draw

__all__ = ["BaseRateAnnealingPath", "VisibleLogitsAnnealingPath"]


class BaseRateAnnealingPath:
    r"""AIS path from a base-rate model to an RBM (Salakhutdinov & Murray 2008): an
    :class:`inference.energy.AnnealingPath`.

    The intermediate distributions are

    .. math::

        f_\beta(v) = (1-\beta) \log p_A^*(v) - \beta\, E_v(v)
                     + \sum_j \operatorname{softplus}\big(\beta\, x_j(v)\big),
        \qquad 0 \le \beta \le 1,

    with :math:`E_v` the model's ``visible_energy`` and :math:`x_j(v)` its
    ``hidden_logits``. Each :math:`f_\beta` is itself an RBM with weights scaled by
    :math:`\beta` (summed over its hidden units), so its transition is one
    block-Gibbs sweep of that RBM: :math:`h \sim \sigma(\beta x(v))`, then

    - binary units, :math:`\log p_A^*(v) = b_A^\top v` (``base`` = :math:`b_A`, logits):
      :math:`v \sim \sigma\big((1-\beta) b_A + \beta (b + W h)\big)`;
      :math:`\log Z_A = \sum_i \operatorname{softplus}(b_{A,i}) + H \log 2`;
    - Gaussian units, :math:`\log p_A^*(v) = -\sum_i (v_i - m_i)^2 / 2 s_i^2` (``base`` = :math:`m`,
      the model's own :math:`s`, so every intermediate keeps the variances :math:`s^2`):
      :math:`v \sim \mathcal N\big((1-\beta) m + \beta\,\text{visible\_mean}(h), s^2\big)`;
      :math:`\log Z_A = \sum_i \log s_i + \tfrac V2 \log 2\pi + H \log 2`.

    (:math:`H \log 2`: the hidden units are uniform and independent at :math:`\beta = 0`.)

    :param model: an :class:`RBM` or :class:`GaussianBernoulliRBM`.
    :param torch.Tensor base: the base model's visible parameter, shape ``(V,)`` (see ``model.base_rate``).
    """

    def __init__(self, model, base: torch.Tensor):
        base = torch.as_tensor(base)
        if base.shape != (model.num_visible,) or not bool(torch.isfinite(base).all()):
            raise SpecError(f"the AIS base must be a finite tensor of shape ({model.num_visible},), "
                            f"got shape {tuple(base.shape)}")
        self.model = model
        self.base = base = base.detach().to(next(model.parameters()))
        self.gaussian = model.visible_type == "gaussian"
        H = model.num_hidden
        if self.gaussian:
            self.s = model.sigma.detach()
            self.log_z_base = float(model.log_sigma.detach().sum() + model.num_visible * 0.5 * math.log(2 * math.pi)
                                    + H * math.log(2))
        else:
            self.log_z_base = float(F.softplus(base).sum() + H * math.log(2))
            self._prepare_binary()

    def _prepare_binary(self) -> None:
        # fixed per path: the bias mix b_A + beta (b - b_A) is then one vector op per temperature
        self._bias_gap = self.model.visible_bias.detach() - self.base
        self._weight_t = self.model.weight.detach().t()

    def base_log_density(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p_A^*(v)`, the base model's unnormalised log density."""
        if self.gaussian:
            return -(((v - self.base) / self.s) ** 2).sum(-1) / 2
        return v @ self.base

    def sample_base(self, num_runs: int) -> torch.Tensor:
        r"""``num_runs`` draws :math:`v \sim p_A`, shape ``(num_runs, V)``."""
        if self.gaussian:
            return self.base + self.s * torch.randn(num_runs, self.base.shape[0], dtype=self.base.dtype,
                                                    device=self.base.device)
        return bernoulli_draw(torch.sigmoid(self.base).expand(num_runs, -1).contiguous())

    def step(self, v: torch.Tensor, beta_prev: float, beta: float, transition: bool = True):
        r"""``(f_beta(v) - f_beta_prev(v), v')`` with :math:`v' \sim T_\beta(v)` when ``transition``
        (else None); the hidden inputs :math:`x(v)` (the one matrix product besides the transition's)
        serve both."""
        hidden_input = self.model.hidden_logits(v)
        tempered = beta * hidden_input  # the weight's softplus and the transition's hidden draw share it
        # a difference of small terms, not f_beta - f_beta_prev: float32 keeps its precision
        linear = -(beta - beta_prev) * (self.base_log_density(v) + self.model.visible_energy(v))
        log_w = linear + (F.softplus(tempered) - F.softplus(beta_prev * hidden_input)).sum(-1)
        return log_w, (self._transition(beta, tempered) if transition else None)

    def _transition(self, beta: float, tempered_hidden_input: torch.Tensor) -> torch.Tensor:
        h = bernoulli_draw(torch.sigmoid(tempered_hidden_input))
        if self.gaussian:
            mean = (1 - beta) * self.base + beta * self.model.visible_mean(h)
            return mean + self.s * torch.randn_like(mean)
        return bernoulli_draw(torch.sigmoid(self._mixed_visible_logits(beta, h)))

    def _mixed_visible_logits(self, beta: float, h: torch.Tensor) -> torch.Tensor:
        # (1 - beta) b_A + beta (b + W h), with the bias mix done on a vector and beta folded into the GEMM
        mixed_bias = torch.add(self.base, self._bias_gap, alpha=beta)
        return torch.addmm(mixed_bias, h, self._weight_t, alpha=beta)


class VisibleLogitsAnnealingPath(BaseRateAnnealingPath):
    r"""The same base-rate path for any binary two-block energy with ``visible_logits(h)`` (a deep Boltzmann
    machine's even block given its odd one; an RBM with tied copies of a layer): the transition draws the
    visible block from :math:`\sigma\big((1-\beta) b_A + \beta\, \text{visible\_logits}(h)\big)`, and the
    hidden block is summed out analytically in the weights as for an RBM.
    """

    def __init__(self, model, base: torch.Tensor):
        if model.visible_type != "bernoulli":
            raise SpecError(f"VisibleLogitsAnnealingPath needs binary visible units, the model's are {model.visible_type}")
        super().__init__(model, base)

    def _prepare_binary(self) -> None:
        pass  # nothing to precompute: the model's visible_logits does the products

    def _mixed_visible_logits(self, beta: float, h: torch.Tensor) -> torch.Tensor:
        return torch.lerp(self.base, self.model.visible_logits(h), beta)
