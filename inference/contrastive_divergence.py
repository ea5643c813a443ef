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

The data statistics are pluggable (``data_statistics``): a map from a batch of
data to the states of the visible block at which the positive statistic is
taken. The default, the identity, is an RBM's. A deep Boltzmann machine, whose
visible block also holds hidden layers, passes its mean-field posterior means
(Salakhutdinov & Hinton 2009): the positive phase is then the gradient of the
variational bound, the negative phase the same persistent chains; a model
trained with tied copies of a layer passes the data tiled.

Data-parallel (:mod:`inference.data_parallel`, ``N`` ranks): each rank keeps
its own ``num_chains / N`` persistent chains (``num_chains`` is the global
number, the sum over ranks; by default each rank has as many chains as its
piece of the batch, so ``B`` in all) and computes the statistics of its piece
of the batch, :math:`g_r = \overline{s}(\text{data}_r) - \overline{s}(\text{chains}_r)`
with :math:`s = \partial F / \partial \theta` averaged over its ``n_r`` data and
its ``m_r`` chains. The driver combines them as :math:`\sum_r (n_r / B)\, g_r`
(``gradient_combination = "mean"``): the positive statistic is then exactly the
mean over the global batch, and the negative one the mean over all chains
whenever the pieces are equal (every full batch; in a last, partial batch split
unevenly the ranks' chain means are weighted by their data share, still an
unbiased estimate of the model expectation). A sparsity target uses each rank's
running average of its own pieces' hidden activations. Resumed with another
number of processes, the chains of all ranks are pooled and dealt out again
(:meth:`reshard_state`).

The loss the driver records is the surrogate whose gradient this is,
:math:`\sum_{v \in \text{batch}} F(v) - n\, \overline{F}(\text{chains})`, from
the hidden inputs already computed (no extra matrix product); ``loss`` on
held-out data uses the current chains, so validation minus training loss is
Hinton's free-energy gap, the overfitting monitor. The optimiser (SGD with
momentum, weight decay on the couplings) and the schedule are the driver's,
except that SGD without weight decay (plain, scikit-learn's ``BernoulliRBM``
setting, or with momentum) is applied here when the driver asks
(:meth:`ContrastiveDivergence.sgd_step`): the weights' statistic is added to the
weights, or to their momentum buffer, inside the GEMM that computes it
(``addmm_``), so the gradient is never written and read back;
an optional sparsity target on the hidden biases (Lee, Ekanadham & Ng 2008)
is added here, to the gradient of the parameter whose role is ``hidden_bias``.

References

