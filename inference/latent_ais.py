r"""log p(x) of a decoder-based model by annealed importance sampling over its latent code.

A decoder (a GAN's generator, a GMMN, a VAE's decoder) defines

.. math::

    p(x) = \int p(z)\, p(x \mid z)\, dz, \qquad p(z) = \mathcal{N}(0, I),

with an observation model :math:`p(x \mid z)`: a Gaussian :math:`\mathcal{N}(x; G(z), \sigma^2 I)`
for an implicit model (which has none of its own), or the decoder's own likelihood (a VAE's
Bernoulli). AIS (Neal 2001) anneals along the geometric path

.. math::

    f_\beta(z) = p(z)\, p(x \mid z)^\beta, \quad 0 = \beta_0 < \dots < \beta_K = 1, \qquad
    \log w = \sum_{k=1}^{K} (\beta_k - \beta_{k-1}) \log p(x \mid z_k),

from :math:`z_1 \sim p(z)`, with a few HMC transitions leaving each :math:`f_{\beta_k}` invariant.
:math:`\hat p(x) = \operatorname{mean}(w)` over independent runs is unbiased, so
:math:`\log \hat p(x)` is a stochastic lower bound (:math:`E \log \hat p \le \log p`, Jensen) that
tightens with more temperatures (Wu et al. 2017, Sec. 3).

Runs and images advance together: the state is ``(runs, images, z_dim)``, one decoder pass per
leapfrog step for all of them. Each chain's HMC step size is adapted toward an acceptance rate
(x :data:`ADAPT_UP` after an accepted proposal, and after a rejection down by the factor that balances
the two at the target rate, as Wu et al. adapt theirs), so a step size depends on that chain's past.
Each transition still leaves its :math:`f_\beta` invariant given its step size; the tests check against
exact values that any bias the adaptation brings is below the estimate's noise.

Run backwards from exact posterior draws (``reverse=True``; data simulated from the model supply them),
the same chain gives a stochastic *upper* bound: bidirectional Monte Carlo (Grosse et al. 2015), which
sandwiches :math:`\log p(x)` and so measures how far the forward estimate can be from it.

This module knows nothing of any model: it takes ``log_likelihood(z) -> (runs, images)`` (built by
:func:`gaussian_log_likelihood` or :func:`bernoulli_log_likelihood` from a ``decode`` callable).

References:
 [1] Y. Wu, Y. Burda, R. Salakhutdinov, R. Grosse. On the Quantitative Analysis of Decoder-Based
     Generative Models. ICLR 2017.
 [2] R. Neal. Annealed importance sampling. Statistics and Computing 11 (2001).
 [3] R. Neal. MCMC using Hamiltonian dynamics. Handbook of MCMC (2011).
 [4] R. Grosse, Z. Ghahramani, R. Adams. Sandwiching the marginal likelihood using bidirectional Monte
     Carlo. arXiv:1511.02543 (2015).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from .errors import SpecError

__all__ = ["LatentAISResult", "bernoulli_log_likelihood", "fit_sigma", "gaussian_log_likelihood", "latent_ais",
           "latent_ais_log_likelihood", "sigmoid_schedule"]

OBSERVATIONS = ("gaussian", "bernoulli")
#: a chain's step size is multiplied by this after an accepted proposal (Wu et al.: 1.02 over thousands of
#: temperatures; faster here, so that a few hundred temperatures find the posterior's scale)
ADAPT_UP = 1.05


@dataclasses.dataclass
class LatentAISResult:
    """:ivar torch.Tensor log_prob: ``(N,)`` :math:`\\log \\hat p(x_n)`, the log-mean-exp of the runs' weights.
    :ivar torch.Tensor stderr: ``(N,)`` its standard error, the delta method's
        :math:`\\mathrm{sd}(w) / (\\sqrt{R}\\, \\bar w)` over the R runs (NaN for one run).
    :ivar torch.Tensor log_weights: ``(R, N)`` each run's :math:`\\log w`.
    :ivar torch.Tensor acceptance: ``(N,)`` mean HMC acceptance rate over runs and temperatures.
    :ivar torch.Tensor step_size: ``(R, N)`` each chain's final step size.
    :ivar int num_temperatures: :math:`K + 1`.
    """

    log_prob: torch.Tensor
    stderr: torch.Tensor
    log_weights: torch.Tensor
    acceptance: torch.Tensor
    step_size: torch.Tensor
    num_temperatures: int


def sigmoid_schedule(num_temperatures: int, delta: float = 4.0) -> torch.Tensor:
    """Temperatures :math:`\\tilde\\beta_t = \\sigma(\\delta (2t/K - 1))` rescaled to run from 0 to 1: dense at both
    ends, where the weights change fastest (Grosse et al. 2015's schedule, used by Wu et al.)."""
    if isinstance(num_temperatures, bool) or not isinstance(num_temperatures, int) or num_temperatures < 2:
        raise SpecError(f"num_temperatures must be an integer >= 2, got {num_temperatures!r}")
    t = torch.sigmoid(delta * (2 * torch.linspace(0, 1, num_temperatures, dtype=torch.float64) - 1))
    return (t - t[0]) / (t[-1] - t[0])


def gaussian_log_likelihood(decode: Callable, x: torch.Tensor, sigma) -> Callable:
    """``z -> log N(x; decode(z), sigma^2 I)`` per (run, image), for ``z`` ``(R, N, Z)`` and ``x`` ``(N, D)``.

    :param sigma: a positive number, or ``(D,)`` per-pixel standard deviations."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if not bool(torch.isfinite(sigma).all()) or bool((sigma <= 0).any()):
        raise SpecError(f"sigma must be positive and finite, got {sigma.tolist()!r}")
    log_norm = (torch.log(sigma) + 0.5 * math.log(2 * math.pi)).expand(x.shape[-1]).sum()

    def log_likelihood(z):
        mean = decode(z.reshape(-1, z.shape[-1])).reshape(*z.shape[:-1], x.shape[-1])
        return -0.5 * (((x - mean) / sigma) ** 2).sum(-1) - log_norm

    return log_likelihood


def bernoulli_log_likelihood(decode_logits: Callable, x: torch.Tensor) -> Callable:
    """``z -> sum_d log Bernoulli(x_d; sigmoid(decode_logits(z)_d))`` per (run, image). The decoder gives
    logits, not probabilities: a probability that rounds to 1 in float32 would make log(1 - p) infinite."""

    def log_likelihood(z):
        logits = decode_logits(z.reshape(-1, z.shape[-1])).reshape(*z.shape[:-1], x.shape[-1])
        return (x * logits - torch.nn.functional.softplus(logits)).sum(-1)

    return log_likelihood


def _check_int(name, value, least):
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise SpecError(f"{name} must be an integer >= {least}, got {value!r}")


def _likelihood_and_grad(log_likelihood, z):
    """:math:`\\log p(x \\mid z)` per chain and its gradient in ``z``."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        ll = log_likelihood(z)
        (grad,) = torch.autograd.grad(ll.sum(), z)
    return ll.detach(), grad


def _hmc_step(log_likelihood, z, ll, grad_ll, beta, step, leapfrog_steps, generator):
    """One HMC transition per chain on :math:`\\log f_\\beta(z) = \\beta \\log p(x \\mid z) - |z|^2 / 2` (unit
    mass, step sizes ``step`` ``(R, N)``); returns the new state and the mask of accepted proposals."""
    eps = step.unsqueeze(-1)
    p0 = torch.randn(z.shape, dtype=z.dtype, device=z.device, generator=generator)
    z_new, ll_new, grad_new = z, ll, grad_ll
    p = p0 + 0.5 * eps * (beta * grad_ll - z)
    for i in range(leapfrog_steps):
        z_new = z_new + eps * p
        ll_new, grad_new = _likelihood_and_grad(log_likelihood, z_new)
        p = p + (eps if i < leapfrog_steps - 1 else 0.5 * eps) * (beta * grad_new - z_new)
    log_f, log_f_new = beta * ll - 0.5 * (z * z).sum(-1), beta * ll_new - 0.5 * (z_new * z_new).sum(-1)
    log_accept = log_f_new - log_f - 0.5 * (p * p).sum(-1) + 0.5 * (p0 * p0).sum(-1)
    u = torch.rand(log_accept.shape, dtype=log_accept.dtype, device=z.device, generator=generator)
    accept = torch.log(u) < log_accept.nan_to_num(nan=-math.inf)  # a diverged trajectory is rejected
    keep = accept.unsqueeze(-1)
    return torch.where(keep, z_new, z), torch.where(accept, ll_new, ll), torch.where(keep, grad_new, grad_ll), accept


def latent_ais(log_likelihood: Callable, num_images: int, z_dim: int, *, num_temperatures: int = 500,
               num_runs: int = 16, leapfrog_steps: int = 10, step_size: float = 0.1, target_accept: float = 0.65,
               schedule: Optional[Sequence[float]] = None, generator: Optional[torch.Generator] = None,
               dtype=torch.float32, device=None, progress: bool = False, reverse: bool = False,
               initial: Optional[torch.Tensor] = None) -> LatentAISResult:
    """AIS estimates of :math:`\\log p(x_n) = \\log \\int \\mathcal{N}(z; 0, I)\\, p(x_n \\mid z)\\, dz` for
    ``num_images`` images at once.

    ``reverse=True`` is the other half of bidirectional Monte Carlo (Grosse et al. 2015, as Wu et al. use it to
    check their estimates): the same chain run from :math:`\\beta = 1` to 0, started at ``initial``, which must be
    exact posterior draws :math:`z \\sim p(z \\mid x_n)` (available for data simulated from the model: the
    :math:`z` that generated :math:`x_n`). Its weights estimate :math:`1 / p(x_n)` without bias, so the returned
    :math:`-\\log \\operatorname{mean}(w)` is a stochastic *upper* bound; with the forward estimate it
    sandwiches :math:`\\log p(x_n)`.

    :param log_likelihood: ``z (R, N, z_dim) -> log p(x_n | z) (R, N)``, differentiable in ``z``.
    :param int num_temperatures: K + 1 of the default :func:`sigmoid_schedule` (ignored with ``schedule``).
    :param int num_runs: independent AIS runs R per image.
    :param int leapfrog_steps: leapfrog steps per HMC transition (one transition per temperature).
    :param float step_size: every chain's initial step size.
    :param float target_accept: acceptance rate each chain's step size is adapted toward.
    :param generator: a torch generator for every draw (None: the global one).
    :param initial: ``(R, N, z_dim)`` starting states (default: draws of the prior; required with ``reverse``).
    """
    _check_int("num_images", num_images, 1)
    _check_int("z_dim", z_dim, 1)
    _check_int("num_runs", num_runs, 1)
    _check_int("leapfrog_steps", leapfrog_steps, 1)
    if not (isinstance(step_size, (int, float)) and 0 < step_size < math.inf):
        raise SpecError(f"step_size must be a positive number, got {step_size!r}")
    if not (isinstance(target_accept, (int, float)) and 0 < target_accept < 1):
        raise SpecError(f"target_accept must lie in (0, 1), got {target_accept!r}")
    betas = sigmoid_schedule(num_temperatures) if schedule is None else torch.as_tensor(schedule, dtype=torch.float64)
    if betas.dim() != 1 or betas.numel() < 2 or betas[0] != 0 or betas[-1] != 1 or bool((betas.diff() <= 0).any()):
        raise SpecError("schedule must increase strictly from 0 to 1 (at least two temperatures)")
    shape = (num_runs, num_images)
    if initial is not None:
        if not torch.is_tensor(initial) or tuple(initial.shape) != (*shape, z_dim):
            raise SpecError(f"initial must be a ({num_runs}, {num_images}, {z_dim}) tensor of latent states")
        z = initial.to(dtype=dtype, device=device)
    elif reverse:
        raise SpecError("reverse AIS starts from exact posterior draws: give initial (the z that simulated x)")
    else:
        z = torch.randn(*shape, z_dim, dtype=dtype, device=device, generator=generator)
    if reverse:
        betas = betas.flip(0)
    step = torch.full(shape, float(step_size), dtype=dtype, device=device)
    log_w = torch.zeros(shape, dtype=torch.float64, device=device)
    accepted = torch.zeros(shape, dtype=torch.float64, device=device)
    beta_list = betas.tolist()
    ll, grad_ll = _likelihood_and_grad(log_likelihood, z)
    # multiplicative steps that balance at the target rate: target * log(up) + (1 - target) * log(down) = 0
    up = ADAPT_UP
    down = up ** (-target_accept / (1 - target_accept))
    for k in tqdm(range(1, len(beta_list)), disable=None if progress else True, leave=False,
                  desc=f"latent AIS, {num_runs} runs x {num_images} images", unit="temperature"):
        log_w += (beta_list[k] - beta_list[k - 1]) * ll.double()  # z_k scored before it moves at beta_k
        if k == len(beta_list) - 1:
            break
        z, ll, grad_ll, accept = _hmc_step(log_likelihood, z, ll, grad_ll, beta_list[k], step, leapfrog_steps,
                                           generator)
        accepted += accept.double()
        step = (step * torch.where(accept, up, down)).clamp(1e-4, 1.0)
    log_mean = torch.logsumexp(log_w, 0) - math.log(num_runs)
    if reverse:  # the mean weight estimates 1 / p(x): the upper bound is minus its log
        log_mean = -log_mean
    if num_runs > 1:
        # relative standard error of the mean weight: sd(w) / (sqrt(R) mean(w)), in logs
        ratio = torch.exp(torch.logsumexp(2 * log_w, 0) - 2 * torch.logsumexp(log_w, 0) + math.log(num_runs))
        stderr = torch.sqrt((ratio - 1).clamp(min=0) / (num_runs - 1))
    else:
        stderr = torch.full_like(log_mean, math.nan)
    transitions = max(1, len(beta_list) - 2)
    return LatentAISResult(log_prob=log_mean, stderr=stderr, log_weights=log_w,
                           acceptance=(accepted / transitions).mean(0), step_size=step,
                           num_temperatures=len(beta_list))


def latent_ais_log_likelihood(decode: Callable, x: torch.Tensor, z_dim: int, *, sigma=None,
                              observation: str = "gaussian", num_temperatures: int = 500, num_runs: int = 16,
                              leapfrog_steps: int = 10, seed: Optional[int] = None,
                              generator: Optional[torch.Generator] = None, batch_size: Optional[int] = None,
                              progress: bool = False, **options) -> LatentAISResult:
    """:func:`latent_ais` for images ``x`` ``(N, D)`` of a decoder ``decode(z) -> (..., D)``.

    :param str observation: ``"gaussian"``: :math:`\\mathcal{N}(x; \\text{decode}(z), \\sigma^2 I)`, ``decode`` gives
        the mean image and ``sigma`` is required (:func:`fit_sigma` fits it); ``"bernoulli"``: binary ``x``,
        ``decode`` gives the pixels' logits.
    :param int seed: seeds a fresh generator (ignored when ``generator`` is given).
    :param int batch_size: images per pass (default all); the runs of a batch advance together.
    :param options: further keywords of :func:`latent_ais` (``step_size``, ``target_accept``, ``schedule``).

    Example::

        >>> W = torch.randn(5, 2)
        >>> x = torch.randn(3, 2) @ W.T + 0.5 * torch.randn(3, 5)
        >>> r = latent_ais_log_likelihood(lambda z: z @ W.T, x, 2, sigma=0.5, num_temperatures=100, seed=0)
        >>> r.log_prob.shape
        torch.Size([3])
    """
    if observation not in OBSERVATIONS:
        raise SpecError(f"observation must be one of {', '.join(OBSERVATIONS)}, got {observation!r}")
    if not torch.is_tensor(x) or x.dim() != 2 or x.shape[0] == 0:
        raise SpecError(f"x must be an (N, D) tensor of images, got {tuple(x.shape) if torch.is_tensor(x) else x!r}")
    if observation == "gaussian" and sigma is None:
        raise SpecError("a gaussian observation model needs sigma (fit it on held-out images with fit_sigma)")
    if observation == "bernoulli" and bool(((x != 0) & (x != 1)).any()):
        raise SpecError("a bernoulli observation model needs binary images (0 or 1)")
    if generator is None:
        generator = torch.Generator(device=x.device)
        generator.manual_seed(torch.seed() if seed is None else seed)
    batch_size = batch_size or x.shape[0]
    results = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        ll = (gaussian_log_likelihood(decode, xb, sigma) if observation == "gaussian"
              else bernoulli_log_likelihood(decode, xb))
        results.append(latent_ais(ll, xb.shape[0], z_dim, num_temperatures=num_temperatures, num_runs=num_runs,
                                  leapfrog_steps=leapfrog_steps, generator=generator, dtype=x.dtype,
                                  device=x.device, progress=progress, **options))
    return LatentAISResult(*(torch.cat([getattr(r, f) for r in results], dim=-1) for f in
                             ("log_prob", "stderr", "log_weights", "acceptance", "step_size")),
                           num_temperatures=results[0].num_temperatures)


def fit_sigma(decode: Callable, x_held_out: torch.Tensor, z_dim: int, grid: Sequence[float] = None, *,
              num_temperatures: int = 200, num_runs: int = 4, seed: int = 0, **options) -> tuple[float, dict]:
    """The Gaussian observation model's :math:`\\sigma`: the value on ``grid`` whose mean latent-AIS
    :math:`\\log \\hat p(x)` over held-out images ``x_held_out`` is highest (Wu et al. choose it on a
    validation set). AIS errs low, and more so for small :math:`\\sigma` (a sharper posterior), so too
    few temperatures favour a too-large :math:`\\sigma`: a few hundred found the generating value of a
    linear-Gaussian decoder in the tests, where 50 did not. Returns the chosen :math:`\\sigma` and
    ``{sigma: mean log p}`` for every grid point.

    :param grid: candidate values (default 10 points, log-spaced from 0.01 to 1: pixel values in [0, 1]).
    """
    grid = [float(s) for s in (torch.logspace(-2, 0, 10).tolist() if grid is None else grid)]
    if not grid or any(not (0 < s < math.inf) for s in grid):
        raise SpecError(f"sigma grid must be non-empty positive numbers, got {grid!r}")
    scores = {}
    for s in grid:
        r = latent_ais_log_likelihood(decode, x_held_out, z_dim, sigma=s, num_temperatures=num_temperatures,
                                      num_runs=num_runs, seed=seed, **options)
        scores[s] = float(r.log_prob.mean())
    return max(scores, key=scores.get), scores
