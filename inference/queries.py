"""Queries shared by the catalogue: draw from a model, infer latents, complete a partly observed image.

Directed models: generic over Pyro pairs whose ``model(x=None, batch_size=n)``
samples ``n`` datapoints and whose observed site is named ``x`` (ancestral draws
go through :class:`pyro.infer.Predictive`). Energy models: generic over a
:class:`~inference.energy.TwoBlockEnergy`, sampled by the
:class:`~inference.block_gibbs.BlockGibbs` kernel through
:func:`~inference.mcmc_driver.run_mcmc` (every production sampling path goes
through the kernel and the driver). Completion of a directed model given some
pixels is :mod:`inference.importance_resampling`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import Predictive
from pyro.poutine.util import site_is_subsample

from .block_gibbs import BlockGibbs, check_k
from .errors import SpecError
from .mcmc_driver import MCMCResult, chain_diagnostics, run_mcmc


def sample_model(model, num_samples: int, site: str = "x") -> dict:
    """Ancestral samples: ``{"x": sampled x, "x_mean": E[x | parents], <latent sites>...}``."""
    with torch.no_grad(), pyro.validation_enabled(False):
        trace = poutine.trace(model).get_trace(None, batch_size=num_samples)
    out = {name: s["value"] for name, s in trace.nodes.items() if s["type"] == "sample"}
    out[f"{site}_mean"] = trace.nodes[site]["fn"].mean
    return out


def latent_sites(model, site: str = "x") -> list[str]:
    """The names of the model's latent sites (every sample site but the observed ``site``), in order."""
    with torch.no_grad(), pyro.validation_enabled(False):
        trace = poutine.trace(model).get_trace(batch_size=1)
    return [n for n, s in trace.nodes.items() if s["type"] == "sample" and n != site and not site_is_subsample(s)]


def ancestral_samples(model, num_samples: int, site: str = "x") -> dict:
    """``num_samples`` independent draws of every site of ``model(batch_size=num_samples)`` through
    :class:`pyro.infer.Predictive`, each ``(num_samples, ...)``, and ``"<site>_mean"``: :math:`E[x \\mid
    \\text{latents}]` of each draw (None when the likelihood has no closed-form mean, as an
    autoregressive one)."""
    with torch.no_grad(), pyro.validation_enabled(False):
        draws = {k: v[0] for k, v in Predictive(model, num_samples=1)(batch_size=num_samples).items()}
        latents = {k: v for k, v in draws.items() if k != site}
        fn = poutine.trace(poutine.condition(model, data=latents)).get_trace(batch_size=num_samples).nodes[site]["fn"]
        try:
            draws[f"{site}_mean"] = fn.mean
        except NotImplementedError:
            draws[f"{site}_mean"] = None
    return draws


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


@dataclass
class GibbsDraws:
    """What :func:`gibbs_chains` returns for ``C`` chains.

    :ivar torch.Tensor v: ``(C, V)`` the last visible state of each chain (a draw; clamped units as given).
    :ivar torch.Tensor v_mean: ``(C, V)`` :math:`E[v \\mid h]` of the last hidden state (clamped units as given).
    :ivar MCMCResult result: the driver's result; ``samples["v"]`` is ``(C, draws, V)``.
    """

    v: torch.Tensor
    v_mean: torch.Tensor
    result: MCMCResult


@torch.no_grad()
def gibbs_chains(energy, num_chains: int, warmup: int, draws: int, thin: int = 1, clamp_mask=None, clamp_values=None,
                 diagnose: bool = True, progress: bool = False) -> GibbsDraws:
    """``num_chains`` block-Gibbs chains from random states through :func:`~inference.mcmc_driver.run_mcmc`:
    ``warmup`` steps discarded, then ``draws`` kept, each step ``thin`` sweeps (R-hat, ESS and ArviZ
    data when ``diagnose``, over chains that target the same distribution). With a clamp mask the
    chains target :math:`p(v_{free} \\mid v_{clamped})`."""
    for name, value in (("warmup (steps)", warmup), ("draws", draws), ("thin", thin)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name.startswith("warmup") else 1):
            raise SpecError(f"{name} must be a {'non-negative' if name.startswith('warmup') else 'positive'} "
                            f"integer, got {value!r}")
    kernel = BlockGibbs(energy, num_chains=num_chains, k=thin, clamp_mask=clamp_mask, clamp_values=clamp_values)
    result = run_mcmc(kernel, num_samples=draws, warmup_steps=warmup, save_params=["v", "h"], warn=False,
                      disable_progbar=not (progress and sys.stderr.isatty()), diagnose=diagnose and draws > 1)
    mean = energy.visible_mean(result.samples["h"][:, -1])
    v = result.samples["v"][:, -1]
    if clamp_mask is not None:
        mean = torch.where(clamp_mask, kernel.initial_params["v"], mean)
    return GibbsDraws(v, mean, result)


def grouped_chain_diagnostics(x: torch.Tensor, groups: int) -> tuple[float, float]:
    """(max split R-hat, min ESS) of chains ``(groups * per_group, draws, ...)`` where only the chains of
    one group target the same distribution (completions of one input): each group's chains are compared
    with each other, never with another group's."""
    chains, draws = x.shape[:2]
    per = chains // groups
    x = x.reshape(groups, per, draws, -1).permute(1, 2, 0, 3)  # (per, draws, groups, units)
    return chain_diagnostics(x)
