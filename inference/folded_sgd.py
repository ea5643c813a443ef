"""One SGD step (with or without momentum) whose large gradients are products folded into their GEMMs.

An energy model's coupling gradient is a product :math:`A B` of a (V x rows) and a (rows x H) matrix
(the CD statistic). Written out, it costs a (V x H) tensor that the optimiser then reads back beside
the weights and the momentum buffer. Here the product is accumulated where the update needs it:

- plain SGD, :math:`\\theta \\leftarrow \\theta - \\eta\\, A B`: ``theta.addmm_(A, B, alpha=-eta)``;
- heavy-ball momentum (``torch.optim.SGD``'s form, no dampening),
  :math:`b \\leftarrow \\mu b + A B`, :math:`\\theta \\leftarrow \\theta - \\eta\\, b`:
  ``b.addmm_(A, B, beta=mu)`` then ``theta.add_(b, alpha=-eta)`` (the first step sets :math:`b = A B`,
  as torch does).

Every other gradient is a tensor and goes through torch's own functional SGD with the optimiser's
settings, so it is updated bit for bit as the optimiser would. The momentum buffers live in the
optimiser's ``state[p]["momentum_buffer"]``, so checkpoints and resumption are the optimiser's own and
either route may continue the other. Weight decay is not folded: torch adds it to the gradient before
the momentum, which a GEMM's epilogue cannot (:func:`inference.optimizers.foldable_sgd_momentum` says
when a step may be taken here).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import torch
from torch.optim.sgd import sgd as functional_sgd

#: a gradient: a tensor, or the factors ``(A, B)`` of the product ``A @ B``
Gradient = torch.Tensor | tuple

__all__ = ["Gradient", "folded_sgd_step_"]


@torch.no_grad()
def folded_sgd_step_(params: Mapping[str, torch.Tensor], gradients: Mapping[str, Gradient], lr: float,
                     momentum: float = 0.0, state: MutableMapping | None = None, fused: bool | None = None) -> None:
    """Update every parameter in ``params`` by its gradient in ``gradients`` (same keys), in place.

    :param float momentum: 0 for plain SGD; else the buffers are read from and written to
        ``state[p]["momentum_buffer"]`` (``state``: the optimiser's ``state``).
    :param fused: the optimiser's ``fused`` setting, used for the tensor gradients' update.
    """
    if momentum and state is None:
        raise ValueError("momentum needs the optimiser's state for its buffers")
    dense_params, dense_grads, dense_buffers = [], [], []
    for name, p in params.items():
        g = gradients[name]
        if isinstance(g, torch.Tensor):
            dense_params.append(p)
            dense_grads.append(g)
            dense_buffers.append(state[p].get("momentum_buffer") if momentum else None)
            continue
        a, b = g
        if not momentum:
            p.addmm_(a, b, alpha=-lr)
            continue
        buffer = state[p].get("momentum_buffer")
        if buffer is None:
            state[p]["momentum_buffer"] = buffer = a.mm(b)
        else:
            buffer.addmm_(a, b, beta=momentum)
        p.add_(buffer, alpha=-lr)
    if dense_params:  # the optimiser's own update, as a function: the same bits as its step
        functional_sgd(dense_params, dense_grads, dense_buffers, weight_decay=0.0, momentum=momentum, lr=lr,
                       dampening=0.0, nesterov=False, maximize=False, foreach=False, fused=bool(fused))
        if momentum:  # the functional form creates the first buffers in its list; the optimiser keeps them
            for p, buffer in zip(dense_params, dense_buffers):
                state[p]["momentum_buffer"] = buffer
