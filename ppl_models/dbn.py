r"""The deep belief net: a greedy stack of RBMs read as one generative model (Hinton, Osindero & Teh 2006).

Layers :math:`z_0 = v, z_1, \dots, z_L` of binary units with sizes
``layer_sizes`` :math:`(n_0, \dots, n_L)`; RBM :math:`l` (``rbms[l - 1]``)
joins :math:`z_{l-1}` and :math:`z_l`. As a generative model the top two
layers are an undirected RBM and the layers below a directed sigmoid net that
reuses each lower RBM's weights and visible biases:

.. math::

    p(v) = \sum_{z_1 \dots z_{L-1}} p_{\text{top}}(z_{L-1}) \prod_{l=1}^{L-1} p(z_{l-1} \mid z_l), \qquad
    p(z_{l-1, i} = 1 \mid z_l) = \sigma(b^{(l)}_i + W^{(l)}_{i:} z_l), \qquad
    p_{\text{top}}(z_{L-1}) = e^{-F_{\text{top}}(z_{L-1})} / Z_{\text{top}}.

Sampling: Gibbs in the top RBM, then one ancestral pass down (:meth:`generate`).
Greedy training (the catalogue's ``dbn`` family) trains RBM 1 on the data and
RBM :math:`l` on the hidden probabilities (or samples) of RBM :math:`l-1`.
Recognition uses the same weights upward,
:math:`q(z_{l, j} = 1 \mid z_{l-1}) = \sigma(c^{(l)}_j + z_{l-1}^\top W^{(l)}_{:j})`, and gives the
variational lower bound (Hinton et al. 2006; Salakhutdinov & Murray 2008)

.. math::

    \log p(v) \ge \mathbb E_{q(z_{1:L-1} \mid v)}\Big[\sum_{l=1}^{L-1} \log p(z_{l-1} \mid z_l)
        - F_{\text{top}}(z_{L-1}) - \sum_{l=1}^{L-1} \log q(z_l \mid z_{l-1})\Big] - \log Z_{\text{top}},

estimated by sampling :math:`q` (:meth:`bound_log_weights`), with :math:`\log Z_{\text{top}}` from AIS
(or exact for a small top RBM). An untied net (``untied=True``) has recognition weights of its own below the top,
fine-tuned with the generative ones by the up-down algorithm (:mod:`inference.up_down`; this module gives
its passes, :meth:`recognise` / :meth:`dream`, and their gradients). For nets whose hidden layers below the top are small, :meth:`exact_log_prob`
sums the chain layer by layer.

References

1. G. Hinton, S. Osindero, Y.-W. Teh, "A fast learning algorithm for deep belief nets", Neural Computation 18 (2006).
2. R. Salakhutdinov, I. Murray, "On the quantitative analysis of deep belief networks", ICML 2008.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import SpecError
from .rbm import RBM, bernoulli_draw

__all__ = ["MAX_EXACT_LAYER_UNITS", "DeepBeliefNet"]

#: exact_log_prob enumerates every hidden layer below the top, one pair of layers at a time (2^a x 2^b terms)
MAX_EXACT_LAYER_UNITS = 12
#: exact_log_prob's images per block: 256 x 2^12 float64 terms (8 MB) at the largest layer it enumerates
EXACT_CHUNK = 256


def _states(n: int, like: torch.Tensor) -> torch.Tensor:
    """All of {0,1}^n in binary counting order (unit 0 the most significant bit)."""
    index = torch.arange(2**n, device=like.device)
    return ((index.unsqueeze(-1) >> torch.arange(n - 1, -1, -1, device=like.device)) & 1).to(like.dtype)


def _sum_out(logits: torch.Tensor, message: torch.Tensor, below: torch.Tensor, chunk_size) -> torch.Tensor:
    r""":math:`\log \sum_z p(b \mid z)\, e^{m(z)}` for every row ``b`` of ``below`` (float64, ``(B,)``), where
    ``logits`` (``(S, D)``) are :math:`p(b \mid z)`'s Bernoulli logits for each of the S states z. The log-Bernoulli
    is linear in b, :math:`b^\top \ell - \sum \mathrm{softplus}(\ell)`, so a block of rows costs one
    ``(rows, S)`` matrix product, not an ``(S, rows, D)`` tensor."""
    logits = logits.double()
    offset = message - F.softplus(logits).sum(-1)  # (S,)
    step = max(below.shape[0], 1) if chunk_size is None else chunk_size
    return torch.cat([torch.logsumexp(block.double() @ logits.T + offset, -1) for block in below.split(step)]
                     + [offset.new_zeros(0)])  # (an empty batch gives an empty answer)


def _bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(value; sigmoid(logits)) summed over the last dimension, the two broadcast together."""
    logits, value = torch.broadcast_tensors(logits, value)
    return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)


