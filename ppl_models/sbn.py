"""Sigmoid belief net (Neal 1992) with a recognition network, as a Pyro model/guide pair.

Layers of binary units :math:`h^L \\to \\dots \\to h^1 \\to x`, each given the one above:

.. math::

    p(h^L_j = 1) = \\sigma(b^L_j), \\qquad
    p(h^{l}_i = 1 \\mid h^{l+1}) = \\sigma(W^{l} h^{l+1} + b^{l})_i, \\qquad
    p(x_i = 1 \\mid h^1) = \\sigma(W^0 h^1 + b^0)_i

and the recognition network (the guide) runs the other way, one layer at a
time: :math:`q(h^1 \\mid x)\\, q(h^2 \\mid h^1) \\cdots q(h^L \\mid h^{L-1})`, each a
factorised Bernoulli whose logits are an affine map of the layer below (the
SBNs of Mnih & Gregor 2014) or, with ``recognition_hidden > 0``, a one-hidden-
layer tanh MLP of it. Every site is inside ``pyro.plate("data")``, so the
per-datapoint objectives of :mod:`inference` apply, and the chain
``("x", "h1", ..., "hL")`` (:attr:`SigmoidBeliefNet.chain`) is the Markov
structure NVIL's local learning signals rely on.

The latents are discrete: there is no reparameterisation, which is why this
family is the test bed of the score-function estimators (NVIL, VIMCO) and of
wake-sleep and reweighted wake-sleep.

References:
 [1] Neal. Connectionist learning of belief networks. Artificial Intelligence 1992.
 [2] Mnih, Gregor. Neural Variational Inference and Learning in Belief Networks. ICML 2014.
 [3] Bornschein, Bengio. Reweighted Wake-Sleep. ICLR 2015.

Example::

    sbn = SigmoidBeliefNet(SBNArchitecture(x_dim=784, hidden=[200, 200]))
    svi = pyro.infer.SVI(sbn.model, sbn.guide, pyro.optim.Adam({"lr": 1e-3}), pyro.infer.TraceGraph_ELBO())
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


@dataclass
class SBNArchitecture:
    x_dim: Optional[int] = option(None, doc="pixels per image; None: read from the data", min=1)
    hidden: list[int] = option([200, 200], doc="binary hidden layer sizes, bottom (next to x) first", min=1)
    recognition_hidden: int = option(0, doc="recognition network per layer: 0 for sigmoid(affine) as in the "
                                     "NVIL paper's SBNs, else a tanh hidden layer of this width", min=0)

    def validate(self):
        if not self.hidden:
            raise SpecError("model.hidden must list at least one hidden layer size, got []")


class SigmoidBeliefNet(nn.Module):
    """An SBN generative model (``model``) and its recognition network (``guide``).

    ``model(x=None, batch_size=None)`` draws or scores images ``(batch, x_dim)``; ``guide(x)`` samples
    every hidden layer bottom-up. Sites: ``x`` and ``h1`` (next to x) ... ``hL`` (top).
    """

    def __init__(self, arch: SBNArchitecture):
        super().__init__()
        if arch.x_dim is None:
            raise SpecError("model.x_dim must be set (it is read from the data when training)")
        if not arch.hidden:
            raise SpecError("model.hidden must list at least one hidden layer size, got []")
        self.arch = arch
        sizes = [arch.x_dim, *arch.hidden]
        # generative: down[l] maps layer l+1 to the logits of layer l (l = 0 is x); top_logits is p(h^L)
        self.generative = nn.Module()
        self.generative.down = nn.ModuleList(nn.Linear(sizes[l + 1], sizes[l]) for l in range(len(arch.hidden)))
        self.generative.top_logits = nn.Parameter(torch.zeros(sizes[-1]))
        # recognition: up[l] maps layer l to the logits of layer l+1
        self.recognition = nn.ModuleList(self._recognition_layer(sizes[l], sizes[l + 1], arch.recognition_hidden)
                                for l in range(len(arch.hidden)))

    @staticmethod
    def _recognition_layer(n_in: int, n_out: int, width: int) -> nn.Module:
        if width == 0:
            return nn.Linear(n_in, n_out)
        return nn.Sequential(nn.Linear(n_in, width), nn.Tanh(), nn.Linear(width, n_out))

    @property
    def down(self) -> nn.ModuleList:
        return self.generative.down

    @property
    def up(self) -> nn.ModuleList:
        return self.recognition

    @property
    def chain(self) -> tuple[str, ...]:
        """The site names bottom-up, ``("x", "h1", ..., "hL")``: the model is a Markov chain from the top
        down and the guide from the bottom up."""
        return ("x", *(f"h{l}" for l in range(1, len(self.arch.hidden) + 1)))

    @property
    def num_hidden(self) -> int:
        return sum(self.arch.hidden)

    def model(self, x: Optional[torch.Tensor] = None, batch_size: Optional[int] = None):
        """p(h^L) ... p(h^1 | h^2) p(x | h^1); with ``x=None`` draws ``batch_size`` images."""
        pyro.module("sbn_generative", self.generative)
        n = x.shape[0] if x is not None else batch_size
        names = self.chain
        with pyro.plate("data", n):
            h = pyro.sample(names[-1], dist.Bernoulli(logits=self.generative.top_logits.expand(n, -1), validate_args=False).to_event(1))
            for l in range(len(self.down) - 1, 0, -1):
                h = pyro.sample(names[l], dist.Bernoulli(logits=self.down[l](h), validate_args=False).to_event(1))
            return pyro.sample("x", dist.Bernoulli(logits=self.down[0](h), validate_args=False).to_event(1), obs=x)

    def guide(self, x: Optional[torch.Tensor] = None, batch_size: Optional[int] = None):
        """q(h^1 | x) q(h^2 | h^1) ... q(h^L | h^{L-1}), sampled bottom-up."""
        pyro.module("sbn_recognition", self.recognition)
        names = self.chain
        with pyro.plate("data", x.shape[0]):
            h = x
            for l, layer in enumerate(self.up, 1):
                h = pyro.sample(names[l], dist.Bernoulli(logits=layer(h), validate_args=False).to_event(1))
        return h

    def decode_mean(self, h1: torch.Tensor) -> torch.Tensor:
        """E[x | h^1], the picture of a bottom hidden state."""
        return torch.sigmoid(self.down[0](h1))

    @torch.no_grad()
    def initialise_visible_bias(self, x: torch.Tensor, eps: float = 1e-3) -> None:
        """Start p(x | h^1) at the data's pixel marginals (the usual start; it saves the first epochs)."""
        p = x.float().mean(0).clamp(eps, 1 - eps)
        self.down[0].bias.copy_(torch.log(p) - torch.log1p(-p))
