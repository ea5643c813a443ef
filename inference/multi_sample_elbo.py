"""The standard ELBO averaged over k samples per datapoint, on the same per-datapoint
weights as :class:`~inference.iwae_elbo.IWAEELBO` (so k = 1 is the same objective).

.. math::

    \\mathcal{L}(x) = \\frac{1}{k} \\sum_{i=1}^k \\log \\frac{p(x, z_i)}{q(z_i | x)}, \\quad z_i \\sim q(z|x)

Reference: Kingma, Welling. Auto-Encoding Variational Bayes. ICLR 2014.
"""

from __future__ import annotations

import torch

from .iwae_elbo import IWAEELBO


class MultiSampleELBO(IWAEELBO):
    """ELBO with ``num_particles`` samples per datapoint (their mean, not their log-mean-exp)."""

    def __init__(self, num_particles: int = 1, data_plate: str = "data", max_plate_nesting: int = float("inf")):
        super().__init__(num_particles=num_particles, dreg=False, data_plate=data_plate,
                         max_plate_nesting=max_plate_nesting)

    def _bound(self, log_w: torch.Tensor) -> torch.Tensor:
        return log_w.mean(0)
