r"""Restricted Boltzmann machines: binary (Bernoulli-Bernoulli) and Gaussian-Bernoulli.

Both are energy functions over a visible layer :math:`v` and a binary hidden
layer :math:`h`, with :math:`p(v, h) = e^{-E(v, h)} / Z`. This module says what
the models are (energy, free energy, the two layer conditionals and the
gradient of the energy); how to sample them is :mod:`inference.block_gibbs`,
how to train them :mod:`inference.contrastive_divergence`, how to estimate
:math:`\log Z` :mod:`inference.ais` and :mod:`inference.exact_enumeration`.
Both implement :class:`inference.energy.AnnealableEnergy` (structurally: this
module imports nothing of :mod:`inference`), including the path of
intermediate distributions AIS anneals along (:class:`BaseRateAnnealingPath`).

Every method takes a batch: tensors of shape ``(..., num_visible)`` or
``(..., num_hidden)``; 0/1 states are floats.

References

1. G. E. Hinton, "Training products of experts by minimizing contrastive
   divergence", Neural Computation 14 (2002).
2. G. E. Hinton, "A practical guide to training restricted Boltzmann machines",
   UTML TR 2010-003.
3. K. Cho, A. Ilin, T. Raiko, "Improved learning of Gaussian-Bernoulli
   restricted Boltzmann machines", ICANN 2011.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .data.binarize import check_binary
from .errors import DataError, SpecError

__all__ = ["RBM", "GaussianBernoulliRBM"]


def bernoulli_draw(probs: torch.Tensor) -> torch.Tensor:
    """0/1 floats with P(1) = ``probs``: ``U < p`` with ``U ~ Uniform[0, 1)``, about twice as fast
    on CPU as ``torch.bernoulli`` (the samplers' other hot spot besides the GEMMs)."""
    return torch.rand_like(probs).lt_(probs)


def _affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    # addmm fuses the bias add into the GEMM: this is the sampler's hot path.
    if x.dim() == 2:
        return torch.addmm(bias, x, weight)
    return x @ weight + bias


class _BipartiteEnergy(nn.Module):
    """Parameters and the hidden side shared by both RBMs (binary hidden units)."""

    #: what the visible units are: "bernoulli" or "gaussian" (read by AIS and the samplers)
    visible_type = "bernoulli"
    #: role of each parameter name this family can have (see :attr:`parameter_roles`)
    _ROLES: ClassVar[Mapping[str, str]] = MappingProxyType({
        "weight": "coupling", "visible_bias": "visible_bias", "hidden_bias": "hidden_bias", "log_sigma": "visible_scale"})

    def __init__(self, num_visible: int, num_hidden: int, weight_scale: float = 0.01):
        super().__init__()
        for name, value in (("num_visible", num_visible), ("num_hidden", num_hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(weight_scale, (int, float)) and weight_scale >= 0 and math.isfinite(weight_scale)):
            raise SpecError(f"weight_scale must be a finite number >= 0, got {weight_scale!r}")
        self.weight = nn.Parameter(torch.randn(num_visible, num_hidden) * weight_scale)
        self.visible_bias = nn.Parameter(torch.zeros(num_visible))
        self.hidden_bias = nn.Parameter(torch.zeros(num_hidden))

    @property
    def num_visible(self) -> int:
        return self.weight.shape[0]

    @property
    def num_hidden(self) -> int:
        return self.weight.shape[1]

    @property
    def parameter_roles(self) -> dict[str, str]:
        """Name -> role of every parameter (a fixed ``log_sigma`` is a buffer and has none):
        ``weight`` "coupling", ``visible_bias`` "visible_bias", ``hidden_bias`` "hidden_bias",
        a learned ``log_sigma`` "visible_scale". Inference reads this, never the names: the
        optimiser decays the couplings, CD's sparsity penalty moves the hidden bias."""
        return {name: self._ROLES[name] for name, _ in self.named_parameters()}

    # -- pixel values <-> visible units (identities here; GaussianBernoulliRBM standardises)
    def to_visible(self, x: torch.Tensor) -> torch.Tensor:
        """Data values (pixels) -> the model's visible units: the identity for this model, so that
        callers treat every RBM alike (:class:`GaussianBernoulliRBM` standardises)."""
        return x

    def to_pixels(self, v: torch.Tensor) -> torch.Tensor:
        """Visible units -> data values (pixels), the inverse of :meth:`to_visible`: the identity here."""
        return v

    def log_jacobian(self) -> float:
        r""":math:`\log |dv/dx|` of :meth:`to_visible` per data vector, which turns a density of the
        visible units into one of the data: 0.0 here (the identity)."""
        return 0.0

    # -- hidden layer given visible: p(h_j = 1 | v) = sigmoid(hidden_logits(v)_j)
    def _visible_input(self, v: torch.Tensor) -> torch.Tensor:
        return v

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        """Total input :math:`c_j + \\sum_i \\tilde v_i W_{ij}` of each hidden unit."""
        return _affine(self._visible_input(v), self.weight, self.hidden_bias)

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        """:math:`p(h_j = 1 \\mid v)`, shape ``(..., num_hidden)``."""
        return torch.sigmoid(self.hidden_logits(v))

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """:math:`F(v) = -\\log \\sum_h e^{-E(v, h)}`, shape ``(...)``; :math:`p(v) = e^{-F(v)}/Z`."""
        return self.visible_energy(v) - F.softplus(self.hidden_logits(v)).sum(-1)

    def energy_gradients(self, v: torch.Tensor, h: torch.Tensor, weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        r"""Weighted sum over rows of :math:`\partial E(v, h) / \partial \theta`, for every trainable parameter.

        :math:`E` is linear in :math:`h`, so with ``h = hidden_probs(v)`` this is
        :math:`\partial F(v) / \partial \theta`, the Rao-Blackwellised statistic
        of CD / PCD (the log-likelihood gradient is the model average minus the
        data average of it). ``weights`` (one per row) default to ``1/n`` (the batch
        mean); with ``+1/n`` on data rows and ``-1/m`` on chain rows one call gives the
        whole CD gradient with a single GEMM. Keys are parameter names as in ``named_parameters``.
        """
        grads = self.energy_gradient_factors(v, h, weights)
        return {name: g if isinstance(g, torch.Tensor) else g[0].mm(g[1]) for name, g in grads.items()}

    def energy_gradient_factors(self, v: torch.Tensor, h: torch.Tensor,
                                weights: torch.Tensor | None = None) -> dict[str, torch.Tensor | tuple]:
        r""":meth:`energy_gradients` with the weight's gradient left as the factors ``(A, B)`` of its product
        :math:`A B` (``(V, rows)`` and ``(rows, H)``), so that an update can accumulate the product into the
        weight or its momentum inside the GEMM itself (``addmm_``) instead of writing the (V x H) gradient
        and reading it back (:func:`inference.folded_sgd.folded_sgd_step_`). Every other parameter's
        gradient is a tensor, as in :meth:`energy_gradients`."""
        v2, h2 = self._gradient_rows(v, h)
        if weights is None:
            weights = v2.new_full((v2.shape[0],), 1.0 / v2.shape[0])
        # dE/dW = -v h^T: negate the (rows x H) weights, not the (V x H) product (one pass over W fewer; the
        # same bits, as negation commutes exactly with products and sums)
        hw = h2 * weights.neg().unsqueeze(-1)
        grads = {"weight": (self._visible_input(v2).t(), hw), "hidden_bias": hw.sum(0),
                 **self._visible_gradients(v2, h2, weights)}
        return {name: grads[name] for name, p in self.named_parameters() if p.requires_grad}

    def _gradient_rows(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows ``(n, V)``, ``(n, H)`` at which the energy's gradient is taken (a model with tied copies
        of a layer sums them here)."""
        return v.reshape(-1, v.shape[-1]), h.reshape(-1, h.shape[-1])

    # -- AIS (inference.energy.AnnealableEnergy)
    def _base_rate_data(self, data: torch.Tensor) -> torch.Tensor:
        """``data`` checked (shape, finite, at least one row) and flattened to (N, V) in the model's dtype/device."""
        self._check_shape(data, "data")
        data = data.detach().reshape(-1, self.num_visible).to(self.weight)
        if data.shape[0] == 0:
            raise DataError("data for the base-rate model must have at least one row, got 0")
        return data

    def annealing_path(self, base: torch.Tensor):
        """AIS's path from the base-rate model with visible parameter ``base`` (:meth:`base_rate`) to
        this model: see :class:`ppl_models.rbm_annealing.BaseRateAnnealingPath`."""
        from .rbm_annealing import BaseRateAnnealingPath  # that module needs this one's bernoulli_draw

        return BaseRateAnnealingPath(self, base)

    def validate_parameters(self) -> None:
        """Raise :class:`SpecError` if a parameter holds NaN or infinity."""
        for name, p in self.named_parameters():
            finite = torch.isfinite(p)
            if not bool(finite.all()):
                index = tuple(int(i) for i in (~finite).nonzero()[0])
                raise SpecError(
                    f"{type(self).__name__} parameter {name} must be finite, found {p[index].item()} at index {index}"
                )

    def _check_shape(self, v, what: str) -> None:
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            found = v.dtype if isinstance(v, torch.Tensor) else type(v).__name__
            raise DataError(f"{what} must be a floating-point torch.Tensor, got {found}")
        if v.dim() < 1 or v.shape[-1] != self.num_visible:
            raise DataError(f"{what} must have shape (..., {self.num_visible}), got {tuple(v.shape)}")
        finite = torch.isfinite(v)
        if not bool(finite.all()):
            index = tuple(int(i) for i in (~finite).nonzero()[0])
            raise DataError(f"{what} must be finite, found {v[index].item()} at index {index}")


class RBM(_BipartiteEnergy):
    r"""Binary restricted Boltzmann machine (Smolensky 1986; Hinton 2002).

    .. math::

        E(v, h) = -v^\top W h - b^\top v - c^\top h, \qquad v \in \{0,1\}^V,\ h \in \{0,1\}^H

        p(h_j = 1 \mid v) = \sigma(c_j + v^\top W_{:j}), \quad
        p(v_i = 1 \mid h) = \sigma(b_i + W_{i:} h), \quad
        F(v) = -b^\top v - \sum_j \operatorname{softplus}(c_j + v^\top W_{:j}).

    Parameters: ``weight`` :math:`W` (V, H), ``visible_bias`` :math:`b`, ``hidden_bias`` :math:`c`.

    :param int num_visible: V.
    :param int num_hidden: H.
    :param float weight_scale: standard deviation of the initial weights (Hinton's guide: 0.01).

    Example::

        >>> rbm = RBM(4, 3)
        >>> rbm.free_energy(torch.ones(2, 4)).shape
        torch.Size([2])
    """

    visible_type = "bernoulli"

    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """:math:`E(v, h)`, broadcasting over leading dimensions."""
        return -((v @ self.weight) * h).sum(-1) - v @ self.visible_bias - h @ self.hidden_bias

    def visible_energy(self, v: torch.Tensor) -> torch.Tensor:
        """The part of :math:`E` that depends on :math:`v` alone: :math:`-b^\\top v`."""
        return -(v @ self.visible_bias)

    def visible_logits(self, h: torch.Tensor) -> torch.Tensor:
        """:math:`b_i + W_{i:} h`."""
        return _affine(h, self.weight.t(), self.visible_bias)

    def visible_probs(self, h: torch.Tensor) -> torch.Tensor:
        """:math:`p(v_i = 1 \\mid h)`."""
        return torch.sigmoid(self.visible_logits(h))

    visible_mean = visible_probs

    def sample_visible(self, h: torch.Tensor) -> torch.Tensor:
        """Draw :math:`v \\sim p(v \\mid h)` as 0/1 floats."""
        return bernoulli_draw(self.visible_probs(h))

    def hidden_free_energy(self, h: torch.Tensor) -> torch.Tensor:
        """:math:`-\\log \\sum_v e^{-E(v, h)} = -c^\\top h - \\sum_i \\operatorname{softplus}(b_i + W_{i:} h)`."""
        return -(h @ self.hidden_bias) - F.softplus(self.visible_logits(h)).sum(-1)

    def _visible_gradients(self, v, h, weights):
        return {"visible_bias": (weights @ v).neg_()}

    @torch.no_grad()
    def base_rate(self, data: torch.Tensor | None = None, smoothing: float = 0.05) -> torch.Tensor:
        r"""AIS base-rate logits :math:`b_A = \operatorname{logit}\big((\sum_n v_{ni} + \alpha) / (N + 2\alpha)\big)`,
        :math:`\alpha` = ``smoothing`` (a pseudo-count per state, so no logit is infinite); zeros
        (uniform) without ``data``.

        Only the means of ``data`` enter, so its values may be anywhere in :math:`[0, 1]`: grey images
        under dynamic binarisation (each pixel the probability of a 1) give the base rate of the binary
        images they stand for, with no binarising. Shape ``(V,)``, in the model's dtype and device.
        """
        if data is None:
            return self.weight.new_zeros(self.num_visible)
        if not (isinstance(smoothing, (int, float)) and not isinstance(smoothing, bool) and 0 < smoothing < math.inf):
            raise SpecError(f"smoothing must be a finite number > 0, got {smoothing!r}")
        data = self._base_rate_data(data)
        outside = (data < 0) | (data > 1)
        if bool(outside.any()):
            index = tuple(int(i) for i in outside.nonzero()[0])
            raise DataError(f"data for a binary base rate must lie in [0, 1] (0/1 values or their probabilities), "
                            f"found {data[index].item()} at index {index}")
        p = (data.sum(0) + smoothing) / (data.shape[0] + 2 * smoothing)
        return torch.logit(p)

    def validate_visible(self, v, what: str = "data") -> torch.Tensor:
        """Raise :class:`DataError` unless ``v`` is a finite 0/1 float tensor ``(..., V)``; return ``v``."""
        self._check_shape(v, what)
        return check_binary(v, what)


class GaussianBernoulliRBM(_BipartiteEnergy):
    r"""Gaussian-Bernoulli RBM: real-valued visible units with per-unit standard deviations.

    .. math::

        E(v, h) = \sum_i \frac{(v_i - b_i)^2}{2 s_i^2} - \sum_{ij} \frac{v_i}{s_i} W_{ij} h_j - c^\top h

        p(h_j = 1 \mid v) = \sigma\big(c_j + \textstyle\sum_i (v_i / s_i) W_{ij}\big), \quad
        p(v \mid h) = \mathcal N\big(b + s \odot (W h),\ \operatorname{diag}(s^2)\big),

        F(v) = \sum_i \frac{(v_i - b_i)^2}{2 s_i^2} - \sum_j \operatorname{softplus}\big(c_j + (v/s)^\top W_{:j}\big).

    The standard deviations are :math:`s = \exp(\text{log\_sigma})`: a trainable
    parameter when ``learn_sigma`` (Cho et al. 2011 learn :math:`\log s^2`; the
    parametrisation differs by a factor 2), otherwise a fixed buffer.

    :param int num_visible: V.
    :param int num_hidden: H.
    :param sigma: initial (or fixed) standard deviation, a float or a tensor (V,).
    :param bool learn_sigma: whether ``log_sigma`` is trained.
    :param float weight_scale: standard deviation of the initial weights.
    """

    visible_type = "gaussian"

    def __init__(self, num_visible: int, num_hidden: int, sigma=1.0, learn_sigma: bool = False, weight_scale: float = 0.01):
        super().__init__(num_visible, num_hidden, weight_scale)
        sigma = torch.as_tensor(sigma, dtype=self.weight.dtype)
        if sigma.dim() > 1 or (sigma.dim() == 1 and sigma.shape[0] != num_visible):
            raise SpecError(f"sigma must be a number or a tensor of shape ({num_visible},), got shape {tuple(sigma.shape)}")
        if not bool(torch.isfinite(sigma).all()) or bool((sigma <= 0).any()):
            raise SpecError(f"sigma must be finite and > 0, got {sigma.tolist()}")
        log_sigma = sigma.log().expand(num_visible).clone()
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)
        # data x <-> visible units v = (x - data_offset) / data_scale; identity until fit_standardization.
        # Always registered (under these names) so that the scaling is saved with the weights and
        # state_dicts saved when the catalogue attached these buffers from outside still load.
        self.register_buffer("data_offset", torch.zeros(num_visible))
        self.register_buffer("data_scale", torch.ones(num_visible))

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def _visible_input(self, v):
        return v / self.sigma

    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """:math:`E(v, h)`, broadcasting over leading dimensions."""
        return self.visible_energy(v) - ((self._visible_input(v) @ self.weight) * h).sum(-1) - h @ self.hidden_bias

    def visible_energy(self, v: torch.Tensor) -> torch.Tensor:
        """The part of :math:`E` that depends on :math:`v` alone: :math:`\\sum_i (v_i - b_i)^2 / 2 s_i^2`."""
        return ((v - self.visible_bias) / self.sigma).pow(2).sum(-1) / 2

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """:math:`E[v \\mid h] = b + s \\odot (W h)`."""
        return torch.addcmul(self.visible_bias, self.sigma, h @ self.weight.t())

    def sample_visible(self, h: torch.Tensor) -> torch.Tensor:
        """Draw :math:`v \\sim \\mathcal N(b + s \\odot W h, s^2)`."""
        mean = self.visible_mean(h)
        return mean.addcmul_(torch.randn_like(mean), self.sigma)

    def hidden_free_energy(self, h: torch.Tensor) -> torch.Tensor:
        """:math:`-\\log \\int e^{-E(v, h)} dv = -c^\\top h - \\sum_i (a_i b_i / s_i + a_i^2 / 2 + \\log(\\sqrt{2\\pi} s_i))`, :math:`a = W h`."""
        a = h @ self.weight.t()
        s = self.sigma
        gauss = (a * (self.visible_bias / s) + a.pow(2) / 2).sum(-1)
        return -(h @ self.hidden_bias) - gauss - (self.log_sigma.sum() + self.num_visible * 0.5 * math.log(2 * math.pi))

    def _visible_gradients(self, v, h, weights):
        s = self.sigma
        diff = (v - self.visible_bias) / s
        grads = {"visible_bias": -(weights @ (diff / s))}
        if isinstance(self.log_sigma, nn.Parameter):
            # dE/dlog s_i = -(v_i - b_i)^2 / s_i^2 + (v_i / s_i) (W h)_i
            grads["log_sigma"] = weights @ (-diff.pow(2) + (v / s) * (h @ self.weight.t()))
        return grads

    def validate_visible(self, v, what: str = "data") -> torch.Tensor:
        """Raise :class:`DataError` unless ``v`` is a finite float tensor ``(..., V)``; return ``v``."""
        self._check_shape(v, what)
        return v

    @torch.no_grad()
    def base_rate(self, data: torch.Tensor | None = None, smoothing: float = 0.05) -> torch.Tensor:
        """AIS base model's mean :math:`m`: the mean of ``data`` (rows of visible units), or the visible
        bias without data. ``smoothing`` is unused (Gaussian means need none), accepted so that every
        model answers the same call. Shape ``(V,)``, in the model's dtype and device."""
        if data is None:
            return self.visible_bias.detach().clone()
        return self._base_rate_data(data).mean(0)

    # -- standardisation: data x <-> visible units v = (x - data_offset) / data_scale
    #
    # Grey levels are usually z-scored per pixel before a GB-RBM sees them, with fixed unit variances
    # (Hinton's practical guide, Sec. 13.2; Cho et al. 2011). The map is part of the model (buffers
    # saved with the weights), so that a density of the data, not of the units, can be reported.
    @torch.no_grad()
    def fit_standardization(self, x: torch.Tensor, min_scale: float) -> GaussianBernoulliRBM:
        """Set ``data_offset`` to the mean of ``x`` (rows of data values) and ``data_scale`` to their
        standard deviation floored at ``min_scale`` (near-constant pixels, e.g. image borders, would
        otherwise get huge visible values). Returns the model."""
        if not (isinstance(min_scale, (int, float)) and not isinstance(min_scale, bool) and 0 < min_scale < math.inf):
            raise SpecError(f"min_scale must be a finite number > 0, got {min_scale!r}")
        self._check_shape(x, "data")
        x = x.detach().reshape(-1, self.num_visible).to(self.data_offset)
        if x.shape[0] < 2:
            raise DataError(f"standardisation needs at least 2 data rows for a standard deviation, got {x.shape[0]}")
        self.data_offset.copy_(x.mean(0))
        self.data_scale.copy_(x.std(0).clamp_min(min_scale))
        return self

    def to_visible(self, x: torch.Tensor) -> torch.Tensor:
        r"""Data values -> visible units: :math:`v = (x - \text{offset}) / \text{scale}`."""
        return (x - self.data_offset.to(x)) / self.data_scale.to(x)

    def to_pixels(self, v: torch.Tensor) -> torch.Tensor:
        r"""Visible units -> data values: :math:`x = v \cdot \text{scale} + \text{offset}`."""
        return v * self.data_scale.to(v) + self.data_offset.to(v)

    def log_jacobian(self) -> float:
        r""":math:`\log |dv/dx| = -\sum_i \log \text{scale}_i` per data vector, so that
        :math:`\log p(x) = \log p(v(x)) + \log |dv/dx|`: log-likelihoods are densities of the data
        values and do not depend on the scaling chosen."""
        return -float(self.data_scale.log().sum())

