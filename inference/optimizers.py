"""The optimiser factory and the learning-rate schedules every family trains with.

Directed models train with Adam (fused into one kernel over all parameters
where torch supports it: the same update as the per-tensor loop at about a
third of its cost per step, which matters when a step is a few milliseconds);
energy models with SGD plus momentum and an L2 penalty on their couplings
only (Hinton's practical guide: biases are not decayed). Which parameters are
decayed is the caller's to say (an energy model declares its couplings in
``parameter_roles``); by default every parameter is.

One vocabulary of schedules, evaluated per update ``s`` of ``S`` (``S`` =
epochs x updates per epoch, ``e`` = the update's epoch, from 0):

- ``constant``: :math:`\\eta`;
- ``linear``: :math:`\\eta\\,(1 - (1 - f)\\, s / (S - 1))`, down to ``lr_final`` :math:`f \\cdot \\eta`
  at the last update (raising ``epochs`` on resume stretches it);
- ``exponential``: :math:`\\eta\\, d^{e}` (``lr_decay`` :math:`d` per epoch);
- ``cosine``: :math:`\\eta\\,(1 + \\cos(\\pi e / E)) / 2` (per epoch, to 0 after ``E`` epochs).
"""

from __future__ import annotations

import math
from typing import Callable, Collection, Optional, Union

import torch

from .errors import SpecError

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "linear", "exponential", "cosine")

#: what ``fit`` accepts as ``optimizer``: a name above, or ``factory(module) -> torch.optim.Optimizer``
OptimizerChoice = Union[str, Callable[[torch.nn.Module], torch.optim.Optimizer]]


def make_optimizer(module: torch.nn.Module, name: str = "adam", lr: float = 1e-3, momentum: float = 0.0,
                   weight_decay: float = 0.0, decay: Optional[Collection[str]] = None) -> torch.optim.Optimizer:
    """Adam or SGD over ``module``'s trainable parameters.

    :param str name: ``"adam"`` or ``"sgd"``.
    :param float momentum: SGD's momentum in [0, 1) (ignored by Adam).
    :param float weight_decay: L2 penalty added to the gradient of the parameters in ``decay``.
    :param decay: names (as in ``named_parameters``) of the decayed parameters; None: all.
    """
    if name not in OPTIMIZERS:
        raise SpecError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise SpecError(f"lr must be a positive number, got {lr!r}")
    if not 0 <= momentum < 1:
        raise SpecError(f"momentum must lie in [0, 1), got {momentum!r}")
    if not (weight_decay >= 0 and math.isfinite(weight_decay)):
        raise SpecError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if decay is not None:
        unknown = sorted(set(decay) - {n for n, _ in named})
        if unknown:
            raise SpecError(f"decay names parameters the module does not train: {unknown}")
    decayed = [p for n, p in named if decay is None or n in decay]
    others = [p for n, p in named if not (decay is None or n in decay)]
    groups = [g for g in ({"params": decayed, "weight_decay": weight_decay},
                          {"params": others, "weight_decay": 0.0}) if g["params"]]
    if name == "sgd":
        # measured on the 784x500 RBM's three tensors: with momentum the fused kernel (one pass per tensor)
        # costs 0.27 ms a step against 0.40 for the default; without, the plain loop 0.17 against 0.20
        if momentum:
            try:
                return torch.optim.SGD(groups, lr=lr, momentum=momentum, fused=True)
            except (RuntimeError, TypeError, ValueError):  # a dtype or device without the fused kernel
                pass
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, foreach=False)
    try:
        return torch.optim.Adam(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a dtype or device without the fused kernel
        return torch.optim.Adam(groups, lr=lr)


def foldable_sgd_momentum(optimizer: torch.optim.Optimizer) -> float | None:
    """The momentum :math:`\\mu` (0 for plain SGD) when ``optimizer`` steps :math:`b \\leftarrow \\mu b + g`,
    :math:`\\theta \\leftarrow \\theta - \\eta b` and nothing else, so that an objective may apply the update
    itself (:func:`inference.folded_sgd.folded_sgd_step_`, see :func:`inference.training.fit`); else None.

    That is ``torch.optim.SGD`` with no weight decay, dampening, Nesterov or maximisation, and one learning
    rate (a schedule scales them alike) and one momentum for every group."""
    if type(optimizer) is not torch.optim.SGD:
        return None
    groups = optimizer.param_groups
    first = groups[0]
    if all(g["weight_decay"] == 0 and g["dampening"] == 0 and not g["nesterov"] and not g["maximize"]
           and not g.get("differentiable", False) and g["lr"] == first["lr"] and g["momentum"] == first["momentum"]
           for g in groups):
        return float(first["momentum"])
    return None


def make_schedule(optimizer: torch.optim.Optimizer, name: str, *, epochs: int, steps_per_epoch: int,
                  lr_final: float = 0.0, lr_decay: float = 1.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-update schedule (call ``step()`` after every optimiser step); see the module doc.

    ``epochs`` and ``steps_per_epoch`` are read when each factor is computed, not saved with
    the scheduler's state, so a resumed run with more epochs stretches ``linear`` and ``cosine``.
    """
    if name not in SCHEDULES:
        raise SpecError(f"unknown lr_schedule {name!r}; expected one of {', '.join(SCHEDULES)}")
    if not 0 <= lr_final <= 1:
        raise SpecError(f"lr_final must lie in [0, 1], got {lr_final!r}")
    if not lr_decay > 0:
        raise SpecError(f"lr_decay must be > 0, got {lr_decay!r}")
    total = epochs * steps_per_epoch

    def factor(step: int) -> float:
        if name == "linear":
            return 1 - (1 - lr_final) * min(step, total - 1) / max(total - 1, 1)
        epoch = step // steps_per_epoch
        if name == "exponential":
            return lr_decay**epoch
        if name == "cosine":
            return (1 + math.cos(math.pi * min(epoch, epochs) / epochs)) / 2
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
