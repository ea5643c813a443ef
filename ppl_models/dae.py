r"""A denoising autoencoder on binary images, read as a generative model (Bengio, Yao, Alain & Vincent 2013).

Two conditionals, both over binary images:

.. math::

    C(\tilde x \mid x) = \prod_d q^{[\tilde x_d \ne x_d]} (1 - q)^{[\tilde x_d = x_d]},
    \qquad
    P_\theta(x \mid \tilde x) = \prod_d \mathrm{Bernoulli}\big(x_d;\ \sigma(f_\theta(\tilde x)_d)\big).

with :math:`q` the flip probability. The corruption :math:`C` is fixed: *salt-and-pepper* noise of level
:math:`\rho` replaces each pixel, with probability :math:`\rho`, by a fair coin (so :math:`q = \rho / 2`);
*bit-flip* noise flips each pixel with probability :math:`q = \rho`. The denoiser :math:`P_\theta` is a factorised
Bernoulli MLP, trained to maximise :math:`E_{x \sim \text{data}} E_{\tilde x \sim C(\cdot \mid x)} \log
P_\theta(x \mid \tilde x)` (:mod:`inference.walkback`). Bengio et al.'s result: if :math:`P_\theta` is a
consistent estimator of the true :math:`P(x \mid \tilde x)`, the Markov chain that alternates
:math:`\tilde x_t \sim C(\cdot \mid x_t)` and :math:`x_{t+1} \sim P_\theta(\cdot \mid \tilde x_t)`
(:mod:`inference.denoising_chain`) has the data distribution as its stationary distribution. The model
*is* that chain: it has no normalised density of its own.

This file holds the model's maths only: the two conditionals and the data check.

References:
 [1] Y. Bengio, L. Yao, G. Alain, P. Vincent. Generalized Denoising Auto-Encoders as Generative Models. NIPS 2013.
 [2] P. Vincent, H. Larochelle, Y. Bengio, P.-A. Manzagol. Extracting and composing robust features with
     denoising autoencoders. ICML 2008.

Example::

    dae = DenoisingAutoencoder(DAEArchitecture(x_dim=784))
    x_tilde = dae.corrupt(x)
    dae.reconstruction_log_prob(x, x_tilde)      # log P(x | x~) per image
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .errors import DataError, SpecError
from .specs import option
from .vae import ACTIVATIONS, mlp

__all__ = ["CORRUPTIONS", "DAEArchitecture", "DenoisingAutoencoder"]

CORRUPTIONS = ("salt_and_pepper", "bit_flip")


@dataclass
class DAEArchitecture:
    x_dim: Optional[int] = option(None, doc="pixels per image; None: read from the data", min=1)
    hidden: list[int] = option([1000], doc="hidden widths of the denoiser MLP", min=1)
    activation: str = option("tanh", doc="hidden nonlinearity", choices=tuple(ACTIVATIONS))
    corruption: str = option("salt_and_pepper", doc="C(x~ | x): salt_and_pepper replaces a pixel by a fair coin with "
                             "probability noise; bit_flip flips it with probability noise", choices=CORRUPTIONS)
    noise: float = option(0.4, doc="corruption level rho", min_exclusive=0.0, max=1.0)


class DenoisingAutoencoder(nn.Module):
    """The corruption :math:`C(\\tilde x \\mid x)` and the denoiser :math:`P_\\theta(x \\mid \\tilde x)`, a factorised
    Bernoulli MLP ``x_dim -> hidden -> x_dim`` (logits)."""

    def __init__(self, arch: DAEArchitecture):
        super().__init__()
        if arch.x_dim is None:
            raise SpecError("model.x_dim must be set (it is read from the data when training)")
        if arch.corruption not in CORRUPTIONS:
            raise SpecError(f"model.corruption must be one of {', '.join(CORRUPTIONS)}, got {arch.corruption!r}")
        if not 0 < arch.noise <= 1:
            raise SpecError(f"model.noise must lie in (0, 1], got {arch.noise!r}")
        self.arch, self.x_dim = arch, arch.x_dim
        self.net = mlp([arch.x_dim, *arch.hidden, arch.x_dim], arch.activation)

    @property
    def flip_probability(self) -> float:
        """:math:`P(\\tilde x_d \\ne x_d)`: a fair coin replacing a pixel changes it half the time."""
        return self.arch.noise / 2 if self.arch.corruption == "salt_and_pepper" else self.arch.noise

    def check_data(self, x: torch.Tensor, what: str = "x") -> torch.Tensor:
        """``x`` as ``(N, x_dim)`` 0/1 floats of the parameters' dtype, or a one-line :class:`DataError`."""
        if not torch.is_tensor(x) or x.dim() != 2 or x.shape[1] != self.x_dim:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise DataError(f"{what} must be (N, {self.x_dim}) binary images, got shape {shape}")
        if bool(((x != 0) & (x != 1)).any()):
            raise DataError(f"{what} must hold only 0 and 1 (binarise the data first)")
        return x.to(self.net[0].weight)

    def corrupt(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """:math:`\\tilde x \\sim C(\\cdot \\mid x)`, each pixel flipped independently with :attr:`flip_probability`."""
        flip = torch.rand(x.shape, dtype=x.dtype, device=x.device, generator=generator) < self.flip_probability
        return torch.where(flip, 1 - x, x)

    def corruption_log_prob(self, x_tilde: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\log C(\\tilde x \\mid x)` summed over pixels (broadcast over leading dimensions)."""
        flipped = (x_tilde != x).to(x.dtype).sum(-1)
        q = torch.tensor(self.flip_probability, dtype=x.dtype, device=x.device)
        return flipped * torch.log(q) + (x.shape[-1] - flipped) * torch.log1p(-q)

    def denoise_logits(self, x_tilde: torch.Tensor) -> torch.Tensor:
        """The logits of :math:`P_\\theta(x_d = 1 \\mid \\tilde x)` for every pixel, ``(..., x_dim)``."""
        return self.net(x_tilde)

    def reconstruction_log_prob(self, x: torch.Tensor, x_tilde: torch.Tensor) -> torch.Tensor:
        """:math:`\\log P_\\theta(x \\mid \\tilde x)` per image."""
        logits = self.denoise_logits(x_tilde)
        return (x * logits - F.softplus(logits)).sum(-1)
