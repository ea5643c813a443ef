"""What a query returns: :class:`Answer`, its numbers as JSON, and the ArviZ data of its draws."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from inference.mcmc_driver import to_inference_data

#: the questions a trained model can be asked (``ppl-models query DIR KIND``)
QUERY_KINDS = ("sample", "log_prob", "posterior", "complete", "classify")


@dataclass
class Answer:
    """One query's answer.

    :ivar str kind: one of :data:`QUERY_KINDS`.
    :ivar dict numbers: what the JSON carries: the estimator in words, its settings, and the values
        with their uncertainty (standard errors, diagnostics, ``is_bound``).
    :ivar dict tensors: the results as tensors for Python (e.g. ``images``, ``log_prob``, ``stderr``).
    :ivar inference_data: ArviZ data of the draws (posterior group), where draws are involved.
    :ivar picture: writes the answer's picture to a path (sample grids, completions), or None.
    """

    kind: str
    numbers: dict
    tensors: dict = field(default_factory=dict)
    inference_data: Any = None
    picture: Optional[Callable[[str], None]] = None

    def to_json(self) -> str:
        return json.dumps(plain(self.numbers), indent=2)


def plain(value):
    """``value`` with tensors and arrays as (nested) lists and every non-finite number as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if torch.is_tensor(value):
        return plain(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def estimate(value: float, stderr: float) -> dict:
    """A number with its standard error, as the JSON shows it."""
    return {"value": float(value), "stderr": float(stderr)}


def draws_to_inference_data(draws: dict, names: list[str]) -> Any:
    """ArviZ data (posterior group, one chain) of ``{site: (draws, N, ...)}`` per input, with the inputs named."""
    posterior, dims = {}, {}
    for site, value in draws.items():
        value = value.detach().cpu()
        posterior[site] = value.float().unsqueeze(0) if value.is_floating_point() else value.unsqueeze(0)
        dims[site] = ["input"] + [f"{site}_dim_{i}" for i in range(value.dim() - 2)]
    return to_inference_data(posterior, dims=dims, coords={"input": list(names)})


def draw_summary(values: torch.Tensor, effective_size: Optional[torch.Tensor] = None) -> dict:
    """Per input and unit, the mean over draws, the draws' standard deviation and the mean's Monte Carlo
    standard error, of draws ``(S, N, units)``; integer draws (a class, a component) give the frequency of
    each value instead.

    :param effective_size: per input ``(N,)``, for draws that are not independent (resampled from k
        weighted particles): the standard error divides by ``sqrt(min(S, ESS))``, not ``sqrt(S)``, since
        S resampled draws hold at most ESS particles' worth of information.
    """
    s = values.shape[0]
    n = torch.full((values.shape[1],), float(s), dtype=torch.float64)
    if effective_size is not None:
        n = torch.minimum(n, effective_size.detach().double().cpu().clamp(min=1.0))
    root = n.sqrt().to(values.device).unsqueeze(-1)
    if not values.is_floating_point():
        counts = torch.nn.functional.one_hot(values.long(), int(values.max()) + 1).double()
        return {"frequencies": counts.mean(0), "frequencies_stderr": counts.std(0, unbiased=s > 1) / root.unsqueeze(-1)}
    values = values.double().reshape(s, values.shape[1], -1)
    sd = values.std(0, unbiased=s > 1)
    return {"mean": values.mean(0), "sd": sd, "mean_stderr": sd / root}
