"""VIMCO: the k-sample bound with leave-one-out baselines (Mnih & Rezende 2016), per datapoint, as a ``pyro.infer.ELBO``.

The objective is the IWAE bound :math:`\\mathcal{L}_k = \\mathbb{E}[\\hat L]`,
:math:`\\hat L = \\log \\frac1k \\sum_i w_i`, :math:`w_i = p(x, h_i) / q(h_i \\mid x)`.
For discrete guide sites its gradient is

.. math::

    \\nabla \\mathcal{L}_k = \\mathbb{E}\\Big[\\sum_i (\\hat L - \\hat L_{-i}) \\nabla_\\phi \\log q(h_i \\mid x)
        + \\sum_i \\tilde w_i \\nabla \\log w_i\\Big],

where :math:`\\hat L_{-i}` replaces :math:`w_i` in :math:`\\hat L` by the geometric mean
of the other :math:`k - 1` weights. That baseline depends only on the other samples,
so the estimator stays unbiased, and each sample is credited with how much it
adds to the bound beyond what the others already give: the learning signal
is local to the sample without any learned network. ``k >= 2`` is required
(one sample has no others to compare with). The plain IWAE score-function
estimator (:class:`~inference.iwae_elbo.IWAEELBO`) uses :math:`\\hat L` itself as every
sample's signal.

Reference: Mnih, Rezende. Variational Inference for Monte Carlo Objectives. ICML 2016.
"""

from __future__ import annotations

import math

import torch

from .errors import SpecError
from .iwae_elbo import IWAEELBO


def leave_one_out_bounds(log_w: torch.Tensor) -> torch.Tensor:
    """:math:`\\hat L_{-i}` for every sample, ``(k, N)`` from ``log_w`` ``(k, N)`` (no gradient)."""
    k = log_w.shape[0]
    log_w = log_w.detach()
    geometric = (log_w.sum(0, keepdim=True) - log_w) / (k - 1)  # log of the others' geometric mean
    eye = torch.eye(k, dtype=torch.bool, device=log_w.device).unsqueeze(-1)  # (k, k, 1)
    # row i: the k log-weights with the i-th replaced by its geometric-mean stand-in
    replaced = torch.where(eye, geometric.unsqueeze(1), log_w.unsqueeze(0))  # (k, k, N)
    return torch.logsumexp(replaced, dim=1) - math.log(k)


class VIMCO(IWAEELBO):
    """The k-sample bound with VIMCO's leave-one-out score-function baselines.

    :param int num_particles: k >= 2 samples per datapoint.
    """

    def __init__(self, num_particles: int = 5, data_plate: str = "data", max_plate_nesting: int = float("inf")):
        if isinstance(num_particles, int) and num_particles < 2:
            raise SpecError(f"VIMCO needs num_particles >= 2 (leave-one-out baselines compare each sample "
                            f"with the others), got {num_particles}")
        super().__init__(num_particles=num_particles, dreg=False, data_plate=data_plate,
                         max_plate_nesting=max_plate_nesting)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """A surrogate whose value is the negative bound and whose gradient is VIMCO's estimator."""
        w = self._weights(model, guide, args, kwargs)
        bound = self._bound(w.log_w)  # (N,): its gradient is sum_i w~_i grad log w_i
        surrogate = bound
        if not isinstance(w.log_q_score, float):
            signal = bound.detach().unsqueeze(0) - leave_one_out_bounds(w.log_w)  # (k, N)
            score = (signal * w.log_q_score).sum(0)
            surrogate = surrogate + (score - score.detach())  # exactly 0 in value: the bound is not rounded
        return -w.scale * surrogate.sum()
