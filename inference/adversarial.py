r"""The non-saturating GAN objective (label smoothing, optional R1 penalty), an alternating :class:`~inference.training.Objective`.

A discriminator :math:`D(x) = \sigma(g(x))` and a generator :math:`x = G(z)`,
:math:`z \sim p(z)`, play Goodfellow et al.'s game. The discriminator minimises
the cross-entropy of telling training images from generated ones, with the
target of a training image smoothed from 1 to :math:`s = 1 - \epsilon` (one-sided
label smoothing, Salimans et al. 2016: the stabiliser used here; it keeps
:math:`D` from growing overconfident on the data, whose gradient would then
vanish or explode for the generator, and leaves the fakes' target at 0 so that
no probability is pushed onto regions without data):

.. math::

    L_D = -\sum_{i=1}^{n} \big[s \log \sigma(g(x_i)) + (1 - s) \log \sigma(-g(x_i))\big]
          - \sum_{j=1}^{n} \log \sigma(-g(G(z_j))).

The generator minimises the non-saturating loss (the paper's remedy for
:math:`\log(1 - D(G(z)))`, whose gradient vanishes while :math:`D` rejects the
fakes confidently):

.. math::

    L_G = -\sum_{j=1}^{n} \log \sigma(g(G(z_j))), \qquad
    \frac{\partial L_G}{\partial g_j} = -\sigma(-g_j) = D(G(z_j)) - 1.

A second stabiliser, off by default, is Mescheder et al.'s R1 penalty: the
discriminator's loss gains

.. math::

    R_1 = \frac{\gamma}{2} \sum_{i=1}^{n} \lVert \nabla_x g(x_i) \rVert^2,

the squared gradient of the discriminator's *logit* with respect to its input,
on the training images only. It penalises a discriminator whose decision
surface is steep where the data lie, which is what makes the game oscillate
near equilibrium instead of converging (Mescheder et al. 2018, section 4.1); it
leaves the generator's loss unchanged. The gradient is taken with respect to
the images exactly as they are given to the discriminator (the catalogue's GAN:
grey levels in [0, 1]; its discriminator standardises them to [-1, 1] inside, so
its gradient there is twice that on the standardised scale, and a
:math:`\gamma` quoted for images in [-1, 1] is four times this one). Each
image's gradient comes from one backward pass through the sum of the logits,
which is exact because the discriminator scores every image on its own (no
batch normalisation); the penalty's own gradient in the parameters is a second
derivative (``create_graph=True``).

Both are sums over the batch (``n`` generated images per ``n`` training
images), the driver's convention. The objective has two ``phases``:
:func:`inference.training.fit` takes one optimiser step on the discriminator's
gradient, then one on the generator's, per batch (one discriminator step per
generator step). The generator phase reuses the images generated in the
discriminator phase (as the usual implementation does), now scored by the
updated discriminator, and accumulates gradient into the generator's
parameters only. The discriminator is the objective's ``auxiliary`` module, so
the driver optimises and checkpoints it beside the generator.

References:
 [1] Goodfellow, Pouget-Abadie, Mirza, Xu, Warde-Farley, Ozair, Courville, Bengio. Generative Adversarial
     Nets. NeurIPS 2014.
 [2] Salimans, Goodfellow, Zaremba, Cheung, Radford, Chen. Improved Techniques for Training GANs. NeurIPS 2016.
 [3] Mescheder, Geiger, Nowozin. Which Training Methods for GANs do actually Converge? ICML 2018.

Example::

    objective = NonSaturatingGAN(generator, discriminator, label_smoothing=0.1)
    fit(objective, (x,), module=with_auxiliary(generator, objective), epochs=10, batch_size=32, lr=2e-4)
"""

from __future__ import annotations

import math
from typing import Optional, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import SpecError

__all__ = ["ImplicitGenerator", "NonSaturatingGAN", "discriminator_loss", "generator_loss", "r1_penalty"]


@runtime_checkable
class ImplicitGenerator(Protocol):
    """A model that can only be sampled: ``sample(n)`` returns ``n`` images, differentiable in ``parameters()``."""

    def sample(self, n: int) -> torch.Tensor: ...

    def parameters(self): ...


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """:math:`L_D` above for the logits of ``n`` training and ``n`` generated images (the fakes' term is their
    mean times ``n``, so that any number of fakes stands for ``n``)."""
    s = 1.0 - label_smoothing
    real = -(s * F.logsigmoid(real_logits) + (1 - s) * F.logsigmoid(-real_logits)).sum()
    return real - F.logsigmoid(-fake_logits).mean() * real_logits.shape[0]


