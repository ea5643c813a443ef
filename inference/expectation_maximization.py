r"""Batch EM as an objective of the shared driver (:func:`~inference.training.fit`).

For a latent-variable model whose complete-data likelihood is in the
exponential family (a mixture of Bernoullis, of Gaussians, ...), one EM
iteration is

* **E-step**: under the current parameters :math:`\theta^{(t)}`, the expected
  sufficient statistics :math:`\bar s = \sum_n \mathbb E_{p(z | x_n, \theta^{(t)})}[s(x_n, z)]`,
  additive over datapoints, so they are summed batch by batch;
* **M-step**: :math:`\theta^{(t+1)} = \arg\max_\theta Q(\theta, \theta^{(t)}) + \log p(\theta)`,
  in closed form from :math:`\bar s`, where
  :math:`Q(\theta, \theta^{(t)}) = \sum_n \mathbb E_{p(z | x_n, \theta^{(t)})} \log p(x_n, z | \theta)`.

Why the objective never decreases: for any :math:`\theta`,
:math:`\log p(X | \theta) = Q(\theta, \theta^{(t)}) + H(\theta, \theta^{(t)})` with
:math:`H(\theta, \theta^{(t)}) = -\sum_n \mathbb E_{p(z | x_n, \theta^{(t)})} \log p(z | x_n, \theta)`,
and by Gibbs' inequality :math:`H(\theta, \theta^{(t)}) \ge H(\theta^{(t)}, \theta^{(t)})`.
The M-step gives :math:`Q(\theta^{(t+1)}) + \log p(\theta^{(t+1)}) \ge Q(\theta^{(t)}) + \log p(\theta^{(t)})`,
so :math:`\log p(X | \theta) + \log p(\theta)` never decreases (the log-likelihood
itself, when the prior is flat). Here one iteration is one epoch: the driver
calls :meth:`ExpectationMaximization.loss_and_grads` on every batch (E-step,
accumulating statistics) and :meth:`~ExpectationMaximization.end_epoch` after
the last (M-step). The loss it records is :math:`-\sum_n \log p(x_n | \theta^{(t)})`,
exact, under the parameters *before* that epoch's M-step. No gradients are
set, so the driver's optimiser step changes nothing.

References

1. A. P. Dempster, N. M. Laird, D. B. Rubin, "Maximum likelihood from incomplete data via the EM algorithm",
   J. Royal Statistical Society B 39(1), 1977.
2. C. F. J. Wu, "On the convergence properties of the EM algorithm", Annals of Statistics 11(1), 1983.
"""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

import torch

from .errors import SpecError

__all__ = ["ConjugateMixture", "ExpectationMaximization"]


@runtime_checkable
class ConjugateMixture(Protocol):
    """A model with a closed-form EM step.

    ``expected_statistics(x)`` returns ``(stats, log_prob)``: a dict of tensors *summed*
    over the batch (so the statistics of a data set are the sum of its batches') and the
    exact ``log p(x_n)`` per datapoint; ``maximize(stats)`` writes the M-step's parameters
    in place; ``log_prob(x)`` is the exact ``log p(x_n)``.
    """

    def expected_statistics(self, x: torch.Tensor) -> tuple[dict, torch.Tensor]: ...

    def maximize(self, stats: dict) -> None: ...

    def log_prob(self, x: torch.Tensor) -> torch.Tensor: ...


class ExpectationMaximization:
    """Exact batch EM over a :class:`ConjugateMixture`: one EM iteration per epoch.

    :param model: e.g. :class:`ppl_models.mixture.BernoulliMixture`.

    Example::

        em = ExpectationMaximization(mix)
        fit(em, (x,), module=mix, epochs=30, batch_size=1000)   # 30 EM iterations
    """

    def __init__(self, model: ConjugateMixture):
        if not isinstance(model, ConjugateMixture):
            raise SpecError(f"EM needs a model with expected_statistics(x), maximize(stats) and log_prob(x), "
                            f"got {type(model).__name__}")
        self.model = model
        self.stats: Optional[dict] = None

    def loss_and_grads(self, *batch: torch.Tensor) -> float:
        """E-step on the batch (its statistics are accumulated); returns ``-sum_n log p(x_n)``."""
        with torch.no_grad():
            stats, log_px = self.model.expected_statistics(batch[0])
        if self.stats is None:
            self.stats = {name: value.clone() for name, value in stats.items()}
        else:
            for name, value in stats.items():
                self.stats[name] += value
        return -float(log_px.sum())

    def loss(self, *batch: torch.Tensor) -> float:
        """``-sum_n log p(x_n)`` under the current parameters, without side effects."""
        with torch.no_grad():
            return -float(self.model.log_prob(batch[0]).sum())

    def end_epoch(self) -> None:
        """M-step from the statistics of every batch since the last one; then start afresh."""
        if self.stats is not None:
            self.model.maximize(self.stats)
        self.stats = None

    def state_dict(self) -> dict:
        return {"stats": None if self.stats is None else {k: v.clone() for k, v in self.stats.items()}}

    def load_state_dict(self, state: Optional[dict]) -> None:
        stats = (state or {}).get("stats")
        self.stats = None if stats is None else {k: v.clone() for k, v in stats.items()}
