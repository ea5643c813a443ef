"""Cheap per-epoch monitors of an energy model's fit (no partition function needed)."""

from __future__ import annotations

import torch


@torch.no_grad()
def reconstruction_error(model, v: torch.Tensor) -> float:
    """Mean over rows of :math:`\\lVert v - E[v \\mid h = p(h \\mid v)] \\rVert^2` (deterministic)."""
    return float((v - model.visible_mean(model.hidden_probs(v))).pow(2).sum(-1).mean())


@torch.no_grad()
def pseudo_log_likelihood(model, v: torch.Tensor, generator: torch.Generator | None = None) -> float:
    """scikit-learn's stochastic pseudo-log-likelihood of binary ``v``, averaged over rows.

    For each row one unit :math:`i` is picked at random (from ``generator``, so a
    monitor never moves the training RNG stream) and :math:`V \\log \\sigma(F(\\tilde v) - F(v))`
    is returned, :math:`\\tilde v` being :math:`v` with unit :math:`i` flipped
    (``BernoulliRBM.score_samples``).
    """
    n, V = v.shape
    idx = torch.randint(0, V, (n,), generator=generator, device=v.device)
    flipped = v.clone()
    rows = torch.arange(n, device=v.device)
    flipped[rows, idx] = 1 - flipped[rows, idx]
    return float((V * torch.nn.functional.logsigmoid(model.free_energy(flipped) - model.free_energy(v))).mean())


@torch.no_grad()
def free_energy_gap(model, valid: torch.Tensor, train: torch.Tensor) -> float:
    """Mean free energy of held-out minus as many training images: grows when the model overfits
    (Hinton's practical guide, Sec. 6)."""
    return float(model.free_energy(valid).mean() - model.free_energy(train[: len(valid)]).mean())
