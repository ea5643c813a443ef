r"""Annealed importance sampling (AIS) for the log partition function of an energy model.

AIS (Neal 2001) anneals from a tractable base model :math:`p_A` (normaliser
:math:`Z_A` known) to the model :math:`p_B` through unnormalised densities
:math:`f_\beta`, :math:`0 = \beta_0 < \beta_1 < \dots < \beta_K = 1`, each
with a transition :math:`T_\beta` that leaves it invariant. With
:math:`v^{(1)} \sim p_A` and :math:`v^{(k+1)} \sim T_{\beta_k}(v^{(k)})`, the
importance weight of a run is

.. math::

    \log w = \sum_{k=1}^{K} f_{\beta_k}(v^{(k)}) - f_{\beta_{k-1}}(v^{(k)}),
    \qquad \hat Z_B = Z_A \cdot \operatorname{mean}(w) \text{ (unbiased)}.

This module is the algorithm only, written against
:class:`inference.energy.AnnealableEnergy`: the model supplies the base model
fitted to the data (``base_rate``) and the path (``annealing_path``: its
:math:`\log Z_A`, draws from :math:`p_A`, and per temperature the log-weight
increment with the next state). For RBMs that is Salakhutdinov & Murray's
base-rate path, :class:`ppl_models.rbm.BaseRateAnnealingPath`.

Inside :func:`inference.distributed.sharing` the runs are split across
the ranks, each drawing from its own random stream, and their log-weights are
gathered in rank order before anything is averaged: the estimate, its spread
and the groups (contiguous pieces of the gathered runs) are those of one
process with all the runs.

The runs can be split into independent *groups* run one after the other: the
estimate uses every run, and groups that disagree flag an estimate that its
own spread does not (a heavy-tailed weight distribution rarely hides from both).

Reference: R. Salakhutdinov, I. Murray, "On the quantitative analysis of deep
belief networks", ICML 2008; R. Neal, "Annealed importance sampling",
Statistics and Computing 11 (2001).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from tqdm.auto import tqdm

from . import distributed
from .errors import SpecError

__all__ = ["AISResult", "ais_log_partition", "base_rate_visible", "default_schedule", "estimate_is_stable",
           "mean_log_likelihood"]

#: groups whose estimates differ by this much or more (nats) make an estimate unstable
GROUP_AGREEMENT_NATS = 0.5


@dataclasses.dataclass
class AISResult:
    """:ivar float log_z: the estimate :math:`\\log \\hat Z` from all runs.
    :ivar float log_z_std: standard deviation of :math:`\\log \\hat Z` (delta method:
        std of the weights / (sqrt(runs) * mean weight)).
    :ivar float log_z_lower: :math:`\\log(\\hat Z - 3\\hat\\sigma)` (-inf when that is <= 0), Salakhutdinov & Murray's interval.
    :ivar float log_z_upper: :math:`\\log(\\hat Z + 3\\hat\\sigma)`.
    :ivar torch.Tensor log_weights: per run (float64), the groups one after the other.
    :ivar float log_z_base: :math:`\\log Z_A`.
    :ivar int num_temperatures: :math:`K + 1`.
    :ivar list group_log_z: each group's own estimate of :math:`\\log Z` (one entry when ``groups=1``).
    :ivar bool stable: see :func:`estimate_is_stable`.
    """

    log_z: float
    log_z_std: float
    log_z_lower: float
    log_z_upper: float
    log_weights: torch.Tensor
    log_z_base: float
    num_temperatures: int
    group_log_z: list[float]
    stable: bool


def default_schedule(num_temperatures: int = 14500, *, like: torch.Tensor | None = None) -> torch.Tensor:
    """Salakhutdinov & Murray's schedule, scaled to ``num_temperatures``: 500 / 4000 / 10000 of
    14500 spaced uniformly in [0, 0.5], [0.5, 0.9], [0.9, 1]."""
    if isinstance(num_temperatures, bool) or not isinstance(num_temperatures, int) or num_temperatures < 3:
        raise SpecError(f"num_temperatures must be an integer >= 3, got {num_temperatures!r}")
    n1 = max(1, round(num_temperatures * 500 / 14500))
    # the last piece needs two points to end at 1: short schedules give up the middle piece first
    n2 = min(max(1, round(num_temperatures * 4000 / 14500)), num_temperatures - n1 - 2)
    n3 = num_temperatures - n1 - n2
    kwargs = {"dtype": torch.float64, "device": like.device if like is not None else None}
    return torch.cat([
        torch.linspace(0, 0.5, n1 + 1, **kwargs)[:-1],
        torch.linspace(0.5, 0.9, n2 + 1, **kwargs)[:-1],
        torch.linspace(0.9, 1.0, n3, **kwargs),
    ])


def _check_schedule(betas) -> torch.Tensor:
    betas = torch.as_tensor(betas, dtype=torch.float64)
    if betas.dim() != 1 or betas.numel() < 2:
        raise SpecError(f"schedule must be a 1-d sequence of at least 2 temperatures, got shape {tuple(betas.shape)}")
    if not bool(torch.isfinite(betas).all()) or betas[0] != 0 or betas[-1] != 1:
        raise SpecError(f"schedule must start at 0 and end at 1, got {betas[0].item()!r} ... {betas[-1].item()!r}")
    steps = betas[1:] - betas[:-1]
    if bool((steps <= 0).any()):
        i = int((steps <= 0).nonzero()[0])
        raise SpecError(
            f"schedule must be strictly increasing in [0, 1], got {betas[i].item()!r} then {betas[i + 1].item()!r} at index {i + 1}"
        )
    return betas


def base_rate_visible(model, data: torch.Tensor | None, smoothing: float = 0.05) -> torch.Tensor:
    """``model.base_rate(data, smoothing)`` after checking that ``data`` are states of the model
    (``validate_visible``: 0/1 for binary units), as :func:`ais_log_partition` does with its ``data``.

    To fit the base model to grey levels that stand for binary images (their probabilities, under
    dynamic binarisation), call ``model.base_rate`` directly and pass the result as ``base``.
    """
    if data is not None:
        model.validate_visible(data, "data")
    return model.base_rate(data, smoothing)


def estimate_is_stable(rel_std: float, group_log_z) -> bool:
    """Whether an AIS estimate looks trustworthy: a small spread (relative std < 1/3, i.e. a finite
    -3 sigma bound, as in Salakhutdinov & Murray's tables), every group's estimate finite and, with
    2+ groups, within :data:`GROUP_AGREEMENT_NATS` of every other's."""
    spread_ok = not math.isnan(rel_std) and rel_std < 1 / 3
    finite = all(math.isfinite(g) for g in group_log_z)
    agree = finite and (len(group_log_z) < 2 or max(group_log_z) - min(group_log_z) < GROUP_AGREEMENT_NATS)
    return bool(spread_ok and agree)


def _group_sizes(num_runs: int, groups: int) -> list:
    # as equal as can be, larger groups first: 51 runs in 2 groups are 26 + 25
    return [num_runs // groups + (1 if g < num_runs % groups else 0) for g in range(groups)]


def _run_group(path, num_runs: int, beta_list: list, bar=None) -> torch.Tensor:
    """Log-weights of ``num_runs`` parallel AIS runs along ``path`` (RNG order: base draws, then each
    temperature's transition)."""
    v = path.sample_base(num_runs)
    log_w = torch.zeros(num_runs, dtype=torch.float64, device=v.device)
    last = len(beta_list) - 1
    every = max(1, last // 200)  # a bar update costs more than a small model's step: about 200 of them
    for k in range(1, last + 1):
        increment, v_next = path.step(v, beta_list[k - 1], beta_list[k], transition=k < last)
        log_w += increment.double()
        if v_next is not None:
            v = v_next
        if bar is not None and k % every == 0:
            bar.update(every)
    if bar is not None:
        bar.update(last % every)
    return log_w


def _runs_of_every_rank(path, num_runs: int, beta_list: list, bar, like: torch.Tensor) -> torch.Tensor:
    """This rank's share of the runs, from its own stream, and every rank's log-weights gathered in rank order."""
    mine = distributed.shard_sizes(num_runs)[distributed.rank()]
    with distributed.distinct_stream():
        log_w = (_run_group(path, mine, beta_list, bar) if mine
                 else torch.zeros(0, dtype=torch.float64, device=like.device))
    return distributed.all_gather_rows(log_w)


def _log_mean_exp(log_w: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(log_w, 0) - math.log(log_w.numel())


@torch.no_grad()
def ais_log_partition(model, data: torch.Tensor | None = None, *, num_runs: int = 100, schedule=None,
                      num_temperatures: int = 14500, base=None, groups: int = 1,
                      progress: bool = False) -> AISResult:
    """Estimate :math:`\\log Z` of an :class:`~inference.energy.AnnealableEnergy` ``model`` by AIS.

    The runs of a group advance in parallel (one batch); groups run one after the other.

    :param torch.Tensor data: training data for the base model (see :func:`base_rate_visible`).
    :param int num_runs: independent AIS runs (importance samples), all groups together.
    :param schedule: increasing temperatures from 0 to 1 (default :func:`default_schedule`).
    :param int num_temperatures: length of the default schedule.
    :param torch.Tensor base: the base model's visible parameter (``model.base_rate(...)``), overriding ``data``.
    :param int groups: split the runs into this many independent groups (sizes differing by at most
        one), for :attr:`AISResult.group_log_z` and the agreement part of :attr:`AISResult.stable`.
    :param bool progress: a progress bar over the temperatures (off when stderr is not a terminal).
    :returns: :class:`AISResult`; ``log_z``, its std and interval come from all runs combined.

    Example::

        >>> from ppl_models.rbm import RBM
        >>> result = ais_log_partition(RBM(6, 3), num_runs=20, num_temperatures=100)
        >>> abs(result.log_z - 9 * math.log(2)) < 0.05   # weights ~ 0: log Z ~ (6 + 3) log 2
        True
    """
    if isinstance(num_runs, bool) or not isinstance(num_runs, int) or num_runs < 1:
        raise SpecError(f"num_runs must be a positive integer, got {num_runs!r}")
    if isinstance(groups, bool) or not isinstance(groups, int) or not 1 <= groups <= num_runs:
        raise SpecError(f"groups must be an integer from 1 to num_runs ({num_runs}), got {groups!r}")
    betas = _check_schedule(default_schedule(num_temperatures) if schedule is None else schedule)
    model.validate_parameters()
    like = next(model.parameters())
    base = base_rate_visible(model, data) if base is None else torch.as_tensor(base).to(like)
    path = model.annealing_path(base.detach())
    beta_list = betas.tolist()
    sizes = _group_sizes(num_runs, groups)
    parallel = distributed.sharing_work()
    with tqdm(total=(len(beta_list) - 1) * (1 if parallel else len(sizes)), leave=False, unit_scale=True,
              disable=None if progress and distributed.is_main() else True, desc=f"AIS log Z, {num_runs} runs",
              unit="temperature") as bar:
        if parallel:  # each rank its share of the runs; the groups are pieces of the gathered runs
            group_log_w = list(_runs_of_every_rank(path, num_runs, beta_list, bar, like).split(sizes))
        else:
            group_log_w = [_run_group(path, n, beta_list, bar) for n in sizes]
    group_log_z = [path.log_z_base + float(_log_mean_exp(lw)) for lw in group_log_w]
    log_w = torch.cat(group_log_w)
    log_mean_w = _log_mean_exp(log_w)
    log_z = path.log_z_base + float(log_mean_w)
    # relative std of the mean weight, then the +-3 sigma interval in log space
    rel_std = float((log_w - log_mean_w).exp().std(unbiased=num_runs > 1) / math.sqrt(num_runs)) if num_runs > 1 else float("nan")
    lower = log_z + math.log(1 - 3 * rel_std) if rel_std < 1 / 3 else float("-inf")
    upper = float("nan") if math.isnan(rel_std) else log_z + math.log1p(3 * rel_std)
    return AISResult(
        log_z=log_z,
        log_z_std=rel_std,
        log_z_lower=lower,
        log_z_upper=upper,
        log_weights=log_w,
        log_z_base=path.log_z_base,
        num_temperatures=len(beta_list),
        group_log_z=group_log_z,
        stable=estimate_is_stable(rel_std, group_log_z),
    )


@torch.no_grad()
def mean_log_likelihood(model, data: torch.Tensor, log_z: float) -> float:
    """Average :math:`\\log p(v) = -F(v) - \\log Z` over the rows of ``data`` (with an AIS or exact ``log_z``)."""
    model.validate_visible(data, "data")
    return float(-model.free_energy(data).double().mean() - log_z)
