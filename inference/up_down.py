r"""The up-down algorithm: contrastive wake-sleep fine-tuning of a deep belief net, as an objective of the shared driver.

After greedy pretraining, a DBN's recognition weights are untied from its
generative ones and all are fine-tuned together (Hinton, Osindero & Teh 2006,
App. B). Per minibatch:

1. **wake (up)**: a sampled pass :math:`v \to z_1 \to \dots \to z_{L-1}` through the recognition
   weights; the generative weights below the top take the gradient of
   :math:`\sum_l \log p(z_{l-1} \mid z_l)` at these states;
2. **top**: the top RBM takes a CD / PCD step on :math:`z_{L-1}`
   (:class:`~inference.contrastive_divergence.ContrastiveDivergence`, its negative phase the usual
   block-Gibbs chains);
3. **sleep (down)**: from the top chains' visible states, a sampled pass down through the
   generative weights; the recognition weights take the gradient of
   :math:`\sum_l \log q(z_l \mid z_{l-1})` at these "dreamed" states.

The model supplies the passes and the gradients (:class:`UpDownModel`); this
file is the schedule only. The loss the driver records is the surrogate whose
gradient the generative and top parameters follow,
:math:`-\sum_n \sum_l \log p(z_{l-1} \mid z_l) + (\sum_n F_{\text{top}}(z_{L-1}) - n \overline F_{\text{chains}})`.

Reference: G. Hinton, S. Osindero, Y.-W. Teh, "A fast learning algorithm for deep belief nets",
Neural Computation 18 (2006), Appendix B.
"""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from .contrastive_divergence import ContrastiveDivergence

__all__ = ["UpDown", "UpDownModel"]


@runtime_checkable
class UpDownModel(Protocol):
    """A stack with a top two-block energy (``top``), untied recognition weights and sampled passes."""

    top: object
    rbms: list

    def recognition_logits(self, z: torch.Tensor, index: int) -> torch.Tensor:
        """Log-odds of q(z_{index+1} = 1 | z_index)."""
        ...

    def recognise(self, v: torch.Tensor) -> list[torch.Tensor]:
        """``[v, z_1, ..., z_{L-1}]``, sampled up the recognition weights."""
        ...

    def dream(self, top_visible: torch.Tensor) -> list[torch.Tensor]:
        """``[v, z_1, ..., z_{L-1}]``, sampled down the generative weights from ``top_visible``."""
        ...

    def generative_gradients(self, states: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Gradients of the mean of ``-sum_l log p(z_{l-1} | z_l)``, keyed by parameter name."""
        ...

    def recognition_gradients(self, states: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Gradients of the mean of ``-sum_l log q(z_l | z_{l-1})``, keyed by parameter name."""
        ...


class UpDown:
    """Up-down fine-tuning of an :class:`UpDownModel` (e.g. an untied ``DeepBeliefNet``) for :func:`inference.training.fit`.

    :param model: the DBN (its ``named_parameters`` receive the gradients).
    :param int k: Gibbs sweeps per update of the top RBM's chains.
    :param bool persistent: PCD (default) or CD for the top RBM.
    :param int num_chains: the top RBM's persistent chains (default: the first batch's size).
    """

    def __init__(self, model, k: int = 1, persistent: bool = True, num_chains: Optional[int] = None):
        self.model = model
        self.top = ContrastiveDivergence(model.top, k=k, persistent=persistent, num_chains=num_chains)

    def _accumulate(self, grads: dict) -> None:
        params = dict(self.model.named_parameters())
        for name, g in grads.items():
            p = params[name]
            p.grad = g if p.grad is None else p.grad.add_(g)

    @torch.no_grad()
    def loss_and_grads(self, v: torch.Tensor) -> float:
        wake = self.model.recognise(v)
        self._accumulate(self.model.generative_gradients(wake))
        top_loss = self.top.loss_and_grads(wake[-1])  # writes the top RBM's gradients itself
        sleep = self.model.dream(self.top.kernel.initial_params["v"])
        self._accumulate(self.model.recognition_gradients(sleep))
        return self._generative_nll(wake) + top_loss

    def _generative_nll(self, states: list[torch.Tensor]) -> float:
        total = 0.0
        for index, rbm in enumerate(self.model.rbms[:-1]):
            total += float(F.binary_cross_entropy_with_logits(rbm.visible_logits(states[index + 1]), states[index],
                                                              reduction="sum"))
        return total

    @torch.no_grad()
    def loss(self, v: torch.Tensor) -> float:
        """The same surrogate at the mean-field (probability) up pass: no random draws."""
        states = [v]
        for index in range(len(self.model.rbms) - 1):
            states.append(torch.sigmoid(self.model.recognition_logits(states[-1], index)))
        return self._generative_nll(states) + self.top.loss(states[-1])

    def state_dict(self) -> dict:
        return {"top": self.top.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.top.load_state_dict(state["top"])
