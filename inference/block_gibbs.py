r"""Block Gibbs sampling of two-block energy models as a Pyro MCMC kernel.

An energy model whose units split into two blocks, each conditionally
independent given the other (an RBM's visible and hidden layers; a DBM's odd
and even layers; a fully visible BM after a bipartite colouring), is sampled
exactly by alternating the two block conditionals. :class:`BlockGibbs` is that
sampler, written against :class:`inference.energy.TwoBlockEnergy` only: a new
model of this shape is a new energy function, not a new sampler.

Many chains live in one state tensor with a leading chain dimension, so a
sweep of every chain costs one matrix product per block (Pyro's own
multi-chain mode starts one process per chain, which is sequential on a small
machine). :func:`inference.mcmc_driver.run_mcmc` exposes each of these chains
to the diagnostics as a chain of its own.

Reference: S. Geman, D. Geman, "Stochastic relaxation, Gibbs distributions,
and the Bayesian restoration of images", IEEE PAMI 6 (1984).
"""

from __future__ import annotations

import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from .energy import TwoBlockEnergy
from .errors import SpecError

__all__ = ["BlockGibbs", "bernoulli_draw", "check_clamp", "check_k"]


def bernoulli_draw(probs: torch.Tensor) -> torch.Tensor:
    """0/1 floats with P(1) = ``probs``, as ``U < p``, ``U ~ Uniform[0, 1)``: about twice as fast on
    CPU as ``torch.bernoulli``, and with the GEMMs the only real cost of a sweep."""
    return torch.rand_like(probs).lt_(probs)


def check_clamp(model, num_chains: int, mask, values, like: torch.Tensor) -> tuple:
    """``(mask, values)`` of a clamp of the visible units, checked: a bool mask ``(V,)`` or ``(C, V)`` on
    ``like``'s device and values broadcast to ``(C, V)`` in its dtype, valid visible states; a one-line
    :class:`SpecError` otherwise. Shared by every kernel that clamps visible units."""
    V, C = model.num_visible, num_chains
    if mask is None or values is None:
        raise SpecError("clamp_mask and clamp_values must be given together")
    if not isinstance(mask, torch.Tensor) or mask.shape not in ((V,), (C, V)):
        found = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise SpecError(f"clamp_mask must have shape ({V},) or ({C}, {V}), got {found}")
    values = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    try:
        values = torch.broadcast_to(values, (C, V))
    except RuntimeError:
        raise SpecError(f"clamp_values must broadcast to ({C}, {V}), got shape {tuple(values.shape)}") from None
    model.validate_visible(values, "clamp_values")
    return mask.to(dtype=torch.bool, device=like.device), values.contiguous()


