r"""Deep Boltzmann machines with binary units and any number of hidden layers.

Layers :math:`x^{(0)} = v, x^{(1)} = h^1, \dots, x^{(L)} = h^L`, weights
:math:`W_l` (:math:`n_{l-1} \times n_l`) between adjacent layers only, biases :math:`b_l`:

.. math::

    E(x) = -\sum_{l=1}^{L} x^{(l-1)\top} W_l\, x^{(l)} - \sum_{l=0}^{L} b_l^\top x^{(l)}.

Adjacent layers have opposite parity, so the *even* layers (:math:`v, h^2, h^4, \dots`)
are conditionally independent given the *odd* ones (:math:`h^1, h^3, \dots`) and
vice versa: a DBM is a two-block energy. :class:`DBM` implements
:class:`inference.energy.AnnealableEnergy` (structurally, importing nothing of
:mod:`inference`) with the even block as the protocol's "visible" block and the odd
block as its "hidden" block, so block Gibbs, CD / PCD, exact enumeration and AIS run
on it unchanged. ``num_visible`` / ``num_hidden`` are those *block* sizes;
``layer_sizes[0]`` is the data's. The conditionals, with :math:`x^{(-1)}, x^{(L+1)}` absent,

.. math::

    p(x^{(l)}_i = 1 \mid x^{(l-1)}, x^{(l+1)}) = \sigma\big(b_{l,i} + (x^{(l-1)\top} W_l)_i + (W_{l+1} x^{(l+1)})_i\big),

and either block sums out in closed form (a softplus per unit), giving the free
energies. It also implements the small protocol of :mod:`inference.mean_field`
(the layer logits given the other layers' means) and the variational free energy
:math:`E(v, \mu) - H(\mu)` whose minimum the mean-field fixed point is.

References

1. R. Salakhutdinov, G. Hinton, "Deep Boltzmann machines", AISTATS 2009.
2. R. Salakhutdinov, G. Hinton, "An efficient learning procedure for deep Boltzmann machines",
   Neural Computation 24 (2012).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .data.binarize import check_binary
from .errors import DataError, SpecError
from .rbm import bernoulli_draw
from .rbm_annealing import VisibleLogitsAnnealingPath

__all__ = ["DBM", "check_layer_sizes"]


def check_layer_sizes(sizes) -> list[int]:
    """``sizes`` as a list if it is at least two positive integers ``[V, H1, ...]``, else a one-line SpecError."""
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) < 2:
        raise SpecError(f"layer sizes must be a list [visible, hidden 1, ...] of at least 2 positive integers, got {sizes!r}")
    for i, n in enumerate(sizes):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise SpecError(f"layer sizes must be positive integers, got {n!r} for layer {i} in {list(sizes)}")
    return list(sizes)


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    # -p log p - (1-p) log(1-p), with 0 log 0 = 0
    return -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))


class DBM(nn.Module):
    r"""Binary deep Boltzmann machine (Salakhutdinov & Hinton 2009), a two-block energy (even vs odd layers).

    Parameters ``weights.{l-1}`` (:math:`W_l`, shape ``(n_{l-1}, n_l)``) and ``biases.{l}``
    (:math:`b_l`). Block tensors concatenate their layers in order: even block
    ``[v, h2, h4, ...]``, odd block ``[h1, h3, ...]``.

    :param list layer_sizes: ``[V, H1, H2, ...]``, at least one hidden layer.
    :param float weight_scale: standard deviation of the initial weights.

    Example::

        >>> dbm = DBM([4, 3, 2])
        >>> dbm.num_visible, dbm.num_hidden      # blocks: v + h2, h1
        (6, 3)
        >>> dbm.free_energy(torch.zeros(5, 6)).shape
        torch.Size([5])
    """

    visible_type = "bernoulli"

    def __init__(self, layer_sizes, weight_scale: float = 0.01):
        super().__init__()
        sizes = check_layer_sizes(layer_sizes)
        if not (isinstance(weight_scale, (int, float)) and weight_scale >= 0 and math.isfinite(weight_scale)):
            raise SpecError(f"weight_scale must be a finite number >= 0, got {weight_scale!r}")
        self.weights = nn.ParameterList([nn.Parameter(torch.randn(a, b) * weight_scale) for a, b in zip(sizes, sizes[1:])])
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(n)) for n in sizes])

    @classmethod
    def from_parameters(cls, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]) -> DBM:
        """A DBM with these weights and biases (copied), after checking that their sizes chain."""
        if len(weights) < 1 or len(biases) != len(weights) + 1:
            raise SpecError(f"a DBM needs L >= 1 weight matrices and L + 1 bias vectors, got {len(weights)} and {len(biases)}")
        sizes = [int(biases[0].shape[0])] + [int(b.shape[0]) for b in biases[1:]]
        for i, w in enumerate(weights):
            if tuple(w.shape) != (sizes[i], sizes[i + 1]):
                raise SpecError(f"layer sizes that do not chain: weight {i + 1} is {tuple(w.shape)} but layers {i} and "
                                f"{i + 1} have {sizes[i]} and {sizes[i + 1]} units")
        dbm = cls(sizes, weight_scale=0.0)
        with torch.no_grad():
            for p, w in zip(dbm.weights, weights):
                p.copy_(w)
            for p, b in zip(dbm.biases, biases):
                p.copy_(b)
        return dbm

    # -- sizes and the block layout ---------------------------------------------------------
    @property
    def layer_sizes(self) -> list[int]:
        return [int(b.shape[0]) for b in self.biases]

    @property
    def num_layers(self) -> int:
        """Hidden layers :math:`L`."""
        return len(self.weights)

    @property
    def num_data(self) -> int:
        """Units of the data layer :math:`v` (the pixels)."""
        return self.layer_sizes[0]

    @property
    def num_visible(self) -> int:
        """Units in the even block (the protocol's visible block): :math:`v, h^2, h^4, \\dots`."""
        return sum(self.layer_sizes[0::2])

    @property
    def num_hidden(self) -> int:
        """Units in the odd block (the protocol's hidden block): :math:`h^1, h^3, \\dots`."""
        return sum(self.layer_sizes[1::2])

    @property
    def parameter_roles(self) -> dict[str, str]:
        """Weights are couplings (weight decay); ``biases.0`` the data layer's bias; the others hidden biases."""
        return {name: ("coupling" if name.startswith("weights") else "visible_bias" if name == "biases.0" else "hidden_bias")
                for name, _ in self.named_parameters()}

    def split_block(self, x: torch.Tensor, parity: int) -> list[torch.Tensor]:
        """The layers of an even (``parity`` 0) or odd (1) block tensor, in order."""
        return list(torch.split(x, self.layer_sizes[parity::2], dim=-1))

    def layers(self, even: torch.Tensor, odd: torch.Tensor) -> list[torch.Tensor]:
        """All layers :math:`[x^{(0)}, \\dots, x^{(L)}]` from the two blocks."""
        e, o = self.split_block(even, 0), self.split_block(odd, 1)
        return [e[i // 2] if i % 2 == 0 else o[i // 2] for i in range(self.num_layers + 1)]

    # -- conditionals ------------------------------------------------------------------------
    def layer_logits(self, layers: Sequence[torch.Tensor | None], l: int) -> torch.Tensor:
        """Total input of layer ``l`` given its neighbours ``layers[l-1]``, ``layers[l+1]`` (means or states)."""
        out = self.biases[l]
        if l > 0:
            out = torch.addmm(out, layers[l - 1], self.weights[l - 1]) if layers[l - 1].dim() == 2 \
                else out + layers[l - 1] @ self.weights[l - 1]
        if l < self.num_layers:
            out = out + layers[l + 1] @ self.weights[l].t()
        return out

    def _block_logits(self, x: torch.Tensor, parity: int) -> torch.Tensor:
        # logits of every layer of parity `parity` given the block of the other parity
        other = self.split_block(x, 1 - parity)
        layers = [other[i // 2] if i % 2 != parity else None for i in range(self.num_layers + 1)]
        return torch.cat([self.layer_logits(layers, l) for l in range(parity, self.num_layers + 1, 2)], -1)

    def hidden_logits(self, even: torch.Tensor) -> torch.Tensor:
        """Total input of every odd-layer unit given the even block, shape ``(..., num_hidden)``."""
        return self._block_logits(even, 1)

    def hidden_probs(self, even: torch.Tensor) -> torch.Tensor:
        """:math:`p(\\text{odd} = 1 \\mid \\text{even})`."""
        return torch.sigmoid(self.hidden_logits(even))

    def visible_logits(self, odd: torch.Tensor) -> torch.Tensor:
        """Total input of every even-layer unit given the odd block, shape ``(..., num_visible)``."""
        return self._block_logits(odd, 0)

    def visible_probs(self, odd: torch.Tensor) -> torch.Tensor:
        """:math:`p(\\text{even} = 1 \\mid \\text{odd})`."""
        return torch.sigmoid(self.visible_logits(odd))

    visible_mean = visible_probs

    def sample_visible(self, odd: torch.Tensor) -> torch.Tensor:
        """A draw of the even block given the odd one, 0/1 floats."""
        return bernoulli_draw(self.visible_probs(odd))

    # -- energies ----------------------------------------------------------------------------
    def layer_energy(self, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        """:math:`E(x^{(0)}, \\dots, x^{(L)})`; with means in place of states it is :math:`E_q[E]` under a factorised q."""
        e = -sum((x * b).sum(-1) for x, b in zip(layers, self.biases))
        for l, w in enumerate(self.weights):
            e = e - ((layers[l] @ w) * layers[l + 1]).sum(-1)
        return e

    def energy(self, even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
        """:math:`E` of block states, broadcasting over leading dimensions."""
        return self.layer_energy(self.layers(even, odd))

    def _bias_term(self, x: torch.Tensor, parity: int) -> torch.Tensor:
        return sum((xl * self.biases[l]).sum(-1) for xl, l in zip(self.split_block(x, parity),
                                                                   range(parity, self.num_layers + 1, 2)))

    def visible_energy(self, even: torch.Tensor) -> torch.Tensor:
        """The part of :math:`E` with even units alone: :math:`-\\sum_{l \\text{ even}} b_l^\\top x^{(l)}` (no
        two even layers interact)."""
        return -self._bias_term(even, 0)

    def free_energy(self, even: torch.Tensor) -> torch.Tensor:
        """:math:`-\\log \\sum_{\\text{odd}} e^{-E}`: the odd layers summed out in closed form."""
        return self.visible_energy(even) - F.softplus(self.hidden_logits(even)).sum(-1)

    def hidden_free_energy(self, odd: torch.Tensor) -> torch.Tensor:
        """:math:`-\\log \\sum_{\\text{even}} e^{-E}`: the even layers (the data layer too) summed out."""
        return -self._bias_term(odd, 1) - F.softplus(self.visible_logits(odd)).sum(-1)

    def observed_free_energy(self, odd: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        r""":math:`-\log \sum_{h^2, h^4, \dots} e^{-E(v, \text{even}, \text{odd})}` with the data layer held at ``v``:
        the even hidden layers summed out in closed form, so that :math:`\log p(v)` needs only the odd block
        enumerated (:func:`inference.exact_enumeration.log_prob_observed`). For every pair of the rows of
        ``v`` (N, V) and of ``odd`` (S, H): shape (N, S), the data term one matrix product."""
        logits = self.visible_logits(odd)
        data_logits, rest = logits[:, :self.num_data], logits[:, self.num_data:]
        per_state = -self._bias_term(odd, 1) - F.softplus(rest).sum(-1)  # (S,): no v in it
        return per_state - v @ data_logits.t()

    def energy_gradients(self, even: torch.Tensor, odd: torch.Tensor,
                         weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        r"""Weighted sum over rows of :math:`\partial E / \partial \theta`: :math:`-\sum_n w_n x^{(l-1)}_n x^{(l)\top}_n`
        for :math:`W_l` and :math:`-\sum_n w_n x^{(l)}_n` for :math:`b_l` (default ``weights`` 1/n). :math:`E` is
        linear in each layer, so with means of a factorised q in place of states this is :math:`E_q[\partial E]`,
        the statistic of mean-field / PCD training."""
        even, odd = even.reshape(-1, even.shape[-1]), odd.reshape(-1, odd.shape[-1])
        if weights is None:
            weights = even.new_full((even.shape[0],), 1.0 / even.shape[0])
        xs = self.layers(even, odd)
        grads = {}
        for l in range(self.num_layers):
            grads[f"weights.{l}"] = xs[l].t().mm(xs[l + 1] * weights.unsqueeze(-1)).neg_()
        for l, x in enumerate(xs):
            grads[f"biases.{l}"] = (weights @ x).neg_()
        return {name: grads[name] for name, p in self.named_parameters() if p.requires_grad}

    # -- mean field (inference.mean_field.MeanFieldModel) -------------------------------------------
    @property
    def mean_field_blocks(self) -> tuple:
        """Hidden layers updated together, in order (indices into the means list, 0 = :math:`h^1`): odd layers,
        then even ones, each block's layers conditionally independent given the other block."""
        return (tuple(range(0, self.num_layers, 2)), tuple(range(1, self.num_layers, 2)))

    def mean_field_init(self, v: torch.Tensor) -> list[torch.Tensor]:
        """One bottom-up pass, each layer's input from below doubled (standing in for the missing input from
        above; the top layer has none), Salakhutdinov & Hinton 2012's recognition pass."""
        means, below = [], v
        for l in range(1, self.num_layers + 1):
            scale = 2.0 if l < self.num_layers else 1.0
            below = torch.sigmoid(self.biases[l] + scale * (below @ self.weights[l - 1]))
            means.append(below)
        return means

    def mean_field_logits(self, v: torch.Tensor, means: Sequence[torch.Tensor], k: int) -> torch.Tensor:
        """Logits of hidden layer ``k + 1`` given the data and the other layers' means."""
        return self.layer_logits([v, *means], k + 1)

    def mean_field_free_energy(self, v: torch.Tensor, means: Sequence[torch.Tensor]) -> torch.Tensor:
        r""":math:`E_q[E(v, h)] - H(q) = E(v, \mu) - \sum \mathrm H_2(\mu)` for the factorised :math:`q` with means
        ``means``; :math:`\log p(v) \ge -(\cdot) - \log Z`."""
        entropy = sum(_binary_entropy(m).sum(-1) for m in means)
        return self.layer_energy([v, *means]) - entropy

    def even_block(self, v: torch.Tensor, means: Sequence[torch.Tensor]) -> torch.Tensor:
        """The even block ``[v, mu_2, mu_4, ...]`` from the data and the hidden layers' means."""
        return torch.cat([v, *means[1::2]], -1)

    # -- data, AIS, checks -----------------------------------------------------------------------
    def to_visible(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels -> the data layer: the identity (binary units)."""
        return x

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """The data layer of an even block (or the data layer itself) as pixels."""
        return x[..., :self.num_data]

    def log_jacobian(self) -> float:
        return 0.0

    @torch.no_grad()
    def base_rate(self, data: torch.Tensor | None = None, smoothing: float = 0.05) -> torch.Tensor:
        r"""AIS base model's even-block logits: the smoothed data log-odds
        :math:`\operatorname{logit}((\sum_n v_{ni} + \alpha) / (N + 2\alpha))` on the data layer (``data`` are rows
        of pixels, values in [0, 1], or whole even blocks) and 0 (uniform) on the even hidden layers."""
        base = self.biases[0].new_zeros(self.num_visible)
        if data is None:
            return base
        if not (isinstance(smoothing, (int, float)) and not isinstance(smoothing, bool) and 0 < smoothing < math.inf):
            raise SpecError(f"smoothing must be a finite number > 0, got {smoothing!r}")
        data = self.validate_data(data, "data", binary=False).reshape(-1, data.shape[-1])[:, :self.num_data].to(base)
        if data.shape[0] == 0:
            raise DataError("data for the base-rate model must have at least one row, got 0")
        if bool(((data < 0) | (data > 1)).any()):
            raise DataError("data for a binary base rate must lie in [0, 1] (0/1 values or their probabilities)")
        base[:self.num_data] = torch.logit((data.sum(0) + smoothing) / (data.shape[0] + 2 * smoothing))
        return base

    def annealing_path(self, base: torch.Tensor) -> VisibleLogitsAnnealingPath:
        """AIS's base-rate path on the even block, the odd layers summed out analytically at every temperature."""
        return VisibleLogitsAnnealingPath(self, base)

    def validate_data(self, x, what: str = "data", binary: bool = True) -> torch.Tensor:
        """Check rows of pixels (``(..., V)``) or whole even blocks; one-line DataError naming ``what``."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            found = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(f"{what} must be a floating-point torch.Tensor, got {found}")
        if x.dim() < 1 or x.shape[-1] not in (self.num_data, self.num_visible):
            raise DataError(f"{what} must have shape (..., {self.num_data}) (the data layer) or (..., {self.num_visible}) "
                            f"(the even block), got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise DataError(f"{what} must be finite")
        return check_binary(x, what) if binary else x

    def validate_visible(self, even, what: str = "data") -> torch.Tensor:
        """Raise DataError unless ``even`` is a finite 0/1 float tensor ``(..., num_visible)`` (a whole even block)."""
        if isinstance(even, torch.Tensor) and even.dim() >= 1 and even.shape[-1] != self.num_visible:
            raise DataError(f"{what} must have shape (..., {self.num_visible}) (the even block v, h2, ...), got "
                            f"{tuple(even.shape)}")
        return self.validate_data(even, what)

    def validate_parameters(self) -> None:
        """Raise SpecError if a parameter holds NaN or infinity."""
        for name, p in self.named_parameters():
            if not bool(torch.isfinite(p).all()):
                raise SpecError(f"DBM parameter {name} must be finite")
