r"""Single-site (or coloured-block) Gibbs sampling of energy models with lateral connections, as a Pyro MCMC kernel.

A fully visible Boltzmann machine has no bipartite split: every unit may be
connected to every other, so :class:`~inference.block_gibbs.BlockGibbs`
does not apply. Each unit is still conditionally independent of the rest given
its neighbours, with :math:`p(v_i = 1 \mid v_{-i}) = \sigma(x_i(v))`, so a
*sweep* updates the units one after the other in a fixed order (systematic
scan), each from its exact conditional given the current values of all others.
Units that share no weight (a *colour class* of the coupling graph) are
conditionally independent given the rest and may be drawn together: with a
colouring of a sparse graph a sweep costs one step per colour instead of one
per unit. Each such update leaves :math:`p(v)` invariant, hence so does the
sweep (Geman & Geman 1984).

The model is seen through :class:`LateralEnergy` only; the chains are
vectorised in a leading dimension of the state, as in
:class:`~inference.block_gibbs.BlockGibbs`, and the kernel runs under
:func:`inference.mcmc_driver.run_mcmc` and as the negative phase of
:class:`~inference.contrastive_divergence.ContrastiveDivergence` (its
``kernel_class``).

Reference: S. Geman, D. Geman, "Stochastic relaxation, Gibbs distributions,
and the Bayesian restoration of images", IEEE PAMI 6 (1984).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from .block_gibbs import bernoulli_draw, check_clamp, check_k, visible_summaries
from .errors import SpecError

__all__ = ["LateralEnergy", "SingleSiteGibbs", "check_colours", "gibbs_sweep"]


@runtime_checkable
class LateralEnergy(Protocol):
    r"""Binary units with lateral couplings: what single-site Gibbs needs of a model.

    :ivar int num_visible: :math:`D`, the units.
    """

    num_visible: int

    def conditional_logits(self, v: torch.Tensor, units=None) -> torch.Tensor:
        r""":math:`x_i(v)` with :math:`p(v_i = 1 \mid v_{-i}) = \sigma(x_i(v))` for ``units`` (an index
        tensor, all when None), shape ``(..., len(units))``; must not depend on :math:`v_i` itself."""
        ...

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """:math:`-\\log p^*(v)`, the unnormalised negative log density (the energy when there are no hidden
        units): the chains' diagnostic summary."""
        ...

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """The first parameter fixes the dtype and device of the chains."""
        ...

    def validate_visible(self, v: torch.Tensor, what: str = "data") -> torch.Tensor:
        """Return ``v`` if it holds valid 0/1 states, else raise a one-line error naming ``what``."""
        ...

    def validate_parameters(self) -> None:
        """Raise a one-line :class:`SpecError` if a parameter is unusable."""
        ...


def gibbs_sweep(model: LateralEnergy, v: torch.Tensor, colours: Sequence[torch.Tensor] | None = None,
                clamp_mask: torch.Tensor | None = None) -> torch.Tensor:
    """One systematic-scan sweep: each colour class (default: each unit alone, in order) drawn from its
    conditional given the current state; where ``clamp_mask`` (``(D,)`` or ``(chains, D)``) is True the
    unit keeps its value. Returns a new tensor; ``v`` is not changed."""
    v = v.clone()
    classes = colours if colours is not None else torch.arange(model.num_visible, device=v.device).split(1)
    for units in classes:
        draw = bernoulli_draw(torch.sigmoid(model.conditional_logits(v, units)))
        if clamp_mask is not None:
            draw = torch.where(clamp_mask[..., units], v[..., units], draw)
        v[..., units] = draw
    return v


def check_colours(colours, coupling: torch.Tensor) -> list[torch.Tensor]:
    """``colours`` as index tensors after checking that they partition the units and that no two units of
    one class are coupled (``coupling[i, j] != 0``); one-line :class:`SpecError` otherwise."""
    D = coupling.shape[0]
    classes = [torch.as_tensor(c, dtype=torch.long, device=coupling.device).reshape(-1) for c in colours]
    flat = torch.cat(classes) if classes else torch.zeros(0, dtype=torch.long)
    if flat.numel() != D or not torch.equal(flat.sort().values.cpu(), torch.arange(D)):
        raise SpecError(f"colours must partition the {D} units (each unit in exactly one class)")
    for c, units in enumerate(classes):
        inner = coupling[units][:, units]
        if bool((inner != 0).any()):
            i, j = (int(k) for k in (inner != 0).nonzero()[0])
            raise SpecError(f"colour class {c} holds coupled units {int(units[i])} and {int(units[j])}: units drawn "
                            "together must share no weight")
    return classes


