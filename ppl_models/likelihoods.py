r"""Observation models scored in as few passes over the pixels as the maths allows.

The images' log-likelihood is the hottest elementwise work of a directed model: importance-sampled
log p(x) at k = 1000 scores a ``(k, batch, 784)`` tensor of logits per pass. Written as
``Bernoulli(logits).to_event(1).log_prob(x)`` it costs about five passes over that tensor (a binary
cross-entropy with its own temporaries, a negation, a sum); written as

.. math::

    \log p(x \mid \ell) = \sum_d x_d \ell_d - \operatorname{softplus}(\ell_d)
                        = x \cdot \ell - \sum_d \operatorname{softplus}(\ell_d)

it is one dot product (when scoring without gradients, a batched matrix-vector product that never
materialises :math:`x \odot \ell` when :math:`x` is broadcast over particles; under autograd an
elementwise product, whose backward is cheaper) and one softplus-and-sum: about half the time on one CPU
thread (measured on ``(500, 100, 784)``: 0.38 s against 0.84 s). The value and its gradient
(:math:`x - \sigma(\ell)`) equal the Bernoulli's to floating-point rounding for every :math:`x` in
:math:`[0, 1]`, which ``tests/ppl_models/test_likelihoods.py`` checks.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F

__all__ = ["BernoulliPixels"]


class BernoulliPixels(dist.Independent):
    """Independent Bernoulli pixels with logits ``(..., D)``: ``Bernoulli(logits).to_event(1)`` with a
    one-pass ``log_prob``. Sampling, ``mean`` and ``expand`` are the Bernoulli's."""

    def __init__(self, logits: torch.Tensor, validate_args=None):
        super().__init__(dist.Bernoulli(logits=logits, validate_args=False), 1, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(BernoulliPixels, _instance)
        return super().expand(batch_shape, _instance=new)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits = self.base_dist.logits
        if torch.is_grad_enabled() and logits.requires_grad:
            # training: the product's backward is elementwise, twice as fast as einsum's batched products
            # (measured on (k, 100, 784), k = 1, 5, 50, one thread)
            return (value * logits).sum(-1) - F.softplus(logits).sum(-1)
        # scoring: einsum broadcasts value over the particle dimensions without forming value * logits
        # (0.15 s against 0.23 s on (500, 100, 784))
        return torch.einsum("...d,...d->...", value, logits) - F.softplus(logits).sum(-1)
