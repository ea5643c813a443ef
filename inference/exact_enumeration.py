r"""Exact :math:`\log Z` and :math:`\log p(v)` of small two-block energy models by enumerating the smaller layer.

For a :class:`~inference.energy.TwoBlockEnergy` (an RBM, a DBM's two blocks)
one block can be summed (or integrated) out in closed form, so only the other
one is enumerated:

.. math::

    \log Z = \log \sum_{h \in \{0,1\}^H} e^{-F_h(h)} = \log \sum_{v \in \{0,1\}^V} e^{-F(v)},

with :math:`F_h` the model's ``hidden_free_energy`` and :math:`F` its
``free_energy``. The sum runs over up to :math:`2^{20}` states in chunks (so
memory stays bounded) with a streaming log-sum-exp in float64. Gaussian
visible units (``visible_type`` not "bernoulli") cannot be enumerated, so such a
model always sums over its hidden layer. This is the ground truth against which AIS and the
samplers are tested.
"""

from __future__ import annotations

import torch

from .errors import SpecError

__all__ = ["MAX_ENUMERATED_UNITS", "binary_states", "log_partition", "log_prob", "log_prob_observed"]

#: the largest layer this module enumerates (2^20 states)
MAX_ENUMERATED_UNITS = 20


def binary_states(num_units: int, start: int = 0, stop: int | None = None, *, like: torch.Tensor | None = None) -> torch.Tensor:
    """States ``start .. stop-1`` of ``{0,1}^num_units`` in binary counting order (unit 0 the most significant bit).

    :param torch.Tensor like: dtype and device of the result (default float32 on CPU).
    """
    stop = 2**num_units if stop is None else stop
    device = like.device if like is not None else None
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    index = torch.arange(start, stop, device=device)
    bits = torch.arange(num_units - 1, -1, -1, device=device)
    return ((index.unsqueeze(-1) >> bits) & 1).to(dtype)


def _enumerated_layer(model, layer: str | None) -> str:
    if layer is None:
        if model.visible_type != "bernoulli":
            layer = "hidden"
        else:
            layer = "hidden" if model.num_hidden <= model.num_visible else "visible"
    if layer not in ("hidden", "visible"):
        raise SpecError(f"layer must be 'hidden', 'visible' or None, got {layer!r}")
    if layer == "visible" and model.visible_type != "bernoulli":
        raise SpecError(f"layer='visible' needs binary visible units, the model's are {model.visible_type}")
    n = model.num_hidden if layer == "hidden" else model.num_visible
    if n > MAX_ENUMERATED_UNITS:
        raise SpecError(
            f"exact enumeration of the {layer} layer needs at most {MAX_ENUMERATED_UNITS} units, got {n}; use AIS instead"
        )
    return layer


@torch.no_grad()
def log_partition(model, layer: str | None = None, chunk_size: int = 2**14) -> torch.Tensor:
    """Exact :math:`\\log Z` (a float64 scalar tensor), enumerating the smaller layer.

    :param model: a :class:`~inference.energy.TwoBlockEnergy` (``free_energy``, ``hidden_free_energy``);
        the states take the dtype and device of its first parameter.
    :param str layer: "hidden", "visible" or None (the smaller enumerable one).
    :param int chunk_size: states evaluated per batch.
    """
    model.validate_parameters()
    layer = _enumerated_layer(model, layer)
    n = model.num_hidden if layer == "hidden" else model.num_visible
    neg_free_energy = model.hidden_free_energy if layer == "hidden" else model.free_energy
    like = next(iter(model.parameters()))
    total = torch.tensor(float("-inf"), dtype=torch.float64, device=like.device)
    for start in range(0, 2**n, chunk_size):
        states = binary_states(n, start, min(start + chunk_size, 2**n), like=like)
        chunk = torch.logsumexp(-neg_free_energy(states).double(), 0)
        total = torch.logaddexp(total, chunk)
    return total


@torch.no_grad()
def log_prob(model, v: torch.Tensor, log_z: torch.Tensor | None = None) -> torch.Tensor:
    """Exact :math:`\\log p(v) = -F(v) - \\log Z` for a batch ``v`` (..., V), in float64.

    :param torch.Tensor log_z: a precomputed :func:`log_partition` (computed if None).
    """
    model.validate_visible(v, "v")
    if log_z is None:
        log_z = log_partition(model)
    return -model.free_energy(v).double() - log_z


@torch.no_grad()
def log_prob_observed(model, x: torch.Tensor, log_z: torch.Tensor | None = None, chunk_size: int = 2**12) -> torch.Tensor:
    r"""Exact :math:`\log p(x)` of the *observed* part of the visible block (a DBM's data layer, whose
    visible block also holds the even hidden layers), enumerating the hidden block (a DBM's odd layers):

    .. math::

        \log p(x) = \log \sum_{h} e^{-F_x(h)} - \log Z, \qquad
        F_x(h) = -\log \sum_{\text{rest of the visible block}} e^{-E(x, \cdot, h)},

    :math:`F_x` the model's ``observed_free_energy(h, x)`` (the unobserved visible units summed out in closed
    form; for hidden states ``h`` (S, H) and rows ``x`` (N, D) it returns (N, S)). For a two-hidden-layer DBM only :math:`h^1` is enumerated: :math:`v` is fixed and :math:`h^2` summed.

    :param x: ``(N, D)`` rows of the observed units.
    :param torch.Tensor log_z: a precomputed :func:`log_partition` (computed if None).
    """
    model.validate_parameters()
    n = model.num_hidden
    if n > MAX_ENUMERATED_UNITS:
        raise SpecError(f"exact log p(x) enumerates the hidden block: it needs at most {MAX_ENUMERATED_UNITS} units, "
                        f"got {n}; use AIS and the variational bound instead")
    if x.dim() != 2:
        raise SpecError(f"x must be (N, D) rows of observed units, got shape {tuple(x.shape)}")
    like = next(iter(model.parameters()))
    x = x.to(like)
    total = torch.full((x.shape[0],), float("-inf"), dtype=torch.float64, device=like.device)
    for start in range(0, 2**n, chunk_size):
        states = binary_states(n, start, min(start + chunk_size, 2**n), like=like)
        chunk = -model.observed_free_energy(states, x).double()  # (N, states)
        total = torch.logaddexp(total, torch.logsumexp(chunk, 1))
    if log_z is None:
        log_z = log_partition(model)
    return total - log_z
