"""Queries on directed models: draw from the model, infer latents.

Generic over Pyro pairs whose ``model(x=None, batch_size=n)`` samples ``n``
datapoints and whose observed site is named ``x``.
"""

from __future__ import annotations

import pyro
import pyro.poutine as poutine
import torch


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
