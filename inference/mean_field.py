r"""The mean-field posterior of a layered energy model by (damped) fixed-point iteration.

For an energy model whose hidden layers :math:`h^1, \dots, h^L` are binary and
whose energy is linear in each layer given the others (a deep Boltzmann
machine), the fully factorised :math:`q(h \mid v) = \prod_{k,j} \mu_{kj}^{h_{kj}} (1 - \mu_{kj})^{1 - h_{kj}}`
that minimises the variational free energy

.. math::

    \mathcal F(\mu) = \mathbb E_q[E(v, h)] - \mathrm H(q), \qquad
    \log p(v) \ge -\mathcal F(\mu) - \log Z,

satisfies :math:`\mu_k = \sigma(x_k(v, \mu_{\ne k}))`, :math:`x_k` the total input of layer :math:`k` with
the other layers at their means. :func:`mean_field` iterates that map block by
block (layers within a block are conditionally independent, so updating them
together is exact coordinate descent and :math:`\mathcal F` never increases),
optionally damped, :math:`\mu \leftarrow \delta \mu + (1 - \delta) \sigma(x)`, until no mean moves by more
than ``tol``; otherwise it warns with :class:`MeanFieldNotConverged`, naming the
change it reached. It sees the model only through :class:`MeanFieldModel`.

Reference: R. Salakhutdinov, G. Hinton, "Deep Boltzmann machines", AISTATS 2009, Sec. 3.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from .errors import SpecError

__all__ = ["MeanFieldModel", "MeanFieldNotConverged", "MeanFieldResult", "mean_field", "mean_field_bound"]


class MeanFieldNotConverged(UserWarning):
    """Issued by :func:`mean_field` when the iteration stops at ``max_iter`` with a change still above ``tol``."""


@runtime_checkable
class MeanFieldModel(Protocol):
    """A model whose factorised posterior over hidden layers :func:`mean_field` can compute.

    :ivar tuple mean_field_blocks: tuples of hidden-layer indices (into the means list) updated
        together, in order; layers in one block must not interact.
    """

    mean_field_blocks: tuple

    def mean_field_init(self, v: torch.Tensor) -> list[torch.Tensor]:
        """Starting means of every hidden layer given data ``v`` (N, V): a list of (N, H_k)."""
        ...

    def mean_field_logits(self, v: torch.Tensor, means: Sequence[torch.Tensor], k: int) -> torch.Tensor:
        """Total input of hidden layer ``k`` given ``v`` and the other layers at ``means``."""
        ...

    def mean_field_free_energy(self, v: torch.Tensor, means: Sequence[torch.Tensor]) -> torch.Tensor:
        """:math:`\\mathbb E_q[E(v, h)] - \\mathrm H(q)` per row, for the bound."""
        ...


@dataclasses.dataclass
class MeanFieldResult:
    """:ivar list means: per hidden layer, (N, H_k) means :math:`\\mu_k`.
    :ivar int iterations: sweeps made (each updates every block once).
    :ivar float max_change: the largest change of any mean in the last sweep.
    :ivar bool converged: ``max_change < tol``.
    """

    means: list
    iterations: int
    max_change: float
    converged: bool


def _check(tol, max_iter, damping) -> None:
    if not (isinstance(tol, (int, float)) and not isinstance(tol, bool) and 0 < tol < math.inf):
        raise SpecError(f"tol (mean-field tolerance) must be a finite number > 0, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise SpecError(f"max_iter (mean-field iterations) must be a positive integer, got {max_iter!r}")
    if not (isinstance(damping, (int, float)) and not isinstance(damping, bool) and 0 <= damping < 1):
        raise SpecError(f"damping must be a number in [0, 1), got {damping!r}")


@torch.no_grad()
def mean_field(model: MeanFieldModel, v: torch.Tensor, *, tol: float = 1e-4, max_iter: int = 50,
               damping: float = 0.0, init: Sequence[torch.Tensor] | None = None, warn: bool = True) -> MeanFieldResult:
    """The mean-field fixed point :math:`\\mu_k = \\sigma(x_k(v, \\mu))` of ``model`` for data rows ``v``.

    :param float tol: stop when no mean changes by more than this in a sweep (max-norm over rows and units).
    :param int max_iter: at most this many sweeps.
    :param float damping: :math:`\\delta` in :math:`\\mu \\leftarrow \\delta \\mu + (1 - \\delta) \\sigma(x)`; 0 is the plain
        (coordinate-ascent) update.
    :param init: starting means (default ``model.mean_field_init(v)``), e.g. last epoch's for warm starts.
    :param bool warn: issue :class:`MeanFieldNotConverged` when ``max_iter`` is reached first.

    Example::

        >>> from ppl_models.dbm import DBM
        >>> result = mean_field(DBM([4, 3, 2]), torch.ones(5, 4))
        >>> result.converged, [m.shape[-1] for m in result.means]
        (True, [3, 2])
    """
    _check(tol, max_iter, damping)
    means = [m.clone() for m in (model.mean_field_init(v) if init is None else init)]
    change = math.inf
    for iteration in range(1, max_iter + 1):
        change = 0.0
        for block in model.mean_field_blocks:
            new = {k: torch.sigmoid(model.mean_field_logits(v, means, k)) for k in block}
            for k, m in new.items():
                if damping:
                    m = torch.lerp(m, means[k], damping)
                change = max(change, float((m - means[k]).abs().max()) if m.numel() else 0.0)
                means[k] = m
        if change < tol:
            return MeanFieldResult(means, iteration, change, True)
    if warn:
        warnings.warn(f"mean-field did not converge: reached tolerance {change:.3g} after {max_iter} iterations "
                      f"(asked {tol:g}); raise max_iter or the damping", MeanFieldNotConverged, stacklevel=2)
    return MeanFieldResult(means, max_iter, change, False)


@torch.no_grad()
def mean_field_bound(model: MeanFieldModel, v: torch.Tensor, log_z: float, **options) -> torch.Tensor:
    """The variational lower bound :math:`-\\mathcal F(\\mu) - \\log Z \\le \\log p(v)` per row of ``v`` (float64), with the
    mean-field ``mu`` of :func:`mean_field` (``options`` passed on). A bound when ``log_z`` is exact; with an
    AIS estimate (:math:`E[\\log \\hat Z] \\le \\log Z`) it is an estimate of the bound, high by AIS's error."""
    result = mean_field(model, v, **options)
    return -model.mean_field_free_energy(v, result.means).double() - log_z
