r"""The fully visible Boltzmann machine: binary units with symmetric lateral weights and no hidden units.

.. math::

    E(v) = -\tfrac12 v^\top W v - b^\top v, \qquad W = W^\top,\ W_{ii} = 0, \qquad
    p(v) = e^{-E(v)} / Z,\quad v \in \{0, 1\}^D,

    p(v_i = 1 \mid v_{-i}) = \sigma\big(b_i + \textstyle\sum_{j} W_{ij} v_j\big).

Every unit is conditionally independent of the others given its neighbours, so
the model is sampled one unit (or one colour class of mutually unconnected
units) at a time: :mod:`inference.single_site_gibbs`. The log-likelihood
gradient is the classic Boltzmann-machine rule (Ackley, Hinton & Sejnowski
1985): for the pair parameter :math:`W_{ij} = W_{ji}`,
:math:`\partial \log p / \partial W_{ij} = \langle v_i v_j\rangle_{\text{data}} - \langle v_i v_j\rangle_{\text{model}}`,
the model term from persistent chains (PCD, Tieleman 2008).

So that CD / PCD, exact enumeration and AIS see it through the shared
interface (:class:`inference.energy.AnnealableEnergy`, structurally), the
model is a two-block energy whose *hidden block is empty*: ``num_hidden = 0``,
:math:`F(v) = E_v(v) = E(v)`, and :math:`\log Z` is enumerated over the
visible units (up to 20) or estimated by AIS along the base-rate path
:math:`f_\beta(v) = -\beta E(v) + (1 - \beta) b_A^\top v`, whose transitions are
single-site Gibbs sweeps of the tempered model (the sweep is given to the
model as ``transition``; this module holds no sampler).

References

1. D. Ackley, G. Hinton, T. Sejnowski, "A learning algorithm for Boltzmann machines", Cognitive Science 9 (1985).
2. T. Tieleman, "Training restricted Boltzmann machines using approximations to the likelihood gradient", ICML 2008.
3. R. Salakhutdinov, I. Murray, "On the quantitative analysis of deep belief networks", ICML 2008 (AIS, base rate).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .data.binarize import check_binary
from .errors import DataError, SpecError

__all__ = ["FVBMAnnealingPath", "FullyVisibleBM", "TemperedFVBM"]

#: largest departure from symmetry (relative to the largest weight) validate_parameters accepts
SYMMETRY_TOLERANCE = 1e-5


class FullyVisibleBM(nn.Module):
    r"""Fully visible Boltzmann machine over ``num_visible`` binary units.

    Parameters: ``weight`` :math:`W` (D, D), symmetric with a zero diagonal (kept so by training:
    :meth:`energy_gradients` is symmetric with a zero diagonal), ``visible_bias`` :math:`b`.

    :param int num_visible: D.
    :param float weight_scale: std of the initial lateral weights.
    :param transition: ``transition(model, v) -> v'``, a Gibbs sweep leaving ``model``'s distribution
        invariant (e.g. :func:`inference.single_site_gibbs.gibbs_sweep`), used by AIS's path; the
        catalogue supplies it.

    Example::

        >>> bm = FullyVisibleBM(5)
        >>> bm.free_energy(torch.ones(2, 5)).shape
        torch.Size([2])
    """

    visible_type = "bernoulli"
    num_hidden = 0  # an empty hidden block: F(v) = E(v)

    def __init__(self, num_visible: int, weight_scale: float = 0.01, transition: Callable | None = None):
        super().__init__()
        if isinstance(num_visible, bool) or not isinstance(num_visible, int) or num_visible < 1:
            raise SpecError(f"num_visible must be a positive integer, got {num_visible!r}")
        if not (isinstance(weight_scale, (int, float)) and weight_scale >= 0 and math.isfinite(weight_scale)):
            raise SpecError(f"weight_scale must be a finite number >= 0, got {weight_scale!r}")
        a = torch.randn(num_visible, num_visible) * weight_scale
        self.weight = nn.Parameter(torch.triu(a, 1) + torch.triu(a, 1).t())
        self.visible_bias = nn.Parameter(torch.zeros(num_visible))
        self.transition = transition

    @property
    def num_visible(self) -> int:
        return self.weight.shape[0]

    @property
    def parameter_roles(self) -> dict[str, str]:
        """``weight`` is the coupling (weight decay applies to it), ``visible_bias`` the visible bias."""
        return {"weight": "coupling", "visible_bias": "visible_bias"}

    # -- pixel values <-> units: the identity (binary units), as for the RBM
    def to_visible(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def to_pixels(self, v: torch.Tensor) -> torch.Tensor:
        return v

    def log_jacobian(self) -> float:
        return 0.0

    # -- the energy
    def energy(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`E(v) = -\tfrac12 v^\top W v - b^\top v`, shape ``(...)``."""
        return -0.5 * ((v @ self.weight) * v).sum(-1) - v @ self.visible_bias

    visible_energy = energy
    free_energy = energy  # no hidden units to sum out

    def conditional_logits(self, v: torch.Tensor, units=None) -> torch.Tensor:
        r""":math:`b_i + \sum_j W_{ij} v_j`, the log-odds of :math:`p(v_i = 1 \mid v_{-i})` (the zero
        diagonal keeps :math:`v_i` out of its own input), for ``units`` (an index tensor; all when None)."""
        if units is None:
            return torch.addmm(self.visible_bias, v, self.weight) if v.dim() == 2 else v @ self.weight + self.visible_bias
        return v @ self.weight[:, units] + self.visible_bias[units]

    @torch.no_grad()
    def pseudo_log_likelihood(self, v: torch.Tensor) -> torch.Tensor:
        r"""Besag's pseudo-log-likelihood :math:`\sum_i \log p(v_i \mid v_{-i})`, exact (every unit), shape ``(...)``."""
        logits = self.conditional_logits(v)
        return -F.binary_cross_entropy_with_logits(logits, v, reduction="none").sum(-1)

    # -- the empty hidden block (inference.energy.TwoBlockEnergy)
    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        return v.new_zeros(v.shape[:-1] + (0,))

    hidden_probs = hidden_logits

    def hidden_free_energy(self, h: torch.Tensor) -> torch.Tensor:
        raise SpecError("a fully visible BM has no hidden units to condition on: enumerate its visible units "
                        "(log_partition(model, layer='visible'))")

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        raise SpecError("a fully visible BM has no hidden units: E[v_i | v_-i] is sigmoid(conditional_logits(v))")

    def sample_visible(self, h: torch.Tensor) -> torch.Tensor:
        raise SpecError("a fully visible BM is sampled unit by unit (inference.single_site_gibbs), not given h")

    def energy_gradients(self, v: torch.Tensor, h: torch.Tensor | None = None,
                         weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        r"""Weighted sum over rows of :math:`\partial E(v) / \partial\theta` (``h`` is ignored: it is empty).

        For the lateral weights the derivative is taken with respect to the pair parameter
        :math:`W_{ij} = W_{ji}` (one free number per pair), :math:`-v_i v_j`, written into both
        entries and zero on the diagonal, so that an SGD step keeps :math:`W` symmetric with a zero
        diagonal; for the biases :math:`-v_i`. ``weights`` default to ``1/n``.
        """
        v2 = v.reshape(-1, v.shape[-1])
        if weights is None:
            weights = v2.new_full((v2.shape[0],), 1.0 / v2.shape[0])
        pair = (v2 * weights.unsqueeze(-1)).t().mm(v2)
        pair = (pair + pair.t()).mul_(-0.5)  # exactly symmetric (a GEMM need not be)
        pair.fill_diagonal_(0.0)
        grads = {"weight": pair, "visible_bias": (weights @ v2).neg_()}
        return {name: grads[name] for name, p in self.named_parameters() if p.requires_grad}

    # -- checks
    def validate_visible(self, v, what: str = "data") -> torch.Tensor:
        """Raise :class:`DataError` unless ``v`` is a finite 0/1 float tensor ``(..., D)``; return ``v``."""
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            found = v.dtype if isinstance(v, torch.Tensor) else type(v).__name__
            raise DataError(f"{what} must be a floating-point torch.Tensor, got {found}")
        if v.dim() < 1 or v.shape[-1] != self.num_visible:
            raise DataError(f"{what} must have shape (..., {self.num_visible}), got {tuple(v.shape)}")
        return check_binary(v, what)

    def validate_parameters(self) -> None:
        """Raise :class:`SpecError` if a parameter is not finite, or ``weight`` is not symmetric with a zero diagonal."""
        for name, p in self.named_parameters():
            if not bool(torch.isfinite(p).all()):
                index = tuple(int(i) for i in (~torch.isfinite(p)).nonzero()[0])
                raise SpecError(f"FullyVisibleBM parameter {name} must be finite, found {p[index].item()} at index {index}")
        w = self.weight.detach()
        scale = float(w.abs().max()) or 1.0
        if float((w - w.t()).abs().max()) > SYMMETRY_TOLERANCE * scale or bool((w.diagonal() != 0).any()):
            raise SpecError("FullyVisibleBM weight must be symmetric with a zero diagonal (lateral weights W_ij = W_ji, "
                            "no self-connections)")

    # -- AIS (inference.energy.AnnealableEnergy)
    @torch.no_grad()
    def base_rate(self, data: torch.Tensor | None = None, smoothing: float = 0.05) -> torch.Tensor:
        r"""Base-rate logits :math:`\operatorname{logit}((\sum_n v_{ni} + \alpha) / (N + 2\alpha))`; zeros without data."""
        if data is None:
            return self.weight.new_zeros(self.num_visible)
        if not (isinstance(smoothing, (int, float)) and not isinstance(smoothing, bool) and 0 < smoothing < math.inf):
            raise SpecError(f"smoothing must be a finite number > 0, got {smoothing!r}")
        data = data.detach().reshape(-1, self.num_visible).to(self.weight)
        if data.shape[0] == 0:
            raise DataError("data for the base-rate model must have at least one row, got 0")
        if bool(((data < 0) | (data > 1)).any()):
            raise DataError("data for a binary base rate must lie in [0, 1]")
        return torch.logit((data.sum(0) + smoothing) / (data.shape[0] + 2 * smoothing))

    def annealing_path(self, base: torch.Tensor) -> FVBMAnnealingPath:
        """AIS's path from the factorised base-rate model (logits ``base``) to this model."""
        if self.transition is None:
            raise SpecError("AIS for a fully visible BM needs its Gibbs sweep: set model.transition "
                            "(e.g. inference.single_site_gibbs.gibbs_sweep)")
        return FVBMAnnealingPath(self, base, self.transition)


class TemperedFVBM:
    r"""The intermediate model :math:`f_\beta(v) = -\beta E(v) + (1 - \beta) b_A^\top v`: an FVBM with
    weights :math:`\beta W` and biases :math:`\beta b + (1 - \beta) b_A` (what a sweep needs of it)."""

    def __init__(self, model: FullyVisibleBM, base: torch.Tensor, beta: float):
        self.model, self.base, self.beta = model, base, beta
        self.num_visible = model.num_visible

    def conditional_logits(self, v: torch.Tensor, units=None) -> torch.Tensor:
        base = self.base if units is None else self.base[units]
        return self.model.conditional_logits(v, units) * self.beta + base * (1 - self.beta)


class FVBMAnnealingPath:
    r"""Salakhutdinov & Murray's base-rate path for a fully visible BM (:class:`inference.energy.AnnealingPath`).

    :math:`p_A(v) = \prod_i \sigma(b_{A,i})^{v_i} \sigma(-b_{A,i})^{1 - v_i}`,
    :math:`\log Z_A = \sum_i \operatorname{softplus}(b_{A,i})`; the log-weight increment from
    :math:`\beta'` to :math:`\beta` is :math:`(\beta - \beta')\,(-E(v) - b_A^\top v)`; the transition is one
    sweep (``transition``) of :class:`TemperedFVBM` at :math:`\beta`.
    """

    def __init__(self, model: FullyVisibleBM, base: torch.Tensor, transition: Callable):
        self.model, self.base, self.transition = model, base.to(model.weight), transition
        self.log_z_base = float(F.softplus(self.base.double()).sum())

    @torch.no_grad()
    def sample_base(self, num_runs: int) -> torch.Tensor:
        probs = torch.sigmoid(self.base).expand(num_runs, -1)
        return torch.rand_like(probs).lt_(probs)

    @torch.no_grad()
    def step(self, v: torch.Tensor, beta_prev: float, beta: float, transition: bool = True):
        increment = (beta - beta_prev) * (-self.model.energy(v).double() - (v @ self.base).double())
        v_next = self.transition(TemperedFVBM(self.model, self.base, beta), v) if transition else None
        return increment, v_next
