r"""CD-k and PCD-k as an objective of the shared driver, the negative phase drawn by :class:`~inference.block_gibbs.BlockGibbs`.

The log-likelihood gradient of an energy model is a difference of two
expectations of :math:`\partial F / \partial\theta`,

.. math::

    -\frac{\partial \log p(v)}{\partial \theta}
      = \mathbb E_{\text{data}}\Big[\frac{\partial F(v)}{\partial\theta}\Big]
      - \mathbb E_{\text{model}}\Big[\frac{\partial F(v)}{\partial\theta}\Big].

The model expectation is estimated from Gibbs chains: CD-k (Hinton 2002)
restarts them at the minibatch and runs ``k`` sweeps; PCD-k (Tieleman 2008)
keeps persistent chains across parameter updates. Here those chains *are* the
kernel's state (saved in the driver's checkpoint through :meth:`state_dict`)
and each update calls the kernel's ``sample`` once (``k`` sweeps). The hidden
side is Rao-Blackwellised: the statistic at each visible state uses
:math:`p(h \mid v)` (the kernel's ``last_hidden_probs``), so an update costs
five matrix products for k = 1, like scikit-learn's ``BernoulliRBM``, and the
positive and negative statistics share one GEMM (rows weighted +1/n and -1/m),
so each parameter's gradient is written once.

The loss the driver records is the surrogate whose gradient this is,
:math:`\sum_{v \in \text{batch}} F(v) - n\, \overline{F}(\text{chains})`, from
the hidden inputs already computed (no extra matrix product); ``loss`` on
held-out data uses the current chains, so validation minus training loss is
Hinton's free-energy gap, the overfitting monitor. The optimiser (SGD with
momentum, weight decay on the couplings) and the schedule are the driver's;
an optional sparsity target on the hidden biases (Lee, Ekanadham & Ng 2008)
is added here, to the gradient of the parameter whose role is ``hidden_bias``.

References

1. G. E. Hinton, "Training products of experts by minimizing contrastive divergence", 2002.
2. T. Tieleman, "Training restricted Boltzmann machines using approximations to the likelihood gradient", ICML 2008.
3. H. Lee, C. Ekanadham, A. Ng, "Sparse deep belief net model for visual area V2", NIPS 2008.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .block_gibbs import BlockGibbs, bernoulli_draw, check_k
from .errors import SpecError

__all__ = ["ContrastiveDivergence"]


def _free_energy_sum(model, v: torch.Tensor, hidden_logits: torch.Tensor) -> torch.Tensor:
    """Sum over rows of F(v), from the hidden inputs already at hand (no matrix product): the visible
    term plus the summed-out hidden units."""
    return model.visible_energy(v).sum() - F.softplus(hidden_logits).sum()


class ContrastiveDivergence:
    """CD-k / PCD-k for a :class:`~inference.energy.TwoBlockEnergy` with ``energy_gradients``.

    :param model: the energy model (an ``RBM``, a ``GaussianBernoulliRBM``).
    :param int k: Gibbs sweeps per update.
    :param bool persistent: PCD (chains kept across updates) or CD (chains restart at the batch).
    :param int num_chains: persistent chains (default: the first batch's size).
    :param float sparsity_target: target mean activation of each hidden unit, in (0, 1).
    :param float sparsity_cost: weight of the sparsity penalty.
    :param float sparsity_decay: decay of the running mean activation.
    :param bool compute_loss: compute the surrogate loss each update (about 5% of a 784x500 update);
        False reports 0.0 instead, for timing against trainers that compute none (divergence is then
        caught by the driver's end-of-epoch check of the parameters).

    Example::

        cd = ContrastiveDivergence(rbm, k=1, persistent=True, num_chains=100)
        fit(cd, (x,), module=rbm, epochs=10, batch_size=20, optimizer="sgd", lr=0.01, momentum=0.9,
            weight_decay=1e-3, decay=[n for n, r in rbm.parameter_roles.items() if r == "coupling"])
    """

    def __init__(self, model, k: int = 1, persistent: bool = True, num_chains: Optional[int] = None,
                 sparsity_target: Optional[float] = None, sparsity_cost: float = 0.1, sparsity_decay: float = 0.9,
                 compute_loss: bool = True):
        self.model = model
        self.k = check_k(k)
        self.persistent = bool(persistent)
        if num_chains is not None and (isinstance(num_chains, bool) or not isinstance(num_chains, int) or num_chains < 1):
            raise SpecError(f"num_chains must be a positive integer or None, got {num_chains!r}")
        if sparsity_target is not None and not 0 < sparsity_target < 1:
            raise SpecError(f"sparsity_target must lie in (0, 1), got {sparsity_target!r}")
        if not (sparsity_cost >= 0 and 0 <= sparsity_decay <= 1):
            raise SpecError(f"sparsity_cost must be >= 0 and sparsity_decay in [0, 1], got {sparsity_cost!r}, {sparsity_decay!r}")
        self.num_chains = num_chains
        self.compute_loss = bool(compute_loss)
        self.sparsity_target, self.sparsity_cost, self.sparsity_decay = sparsity_target, sparsity_cost, sparsity_decay
        self.kernel: Optional[BlockGibbs] = None
        self.running_activation: Optional[torch.Tensor] = None
        self._negative_free_energy: Optional[torch.Tensor] = None  # mean F of the last negative sample
        self._hidden_bias = next((n for n, role in model.parameter_roles.items() if role == "hidden_bias"), None)
        if sparsity_target is not None and self._hidden_bias is None:
            raise SpecError(f"{type(model).__name__} declares no hidden_bias parameter for the sparsity target")

    def _kernel(self, batch_size: int) -> BlockGibbs:
        if self.kernel is None:
            self.model.validate_parameters()
            self._trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
            self.kernel = BlockGibbs(self.model, num_chains=self.num_chains or batch_size, k=self.k)
        return self.kernel

    @torch.no_grad()
    def loss_and_grads(self, v_pos: torch.Tensor) -> float:
        model = self.model
        kernel = self._kernel(v_pos.shape[0])
        logits_pos = model.hidden_logits(v_pos)
        h_pos = torch.sigmoid(logits_pos)
        chains = kernel.initial_params if self.persistent else {"v": v_pos, "h": bernoulli_draw(h_pos)}
        v_neg = kernel.sample(chains)["v"]
        h_neg = kernel.last_hidden_probs
        n, m = v_pos.shape[0], v_neg.shape[0]
        weights = torch.cat([h_pos.new_full((n,), 1.0 / n), h_pos.new_full((m,), -1.0 / m)])
        grads = model.energy_gradients(torch.cat([v_pos, v_neg]), torch.cat([h_pos, h_neg]), weights)
        if self.sparsity_target is not None:
            mean_h = h_pos.mean(0)
            self.running_activation = (mean_h if self.running_activation is None else
                                       self.running_activation.mul(self.sparsity_decay).add_(mean_h, alpha=1 - self.sparsity_decay))
            grads[self._hidden_bias].add_(self.running_activation - self.sparsity_target, alpha=self.sparsity_cost)
        for name, p in self._trainable:
            p.grad = grads[name] if p.grad is None else p.grad.add_(grads[name])
        if not self.compute_loss:
            return 0.0
        self._negative_free_energy = _free_energy_sum(model, v_neg, kernel.last_hidden_logits) / m
        return float(_free_energy_sum(model, v_pos, logits_pos) - n * self._negative_free_energy)

    @torch.no_grad()
    def loss(self, v: torch.Tensor) -> float:
        """:math:`\\sum F(v) - n \\overline F(\\text{last negative sample})` (0 for that term before any update)."""
        reference = 0.0 if self._negative_free_energy is None else self._negative_free_energy
        return float(self.model.free_energy(v).sum() - v.shape[0] * reference)

    def state_dict(self) -> dict:
        chains = self.kernel.initial_params if (self.persistent and self.kernel is not None) else None
        return {"chains": chains, "running_activation": self.running_activation,
                "negative_free_energy": self._negative_free_energy}

    def load_state_dict(self, state: dict) -> None:
        if state["chains"] is not None:
            self._kernel(state["chains"]["v"].shape[0]).initial_params = state["chains"]
        self.running_activation = state["running_activation"]
        self._negative_free_energy = state["negative_free_energy"]
