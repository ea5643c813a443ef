"""log p(x) by importance sampling with the guide as proposal.

.. math::

    \\log \\hat p(x) = \\log \\frac{1}{k} \\sum_{i=1}^k \\frac{p(x, z_i)}{q(z_i | x)}, \\quad z_i \\sim q(z | x)

is a stochastic lower bound on log p(x) that tightens as k grows (it is the
IWAE bound L_k); k = 5000 is the literature's standard for test NLL. Particles
are drawn in chunks and combined with a running log-sum-exp, so memory is
bounded by ``batch_size * particle_chunk`` particles whatever k is.

Inside :func:`inference.distributed.sharing` the k particles of every
datapoint are split across the ranks, each drawing from its own random stream;
the ranks' log-sum-exps of :math:`w` and :math:`w^2` are gathered and summed
(in log space) before the division by k, so the estimate is the single-process
estimator with the union of the particles.
"""

from __future__ import annotations

import math

import pyro
import torch
from tqdm import tqdm

from . import distributed
from .importance_weights import log_importance_weights


def log_likelihood(model, guide, x: torch.Tensor, *args, num_particles: int = 5000, batch_size: int = 100,
                   particle_chunk: int = 500, max_plate_nesting: int = 1, data_plate: str = "data",
                   progress: bool = False) -> torch.Tensor:
    """Per-datapoint estimates of log p(x) (nats), shape ``(len(x),)``.

    :param int num_particles: k, importance samples per datapoint.
    :param int particle_chunk: particles per pass (bounds memory).
    :param args: further tensors aligned with ``x`` (e.g. labels), batched alike.
    """
    return log_likelihood_with_stderr(model, guide, x, *args, num_particles=num_particles, batch_size=batch_size,
                                      particle_chunk=particle_chunk, max_plate_nesting=max_plate_nesting,
                                      data_plate=data_plate, progress=progress)[0]


def log_likelihood_with_stderr(model, guide, x: torch.Tensor, *args, num_particles: int = 5000, batch_size: int = 100,
                               particle_chunk: int = 500, max_plate_nesting: int = 1, data_plate: str = "data",
                               progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`log_likelihood` and its standard error per datapoint, each ``(len(x),)``.

    The standard error is the delta method's, the relative standard error of the mean weight,
    :math:`\\mathrm{sd}(w) / (\\sqrt{k}\\, \\bar w)`, from running log-sum-exps of :math:`w` and
    :math:`w^2` (NaN for k = 1). It describes the spread of the estimate, not its bias: the
    estimate sits below log p(x) in expectation by about half its variance.
    """
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1, got {num_particles}")
    out, stderr = [], []
    world = distributed.world_size() if distributed.sharing_work() else 1
    mine = distributed.shard_sizes(num_particles)[distributed.rank()] if world > 1 else num_particles
    batches = range(0, x.shape[0], batch_size)
    with torch.no_grad(), pyro.validation_enabled(False), distributed.distinct_stream():
        for start in tqdm(batches, disable=None if progress and distributed.is_main() else True,
                          desc=f"log p(x), k={num_particles}", leave=False):
            xb = x[start:start + batch_size]
            rest = [a[start:start + batch_size] for a in args]
            acc = acc2 = None
            done = 0
            while done < mine:
                k = min(particle_chunk, mine - done)
                log_w = log_importance_weights(model, guide, xb, *rest, num_particles=k,
                                               max_plate_nesting=max_plate_nesting, data_plate=data_plate).log_w
                chunk, chunk2 = torch.logsumexp(log_w, dim=0), torch.logsumexp(2 * log_w.double(), dim=0)
                acc = chunk if acc is None else torch.logaddexp(acc, chunk)
                acc2 = chunk2 if acc2 is None else torch.logaddexp(acc2, chunk2)
                done += k
            if world > 1:  # the ranks' sums are combined below, once for every datapoint
                empty = torch.full((xb.shape[0],), -math.inf, device=xb.device)  # a rank without particles
                out.append(empty if acc is None else acc)
                stderr.append(empty.double() if acc2 is None else acc2)
                continue
            log_mean = acc - math.log(num_particles)
            out.append(log_mean)
            stderr.append(_relative_stderr(acc.double(), acc2, num_particles).to(log_mean.dtype))
    if world > 1:
        acc = torch.logsumexp(distributed.all_gather_rows(torch.cat(out)[None]), 0)
        acc2 = torch.logsumexp(distributed.all_gather_rows(torch.cat(stderr)[None]), 0)
        log_mean = acc - math.log(num_particles)
        return log_mean, _relative_stderr(acc.double(), acc2, num_particles).to(log_mean.dtype)
    return torch.cat(out), torch.cat(stderr)


def _relative_stderr(log_sum: torch.Tensor, log_sum_sq: torch.Tensor, k: int) -> torch.Tensor:
    """sd(w) / (sqrt(k) mean(w)) from log sum w and log sum w^2 (the unbiased variance)."""
    if k < 2:
        return torch.full_like(log_sum, float("nan"))
    # mean(w^2) / mean(w)^2 - 1, in logs: safe when the weights are far from 1
    ratio = torch.exp(log_sum_sq - 2 * log_sum + math.log(k))
    variance = (ratio - 1).clamp(min=0) * k / (k - 1)
    return torch.sqrt(variance / k)