class SingleSiteGibbs(MCMCKernel):
    r"""Vectorised single-site (or coloured-block) Gibbs kernel for :class:`LateralEnergy` models.

    The state is ``{"v": (num_chains, D)}``; ``sample`` makes ``k`` sweeps (:func:`gibbs_sweep`).
    With a clamp mask the chains target :math:`p(v_{\text{free}} \mid v_{\text{clamped}})`.
    For :class:`~inference.contrastive_divergence.ContrastiveDivergence` it keeps
    :attr:`last_hidden_logits` / :attr:`last_hidden_probs` as the model's (empty, for a fully
    visible model) hidden inputs of the returned state.

    :param model: e.g. :class:`ppl_models.fvbm.FullyVisibleBM`.
    :param int num_chains: chains in the state's leading dimension.
    :param int k: sweeps per returned sample.
    :param colours: optional partition of the units into classes of mutually unconnected units
        (checked against ``model.weight`` when the model has one); default one unit per class.
    :param clamp_mask: bool ``(D,)`` or ``(num_chains, D)``, True where a unit is held at ``clamp_values``.

    Example::

        >>> from pyro.infer import MCMC
        >>> from ppl_models.fvbm import FullyVisibleBM
        >>> mcmc = MCMC(SingleSiteGibbs(FullyVisibleBM(4), num_chains=50), num_samples=5, disable_progbar=True)
        >>> mcmc.run()
        >>> mcmc.get_samples()["v"].shape
        torch.Size([5, 50, 4])
    """

    def __init__(self, model: LateralEnergy, num_chains: int = 1, k: int = 1, colours=None, clamp_mask=None,
                 clamp_values=None, log_every: int = 50):
        if isinstance(num_chains, bool) or not isinstance(num_chains, int) or num_chains < 1:
            raise SpecError(f"num_chains must be a positive integer, got {num_chains!r}")
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise SpecError(f"log_every must be a positive integer, got {log_every!r}")
        self.model, self.num_chains, self.k, self.log_every = model, num_chains, check_k(k), log_every
        coupling = getattr(model, "weight", None)
        self.colours = None if colours is None else (
            check_colours(colours, coupling.detach()) if coupling is not None else list(colours))
        self.transforms = {}  # no constrained sites: pyro.infer.MCMC must not look for a Pyro model
        self._state = None
        self._mask = self._values = None
        self.last_hidden_logits = self.last_hidden_probs = None
        self._num_logged, self._logged_energy = 0, float("nan")
        if clamp_mask is not None or clamp_values is not None:
            self.clamp(clamp_mask, clamp_values)

    def _like(self) -> torch.Tensor:
        return next(iter(self.model.parameters()))

    def clamp(self, mask, values) -> None:
        """Hold the units where ``mask`` is True at ``values``; ``clamp(None, None)`` frees them."""
        if mask is None and values is None:
            self._mask = self._values = None
            return
        self._mask, self._values = check_clamp(self.model, self.num_chains, mask, values, self._like())
        if self._state is not None:
            self._state = {"v": self._apply_clamp(self._state["v"])}

    def _apply_clamp(self, v: torch.Tensor) -> torch.Tensor:
        return v if self._mask is None else torch.where(self._mask, self._values, v)

    @property
    def initial_params(self) -> dict:
        """The chains' current state ``{"v"}``; uniform random when unset."""
        if self._state is None:
            with torch.no_grad():
                v = bernoulli_draw(self._like().new_full((self.num_chains, self.model.num_visible), 0.5))
            self._state = {"v": self._apply_clamp(v)}
        return self._state

    @initial_params.setter
    def initial_params(self, params: dict) -> None:
        v = params.get("v") if isinstance(params, dict) else None
        shape = (self.num_chains, self.model.num_visible)
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != shape:
            found = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise SpecError(f"initial_params['v'] must have shape {shape} (num_chains, units), got {found}")
        self.model.validate_visible(v, "initial_params['v']")
        self._state = {"v": self._apply_clamp(v)}

    def setup(self, warmup_steps, *args, **kwargs) -> None:
        self.model.validate_parameters()
        self.initial_params  # noqa: B018 (draws the state if unset)
        self._num_logged = 0

    @torch.no_grad()
    def sample(self, params: dict) -> dict:
        """``k`` sweeps from ``params["v"]`` (other keys, e.g. an empty ``"h"``, are ignored)."""
        v = self._apply_clamp(params["v"])
        for _ in range(self.k):
            v = gibbs_sweep(self.model, v, self.colours, self._mask)
        hidden = getattr(self.model, "hidden_logits", None)
        if hidden is not None:  # what CD / PCD read (empty for a fully visible model)
            self.last_hidden_logits = hidden(v)
            self.last_hidden_probs = torch.sigmoid(self.last_hidden_logits)
        self._state = {"v": v}
        return self._state

    # -- reporting -----------------------------------------------------------
    def logging(self) -> dict:
        if self._num_logged % self.log_every == 0:
            with torch.no_grad():
                self._logged_energy = float(self.model.free_energy(self.initial_params["v"]).mean())
        self._num_logged += 1
        return {"energy": f"{self._logged_energy:.4g}"}

    def diagnostics(self) -> dict:
        return {"num_chains": self.num_chains, "sweeps_per_sample": self.k}

    def summaries(self) -> dict:
        """``free_energy`` (the energy, for a fully visible model) and ``visible_units`` of each draw, as
        :class:`~inference.block_gibbs.BlockGibbs` reports them; units clamped in every chain left out."""
        return visible_summaries(self.model, self._mask)
