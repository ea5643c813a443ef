"""Variational autoencoder as a Pyro model/guide pair.

Generative model and amortised guide:

.. math::

    p(z) = \\mathcal{N}(0, I), \\quad p(x | z) = \\prod_d p(x_d | f_\\theta(z)_d), \\qquad
    q(z | x) = \\mathcal{N}(\\mu_\\phi(x), \\mathrm{diag}\\, \\sigma_\\phi(x)^2)

with a Bernoulli likelihood for binary images, and for grey levels either the
continuous Bernoulli (Loaiza-Ganem & Cunningham 2019, the normalised
Bernoulli density on [0, 1]) or a Gaussian with a learned per-pixel scale. The
same pair is the IWAE: only the objective differs (``inference.iwae_elbo``).

References:
 [1] Kingma, Welling. Auto-Encoding Variational Bayes. ICLR 2014.
 [2] Burda, Grosse, Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.

Example::

    vae = VAE(VAEArchitecture(x_dim=784, z_dim=20, hidden=[200]))
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), pyro.infer.Trace_ELBO())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from .errors import SpecError
from .likelihoods import BernoulliPixels
from .specs import option

LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian")
ACTIVATIONS = {"softplus": nn.Softplus, "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


@dataclass
class VAEArchitecture:
    x_dim: Optional[int] = option(None, doc="pixels per image; None: read from the data", min=1)
    z_dim: int = option(20, doc="latent dimension", min=1)
    hidden: list[int] = option([200], doc="hidden widths of encoder and decoder MLPs", min=1)
    likelihood: str = option("bernoulli", doc="p(x|z)", choices=LIKELIHOODS)
    activation: str = option("softplus", doc="hidden nonlinearity", choices=tuple(ACTIVATIONS))


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class Decoder(nn.Module):
    """z -> parameters of p(x | z): logits (Bernoulli, continuous Bernoulli) or mean and log-scale."""

    def __init__(self, arch: VAEArchitecture):
        super().__init__()
        self.likelihood = arch.likelihood
        self.net = mlp([arch.z_dim, *arch.hidden, arch.x_dim], arch.activation)
        if arch.likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.full((arch.x_dim,), -1.0))

    def forward(self, z):
        return self.net(z)

    def distribution(self, z):
        out = self.net(z)
        if self.likelihood == "bernoulli":
            return BernoulliPixels(out)
        if self.likelihood == "continuous_bernoulli":
            return dist.ContinuousBernoulli(logits=out, validate_args=False).to_event(1)
        return dist.Normal(torch.sigmoid(out), self.log_scale.exp()).to_event(1)


class Encoder(nn.Module):
    """x -> (mean, scale) of the diagonal Gaussian q(z | x)."""

    def __init__(self, arch: VAEArchitecture):
        super().__init__()
        self.net = mlp([arch.x_dim, *arch.hidden, 2 * arch.z_dim], arch.activation)

    def forward(self, x):
        loc, pre_scale = self.net(x).chunk(2, dim=-1)
        return loc, nn.functional.softplus(pre_scale) + 1e-4


class VAE(nn.Module):
    """A VAE / IWAE pair; ``model`` and ``guide`` take a batch ``x`` of shape ``(batch, x_dim)``."""

    def __init__(self, arch: VAEArchitecture):
        super().__init__()
        if arch.x_dim is None:
            raise SpecError("model.x_dim must be set (it is read from the data when training)")
        self.arch = arch
        self.encoder = Encoder(arch)
        self.decoder = Decoder(arch)

    def model(self, x: Optional[torch.Tensor] = None, batch_size: Optional[int] = None):
        """p(z) p(x|z); with ``x=None`` draws ``batch_size`` images."""
        pyro.module("decoder", self.decoder)
        n = x.shape[0] if x is not None else batch_size
        ref = self.decoder.net[0].weight
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(ref.new_zeros(n, self.arch.z_dim), 1.0).to_event(1))
            return pyro.sample("x", self.decoder.distribution(z), obs=x)

    def guide(self, x: Optional[torch.Tensor] = None, batch_size: Optional[int] = None):
        """q(z|x), a diagonal Gaussian from the encoder."""
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            return pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z], the picture one shows for a latent point."""
        return self.decoder.distribution(z).mean
