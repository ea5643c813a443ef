r"""The kernel maximum mean discrepancy between two samples, and its permutation two-sample test.

With a characteristic kernel :math:`k`, :math:`\mathrm{MMD}^2(P, Q) = E\,k(x, x') + E\,k(y, y') - 2\,E\,k(x, y)`
(:math:`x, x' \sim P`, :math:`y, y' \sim Q` independent) is zero exactly when :math:`P = Q`. The kernel here
is a bank of Gaussian kernels, one per bandwidth, summed, so that no single length scale has to be
guessed: :math:`k(x, y) = \sum_{\sigma} \exp(-\lVert x - y\rVert^2 / 2\sigma^2)`.

The estimator is the unbiased U-statistic of Gretton et al. (2012, eq. 3), from samples
:math:`x_{1..m}` and :math:`y_{1..n}`:

.. math::

    \widehat{\mathrm{MMD}}{}^2_u = \frac{1}{m(m-1)} \sum_{i \ne j} k(x_i, x_j)
        + \frac{1}{n(n-1)} \sum_{i \ne j} k(y_i, y_j) - \frac{2}{mn} \sum_{i, j} k(x_i, y_j),

whose expectation is :math:`\mathrm{MMD}^2` (so it can be negative when the two agree). It is
differentiable in both samples: a GMMN trains on it (:mod:`inference.moment_matching`).

The test of :math:`H_0: P = Q` pools the two samples and recomputes the statistic on random relabellings:
under :math:`H_0` every relabelling is as likely as the observed one, so
:math:`p = (1 + \#\{b : T_b \ge T\}) / (1 + B)` is a valid p-value for any sample size.

References:
 [1] Gretton, Borgwardt, Rasch, Schölkopf, Smola. A Kernel Two-Sample Test. JMLR 2012.
 [2] Li, Swersky, Zemel. Generative Moment Matching Networks. ICML 2015 (the bandwidth bank).

Example::

    mmd2 = mmd2_unbiased(samples, test_images, bandwidths=(2.0, 5.0, 10.0))
    result = mmd_permutation_test(samples, test_images, bandwidths=(2.0, 5.0, 10.0), num_permutations=1000)
    result.mmd2, result.p_value
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .errors import SpecError

__all__ = ["MMDTest", "check_bandwidths", "kernel_matrix", "mmd2_unbiased", "mmd_permutation_test"]

#: permutations scored per matrix product (bounds memory: chunk x (m + n) numbers)
PERMUTATION_CHUNK = 200


def check_bandwidths(bandwidths) -> tuple:
    """The bandwidths as a tuple of floats, or a one-line :class:`SpecError`: the list must be non-empty and
    every bandwidth a finite number > 0."""
    try:
        values = tuple(bandwidths)
    except TypeError:
        raise SpecError(f"bandwidths must be a list of positive numbers, got {bandwidths!r}") from None
    if not values:
        raise SpecError("bandwidths must list at least one kernel bandwidth, got an empty list")
    for b in values:
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) or b <= 0:
            raise SpecError(f"bandwidths must be finite numbers > 0, got {list(values)!r}")
    return tuple(float(b) for b in values)


def kernel_matrix(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float]) -> torch.Tensor:
    r""":math:`K_{ij} = \sum_\sigma \exp(-\lVert x_i - y_j\rVert^2 / 2\sigma^2)`, shape ``(m, n)``, for ``x`` of
    shape ``(m, D)`` and ``y`` of shape ``(n, D)``."""
    bandwidths = check_bandwidths(bandwidths)
    # ||x - y||^2 through the Gram matrix: one matrix product; clamped, since rounding can make it -1e-6
    sq = (x.pow(2).sum(-1, keepdim=True) + y.pow(2).sum(-1).unsqueeze(-2) - 2 * x @ y.transpose(-1, -2)).clamp(min=0)
    scales = torch.tensor([1.0 / (2 * b * b) for b in bandwidths], dtype=sq.dtype, device=sq.device)
    return torch.exp(-sq.unsqueeze(-1) * scales).sum(-1)


def _check_samples(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise SpecError(f"the two samples must be (m, D) and (n, D) with the same D, got {tuple(x.shape)} "
                        f"and {tuple(y.shape)}")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise SpecError(f"the unbiased MMD needs at least 2 points in each sample, got {x.shape[0]} and {y.shape[0]}")


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float]) -> torch.Tensor:
    """The unbiased U-statistic of MMD² between samples ``x`` ``(m, D)`` and ``y`` ``(n, D)`` (a scalar tensor,
    differentiable in both)."""
    _check_samples(x, y)
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = kernel_matrix(x, x, bandwidths), kernel_matrix(y, y, bandwidths), kernel_matrix(x, y, bandwidths)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return within_x + within_y - 2 * kxy.mean()


@dataclass
class MMDTest:
    """The permutation test's result: the statistic, its p-value, and what it was computed with."""

    mmd2: float
    p_value: float
    num_permutations: int
    sizes: tuple
    bandwidths: tuple

    def as_dict(self) -> dict:
        return {"mmd2": self.mmd2, "p_value": self.p_value, "num_permutations": self.num_permutations,
                "sample_sizes": list(self.sizes), "bandwidths": list(self.bandwidths),
                "estimator": "unbiased U-statistic of MMD^2 (Gretton et al. 2012), Gaussian kernel bank; p-value "
                             "from random relabellings of the pooled samples, (1 + #{T_b >= T}) / (1 + B)"}


def _statistics(k: torch.Tensor, labels: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """The U-statistic for each row of ``labels`` ``(B, m + n)`` (1 marks the first sample), from the pooled
    kernel matrix ``k`` whose diagonal has been zeroed: quadratic forms of the label vectors."""
    a = labels
    b = 1 - labels
    ka = a @ k
    kb = b @ k
    return ((ka * a).sum(1) / (m * (m - 1)) + (kb * b).sum(1) / (n * (n - 1)) - 2 * (ka * b).sum(1) / (m * n))


def mmd_permutation_test(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float], num_permutations: int = 1000,
                         generator: Optional[torch.Generator] = None) -> MMDTest:
    """MMD² of ``x`` against ``y`` and the p-value of :math:`H_0: P = Q` from ``num_permutations`` random
    relabellings of the pooled samples (drawn with ``generator``, else the global RNG)."""
    bandwidths = check_bandwidths(bandwidths)
    _check_samples(x, y)
    if isinstance(num_permutations, bool) or not isinstance(num_permutations, int) or num_permutations < 1:
        raise SpecError(f"num_permutations must be a positive integer, got {num_permutations!r}")
    m, n = x.shape[0], y.shape[0]
    with torch.no_grad():
        pooled = torch.cat([x, y]).double()
        k = kernel_matrix(pooled, pooled, bandwidths)
        k.fill_diagonal_(0.0)
        observed_labels = torch.cat([torch.ones(m), torch.zeros(n)]).to(k).unsqueeze(0)
        observed = float(_statistics(k, observed_labels, m, n)[0])
        exceed = 0
        for start in range(0, num_permutations, PERMUTATION_CHUNK):
            b = min(PERMUTATION_CHUNK, num_permutations - start)
            order = torch.rand(b, m + n, generator=generator).argsort(1)
            labels = (order < m).to(k)  # the first m of each random order form the relabelled first sample
            exceed += int((_statistics(k, labels, m, n) >= observed - 1e-12 * abs(observed)).sum())
    return MMDTest(mmd2=observed, p_value=(1 + exceed) / (1 + num_permutations), num_permutations=num_permutations,
                   sizes=(m, n), bandwidths=bandwidths)
