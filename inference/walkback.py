r"""The denoising objective of a denoising autoencoder, with walkback (Bengio, Yao, Alain & Vincent 2013).

With a corruption :math:`C(\tilde x \mid x)` and a denoiser :math:`P_\theta(x \mid \tilde x)`, the denoising
criterion is the reconstruction log-likelihood of the clean image from a corrupted copy,

.. math::

    \mathcal{L}(\theta) = -\,E_{x}\, E_{\tilde x \sim C(\cdot \mid x)} \log P_\theta(x \mid \tilde x).

*Walkback* (Bengio et al. 2013, Sec. 3.3) also trains on the corrupted states the chain visits when it
starts at a training image: :math:`\tilde x_1 \sim C(\cdot \mid x)`, and for :math:`k \ge 1`,
:math:`x^*_k \sim P_\theta(\cdot \mid \tilde x_k)`, :math:`\tilde x_{k+1} \sim C(\cdot \mid x^*_k)`; each
:math:`\tilde x_k` is a training input whose target is the original :math:`x`. It removes spurious
modes far from the data that the chain would otherwise wander into. The loss here is the mean over the
:math:`K` walkback steps of :math:`-\log P_\theta(x \mid \tilde x_k)`, summed over the batch (so that
:math:`K = 1` is the plain denoising criterion, in nats per image); the walk itself is drawn without
gradient (it chooses the training inputs, as in the paper).

Written against :class:`inference.denoising_chain.DenoisingModel`; every draw uses torch's global RNG, which
:func:`inference.training.fit` seeds and checkpoints.

Reference: Y. Bengio, L. Yao, G. Alain, P. Vincent. Generalized Denoising Auto-Encoders as Generative
Models. NIPS 2013.
"""

from __future__ import annotations

import torch

from .block_gibbs import bernoulli_draw
from .denoising_chain import DenoisingModel
from .errors import SpecError

__all__ = ["WalkbackObjective"]


class WalkbackObjective:
    """The denoising criterion with ``walkback_steps`` corrupted states per image, an
    :class:`inference.training.Objective`.

    :param DenoisingModel model: e.g. :class:`ppl_models.dae.DenoisingAutoencoder`.
    :param int walkback_steps: K >= 1; 1 is the plain denoising autoencoder.
    """

    def __init__(self, model: DenoisingModel, walkback_steps: int = 1):
        if isinstance(walkback_steps, bool) or not isinstance(walkback_steps, int) or walkback_steps < 1:
            raise SpecError(f"walkback_steps must be a positive integer, got {walkback_steps!r}")
        if not isinstance(model, DenoisingModel):
            raise SpecError(f"model must have corrupt and denoise_logits, got {type(model).__name__}")
        self.model, self.walkback_steps = model, walkback_steps

    def _loss(self, x: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(())
        state = x
        for k in range(self.walkback_steps):
            with torch.no_grad():
                x_tilde = self.model.corrupt(state)
            logits = self.model.denoise_logits(x_tilde)
            total = total - (x * logits - torch.nn.functional.softplus(logits)).sum()
            if k < self.walkback_steps - 1:
                with torch.no_grad():  # the walk picks the next training input; no gradient through it
                    state = bernoulli_draw(torch.sigmoid(logits))
        return total / self.walkback_steps

    def loss_and_grads(self, x: torch.Tensor) -> float:
        loss = self._loss(x)
        loss.backward()
        return float(loss.detach())

    def loss(self, x: torch.Tensor) -> float:
        with torch.no_grad():
            return float(self._loss(x))
