r"""The corrupt-then-denoise Markov chain of a denoising autoencoder, as a Pyro MCMC kernel.

Bengio, Yao, Alain & Vincent (2013) read a denoising autoencoder as a generative model through the chain

.. math::

    \tilde x_t \sim C(\tilde x \mid x_t), \qquad x_{t+1} \sim P_\theta(x \mid \tilde x_t), \qquad
    T(x' \mid x) = \sum_{\tilde x} C(\tilde x \mid x)\, P_\theta(x' \mid \tilde x),

whose stationary distribution :math:`\pi` is the model (it approaches the data distribution as the
denoiser approaches the true :math:`P(x \mid \tilde x)`). :class:`DenoisingChain` is that chain for
binary images, written against :class:`DenoisingModel` (a corruption and a factorised Bernoulli
denoiser), with many chains in one state and optional clamped pixels, run under
:func:`inference.mcmc_driver.run_mcmc`.

With pixels clamped (a completion), the chain alternates the two steps and then resets the observed
pixels. That is Bengio et al.'s recipe for inpainting; its stationary distribution is
:math:`\pi(x_{\text{missing}} \mid x_{\text{observed}})` only approximately (exactly when the denoiser's
conditional of the missing pixels ignores how the observed ones were corrupted), so a completion is a
heuristic, not an exact conditional sampler.

:func:`stationary_log_prob` estimates :math:`\log \pi(x)` from the chain: :math:`\pi(x) = \sum_{\tilde x}
\tilde\pi(\tilde x) P_\theta(x \mid \tilde x)`, where :math:`\tilde\pi` is the law of the corrupted states
of the stationary chain, so the mean of :math:`P_\theta(x \mid \tilde x_s)` over the chain's corrupted
states is a consistent estimate of :math:`\pi(x)`, and its log a stochastic lower bound of
:math:`\log \pi(x)` once the chain has mixed (a Parzen estimate with the model's own kernel).

Reference: Y. Bengio, L. Yao, G. Alain, P. Vincent. Generalized Denoising Auto-Encoders as Generative
Models. NIPS 2013.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from .block_gibbs import bernoulli_draw, check_k
from .errors import SpecError

__all__ = ["DenoisingChain", "DenoisingModel", "stationary_log_prob"]


@runtime_checkable
class DenoisingModel(Protocol):
    """A corruption and a factorised Bernoulli denoiser over binary vectors ``(..., D)``."""

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """A draw of :math:`\\tilde x \\sim C(\\cdot \\mid x)` (torch's global RNG)."""

    def denoise_logits(self, x_tilde: torch.Tensor) -> torch.Tensor:
        """The logits of :math:`P_\\theta(x_d = 1 \\mid \\tilde x)`, ``(..., D)``."""


class DenoisingChain(MCMCKernel):
    r"""Vectorised corrupt-then-denoise chains, runnable under :class:`pyro.infer.MCMC`.

    The state is ``{"x": (num_chains, D), "x_tilde": (num_chains, D)}`` (0/1 floats): the chain's image
    and the corrupted copy it was drawn from. One step draws :math:`\tilde x \sim C(\cdot \mid x)`, then
    :math:`x \sim P_\theta(\cdot \mid \tilde x)`, then resets clamped pixels; ``sample`` makes ``k`` steps.
    After ``sample``, :attr:`last_probs` holds :math:`P_\theta(x_d = 1 \mid \tilde x)` of the returned
    state (the picture one shows for it).

    :param DenoisingModel model: e.g. :class:`ppl_models.dae.DenoisingAutoencoder`.
    :param torch.Tensor initial: ``(num_chains, D)`` 0/1 starting images.
    :param int k: steps per returned sample (thinning), >= 1.
    :param clamp_mask: optional bool ``(D,)`` or ``(num_chains, D)``, True where a pixel is observed.
    :param clamp_values: the observed values, broadcastable to ``(num_chains, D)``.

    Example::

        >>> from types import SimpleNamespace
        >>> flip = lambda x: torch.where(torch.rand_like(x) < 0.1, 1 - x, x)
        >>> model = SimpleNamespace(corrupt=flip, denoise_logits=lambda xt: 4 * (2 * xt - 1))
        >>> kernel = DenoisingChain(model, torch.zeros(50, 3), k=2)
        >>> kernel.sample(kernel.initial_params)["x"].shape
        torch.Size([50, 3])
    """

    def __init__(self, model: DenoisingModel, initial: torch.Tensor, k: int = 1, clamp_mask=None, clamp_values=None):
        if not isinstance(model, DenoisingModel):
            raise SpecError(f"model must have corrupt(x) and denoise_logits(x_tilde), got {type(model).__name__}")
        self.model, self.k = model, check_k(k)
        self.transforms = {}  # no constrained sites: pyro.infer.MCMC must not trace a Pyro model
        self._mask = self._values = None
        self._state = None
        self.initial_params = {"x": initial}
        if clamp_mask is not None or clamp_values is not None:
            self.clamp(clamp_mask, clamp_values)
        self.last_probs = None

    # -- clamping and state -------------------------------------------------------------------
    def clamp(self, mask, values) -> None:
        """Hold the pixels where ``mask`` is True at ``values``."""
        C, D = self.num_chains, self.num_pixels
        if mask is None or values is None:
            raise SpecError("clamp_mask and clamp_values must be given together")
        if not torch.is_tensor(mask) or mask.shape not in ((D,), (C, D)):
            raise SpecError(f"clamp_mask must have shape ({D},) or ({C}, {D}), got "
                            f"{tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__}")
        x = self._state["x"]
        try:
            values = torch.broadcast_to(torch.as_tensor(values, dtype=x.dtype, device=x.device), (C, D))
        except RuntimeError:
            raise SpecError(f"clamp_values must broadcast to ({C}, {D})") from None
        self._mask, self._values = mask.to(device=x.device, dtype=torch.bool), values.contiguous()
        self._state = {"x": self._apply_clamp(x), "x_tilde": self._state["x_tilde"]}

    def _apply_clamp(self, x: torch.Tensor) -> torch.Tensor:
        return x if self._mask is None else torch.where(self._mask, self._values, x)

    @property
    def initial_params(self) -> dict:
        return self._state

    @initial_params.setter
    def initial_params(self, params) -> None:
        x = params.get("x") if isinstance(params, dict) else None
        if not torch.is_tensor(x) or x.dim() != 2 or not x.is_floating_point():
            raise SpecError(f"the initial state must be a (num_chains, D) float tensor of 0/1, got "
                            f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
        if bool(((x != 0) & (x != 1)).any()):
            raise SpecError("the initial state must hold only 0 and 1")
        x_tilde = params.get("x_tilde", x)
        self.num_chains, self.num_pixels = x.shape
        self._state = {"x": self._apply_clamp(x), "x_tilde": x_tilde}

    def setup(self, warmup_steps, *args, **kwargs) -> None:
        """Nothing to prepare: the state was given at construction."""

    # -- the transition -------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, params: dict) -> dict:
        x = params["x"]
        for _ in range(self.k):
            x_tilde = self.model.corrupt(x)
            probs = torch.sigmoid(self.model.denoise_logits(x_tilde))
            x = self._apply_clamp(bernoulli_draw(probs).to(probs.dtype))
        self.last_probs = probs
        self._state = {"x": x, "x_tilde": x_tilde}
        return self._state

    # -- reporting ------------------------------------------------------------------------------
    def logging(self) -> dict:
        return {"on pixels": f"{float(self._state['x'].sum(-1).mean()):.4g}"}

    def diagnostics(self) -> dict:
        return {"num_chains": self.num_chains, "steps_per_sample": self.k}

    def summaries(self) -> dict:
        """For :func:`inference.mcmc_driver.run_mcmc`: ``on_pixels`` (each draw's number of on pixels) and
        ``pixels`` (every free pixel's value, whose averages are the pixel marginals)."""

        def on_pixels(samples):
            return samples["x"].sum(-1) if "x" in samples else None

        def pixels(samples):
            if "x" not in samples:
                return None
            x = samples["x"]
            return x[..., ~self._mask] if self._mask is not None and self._mask.dim() == 1 else x

        return {"on_pixels": on_pixels, "pixels": pixels}


@torch.no_grad()
def stationary_log_prob(model: DenoisingModel, x: torch.Tensor, x_tilde: torch.Tensor,
                        image_chunk: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """:math:`\\log \\hat\\pi(x_n) = \\log \\frac{1}{S} \\sum_s P_\\theta(x_n \\mid \\tilde x_s)` per image, and its
    standard error.

    :param torch.Tensor x: ``(N, D)`` binary images.
    :param torch.Tensor x_tilde: ``(chains, draws, D)`` corrupted states of the chain (its ``x_tilde`` site)
        after warm-up. The standard error treats the chains as independent and the draws of one chain as
        one correlated block: :math:`\\mathrm{sd}_c(\\bar w_c) / (\\sqrt{C}\\, \\bar w)` over the chains' mean
        weights (the delta method; NaN for one chain).
    :returns: ``(log_prob, stderr)``, each ``(N,)`` float64.
    """
    if x_tilde.dim() != 3 or x_tilde.shape[-1] != x.shape[-1]:
        raise SpecError(f"x_tilde must be (chains, draws, {x.shape[-1]}), got {tuple(x_tilde.shape)}")
    chains, draws = x_tilde.shape[:2]
    logits = model.denoise_logits(x_tilde.reshape(-1, x.shape[-1])).double()  # (S, D)
    norm = F.softplus(logits).sum(-1)
    out, err = [], []
    for xb in x.double().split(image_chunk):
        log_w = (xb @ logits.T - norm).reshape(-1, chains, draws)  # (n, C, T): log P(x_n | x~_{c,t})
        per_chain = torch.logsumexp(log_w, -1) - math.log(draws)  # (n, C)
        log_mean = torch.logsumexp(per_chain, -1) - math.log(chains)
        out.append(log_mean)
        if chains > 1:
            log_sum = torch.logsumexp(per_chain, -1)
            ratio = torch.exp(torch.logsumexp(2 * per_chain, -1) - 2 * log_sum + math.log(chains))
            err.append(torch.sqrt((ratio - 1).clamp(min=0) / (chains - 1)))
        else:
            err.append(torch.full_like(log_mean, math.nan))
    return torch.cat(out), torch.cat(err)
