"""log p(x) by importance sampling with the guide as proposal.

.. math::

    \\log \\hat p(x) = \\log \\frac{1}{k} \\sum_{i=1}^k \\frac{p(x, z_i)}{q(z_i | x)}, \\quad z_i \\sim q(z | x)

is a stochastic lower bound on log p(x) that tightens as k grows (it is the
IWAE bound L_k); k = 5000 is the literature's standard for test NLL. Particles
are drawn in chunks and combined with a running log-sum-exp, so memory is
bounded by ``batch_size * particle_chunk`` particles whatever k is.
"""

from __future__ import annotations

import math

import pyro
import torch
from tqdm import tqdm

from .importance_weights import log_importance_weights


def log_likelihood(model, guide, x: torch.Tensor, *args, num_particles: int = 5000, batch_size: int = 100,
                   particle_chunk: int = 500, max_plate_nesting: int = 1, data_plate: str = "data",
                   progress: bool = False) -> torch.Tensor:
    """Per-datapoint estimates of log p(x) (nats), shape ``(len(x),)``.

    :param int num_particles: k, importance samples per datapoint.
    :param int particle_chunk: particles per pass (bounds memory).
    :param args: further tensors aligned with ``x`` (e.g. labels), batched alike.
    """
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1, got {num_particles}")
    out = []
    batches = range(0, x.shape[0], batch_size)
    with torch.no_grad(), pyro.validation_enabled(False):
        for start in tqdm(batches, disable=None if progress else True, desc=f"log p(x), k={num_particles}", leave=False):
            xb = x[start:start + batch_size]
            rest = [a[start:start + batch_size] for a in args]
            acc = None
            done = 0
            while done < num_particles:
                k = min(particle_chunk, num_particles - done)
                log_w = log_importance_weights(model, guide, xb, *rest, num_particles=k,
                                               max_plate_nesting=max_plate_nesting, data_plate=data_plate).log_w
                chunk = torch.logsumexp(log_w, dim=0)
                acc = chunk if acc is None else torch.logaddexp(acc, chunk)
                done += k
            out.append(acc - math.log(num_particles))
    return torch.cat(out)
