r"""Generative moment matching network: an implicit generator trained by the kernel MMD.

The model is the same kind as a GAN's generator (:class:`~ppl_models.gan.GeneratorModel`): a latent code
:math:`z \sim \mathcal{N}(0, I)` and an image :math:`x = G_\theta(z) = \sigma(f_\theta(z))`, deterministic
given ``z``. No adversary: training minimises the squared maximum mean discrepancy between generated and
training images under a bank of Gaussian kernels (:mod:`inference.moment_matching`),

.. math::

    \mathrm{MMD}^2(P, Q) = E\,k(x, x') + E\,k(y, y') - 2\,E\,k(x, y), \qquad
    k(x, y) = \sum_{\sigma} \exp\!\left(-\frac{\lVert x - y\rVert^2}{2\sigma^2}\right).

Default sizes follow Li et al.'s MNIST GMMN: hidden layers 64-256-256-1024 with ReLU, a sigmoid output;
their latent code is uniform on 10 dimensions, ours a standard normal (the latent log-likelihood of
Wu et al. 2017 needs a density on the whole latent space).

References:
 [1] Li, Swersky, Zemel. Generative Moment Matching Networks. ICML 2015.
 [2] Dziugaite, Roy, Ghahramani. Training generative neural networks via Maximum Mean Discrepancy
     optimization. UAI 2015.

Example::

    gmmn = GMMN(GMMNArchitecture(x_dim=784))
    images = gmmn.sample(25)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .gan import GeneratorModel, check_widths
from .specs import option

__all__ = ["GMMN", "GMMNArchitecture"]


@dataclass
class GMMNArchitecture:
    x_dim: Optional[int] = option(None, doc="pixels per image; None: read from the data", min=1)
    z_dim: int = option(10, doc="size of the latent code z ~ N(0, I)", min=1)
    hidden: list[int] = option([64, 256, 256, 1024], doc="hidden widths of the generator", min=1)
    batch_norm: bool = option(False, doc="batch normalisation after each hidden layer")
    leaky_slope: float = option(0.0, doc="negative slope of the hidden units' leaky ReLU (0: ReLU)", min=0.0, max=1.0)

    def validate(self):
        check_widths("model.hidden", self.hidden)


class GMMN(GeneratorModel):
    """The generator of a GMMN (:class:`GMMNArchitecture`), sigmoid output."""

    def __init__(self, arch: GMMNArchitecture):
        super().__init__(arch.x_dim, arch.z_dim, arch.hidden, arch.batch_norm, arch.leaky_slope, "sigmoid")
        self.arch = arch
