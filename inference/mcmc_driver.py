r"""Run any MCMC kernel through :class:`pyro.infer.MCMC`; samples, ArviZ data and convergence diagnostics.

Kernels of this package hold many chains in one state (a leading chain
dimension of size ``kernel.num_chains``) and run as a single Pyro chain. The
driver undoes that packing: every returned array is ``(chains, draws, ...)``,
so R-hat and the effective sample size see each vectorised chain as a chain of
its own. Diagnostics are computed on *summaries* that matter (for an energy
model: the free energy of each draw and each unit's value, whose averages are
the unit means) rather than on thousands of raw coordinates.

Inside :func:`inference.distributed.sharing` every rank runs its own
chains (the kernel's ``num_chains`` each, from its own random stream) and the
draws are gathered along the chain dimension in rank order before anything is
summarised, so the samples, R-hat, ESS and ArviZ data cover every rank's chains.

R-hat is the split potential scale reduction factor and ESS Geyer's
initial-monotone estimate, both from :mod:`pyro.ops.stats`, so they do not
depend on the installed ArviZ version.

References: A. Gelman, D. Rubin, "Inference from iterative simulation using
multiple sequences", Statistical Science 7 (1992); C. Geyer, "Practical
Markov chain Monte Carlo", Statistical Science 7 (1992).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import torch
from pyro.infer import MCMC
from pyro.ops.stats import effective_sample_size, split_gelman_rubin

from . import distributed
from .errors import SpecError

__all__ = ["ChainsNotMixedWarning", "DrawRecorder", "MCMCResult", "chain_diagnostics", "run_mcmc", "to_inference_data"]


class ChainsNotMixedWarning(UserWarning):
    """Issued by :func:`run_mcmc` when R-hat or the effective sample size says the chains have not mixed."""


@dataclasses.dataclass
class MCMCResult:
    """What :func:`run_mcmc` returns.

    :ivar dict samples: saved sites, each ``(chains, draws, ...)``.
    :ivar dict summaries: per-draw summaries, each ``(chains, draws)`` or ``(chains, draws, d)``.
    :ivar inference_data: :class:`arviz.InferenceData` (0.x) / ``DataTree`` (1.x) of samples and summaries.
    :ivar dict r_hat: per summary, the largest split R-hat over its elements (NaN-free elements only).
    :ivar dict ess: per summary, the smallest effective sample size over its elements.
    :ivar mixed: whether every R-hat is below the threshold and every ESS above its minimum (None: not diagnosed).
    :ivar str message: one line saying so, naming the worst summary when not mixed.
    :ivar dict kernel_diagnostics: the kernel's ``diagnostics()``.
    """

    samples: dict
    summaries: dict
    inference_data: Any
    r_hat: dict
    ess: dict
    mixed: bool
    message: str
    kernel_diagnostics: dict


def to_inference_data(posterior: dict, dims: dict | None = None, coords: dict | None = None):
    """Build ArviZ data from ``{name: array (chains, draws, ...)}``; works with ArviZ 0.x and 1.x.

    :param dict dims: optional names of each variable's dimensions after (chain, draw), e.g.
        ``{"z": ["input", "z_dim"]}``; ``coords`` the values along any of them.
    """
    with warnings.catch_warnings():  # ArviZ 0.2x announces its 1.0 refactor on import: noise on a user's stderr
        warnings.filterwarnings("ignore", message="ArviZ is undergoing a major refactor", category=FutureWarning)
        import arviz as az

    arrays = {k: (v.detach().cpu().numpy() if torch.is_tensor(v) else v) for k, v in posterior.items()}
    if int(az.__version__.split(".")[0]) >= 1:
        return az.from_dict({"posterior": arrays}, dims=dims, coords=coords)  # 1.x: a dict of groups
    return az.from_dict(posterior=arrays, dims=dims, coords=coords)


#: split R-hat needs at least two draws in each half of a chain (Pyro asserts on fewer)
MIN_DIAGNOSED_DRAWS = 4


def chain_diagnostics(x: torch.Tensor) -> tuple[float, float]:
    """(max split R-hat, min ESS) over the elements of ``x`` (chains, draws, ...), ignoring constant elements;
    NaN for fewer than :data:`MIN_DIAGNOSED_DRAWS` draws per chain (split R-hat halves each chain)."""
    if x.shape[1] < MIN_DIAGNOSED_DRAWS:
        return float("nan"), float("nan")
    x = x.detach().double()
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    varying = flat.var(dim=(0, 1)) > 0  # a unit that never changes (e.g. clamped) has no R-hat
    if not bool(varying.any()):
        return float("nan"), float("nan")
    flat = flat[..., varying]
    r_hat = split_gelman_rubin(flat, chain_dim=0, sample_dim=1)
    ess = effective_sample_size(flat, chain_dim=0, sample_dim=1)
    return float(r_hat.nan_to_num(nan=float("inf")).max()), float(ess.nan_to_num(nan=0.0).min())


class DrawRecorder:
    """A ``hook_fn`` for :class:`pyro.infer.MCMC` that keeps the draws of some sites, each ``(chains, draws, ...)``.

    Pyro's own ``save_params`` copies every kept draw three times into fresh
    memory (a flat vector per draw, then a stack over draws and another over
    chains), and fresh memory means page faults: for a (100, 784) state that
    measured about 0.3 ms a draw more than this recorder, against 2.3 ms for a
    784x500 Gibbs sweep of 100 chains (``benchmarks/gibbs_throughput.py``).
    This writes each draw once into arrays allocated at the first draw, already
    in the layout :func:`run_mcmc` returns; give Pyro ``save_params=[]``.

    :param int num_samples: draws after warm-up (the arrays' second dimension).
    :param list names: sites to keep; default every site of the state.
    :param bool vectorised: the state has a leading chain dimension (``kernel.num_chains``);
        otherwise the arrays get a chain dimension of size 1.
    """

    def __init__(self, num_samples: int, names: list[str] | None = None, vectorised: bool = True):
        self.num_samples = num_samples
        self.names = None if names is None else list(names)
        self.vectorised = vectorised
        self.draws: dict[str, torch.Tensor] | None = None

    def __call__(self, kernel, params: dict, stage: str, i: int) -> None:
        if not stage.startswith("Sample"):  # "Warmup": not kept
            return
        if self.draws is None:
            self.draws = self._allocate(params)
        for name, out in self.draws.items():
            value = params[name]
            out[:, i].copy_(value if self.vectorised else value.unsqueeze(0))

    def _allocate(self, params: dict) -> dict:
        names = sorted(params) if self.names is None else self.names
        unknown = [n for n in names if n not in params]
        if unknown:
            raise SpecError(f"save_params must name sites of the kernel's state {sorted(params)}, got {unknown}")
        draws = {}
        for name in names:
            x = params[name].detach()
            chains, shape = (x.shape[0], x.shape[1:]) if self.vectorised else (1, x.shape)
            draws[name] = x.new_empty((chains, self.num_samples) + tuple(shape))
        return draws


def run_mcmc(
    kernel,
    num_samples: int,
    warmup_steps: int = 0,
    *,
    summaries: dict[str, Callable] | None = None,
    save_params: list[str] | None = None,
    r_hat_threshold: float = 1.05,
    min_ess: float = 100.0,
    include_samples_in_inference_data: bool = True,
    disable_progbar: bool = False,
    warn: bool = True,
    diagnose: bool = True,
) -> MCMCResult:
    """Run ``kernel`` under :class:`pyro.infer.MCMC` and diagnose its chains.

    :param kernel: a :class:`pyro.infer.mcmc.mcmc_kernel.MCMCKernel` whose state has a
        leading chain dimension of size ``kernel.num_chains`` (1 if it has no such attribute).
    :param int num_samples: draws kept per chain.
    :param int warmup_steps: draws discarded first.
    :param dict summaries: name -> function of the samples dict (each ``(chains, draws, ...)``)
        returning ``(chains, draws[, ...])``; default ``kernel.summaries()`` if the kernel has it,
        else every saved site.
    :param list save_params: sites to keep (default all); fewer sites, less memory.
    :param float r_hat_threshold: chains count as mixed when every R-hat is below this. The
        default 1.05 allows for the maximum over hundreds of units.
    :param float min_ess: ... and every ESS is at least this.
    :param bool warn: issue a :class:`ChainsNotMixedWarning` when they have not mixed.
    :param bool diagnose: compute summaries, R-hat, ESS and the ArviZ data; False for a production
        draw that keeps only the last state of each chain (one draw has no R-hat), which then
        returns the samples with empty diagnostics and ``mixed=None``.
    """
    for name, value in (("num_samples", num_samples), ("warmup_steps", warmup_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "num_samples" else 0):
            raise SpecError(f"{name} must be an integer >= {1 if name == 'num_samples' else 0}, got {value!r}")
    vectorised = hasattr(kernel, "num_chains")
    num_chains = getattr(kernel, "num_chains", 1)
    recorder = DrawRecorder(num_samples, save_params, vectorised)
    had_save_params, previous = hasattr(kernel, "save_params"), getattr(kernel, "save_params", None)
    mcmc = MCMC(
        kernel,
        num_samples=num_samples,
        warmup_steps=warmup_steps,
        save_params=[],  # the recorder keeps the draws (one copy each instead of Pyro's three)
        hook_fn=recorder,
        disable_progbar=disable_progbar or not distributed.is_main(),
    )
    try:
        with distributed.distinct_stream():  # under a process group each rank runs its own chains
            mcmc.run()
    finally:  # MCMC leaves save_params=[] on the kernel: a later plain MCMC(kernel) would save nothing
        if had_save_params:
            kernel.save_params = previous
        else:
            del kernel.save_params
    samples = dict(recorder.draws)
    for name, transform in (mcmc.transforms or {}).items():  # HMC-style kernels: back to constrained space
        if name in samples:
            samples[name] = transform.inv(samples[name])
    if distributed.sharing_work():  # every rank's chains, in rank order: one set of chains for the diagnostics
        samples = {name: distributed.all_gather_rows(value) for name, value in samples.items()}
        num_chains *= distributed.world_size()

    diagnostics = getattr(kernel, "diagnostics", dict)() or {}
    if not diagnose:
        return MCMCResult(samples=samples, summaries={}, inference_data=None, r_hat={}, ess={}, mixed=None,
                          message="not diagnosed (diagnose=False)", kernel_diagnostics=diagnostics)
    if summaries is None:
        summaries = kernel.summaries() if hasattr(kernel, "summaries") else {k: (lambda s, k=k: s[k]) for k in samples}
    values = {name: fn(samples) for name, fn in summaries.items()}
    values = {name: value for name, value in values.items() if value is not None}
    if not values:  # the kernel's summaries need sites that were not saved: diagnose the saved ones
        values = dict(samples)
    r_hat, ess = {}, {}
    for name, value in values.items():
        r_hat[name], ess[name] = chain_diagnostics(value)

    bad = [n for n in values if r_hat[n] > r_hat_threshold or ess[n] < min_ess]  # NaN (constant) passes
    mixed = None if num_samples < MIN_DIAGNOSED_DRAWS else not bad
    if mixed is None:
        message = (f"not diagnosed: {num_samples} draws per chain, and R-hat and ESS need at least "
                   f"{MIN_DIAGNOSED_DRAWS}")
    elif bad:
        worst = max(bad, key=lambda n: r_hat[n])
        message = (
            f"chains have not mixed: {worst} has R-hat {r_hat[worst]:.3g} (want < {r_hat_threshold}) and "
            f"ESS {ess[worst]:.0f} (want >= {min_ess:g}) over {num_chains} chains x {num_samples} draws; "
            "run more warm-up, more samples or more sweeps per sample"
        )
        if warn:
            warnings.warn(message, ChainsNotMixedWarning, stacklevel=2)
    else:
        message = f"chains mixed: every R-hat < {r_hat_threshold} and ESS >= {min_ess:g} ({num_chains} chains x {num_samples} draws)"

    posterior = dict(values)
    if include_samples_in_inference_data:
        posterior.update({k: v for k, v in samples.items() if k not in posterior})
    return MCMCResult(
        samples=samples,
        summaries=values,
        inference_data=to_inference_data(posterior),
        r_hat=r_hat,
        ess=ess,
        mixed=mixed,
        message=message,
        kernel_diagnostics=diagnostics,
    )