def r1_penalty(discriminator: nn.Module, x: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:math:`R_1` above for ``n`` training images ``x`` (summed over them), and their logits (reused by
    :math:`L_D`). The penalty stays differentiable in the discriminator's parameters."""
    x = x.detach().requires_grad_(True)
    logits = discriminator(x)
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    return gamma / 2 * grad.pow(2).reshape(grad.shape[0], -1).sum(), logits


def generator_loss(fake_logits: torch.Tensor, n: Optional[int] = None) -> torch.Tensor:
    """:math:`L_G` above, the non-saturating loss, scaled to ``n`` images (default: as many as given)."""
    n = fake_logits.shape[0] if n is None else n
    return -F.logsigmoid(fake_logits).mean() * n


class NonSaturatingGAN:
    """The objective above for :func:`inference.training.fit`.

    :param generator: an :class:`ImplicitGenerator` (the model; its parameters are the driver's module).
    :param discriminator: an ``nn.Module`` mapping images to the logits :math:`g(x)`, shape ``(n,)``.
    :param float label_smoothing: :math:`\\epsilon` in [0, 1): the training images' target is
        :math:`1 - \\epsilon` (0: the plain GAN).
    :param float gradient_penalty: :math:`\\gamma \\geq 0` of the R1 penalty (0: none).
    """

    phases = ("discriminator", "generator")

    def __init__(self, generator: ImplicitGenerator, discriminator: nn.Module, label_smoothing: float = 0.1,
                 gradient_penalty: float = 0.0):
        if not isinstance(generator, ImplicitGenerator):
            raise SpecError(f"the generator must have sample(n) and parameters(), got {type(generator).__name__}")
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
                or not math.isfinite(label_smoothing) or not 0 <= label_smoothing < 1:
            raise SpecError(f"label_smoothing must lie in [0, 1), got {label_smoothing!r}")
        if isinstance(gradient_penalty, bool) or not isinstance(gradient_penalty, (int, float)) \
                or not math.isfinite(gradient_penalty) or gradient_penalty < 0:
            raise SpecError(f"gradient_penalty must be a finite number >= 0, got {gradient_penalty!r}")
        self.generator, self.discriminator, self.label_smoothing = generator, discriminator, float(label_smoothing)
        self.gradient_penalty = float(gradient_penalty)
        self._fakes: Optional[torch.Tensor] = None

    @property
    def auxiliary(self) -> nn.Module:
        """The discriminator: trained and checkpointed by the driver beside the generator."""
        return self.discriminator

    def _generate(self, n: int) -> torch.Tensor:
        # batch normalisation needs two images to normalise a batch; a last batch of one still gets two fakes
        return self.generator.sample(max(n, 2))

    def loss_and_grads(self, x: torch.Tensor, *rest: torch.Tensor, phase: Optional[str] = None) -> float:
        """One phase's loss (summed over the batch) with its gradient: ``"discriminator"`` (into the
        discriminator's parameters only), then ``"generator"`` (into the generator's only). Without a phase,
        both gradients at once from the same state (simultaneous updates), returning the sum."""
        n = x.shape[0]
        if phase is None:
            return self.loss_and_grads(x, phase="discriminator") + self.loss_and_grads(x, phase="generator")
        if phase == "discriminator":
            self._fakes = self._generate(n)
            loss = self._discriminator_loss(x, self.discriminator(self._fakes.detach()))
            loss.backward(inputs=[p for p in self.discriminator.parameters() if p.requires_grad])
            return loss.item()
        if phase == "generator":
            fakes = self._fakes if self._fakes is not None else self._generate(n)
            self._fakes = None
            loss = generator_loss(self.discriminator(fakes), n)
            loss.backward(inputs=[p for p in self.generator.parameters() if p.requires_grad])
            return loss.item()
        raise SpecError(f"unknown phase {phase!r}; the phases are: {', '.join(self.phases)}")

    def _discriminator_loss(self, x: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """:math:`L_D`, plus :math:`R_1` when :math:`\\gamma > 0`."""
        if self.gradient_penalty == 0:
            return discriminator_loss(self.discriminator(x), fake_logits, self.label_smoothing)
        penalty, real_logits = r1_penalty(self.discriminator, x, self.gradient_penalty)
        return discriminator_loss(real_logits, fake_logits, self.label_smoothing) + penalty

    def loss(self, x: torch.Tensor, *rest: torch.Tensor) -> float:
        """:math:`L_D + L_G` on ``x`` and fresh generated images, without gradients (the validation loss, on the
        scale of the training loss: the sum of the two phases', the R1 penalty included)."""
        n = x.shape[0]
        with torch.no_grad():
            fake_logits = self.discriminator(self._generate(n))
        # the R1 penalty is a gradient in the images, even when validating
        with torch.enable_grad() if self.gradient_penalty else torch.no_grad():
            d_loss = self._discriminator_loss(x, fake_logits)
        return float(d_loss.detach() + generator_loss(fake_logits, n))
