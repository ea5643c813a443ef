"""Queries shared by the catalogue: draw from a model, infer latents, complete a partly observed image.

Directed models: generic over Pyro pairs whose ``model(x=None, batch_size=n)``
samples ``n`` datapoints and whose observed site is named ``x``. Energy
models: generic over a :class:`~inference.energy.TwoBlockEnergy`, sampled by
the :class:`~inference.block_gibbs.BlockGibbs` kernel through
:func:`~inference.mcmc_driver.run_mcmc` (every production sampling path goes
through the kernel and the driver).
"""

from __future__ import annotations

import sys
from typing import Optional

import pyro
import pyro.poutine as poutine
import torch

from .block_gibbs import BlockGibbs, check_k
from .errors import SpecError
from .mcmc_driver import run_mcmc


def sample_model(model, num_samples: int, site: str = "x") -> dict:
    """Ancestral samples: ``{"x": sampled x, "x_mean": E[x | parents], <latent sites>...}``."""
    with torch.no_grad(), pyro.validation_enabled(False):
        trace = poutine.trace(model).get_trace(None, batch_size=num_samples)
    out = {name: s["value"] for name, s in trace.nodes.items() if s["type"] == "sample"}
    out[f"{site}_mean"] = trace.nodes[site]["fn"].mean
    return out


def posterior_latents(guide, x: torch.Tensor, num_samples: int = 1) -> dict:
    """Samples of every latent site of ``q(z | x)``: tensors of shape ``(num_samples, batch, ...)``."""
    draws = []
    with torch.no_grad(), pyro.validation_enabled(False):
        for _ in range(num_samples):
            trace = poutine.trace(guide).get_trace(x)
            draws.append({n: s["value"] for n, s in trace.nodes.items()
                          if s["type"] == "sample" and not s["is_observed"] and not n.startswith("_")
                          and type(s["fn"]).__name__ != "_Subsample"})
    return {name: torch.stack([d[name] for d in draws]) for name in draws[0]}


@torch.no_grad()
def gibbs_visible_means(energy, num_chains: int, sweeps: int, clamp_mask: Optional[torch.Tensor] = None,
                        clamp_values: Optional[torch.Tensor] = None, progress: bool = False) -> torch.Tensor:
    """:math:`E[v \\mid h]` of the last state of ``num_chains`` block-Gibbs chains after ``sweeps`` sweeps
    from random states, shape ``(num_chains, V)``; clamped units keep their values (then the chains
    target :math:`p(v_{free} \\mid v_{clamped})`). Rao-Blackwellised: the mean given the last
    hidden state, not a noisy draw."""
    try:
        check_k(sweeps)
    except SpecError:
        raise SpecError(f"sweeps (Gibbs sweeps per picture) must be a positive integer, got {sweeps!r}") from None
    kernel = BlockGibbs(energy, num_chains=num_chains, k=1, clamp_mask=clamp_mask, clamp_values=clamp_values)
    # Pyro's bar writes a line per update when stderr is no terminal: shown only on one
    result = run_mcmc(kernel, num_samples=1, warmup_steps=sweeps - 1, save_params=["h"],
                      disable_progbar=not (progress and sys.stderr.isatty()), diagnose=False)
    mean = energy.visible_mean(result.samples["h"][:, -1])
    return mean if clamp_mask is None else torch.where(clamp_mask, kernel.initial_params["v"], mean)


@torch.no_grad()
def complete(energy, values: torch.Tensor, mask: torch.Tensor, sweeps: int, per_value: int = 1,
             progress: bool = False) -> torch.Tensor:
    """Complete partly observed visible vectors by clamped Gibbs.

    :param values: ``(N, V)`` visible values; only the entries where ``mask`` is True are read.
    :param mask: bool ``(V,)`` or ``(N, V)``, True where a unit is observed (clamped).
    :param int per_value: independent completions of each row.
    :returns: ``(N, per_value, V)``: observed units as given, the others :math:`E[v \\mid h]`.
    """
    if values.dim() != 2 or mask.shape[-1] != values.shape[-1]:
        raise SpecError(f"values must be (N, V) and mask (V,) or (N, V), got {tuple(values.shape)} and {tuple(mask.shape)}")
    values = values.repeat_interleave(per_value, 0)
    if mask.dim() == 2:
        mask = mask.repeat_interleave(per_value, 0)
    v = gibbs_visible_means(energy, values.shape[0], sweeps, mask, values, progress)
    return v.reshape(-1, per_value, v.shape[-1])