class _Recognition(nn.Module):
    r"""Untied recognition weights of one layer: :math:`q(z_l = 1 \mid z_{l-1}) = \sigma(z_{l-1}^\top R + r)`."""

    def __init__(self, num_below: int, num_above: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_below, num_above))
        self.bias = nn.Parameter(torch.zeros(num_above))


class DeepBeliefNet(nn.Module):
    """A DBN over ``layer_sizes[0]`` visible units with hidden layers ``layer_sizes[1:]``.

    :param layer_sizes: ``(n_0, n_1, ..., n_L)``, at least two positive integers; RBM ``l`` is
        ``n_{l-1} x n_l``.
    :param float weight_scale: std of every RBM's initial weights.
    :param bool untied: give the layers below the top their own recognition weights (for up-down
        fine-tuning, Hinton et al. 2006, App. B); they start as copies of the RBMs' (:meth:`sync_recognition`).

    Example::

        >>> dbn = DeepBeliefNet([6, 4, 3])
        >>> [tuple(r.weight.shape) for r in dbn.rbms]
        [(6, 4), (4, 3)]
    """

    visible_type = "bernoulli"

    def __init__(self, layer_sizes: Sequence[int], weight_scale: float = 0.01, untied: bool = False):
        super().__init__()
        sizes = list(layer_sizes) if isinstance(layer_sizes, (list, tuple)) else None
        if not sizes or len(sizes) < 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
            raise SpecError(f"layer_sizes must be at least two positive integers (visible, hidden...), got {layer_sizes!r}")
        self.rbms = nn.ModuleList(RBM(a, b, weight_scale=weight_scale) for a, b in zip(sizes[:-1], sizes[1:]))
        # recognition weights q(z_l | z_{l-1}) of the layers below the top, once untied (empty: tied to the RBMs)
        self.recognition = nn.ModuleList(_Recognition(a, b) for a, b in zip(sizes[:-2], sizes[1:-1])) if untied \
            else nn.ModuleList()
        self.sync_recognition()

    @classmethod
    def from_rbms(cls, rbms: Sequence[RBM]) -> DeepBeliefNet:
        """A DBN of already trained RBMs (bottom first); their sizes must chain."""
        rbms = list(rbms)
        if not rbms:
            raise SpecError("a DBN needs at least one RBM")
        for l in range(1, len(rbms)):
            if rbms[l].num_visible != rbms[l - 1].num_hidden:
                raise SpecError(f"layer sizes do not chain: RBM {l + 1} has {rbms[l].num_visible} visible units but "
                                f"RBM {l} has {rbms[l - 1].num_hidden} hidden units")
        dbn = cls([r.num_visible for r in rbms] + [rbms[-1].num_hidden])
        dbn.rbms = nn.ModuleList(rbms)
        return dbn

    @property
    def layer_sizes(self) -> list[int]:
        return [self.rbms[0].num_visible] + [r.num_hidden for r in self.rbms]

    @property
    def num_visible(self) -> int:
        return self.rbms[0].num_visible

    @property
    def top(self) -> RBM:
        """The top RBM, over :math:`(z_{L-1}, z_L)`."""
        return self.rbms[-1]

    # -- pixel values <-> units: the identity (binary units)
    def to_visible(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def to_pixels(self, v: torch.Tensor) -> torch.Tensor:
        return v

    def validate_visible(self, v, what: str = "data") -> torch.Tensor:
        return self.rbms[0].validate_visible(v, what)

    def validate_parameters(self) -> None:
        for rbm in self.rbms:
            rbm.validate_parameters()

    @property
    def untied(self) -> bool:
        return len(self.recognition) > 0

    @torch.no_grad()
    def sync_recognition(self) -> None:
        """Set the recognition weights (if untied) to the RBMs' own: the tied DBN's q."""
        for rec, rbm in zip(self.recognition, self.rbms):
            rec.weight.copy_(rbm.weight)
            rec.bias.copy_(rbm.hidden_bias)

    def recognition_logits(self, z: torch.Tensor, index: int) -> torch.Tensor:
        r"""Log-odds of :math:`q(z_{l} = 1 \mid z_{l-1})` for RBM ``index`` (0-based): its own hidden inputs, or
        the untied recognition weights below the top."""
        if self.untied and index < len(self.recognition):
            rec = self.recognition[index]
            return z @ rec.weight + rec.bias
        return self.rbms[index].hidden_logits(z)

    @torch.no_grad()
    def tie_to_below(self, index: int) -> bool:
        r"""Start RBM ``index`` (0-based, >= 1) as RBM ``index - 1`` turned upside down, :math:`W^{(l)} = W^{(l-1)\top}`
        with the biases swapped, when their shapes allow it (returns whether they did).

        The net then defines the same :math:`p(v)` as without RBM ``index``, and the recognition chain is exact
        for the new layer, so the lower bound starts where the shorter net's stood; greedy training of the new
        RBM on the recognition samples can only raise it (Hinton, Osindero & Teh 2006, Sec. 4).
        """
        if not 1 <= index < len(self.rbms):
            raise SpecError(f"index must be in 1..{len(self.rbms) - 1}, got {index!r}")
        below, rbm = self.rbms[index - 1], self.rbms[index]
        if (rbm.num_visible, rbm.num_hidden) != (below.num_hidden, below.num_visible):
            return False
        rbm.weight.copy_(below.weight.t())
        rbm.visible_bias.copy_(below.hidden_bias)
        rbm.hidden_bias.copy_(below.visible_bias)
        return True

    # -- recognition (upward) and generation (downward)
    @torch.no_grad()
    def up(self, v: torch.Tensor, layers: int, sample: bool = False) -> torch.Tensor:
        r"""The representation of ``v`` at layer ``layers`` (0: ``v`` itself): each step
        :math:`q(z_l = 1 \mid z_{l-1})`, fed upward as probabilities (mean-field) or, when ``sample``, as
        draws. What greedy training feeds RBM ``layers + 1``."""
        if not 0 <= layers <= len(self.rbms):
            raise SpecError(f"layers must be in 0..{len(self.rbms)}, got {layers!r}")
        z = v
        for index in range(layers):
            z = torch.sigmoid(self.recognition_logits(z, index))
            if sample:
                z = bernoulli_draw(z)
        return z

    @torch.no_grad()
    def generate(self, top_visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""One ancestral pass down from states :math:`z_{L-1}` of the top RBM's visible layer: returns
        ``(v, v_mean)``, a draw of :math:`v` and :math:`p(v = 1 \mid z_1)` of the pass's :math:`z_1`."""
        z = top_visible
        mean = z
        for rbm in reversed(self.rbms[:-1]):
            mean = rbm.visible_probs(z)
            z = bernoulli_draw(mean)
        return z, mean

    # -- up-down fine-tuning: the states of a wake and a sleep pass, and the gradients they give
    @torch.no_grad()
    def recognise(self, v: torch.Tensor) -> list[torch.Tensor]:
        """A sampled up pass ``[v, z_1, ..., z_{L-1}]`` through the recognition weights (the wake phase)."""
        states = [v]
        for index in range(len(self.rbms) - 1):
            states.append(bernoulli_draw(torch.sigmoid(self.recognition_logits(states[-1], index))))
        return states

    @torch.no_grad()
    def dream(self, top_visible: torch.Tensor) -> list[torch.Tensor]:
        """A sampled down pass ``[v, z_1, ..., z_{L-1} = top_visible]`` through the generative weights (the sleep phase)."""
        states = [top_visible]
        for rbm in reversed(self.rbms[:-1]):
            states.insert(0, bernoulli_draw(rbm.visible_probs(states[0])))
        return states

    @torch.no_grad()
    def generative_gradients(self, states: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        r"""Gradients of :math:`-\frac1n \sum \log p(z_{l-1} \mid z_l)` over the layers below the top, at the
        wake states: :math:`-(z_{l-1} - p_{l-1})^\top z_l / n` for :math:`W^{(l)}` and the mean of
        :math:`-(z_{l-1} - p_{l-1})` for the visible bias (Hinton et al. 2006, App. B)."""
        n, grads = states[0].shape[0], {}
        for index, rbm in enumerate(self.rbms[:-1]):
            below, above = states[index], states[index + 1]
            error = below - rbm.visible_probs(above)
            grads[f"rbms.{index}.weight"] = error.t().mm(above).div_(-n)
            grads[f"rbms.{index}.visible_bias"] = error.mean(0).neg_()
        return grads

    @torch.no_grad()
    def recognition_gradients(self, states: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        r"""Gradients of :math:`-\frac1n \sum \log q(z_l \mid z_{l-1})` at the sleep states (untied nets only)."""
        n, grads = states[0].shape[0], {}
        for index in range(len(self.recognition)):
            below, above = states[index], states[index + 1]
            error = above - torch.sigmoid(self.recognition_logits(below, index))
            grads[f"recognition.{index}.weight"] = below.t().mm(error).div_(-n)
            grads[f"recognition.{index}.bias"] = error.mean(0).neg_()
        return grads

    # -- the variational bound
    @torch.no_grad()
    def bound_log_weights(self, v: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        r"""``(num_samples, N)`` draws of :math:`\log p^*(v, z_{1:L-1}) - \log q(z_{1:L-1} \mid v)`,
        :math:`z \sim q(\cdot \mid v)`, where :math:`p^*` uses the unnormalised top marginal
        :math:`e^{-F_{\text{top}}}`: their mean minus :math:`\log Z_{\text{top}}` is the lower bound on
        :math:`\log p(v)` (their log-mean-exp minus it an importance-sampling estimate)."""
        z = v.expand(num_samples, *v.shape)
        total = torch.zeros(z.shape[:-1], dtype=torch.float64, device=v.device)
        for index, rbm in enumerate(self.rbms[:-1]):
            logits = self.recognition_logits(z, index)
            z_next = bernoulli_draw(torch.sigmoid(logits))
            total += (_bernoulli_log_prob(rbm.visible_logits(z_next), z) - _bernoulli_log_prob(logits, z_next)).double()
            z = z_next
        return total - self.top.free_energy(z).double()

    @torch.no_grad()
    def lower_bound(self, v: torch.Tensor, log_z_top: float, num_samples: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image, the Monte Carlo estimate of the lower bound on log p(v) and its standard error over the
        ``num_samples`` draws of q (zero for a single RBM, whose bound is exact)."""
        w = self.bound_log_weights(v, num_samples)
        stderr = w.std(0) / num_samples**0.5 if num_samples > 1 else torch.zeros_like(w[0])
        return w.mean(0) - log_z_top, stderr

    # -- exact, for small nets
    @torch.no_grad()
    def exact_log_prob(self, v: torch.Tensor, log_z_top: float | None = None,
                       chunk_size: int | None = EXACT_CHUNK) -> torch.Tensor:
        r"""Exact :math:`\log p(v)` (float64, shape ``(N,)``), summing out the hidden layers below the top one
        pair at a time (a chain: :math:`\sum_{z_l} p(z_{l-1} \mid z_l)\, m_l(z_l)`), the top RBM's
        :math:`z_L` in closed form. Needs every layer :math:`z_1 .. z_{L-1}` of at most
        :data:`MAX_EXACT_LAYER_UNITS` units; :math:`\log Z_{\text{top}}` is enumerated too unless given.

        Memory is bounded: each log-conditional is a matrix product (``2^a x 2^b`` or ``N x 2^a``, never with a
        unit axis), taken over at most ``chunk_size`` images (or states of the layer below) at a time
        (None: all at once)."""
        sizes, top = self.layer_sizes[1:-1], self.top
        if any(n > MAX_EXACT_LAYER_UNITS for n in sizes):
            raise SpecError(f"exact log p(v) enumerates the hidden layers below the top ({sizes}): each must have at "
                            f"most {MAX_EXACT_LAYER_UNITS} units; use the lower bound with AIS instead")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                       or chunk_size < 1):
            raise SpecError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        like = top.weight
        if log_z_top is None:  # enumerate the top RBM's smaller layer, the other summed out in closed form
            if min(top.num_visible, top.num_hidden) > 20:
                raise SpecError("exact log p(v) needs the top RBM's log Z: give log_z_top (AIS) for a top RBM with "
                                "both layers over 20 units")
            if top.num_hidden <= top.num_visible:
                log_z_top = float(torch.logsumexp(-top.hidden_free_energy(_states(top.num_hidden, like)).double(), 0))
            else:
                log_z_top = float(torch.logsumexp(-top.free_energy(_states(top.num_visible, like)).double(), 0))
        if len(self.rbms) == 1:
            return -top.free_energy(v).double() - log_z_top
        states = _states(top.num_visible, like)
        message = -top.free_energy(states).double()  # log p*_top(z_{L-1}) of every state
        for rbm in reversed(self.rbms[1:-1]):  # message to the layer below: m(z') = log sum_z p(z' | z) m(z)
            below = _states(rbm.num_visible, like)
            message = _sum_out(rbm.visible_logits(states), message, below, chunk_size)
            states = below
        return _sum_out(self.rbms[0].visible_logits(states), message, v, chunk_size) - log_z_top
