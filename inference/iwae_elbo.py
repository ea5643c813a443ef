"""The importance-weighted bound (IWAE) as a ``pyro.infer.ELBO``.

.. math::

    \\mathcal{L}_k(x) = \\mathbb{E}_{z_{1..k} \\sim q(z|x)}
        \\Big[\\log \\frac{1}{k} \\sum_{i=1}^k \\frac{p(x, z_i)}{q(z_i | x)}\\Big]

computed per datapoint and summed over the minibatch (times the data plate's
subsampling scale), so a minibatch gives the same bound as its datapoints one
at a time. ``k = 1`` is the standard ELBO with one sample.

Gradients: pathwise for reparameterised guide sites; a score-function term
with the per-datapoint bound as learning signal for the others; optionally the
doubly-reparameterised (DReG) guide gradient, which weights the pathwise term
by the squared normalised weights and drops the score term that makes the
plain IWAE guide gradient's signal-to-noise ratio vanish as k grows.

References:
 [1] Burda, Grosse, Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
 [2] Tucker, Lawson, Gu, Maddison. Doubly Reparameterized Gradient Estimators
     for Monte Carlo Objectives. ICLR 2019.

Example::

    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), IWAEELBO(num_particles=5))
"""

from __future__ import annotations

import logging
import math

import torch
from pyro.infer import ELBO
from pyro.infer.util import is_validation_enabled
from pyro.util import warn_if_nan

from .errors import SpecError

from .importance_weights import log_importance_weights


class IWAEELBO(ELBO):
    """IWAE bound with per-datapoint weights.

    :param int num_particles: k, the number of importance samples per datapoint.
    :param bool dreg: use doubly-reparameterised guide gradients (needs model
        and guide parameters to be disjoint and every guide site reparameterisable).
    :param str data_plate: name of the plate over datapoints.
    :param int max_plate_nesting: plates in model and guide (guessed if omitted).
    """

    def __init__(self, num_particles: int = 5, dreg: bool = False, data_plate: str = "data",
                 max_plate_nesting: int = float("inf")):
        if not isinstance(num_particles, int) or num_particles < 1:
            raise SpecError(f"num_particles must be a positive integer, got {num_particles!r}")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting, vectorize_particles=False)  # particles: our own plate
        self.dreg = dreg
        self.data_plate = data_plate

    @property
    def replayable(self) -> bool:
        """Whether ``loss_and_grads`` is exactly ``differentiable_loss(...).backward()`` (see
        :mod:`inference.trace_replay`); DReG's two surrogates are not one loss."""
        return not self.dreg and type(self).loss_and_grads is IWAEELBO.loss_and_grads  # a subclass's own may do more

    def _weights(self, model, guide, args, kwargs, **options):
        if self.max_plate_nesting == float("inf"):
            quiet = logging.getLogger("pyro.infer.elbo")
            level, quiet.level = quiet.level, logging.WARNING
            try:
                # The guess runs model and guide once; it must not consume random numbers, or a
                # resumed run (which guesses again) would drift from an uninterrupted one.
                with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
                    self._guess_max_plate_nesting(model, guide, args, kwargs)
            finally:
                quiet.setLevel(level)
        return log_importance_weights(model, guide, *args, num_particles=self.num_particles,
                                      max_plate_nesting=self.max_plate_nesting, data_plate=self.data_plate,
                                      **options, **kwargs)

    def _get_trace(self, model, guide, args, kwargs):
        w = self._weights(model, guide, args, kwargs)
        return w.model_trace, w.guide_trace

    def _bound(self, log_w):
        """Per-datapoint bound log mean_i w_i, shape ``(batch,)``."""
        if log_w.shape[0] == 1:  # k = 1: the ELBO; skip two ops on the hot path
            return log_w[0]
        return torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)

    def per_datapoint(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The bound for each datapoint of the batch (no gradient)."""
        with torch.no_grad():
            return self._bound(self._weights(model, guide, args, kwargs).log_w)

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            w = self._weights(model, guide, args, kwargs)
            loss = -w.scale * self._bound(w.log_w).sum().item()
        warn_if_nan(loss, "loss")
        return loss

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """A surrogate whose value is the negative bound and whose gradient is
        the estimator (pathwise + score function); not available with DReG,
        whose model and guide gradients come from different surrogates."""
        if self.dreg:
            raise NotImplementedError("IWAEELBO(dreg=True) has no single surrogate loss; use loss_and_grads")
        w = self._weights(model, guide, args, kwargs)
        bound = self._bound(w.log_w)
        surrogate = bound
        if not isinstance(w.log_q_score, float):
            # REINFORCE for non-reparameterised guide sites, learning signal = the bound itself.
            # (t - t.detach()) is exactly 0, so the value stays the bound itself: bound + t - t would round
            score = bound.detach() * w.log_q_score.sum(0)
            surrogate = surrogate + (score - score.detach())
        return -surrogate.sum() if w.scale == 1.0 else -w.scale * surrogate.sum()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        if not self.dreg:
            loss = self.differentiable_loss(model, guide, *args, **kwargs)
            if loss.requires_grad:
                loss.backward()
            loss = loss.item()
            warn_if_nan(loss, "loss")
            return loss
        return self._dreg_loss_and_grads(model, guide, args, kwargs)

    def _dreg_loss_and_grads(self, model, guide, args, kwargs) -> float:
        w = self._weights(model, guide, args, kwargs, detach_guide_params=True)
        if not isinstance(w.log_q_score, float):
            raise SpecError("dreg=True needs every guide site to be reparameterisable")
        params = lambda tr: {s["value"].unconstrained() for s in tr.nodes.values() if s["type"] == "param"}
        model_params, guide_params = params(w.model_trace), params(w.guide_trace)
        if model_params & guide_params:
            raise SpecError("dreg=True needs model and guide parameters to be disjoint (they share some)")
        log_w = w.log_w
        bound = self._bound(log_w)
        norm_w = torch.softmax(log_w.detach(), dim=0)
        # theta: sum_i w~_i grad log w_i ; phi: sum_i w~_i^2 d log w_i / dz dz/dphi (q's params detached in log_w)
        surrogate_model = -w.scale * (norm_w * log_w).sum()
        surrogate_guide = -w.scale * (norm_w.pow(2) * log_w).sum()
        model_params, guide_params = [p for p in model_params if p.requires_grad], [p for p in guide_params if p.requires_grad]
        grads_model = torch.autograd.grad(surrogate_model, model_params, retain_graph=True, allow_unused=True)
        grads_guide = torch.autograd.grad(surrogate_guide, guide_params, allow_unused=True)
        for p, g in zip(model_params + guide_params, grads_model + grads_guide):
            if g is None:
                continue
            p.grad = g if p.grad is None else p.grad + g
        loss = -w.scale * bound.sum().item()
        if is_validation_enabled():
            warn_if_nan(loss, "loss")
        return loss
