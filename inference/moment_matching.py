r"""Generative moment matching: train an implicit generator by the kernel MMD, as an :class:`~inference.training.Objective`.

For a batch of ``n`` training images :math:`x_{1..n}` the generator draws ``n``
images :math:`y_j = G(z_j)` and descends the unbiased U-statistic of
:math:`\mathrm{MMD}^2` between the two samples under a bank of Gaussian kernels
(:func:`inference.mmd.mmd2_unbiased`), whose expectation over the draws is
:math:`\mathrm{MMD}^2(P_{data}, P_G)`, zero exactly when the generator's
distribution is the data's. The gradient flows through the generated images
(the reparameterisation :math:`y = G(z)`), so it is an unbiased estimate of
:math:`\nabla_\theta \mathrm{MMD}^2`.

The driver adds per-datapoint losses over a batch; MMD² is a property of the
batch, so the objective returns and differentiates :math:`n \cdot
\widehat{\mathrm{MMD}}{}^2_u` and the driver's loss per datapoint is the mean
MMD² of the epoch's batches. (Adam is invariant to that constant scale.)

References:
 [1] Li, Swersky, Zemel. Generative Moment Matching Networks. ICML 2015.
 [2] Dziugaite, Roy, Ghahramani. Training generative neural networks via Maximum Mean Discrepancy
     optimization. UAI 2015.

Example::

    objective = MomentMatching(generator, bandwidths=(2, 5, 10, 20, 40, 80))
    fit(objective, (x,), module=generator, epochs=100, batch_size=1000)
"""

from __future__ import annotations

from typing import Sequence

import torch

from .adversarial import ImplicitGenerator
from .errors import SpecError
from .mmd import check_bandwidths, mmd2_unbiased

__all__ = ["MomentMatching"]


class MomentMatching:
    """The GMMN objective above.

    :param generator: an :class:`~inference.adversarial.ImplicitGenerator`; ``sample(n)`` differentiable.
    :param bandwidths: the Gaussian kernels' bandwidths, on the images' scale (at least one, all > 0).
    """

    def __init__(self, generator: ImplicitGenerator, bandwidths: Sequence[float]):
        if not isinstance(generator, ImplicitGenerator):
            raise SpecError(f"the generator must have sample(n) and parameters(), got {type(generator).__name__}")
        self.generator = generator
        self.bandwidths = check_bandwidths(bandwidths)

    def _scaled_mmd2(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        fakes = self.generator.sample(max(n, 2))  # the U-statistic needs two points a side
        real = x if n >= 2 else x.expand(2, -1)  # a lone last image: its within-sample term is k(x, x)
        return n * mmd2_unbiased(fakes, real, self.bandwidths)

    def loss_and_grads(self, x: torch.Tensor, *rest: torch.Tensor) -> float:
        loss = self._scaled_mmd2(x)
        loss.backward()
        return loss.item()

    def loss(self, x: torch.Tensor, *rest: torch.Tensor) -> float:
        with torch.no_grad():
            return self._scaled_mmd2(x).item()
