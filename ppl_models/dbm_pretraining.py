r"""The RBMs of a DBM's greedy layer-wise pretraining, with the doubled weights the DBM needs, and their composition.

In a DBM every inner hidden layer gets input from below *and* above, the
data layer and the top layer from one side only. A stack of ordinary RBMs
would count each layer's input once where the DBM counts it twice, so
Salakhutdinov & Hinton (2009, 2012) pretrain with tied copies of a layer:

- the bottom RBM has two tied copies of the visible layer (its hidden units see :math:`2 W_1^\top v`,
  its visible units :math:`W_1 h`);
- the top RBM has two tied copies of its hidden layer (its visible units see :math:`2 W_L h`);
- an RBM between two inner layers has both (the same as an ordinary RBM whose weights are then halved).

:class:`TiedCopiesRBM` is such an RBM as a two-block energy: its visible block is
``visible_copies`` copies of :math:`v`, its hidden block ``hidden_copies`` copies of :math:`h`, all with
the one weight matrix, so that the shared CD / PCD trainer trains it unchanged
(the data tiled as the positive statistic, :meth:`TiedCopiesRBM.tile`), and its
energy is exact (unlike halving and doubling conditionals by hand).

.. math::

    E(v^{1..a}, h^{1..c}) = -\Big(\sum_r v^r\Big)^\top W \Big(\sum_s h^s\Big) - b^\top \sum_r v^r - c^\top \sum_s h^s .

:func:`compose_dbm` takes the trained stack to a DBM: :math:`W_l` from the
:math:`l`-th RBM, the data bias from the bottom one, the top bias from the top
one, an inner layer's bias the average of the hidden bias of the RBM below and
the visible bias of the RBM above (each saw the layer from one side).

References: R. Salakhutdinov, G. Hinton, "Deep Boltzmann machines", AISTATS 2009, Sec. 3.1;
"An efficient learning procedure for deep Boltzmann machines", Neural Computation 24 (2012), Sec. 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dbm import DBM, check_layer_sizes
from .errors import SpecError
from .rbm import RBM
from .rbm_annealing import VisibleLogitsAnnealingPath

__all__ = ["TiedCopiesRBM", "compose_dbm", "pretraining_rbms"]


class TiedCopiesRBM(RBM):
    """A binary RBM with ``visible_copies`` tied copies of its visible layer and ``hidden_copies`` of its hidden one.

    ``num_visible`` / ``num_hidden`` are the block sizes (copies times layer size); ``layer_visible`` /
    ``layer_hidden`` the layer sizes; ``weight`` is (layer_visible, layer_hidden).

    Example::

        >>> rbm = TiedCopiesRBM(4, 3, visible_copies=2)
        >>> rbm.num_visible, rbm.hidden_logits(rbm.tile(torch.ones(1, 4))).shape
        (8, torch.Size([1, 3]))
    """

    def __init__(self, num_visible: int, num_hidden: int, visible_copies: int = 1, hidden_copies: int = 1,
                 weight_scale: float = 0.01):
        super().__init__(num_visible, num_hidden, weight_scale)
        for name, value in (("visible_copies", visible_copies), ("hidden_copies", hidden_copies)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{name} must be a positive integer, got {value!r}")
        self.visible_copies, self.hidden_copies = visible_copies, hidden_copies

    @property
    def layer_visible(self) -> int:
        return self.weight.shape[0]

    @property
    def layer_hidden(self) -> int:
        return self.weight.shape[1]

    @property
    def num_visible(self) -> int:
        return self.visible_copies * self.weight.shape[0]

    @property
    def num_hidden(self) -> int:
        return self.hidden_copies * self.weight.shape[1]

    def tile(self, v: torch.Tensor) -> torch.Tensor:
        """The visible block with every copy equal to ``v`` (..., layer_visible): the data's positive statistic."""
        return v.repeat(*([1] * (v.dim() - 1)), self.visible_copies)

    def _sum_copies(self, x: torch.Tensor, copies: int) -> torch.Tensor:
        return x.reshape(*x.shape[:-1], copies, -1).sum(-2) if copies > 1 else x

    def up(self, v: torch.Tensor) -> torch.Tensor:
        """:math:`p(h_j = 1 \\mid v)` of one hidden copy for a single visible layer ``v``: the next layer's data."""
        return torch.sigmoid(self.hidden_bias + self.visible_copies * (v @ self.weight))

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        logits = self._sum_copies(v, self.visible_copies) @ self.weight + self.hidden_bias
        return logits.repeat(*([1] * (logits.dim() - 1)), self.hidden_copies)

    def visible_logits(self, h: torch.Tensor) -> torch.Tensor:
        logits = self._sum_copies(h, self.hidden_copies) @ self.weight.t() + self.visible_bias
        return logits.repeat(*([1] * (logits.dim() - 1)), self.visible_copies)

    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return super().energy(self._sum_copies(v, self.visible_copies), self._sum_copies(h, self.hidden_copies))

    def visible_energy(self, v: torch.Tensor) -> torch.Tensor:
        return -(self._sum_copies(v, self.visible_copies) @ self.visible_bias)

    def hidden_free_energy(self, h: torch.Tensor) -> torch.Tensor:
        return -(self._sum_copies(h, self.hidden_copies) @ self.hidden_bias) - F.softplus(self.visible_logits(h)).sum(-1)

    def _gradient_rows(self, v, h):
        v = self._sum_copies(v.reshape(-1, v.shape[-1]), self.visible_copies)
        h = self._sum_copies(h.reshape(-1, h.shape[-1]), self.hidden_copies)
        return v, h  # E is the RBM's energy of the summed copies

    def annealing_path(self, base: torch.Tensor):
        return VisibleLogitsAnnealingPath(self, base)


def pretraining_rbms(layer_sizes, weight_scale: float = 0.01) -> list[TiedCopiesRBM]:
    """The RBMs of a DBM with ``layer_sizes`` ``[V, H1, ..., HL]``, bottom first, with their tied copies
    (one hidden layer: a plain RBM)."""
    sizes = check_layer_sizes(layer_sizes)
    L = len(sizes) - 1
    return [TiedCopiesRBM(sizes[l - 1], sizes[l], visible_copies=2 if (l == 1 and L > 1) or 1 < l < L else 1,
                          hidden_copies=2 if l == L and L > 1 or 1 < l < L else 1, weight_scale=weight_scale)
            for l in range(1, L + 1)]


@torch.no_grad()
def compose_dbm(rbms) -> DBM:
    """The DBM whose weights are the pretrained RBMs' (bottom first); its biases as the module says."""
    if len(rbms) < 1:
        raise SpecError("compose_dbm needs at least one RBM")
    for i in range(1, len(rbms)):
        if rbms[i].layer_visible != rbms[i - 1].layer_hidden:
            raise SpecError(f"layer sizes that do not chain: RBM {i} has {rbms[i - 1].layer_hidden} hidden units but "
                            f"RBM {i + 1} has {rbms[i].layer_visible} visible units")
    biases = [rbms[0].visible_bias]
    for below, above in zip(rbms, rbms[1:]):
        biases.append((below.hidden_bias + above.visible_bias) / 2)
    biases.append(rbms[-1].hidden_bias)
    return DBM.from_parameters([r.weight.detach() for r in rbms], [b.detach() for b in biases])