1. G. E. Hinton, "Training products of experts by minimizing contrastive divergence", 2002.
2. T. Tieleman, "Training restricted Boltzmann machines using approximations to the likelihood gradient", ICML 2008.
3. H. Lee, C. Ekanadham, A. Ng, "Sparse deep belief net model for visual area V2", NIPS 2008.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from . import distributed
from .block_gibbs import BlockGibbs, bernoulli_draw, check_k
from .errors import SpecError
from .folded_sgd import folded_sgd_step_

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
    :param data_statistics: ``f(batch) -> visible-block states`` of the positive phase (default: the batch
        itself); e.g. a batch of images -> ``[v, mean-field means of the even hidden layers]`` for a DBM.
    :param kernel_class: the Gibbs kernel of the negative phase, called as ``kernel_class(model,
        num_chains=..., k=...)``: :class:`BlockGibbs` (default), or
        :class:`~inference.single_site_gibbs.SingleSiteGibbs` for a fully visible BM (an energy whose
        hidden block is empty, so the statistics below reduce to those of the visible units).
    :param bool fused_sgd: let the driver apply an SGD update without weight decay (plain or with momentum)
        through :meth:`sgd_step`, the weights' update (or their momentum's) accumulated into the statistic's
        GEMM instead of written as a gradient and stepped by ``torch.optim.SGD``: the same update up to
        rounding, without a pass over the weights and the optimiser's per-step overhead. False: always
        ``loss_and_grads`` and the optimiser.

    Example::

        cd = ContrastiveDivergence(rbm, k=1, persistent=True, num_chains=100)
        fit(cd, (x,), module=rbm, epochs=10, batch_size=20, optimizer="sgd", lr=0.01, momentum=0.9,
            weight_decay=1e-3, decay=[n for n, r in rbm.parameter_roles.items() if r == "coupling"])
    """

    def __init__(self, model, k: int = 1, persistent: bool = True, num_chains: Optional[int] = None,
                 sparsity_target: Optional[float] = None, sparsity_cost: float = 0.1, sparsity_decay: float = 0.9,
                 compute_loss: bool = True, kernel_class=BlockGibbs,
                 data_statistics: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, fused_sgd: bool = True):
        self.model = model
        self.data_statistics = data_statistics
        self.kernel_class = kernel_class
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
        self.fused_sgd = bool(fused_sgd)
        self.sparsity_target, self.sparsity_cost, self.sparsity_decay = sparsity_target, sparsity_cost, sparsity_decay
        self.kernel: Optional[BlockGibbs] = None
        self._row_weights: dict = {}  # (n, m) -> the statistic's row weights, +1/n then -1/m: built once per shape
        self.running_activation: Optional[torch.Tensor] = None
        self._negative_free_energy: Optional[torch.Tensor] = None  # mean F of the last negative sample
        self._hidden_bias = next((n for n, role in model.parameter_roles.items() if role == "hidden_bias"), None)
        if sparsity_target is not None and self._hidden_bias is None:
            raise SpecError(f"{type(model).__name__} declares no hidden_bias parameter for the sparsity target")

    #: how the data-parallel driver combines the ranks' gradients (means over each rank's batch piece)
    gradient_combination = "mean"

    def _chains_per_rank(self) -> Optional[int]:
        world = distributed.world_size()
        if self.num_chains is None or world == 1:
            return self.num_chains
        if self.num_chains % world:
            raise SpecError(f"num_chains {self.num_chains} is not divisible by the world size {world} (processes): "
                            f"each process keeps num_chains / {world} persistent chains")
        return self.num_chains // world

    def _kernel(self, batch_size: int) -> BlockGibbs:
        if self.kernel is None:
            self.model.validate_parameters()
            self._trainable = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
            self.kernel = self.kernel_class(self.model, num_chains=self._chains_per_rank() or batch_size, k=self.k)
        return self.kernel

    def _statistics(self, v_pos: torch.Tensor):
        """The positive phase and one call of the kernel: the rows, states and weights of the CD statistic,
        the sparsity penalty's gradient of the hidden biases over ``sparsity_cost`` (or None) and the loss
        (0.0 unless computed)."""
        model = self.model
        kernel = self._kernel(v_pos.shape[0])
        if self.data_statistics is not None:
            v_pos = self.data_statistics(v_pos)
        logits_pos = model.hidden_logits(v_pos)
        h_pos = torch.sigmoid(logits_pos)
        chains = kernel.initial_params if self.persistent else {"v": v_pos, "h": bernoulli_draw(h_pos)}
        v_neg = kernel.sample(chains)["v"]
        h_neg = kernel.last_hidden_probs
        n, m = v_pos.shape[0], v_neg.shape[0]
        weights = self._row_weights.get((n, m))
        if weights is None or weights.dtype != h_pos.dtype or weights.device != h_pos.device:
            weights = self._row_weights[n, m] = torch.cat([h_pos.new_full((n,), 1.0 / n), h_pos.new_full((m,), -1.0 / m)])
        sparsity = None
        if self.sparsity_target is not None:
            mean_h = h_pos.mean(0)
            self.running_activation = (mean_h if self.running_activation is None else
                                       self.running_activation.mul(self.sparsity_decay).add_(mean_h, alpha=1 - self.sparsity_decay))
            sparsity = self.running_activation - self.sparsity_target
        loss = 0.0
        if self.compute_loss:
            self._negative_free_energy = _free_energy_sum(model, v_neg, kernel.last_hidden_logits) / m
            loss = float(_free_energy_sum(model, v_pos, logits_pos) - n * self._negative_free_energy)
        return torch.cat([v_pos, v_neg]), torch.cat([h_pos, h_neg]), weights, sparsity, loss

    @torch.no_grad()
    def loss_and_grads(self, v_pos: torch.Tensor) -> float:
        v, h, weights, sparsity, loss = self._statistics(v_pos)
        grads = self.model.energy_gradients(v, h, weights)
        if sparsity is not None:
            grads[self._hidden_bias].add_(sparsity, alpha=self.sparsity_cost)
        for name, p in self._trainable.items():
            p.grad = grads[name] if p.grad is None else p.grad.add_(grads[name])
        return loss

    @torch.no_grad()
    def sgd_step(self, v_pos: torch.Tensor, lr: float, momentum: float = 0.0, state=None,
                 fused: bool | None = None) -> float:
        """:meth:`loss_and_grads` and an SGD step (``torch.optim.SGD``'s, without weight decay) in one, for the
        driver (``fused_sgd``): the weights' statistic is accumulated into the weights, or into their
        momentum buffer, by its own GEMM (the model's ``energy_gradient_factors``; see
        :func:`inference.folded_sgd.folded_sgd_step_`), so no gradient is written and the optimiser's pass
        over the weights is gone. ``state`` is the optimiser's (it holds the momentum buffers) and ``fused``
        its setting. A loss that is not finite leaves the parameters as they were (the driver then stops)."""
        v, h, weights, sparsity, loss = self._statistics(v_pos)
        if not math.isfinite(loss):
            return loss
        factors = getattr(self.model, "energy_gradient_factors", None)
        grads = (factors or self.model.energy_gradients)(v, h, weights)
        if sparsity is not None:  # as loss_and_grads adds it
            grads[self._hidden_bias] = grads[self._hidden_bias].add(sparsity, alpha=self.sparsity_cost)
        folded_sgd_step_(self._trainable, grads, lr, momentum=momentum, state=state, fused=fused)
        return loss

    @torch.no_grad()
    def loss(self, v: torch.Tensor) -> float:
        """:math:`\\sum F(v) - n \\overline F(\\text{last negative sample})` (0 for that term before any update)."""
        reference = 0.0 if self._negative_free_energy is None else self._negative_free_energy
        if self.data_statistics is not None:
            v = self.data_statistics(v)
        return float(self.model.free_energy(v).sum() - v.shape[0] * reference)

    def state_dict(self) -> dict:
        chains = self.kernel.initial_params if (self.persistent and self.kernel is not None) else None
        return {"chains": chains, "running_activation": self.running_activation,
                "negative_free_energy": self._negative_free_energy}

    @staticmethod
    def reshard_state(states: list, world: int, rank: int) -> dict:
        """Rank ``rank``'s state of ``world`` from the states of the ranks that wrote a checkpoint: the
        persistent chains pooled and split into ``world`` contiguous pieces (as equal as can be), the
        running averages averaged."""
        def mean(values):
            values = [v for v in values if v is not None]
            return None if not values else sum(values) / len(values)

        chains = [s["chains"] for s in states if s["chains"] is not None]
        mine = None
        if chains:
            pooled = {key: torch.cat([c[key] for c in chains]) for key in chains[0]}
            if next(iter(pooled.values())).shape[0] < world:
                raise SpecError(f"the checkpoint holds {next(iter(pooled.values())).shape[0]} persistent chains in all, "
                                f"fewer than the {world} processes of this run")
            mine = {key: distributed.shard(value, world, rank) for key, value in pooled.items()}
        return {"chains": mine, "running_activation": mean([s["running_activation"] for s in states]),
                "negative_free_energy": mean([s["negative_free_energy"] for s in states])}

    def load_state_dict(self, state: dict) -> None:
        if state["chains"] is not None:
            self._kernel(state["chains"]["v"].shape[0]).initial_params = state["chains"]
        self.running_activation = state["running_activation"]
        self._negative_free_energy = state["negative_free_energy"]
