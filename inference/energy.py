r"""The interface between energy models and the inference written against them.

An energy model defines :math:`p(v, h) = e^{-E(v, h)} / Z` over a *visible*
block :math:`v` (binary or real, the block that is observed and can be
clamped) and a *hidden* block :math:`h \in \{0, 1\}^H`, the units of each
block conditionally independent given the other. An RBM is one; so are a deep
Boltzmann machine (odd vs even layers) and a fully visible Boltzmann machine
after a bipartite colouring. The algorithms of this package see a model only
through these protocols, never through a concrete attribute name, so a new
model of this shape is a new energy function, not new inference:

- :class:`TwoBlockEnergy`: block Gibbs (:class:`inference.block_gibbs.BlockGibbs`),
  CD / PCD (:mod:`inference.contrastive_divergence`), exact enumeration
  (:mod:`inference.exact_enumeration`).
- :class:`AnnealableEnergy`: annealed importance sampling of :math:`\log Z`
  (:func:`inference.ais.ais_log_partition`), through an :class:`AnnealingPath`.

These are structural types (:class:`typing.Protocol`): a model satisfies them
by having the members, without inheriting from them. Every method takes a
batch, tensors of shape ``(..., num_visible)`` or ``(..., num_hidden)``, and
0/1 states are floats.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch

__all__ = ["PARAMETER_ROLES", "AnnealableEnergy", "AnnealingPath", "TwoBlockEnergy"]

#: the roles a parameter can have in :attr:`TwoBlockEnergy.parameter_roles`
PARAMETER_ROLES = ("coupling", "visible_bias", "hidden_bias", "visible_scale")


@runtime_checkable
class TwoBlockEnergy(Protocol):
    r"""An energy over two conditionally independent blocks, with binary hidden units.

    With :math:`x_j(v)` the total input of hidden unit :math:`j`
    (``hidden_logits``) and :math:`E_v(v)` the part of the energy that depends
    on :math:`v` alone (``visible_energy``), the energy is linear in :math:`h`,

    .. math::

        E(v, h) = E_v(v) - \sum_j h_j\, x_j(v), \qquad
        p(h_j = 1 \mid v) = \sigma\big(x_j(v)\big), \qquad
        F(v) = -\log \sum_h e^{-E(v, h)} = E_v(v) - \sum_j \operatorname{softplus}\big(x_j(v)\big),

    and :math:`p(v) = e^{-F(v)} / Z`. Summing out the other block instead gives
    :math:`F_h(h) = -\log \sum_v e^{-E(v, h)}` (an integral for real-valued
    :math:`v`), and :math:`Z = \sum_h e^{-F_h(h)}`.

    :ivar int num_visible: :math:`V`, units in the visible block.
    :ivar int num_hidden: :math:`H`, units in the hidden block.
    :ivar str visible_type: ``"bernoulli"`` (0/1 visible units, enumerable) or
        ``"gaussian"`` (real-valued visible units).
    :ivar dict parameter_roles: name -> role of every parameter in
        ``named_parameters()`` (exactly those: a fixed buffer has no role), the role one of
        :data:`PARAMETER_ROLES`: ``"coupling"`` (the interaction between the blocks, e.g. an
        RBM's :math:`W`; what weight decay applies to), ``"visible_bias"``, ``"hidden_bias"``
        (what a sparsity penalty moves) or ``"visible_scale"`` (e.g. learned log standard
        deviations of Gaussian units). The one place that says which parameter is which.
    """

    num_visible: int
    num_hidden: int
    visible_type: str
    parameter_roles: dict[str, str]

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """The model's parameters (an ``nn.Module`` has it): the first one fixes the dtype and
        device of every tensor the inference creates."""
        ...

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        """:math:`x(v)`, the total input of each hidden unit, shape ``(..., H)``; costs one matrix product."""
        ...

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        """:math:`p(h_j = 1 \\mid v) = \\sigma(x_j(v))`; must equal ``sigmoid(hidden_logits(v))``."""
        ...

    def sample_visible(self, h: torch.Tensor) -> torch.Tensor:
        """A draw of :math:`v \\sim p(v \\mid h)`, shape ``(..., V)``."""
        ...

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """:math:`E[v \\mid h]` (the unit probabilities for binary units)."""
        ...

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """:math:`F(v) = -\\log \\sum_h e^{-E(v, h)}`, shape ``(...)``."""
        ...

    def hidden_free_energy(self, h: torch.Tensor) -> torch.Tensor:
        """:math:`F_h(h) = -\\log \\sum_v e^{-E(v, h)}` (integral for real :math:`v`), shape ``(...)``."""
        ...

    def visible_energy(self, v: torch.Tensor) -> torch.Tensor:
        """:math:`E_v(v)`, the part of :math:`E` that depends on :math:`v` alone, shape ``(...)``."""
        ...

    def energy_gradients(self, v: torch.Tensor, h: torch.Tensor,
                         weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """:math:`\\sum_n w_n\\, \\partial E(v_n, h_n) / \\partial \\theta` for every trainable parameter
        (keys as in ``named_parameters``; ``weights`` default ``1/n``). With ``h = hidden_probs(v)``
        this is :math:`\\partial F(v) / \\partial \\theta`, the statistic of CD / PCD.

        Optional, used by CD's folded SGD update when present (not a member of this protocol):
        ``energy_gradient_factors(v, h, weights)``, the same gradients with a coupling's left as the
        factors ``(A, B)`` of its product, which the update accumulates by its GEMM (no gradient tensor
        written; :func:`inference.folded_sgd.folded_sgd_step_`)."""
        ...

    def validate_visible(self, v: torch.Tensor, what: str = "data") -> torch.Tensor:
        """Return ``v`` if it is a finite float tensor ``(..., V)`` of valid visible states, else raise
        a one-line :class:`~inference.errors.DataError` naming ``what``."""
        ...

    def validate_parameters(self) -> None:
        """Raise a one-line :class:`~inference.errors.SpecError` if a parameter is not finite."""
        ...


@runtime_checkable
class AnnealingPath(Protocol):
    r"""Intermediate distributions :math:`f_\beta`, :math:`0 \le \beta \le 1`, from a tractable base
    model :math:`p_A` (:math:`\beta = 0`) to the model :math:`p_B` (:math:`\beta = 1`), for AIS.

    Each :math:`f_\beta` (an unnormalised log density of :math:`v`) must have a
    transition :math:`T_\beta` that leaves it invariant; the AIS weight of a run
    :math:`v^{(1)} \sim p_A`, :math:`v^{(k+1)} \sim T_{\beta_k}(v^{(k)})` is
    :math:`\log w = \sum_{k=1}^{K} f_{\beta_k}(v^{(k)}) - f_{\beta_{k-1}}(v^{(k)})`.

    :ivar float log_z_base: :math:`\log Z_A`, the base model's log normaliser (of :math:`f_0`).
    """

    log_z_base: float

    def sample_base(self, num_runs: int) -> torch.Tensor:
        """``num_runs`` independent draws of :math:`v \\sim p_A`, shape ``(num_runs, V)``."""
        ...

    def step(self, v: torch.Tensor, beta_prev: float, beta: float,
             transition: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(f_beta(v) - f_beta_prev(v), v')``: the log-weight increment of each row of ``v`` and,
        when ``transition``, :math:`v' \\sim T_\\beta(v)` (else None). The two share the hidden
        inputs :math:`x(v)`: one step costs the matrix products of one Gibbs sweep, no more."""
        ...


@runtime_checkable
class AnnealableEnergy(TwoBlockEnergy, Protocol):
    r"""A :class:`TwoBlockEnergy` whose :math:`\log Z` AIS can estimate (Salakhutdinov & Murray 2008).

    The base model :math:`p_A` has no hidden interactions; its one visible
    parameter (``base``) is fitted to the data in the model's visible units, so
    that :math:`p_A` is already close to :math:`p_B`.
    """

    def base_rate(self, data: torch.Tensor | None = None, smoothing: float = 0.05) -> torch.Tensor:
        r"""The base model's visible parameter, shape ``(V,)``, fitted to ``data`` (rows of visible units).

        Binary units: :math:`\operatorname{logit}` of the smoothed means
        :math:`(\sum_n v_{ni} + \alpha) / (N + 2 \alpha)`, :math:`\alpha` = ``smoothing`` (a
        pseudo-count per state, so no logit is infinite). Only the means are used, so
        grey data in :math:`[0, 1]` (the probabilities of dynamically binarised images)
        need no binarising. Gaussian units: the data mean. Without data: zero logits
        (the uniform distribution) or the model's visible bias.
        """
        ...

    def annealing_path(self, base: torch.Tensor) -> AnnealingPath:
        """The path from the base model with parameter ``base`` (see :meth:`base_rate`) to this model."""
        ...