def check_k(k) -> int:
    """Return ``k`` if it is a positive integer, else raise a one-line :class:`SpecError`."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SpecError(f"k (Gibbs sweeps per sample) must be a positive integer, got {k!r}")
    return k


def visible_summaries(model, mask) -> dict:
    """The per-draw summaries every Gibbs kernel reports: ``free_energy`` of each draw and ``visible_units``
    (each unit's value, leaving out units clamped in every chain by a 1-d ``mask``); None without a ``"v"`` site."""

    @torch.no_grad()
    def free_energy(samples):
        return model.free_energy(samples["v"]) if "v" in samples else None

    def unit_values(samples):
        if "v" not in samples:
            return None
        v = samples["v"]
        if mask is not None and mask.dim() == 1:
            v = v[..., ~mask]  # clamped units are constant: no R-hat to compute
        return v

    return {"free_energy": free_energy, "visible_units": unit_values}


class BlockGibbs(MCMCKernel):
    r"""Vectorised block Gibbs kernel for :class:`TwoBlockEnergy` models, runnable under :class:`pyro.infer.MCMC`.

    The state is ``{"v": (num_chains, V), "h": (num_chains, H)}``. One sweep
    draws :math:`v \sim p(v \mid h)`, overwrites the clamped visible units with
    their observed values, then draws :math:`h \sim p(h \mid v)`; ``sample``
    makes ``k`` sweeps. With a clamp mask the chains target the conditional
    :math:`p(v_{\text{free}}, h \mid v_{\text{clamped}})` (completion of a
    partly observed image). After ``sample``, :attr:`last_hidden_logits` holds
    the hidden inputs :math:`x(v)` of the returned ``v`` and
    :attr:`last_hidden_probs` :math:`p(h \mid v) = \sigma(x(v))` (what CD / PCD
    average, and its free energy, at no extra cost).

    :param TwoBlockEnergy model: e.g. ``RBM`` or ``GaussianBernoulliRBM``.
    :param int num_chains: chains held in the state's leading dimension.
    :param int k: Gibbs sweeps per returned sample (thinning), >= 1.
    :param torch.Tensor clamp_mask: optional bool mask, shape ``(V,)`` or ``(num_chains, V)``;
        True where the visible unit is held at its observed value.
    :param torch.Tensor clamp_values: observed values, broadcastable to ``(num_chains, V)``;
        required with ``clamp_mask``.
    :param int log_every: the progress bar's mean free energy is recomputed every
        ``log_every`` samples (it costs a matrix product and a device sync).

    Example::

        >>> from pyro.infer import MCMC
        >>> from ppl_models.rbm import RBM
        >>> kernel = BlockGibbs(RBM(4, 3), num_chains=100, k=2)
        >>> mcmc = MCMC(kernel, num_samples=10, warmup_steps=10, disable_progbar=True)
        >>> mcmc.run()
        >>> mcmc.get_samples()["v"].shape
        torch.Size([10, 100, 4])
    """

    def __init__(self, model: TwoBlockEnergy, num_chains: int = 1, k: int = 1, clamp_mask=None, clamp_values=None, log_every: int = 50):
        if isinstance(num_chains, bool) or not isinstance(num_chains, int) or num_chains < 1:
            raise SpecError(f"num_chains must be a positive integer, got {num_chains!r}")
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise SpecError(f"log_every must be a positive integer, got {log_every!r}")
        self.model = model
        self.num_chains = num_chains
        self.k = check_k(k)
        self.log_every = log_every
        # No constrained sites: tells pyro.infer.MCMC not to trace a Pyro model for transforms.
        self.transforms = {}
        self._state = None
        self._mask = self._values = None
        self.last_hidden_logits = self.last_hidden_probs = None
        self._num_logged = 0
        self._logged_free_energy = float("nan")
        if clamp_mask is not None or clamp_values is not None:
            self.clamp(clamp_mask, clamp_values)

    # -- clamping -----------------------------------------------------------
    def clamp(self, mask, values) -> None:
        """Hold the visible units where ``mask`` is True at ``values``; ``clamp(None, None)`` frees them."""
        if mask is None and values is None:
            self._mask = self._values = None
            return
        self._mask, self._values = check_clamp(self.model, self.num_chains, mask, values, self._like())
        if self._state is not None:
            self._state = {**self._state, "v": self._apply_clamp(self._state["v"])}

    def _like(self) -> torch.Tensor:
        # dtype and device of the model (any parameter): the kernel never picks a device itself
        return next(iter(self.model.parameters()))

    def _apply_clamp(self, v: torch.Tensor) -> torch.Tensor:
        if self._mask is None:
            return v
        return torch.where(self._mask, self._values, v)

    # -- state ----------------------------------------------------------------
    @property
    def initial_params(self) -> dict:
        """The chains' current state ``{"v", "h"}``; drawn at random when unset."""
        if self._state is None:
            self._state = self._random_state()
        return self._state

    @initial_params.setter
    def initial_params(self, params) -> None:
        shapes = {"v": (self.num_chains, self.model.num_visible), "h": (self.num_chains, self.model.num_hidden)}
        if not isinstance(params, dict) or set(params) != set(shapes):
            found = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise SpecError(f"initial_params must be a dict with keys ['h', 'v'], got {found}")
        for name, shape in shapes.items():
            value = params[name]
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
                found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise SpecError(
                    f"initial_params['{name}'] must have shape {shape} (num_chains, units), got {found}"
                )
        self.model.validate_visible(params["v"], "initial_params['v']")
        h = params["h"]
        if not h.is_floating_point() or bool(((h != 0) & (h != 1)).any()):
            raise SpecError("initial_params['h'] must hold 0/1 floats")
        self._state = {"v": self._apply_clamp(params["v"]), "h": h}

    @torch.no_grad()
    def _random_state(self) -> dict:
        h = bernoulli_draw(self._like().new_full((self.num_chains, self.model.num_hidden), 0.5))
        v = self._apply_clamp(self.model.sample_visible(h))
        return {"v": v, "h": bernoulli_draw(self.model.hidden_probs(v))}

    def setup(self, warmup_steps, *args, **kwargs) -> None:
        """Check the model's parameters; draw a random state unless one was given."""
        self.model.validate_parameters()
        self.initial_params  # noqa: B018 (draws the state if unset)
        self._num_logged = 0

    # -- the transition -----------------------------------------------------
    @torch.no_grad()
    def sample(self, params: dict) -> dict:
        """``k`` block-Gibbs sweeps from ``params``; returns the new state (also kept as the kernel's)."""
        model = self.model
        h = params["h"]
        for _ in range(self.k):
            v = self._apply_clamp(model.sample_visible(h))
            logits = model.hidden_logits(v)  # hidden_probs(v) is sigmoid of these: kept, not recomputed
            probs = torch.sigmoid(logits)
            h = bernoulli_draw(probs)
        self.last_hidden_logits, self.last_hidden_probs = logits, probs
        self._state = {"v": v, "h": h}
        return self._state

    # -- reporting -----------------------------------------------------------
    @torch.no_grad()
    def mean_free_energy(self) -> float:
        """Mean free energy of the current visible states over the chains."""
        return float(self.model.free_energy(self.initial_params["v"]).mean())

    def logging(self) -> dict:
        if self._num_logged % self.log_every == 0:
            self._logged_free_energy = self.mean_free_energy()
        self._num_logged += 1
        return {"free energy": f"{self._logged_free_energy:.4g}"}

    def diagnostics(self) -> dict:
        return {"num_chains": self.num_chains, "sweeps_per_sample": self.k}

    def summaries(self) -> dict:
        """Per-draw summaries for :func:`inference.mcmc_driver.run_mcmc`: name -> f(samples) -> (chains, draws[, d]).

        ``free_energy`` of each draw and ``visible_units`` (each unit's value; their averages are the
        unit means), leaving out units clamped in every chain. Both need the ``"v"`` site saved
        (they return None otherwise, and the driver skips them).
        """
        return visible_summaries(self.model, self._mask)
