r"""Generative adversarial network: a generator whose only random variable is its latent code, and a discriminator.

The generator is an implicit model: a latent code drawn from a standard normal
and an image that is a deterministic function of it,

.. math::

    z \sim \mathcal{N}(0, I_{d_z}), \qquad x = G_\theta(z) = \tfrac12\,(\tanh(f_\theta(z)) + 1) \in [0, 1]^D,

so :math:`p_\theta(x)` has no density on the image space (it lives on a
:math:`d_z`-dimensional surface) and can only be sampled. The network works on
images *standardised* to :math:`[-1, 1]` (its tanh output); the model returns
them in :math:`[0, 1]`, the scale every family shows. The discriminator
:math:`D_\psi(x) = \sigma(g_\psi(2x - 1))` is the probability that ``x`` is a
training image; it returns the logit :math:`g_\psi`, from which the losses take
:math:`\log \sigma` without overflow (:mod:`inference.adversarial`).

Default sizes are those of the common MNIST introduction to deep generative
models: generator 100-256-512-1024-D with batch normalisation and leaky ReLU
(slope 0.2) inside and tanh out; discriminator D-512-256-1 with leaky ReLU and a
sigmoid output.

As a Pyro model, :meth:`GeneratorModel.model` has one sample site ``z`` and a
deterministic site ``x`` (``pyro.deterministic``), so
:class:`pyro.infer.Predictive` draws images, and the latent log-likelihood of
Wu et al. (2017) reads the decoder :meth:`GeneratorModel.forward`.

References:
 [1] Goodfellow, Pouget-Abadie, Mirza, Xu, Warde-Farley, Ozair, Courville, Bengio. Generative Adversarial
     Nets. NeurIPS 2014.
 [2] Ioffe, Szegedy. Batch Normalization. ICML 2015.
 [3] Wu, Burda, Salakhutdinov, Grosse. On the Quantitative Analysis of Decoder-Based Generative Models. ICLR 2017.

Example::

    gan = GAN(GANArchitecture(x_dim=784))
    critic = Discriminator(gan.arch)
    images = pyro.infer.Predictive(gan.model, num_samples=1)(batch_size=25)["x"][0]   # (25, 784)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from .errors import SpecError
from .specs import option

__all__ = ["GAN", "OUTPUTS", "Discriminator", "GANArchitecture", "GeneratorModel", "check_widths", "mlp_layers"]

#: how the generator's last layer maps to pixels in [0, 1]: tanh on standardised images, or a sigmoid
OUTPUTS = ("tanh", "sigmoid")


@dataclass
class GANArchitecture:
    x_dim: Optional[int] = option(None, doc="pixels per image; None: read from the data", min=1)
    z_dim: int = option(100, doc="size of the latent code z ~ N(0, I)", min=1)
    generator_hidden: list[int] = option([256, 512, 1024], doc="hidden widths of the generator", min=1)
    discriminator_hidden: list[int] = option([512, 256], doc="hidden widths of the discriminator", min=1)
    batch_norm: bool = option(True, doc="batch normalisation after each hidden layer of the generator")
    leaky_slope: float = option(0.2, doc="negative slope of the leaky ReLUs (0: ReLU)", min=0.0, max=1.0)

    def validate(self):
        check_widths("model.generator_hidden", self.generator_hidden)
        check_widths("model.discriminator_hidden", self.discriminator_hidden)


def check_widths(key: str, widths: list) -> None:
    """A bad architecture is one line naming the key: at least one hidden layer, every width >= 1."""
    if not widths:
        raise SpecError(f"{key} must list at least one hidden width, got []")
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise SpecError(f"{key} must list positive integers, got {widths!r}")


def mlp_layers(sizes: list[int], leaky_slope: float, batch_norm: bool = False) -> list[nn.Module]:
    """Linear layers with (batch norm and) leaky ReLU between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            if batch_norm:
                layers.append(nn.BatchNorm1d(b))
            layers.append(nn.LeakyReLU(leaky_slope))
    return layers


class GeneratorModel(nn.Module):
    r"""An implicit model :math:`z \sim \mathcal{N}(0, I)`, :math:`x = G(z)`: the generator of a GAN or a GMMN.

    :param int x_dim: pixels per image.
    :param int z_dim: size of the latent code.
    :param list hidden: hidden widths of the network.
    :param bool batch_norm: batch normalisation after each hidden layer (statistics of the batch when
        training, running averages otherwise: call ``eval()`` before scoring or sampling one image).
    :param float leaky_slope: negative slope of the leaky ReLUs.
    :param str output: ``"tanh"`` (on images standardised to [-1, 1], mapped back to [0, 1]) or ``"sigmoid"``.
    """

    def __init__(self, x_dim: Optional[int], z_dim: int, hidden: list[int], batch_norm: bool, leaky_slope: float,
                 output: str = "tanh"):
        super().__init__()
        if x_dim is None:
            raise SpecError("model.x_dim must be set (it is read from the data when training)")
        if output not in OUTPUTS:
            raise SpecError(f"model.output must be one of {list(OUTPUTS)}, got {output!r}")
        check_widths("model hidden widths", hidden)
        self.x_dim, self.z_dim, self.output = x_dim, z_dim, output
        self.net = nn.Sequential(*mlp_layers([z_dim, *hidden, x_dim], leaky_slope, batch_norm))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The image G(z) in [0, 1] of codes ``z`` of shape ``(..., z_dim)``, shape ``(..., x_dim)``."""
        flat = z.reshape(-1, self.z_dim)
        out = self.net(flat)
        x = (torch.tanh(out) + 1) / 2 if self.output == "tanh" else torch.sigmoid(out)
        return x.reshape(*z.shape[:-1], self.x_dim)

    def prior(self, n: int) -> dist.Distribution:
        """p(z) = N(0, I) for ``n`` codes, on the parameters' device and dtype."""
        ref = self.net[0].weight
        return dist.Normal(ref.new_zeros(n, self.z_dim), 1.0).to_event(1)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` images G(z), z ~ N(0, I), differentiable in the parameters (the generator's training draws)."""
        ref = self.net[0].weight
        z = torch.randn(n, self.z_dim, generator=generator, device=ref.device, dtype=ref.dtype)
        return self(z)

    def model(self, x: Optional[torch.Tensor] = None, batch_size: Optional[int] = None) -> torch.Tensor:
        """The Pyro model: sample site ``z``, deterministic site ``x``. An implicit model scores no data,
        so a given ``x`` only sets how many codes are drawn."""
        pyro.module("generator", self)
        n = x.shape[0] if x is not None else batch_size
        with pyro.plate("data", n):
            z = pyro.sample("z", self.prior(n))
            return pyro.deterministic("x", self(z), event_dim=1)


class GAN(GeneratorModel):
    """The generator of a GAN (:class:`GANArchitecture`); its adversary is a :class:`Discriminator`."""

    def __init__(self, arch: GANArchitecture):
        super().__init__(arch.x_dim, arch.z_dim, arch.generator_hidden, arch.batch_norm, arch.leaky_slope, "tanh")
        self.arch = arch


class Discriminator(nn.Module):
    r"""The logit :math:`g_\psi(2x - 1)` of :math:`D_\psi(x) = P(\text{training image} \mid x)` for images in
    [0, 1] (standardised to [-1, 1] inside, as the generator's tanh output is), shape ``(...,)``."""

    def __init__(self, arch: GANArchitecture):
        super().__init__()
        if arch.x_dim is None:
            raise SpecError("model.x_dim must be set (it is read from the data when training)")
        check_widths("model.discriminator_hidden", arch.discriminator_hidden)
        self.net = nn.Sequential(*mlp_layers([arch.x_dim, *arch.discriminator_hidden, 1], arch.leaky_slope))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(2 * x - 1).squeeze(-1)

    def probability(self, x: torch.Tensor) -> torch.Tensor:
        """D(x), the sigmoid output."""
        return torch.sigmoid(self(x))
