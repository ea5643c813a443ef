"""Reweighted wake-sleep (RWS) and classic wake-sleep, per datapoint, as a ``pyro.infer.ELBO``.

For each datapoint :math:`x` draw :math:`h_{1..k} \\sim q(h \\mid x)` and
normalise its importance weights :math:`\\tilde w_i \\propto p(x, h_i) / q(h_i \\mid x)`
over its own k particles. The three estimators (Bornschein & Bengio 2015):

- wake-theta: :math:`\\sum_i \\tilde w_i \\nabla_\\theta \\log p(x, h_i)`, a
  self-normalised estimate of :math:`\\nabla_\\theta \\log p(x)` (the model);
- wake-phi: :math:`\\sum_i \\tilde w_i \\nabla_\\phi \\log q(h_i \\mid x)`, which
  lowers :math:`KL(p(h \\mid x) \\,\\|\\, q(h \\mid x))` (the guide);
- sleep-phi: :math:`\\nabla_\\phi \\log q(h \\mid x)` at a dream
  :math:`(x, h) \\sim p`, which lowers the same KL the other way round on average
  over the model's own data.

The samples are constants in all three (no score-function or pathwise term),
which is what makes RWS usable for discrete latents without baselines. The
guide's gradient is ``insomnia * wake-phi + (1 - insomnia) * sleep-phi``.
Classic wake-sleep (Hinton et al. 1995) is the special case ``k = 1,
insomnia = 0`` (:func:`wake_sleep`). Model and guide may share parameters
(the DCIM's tied weights): their gradients then simply add.

Pyro's own :class:`pyro.infer.ReweightedWakeSleep` normalises one weight per
particle over the whole minibatch ("mini-batch training is not supported
yet"): the product of a batch's weights, whose effective sample size
collapses as the batch grows. Here every datapoint has its own k weights
(:mod:`.importance_weights`).
The reported loss is the negative IWAE bound :math:`-\\log \\frac1k \\sum_i w_i`
summed over the minibatch, an estimate of :math:`-\\log p(x)` to monitor; it is
not the function whose gradient is taken.

The sleep phase dreams as many joint samples as the minibatch has
datapoints. It needs two conventions from the pair: ``model(batch_size=n)``
draws ``n`` joint samples with every observed site unobserved, and the guide
takes the dreamed values of the sites named in ``sleep_inputs`` as keyword
arguments (default ``x``); its other latent sites are replayed at the dream.

References:
 [1] Bornschein, Bengio. Reweighted Wake-Sleep. ICLR 2015.
 [2] Hinton, Dayan, Frey, Neal. The wake-sleep algorithm for unsupervised neural networks. Science 1995.
 [3] Le, Kosiorek, Siddharth, Teh, Wood. Revisiting Reweighted Wake-Sleep for Models with Stochastic Control Flow. UAI 2019.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import pyro.poutine as poutine
import torch
from pyro.util import warn_if_nan

from .errors import SpecError

from .importance_weights import latent_log_prob
from .iwae_elbo import IWAEELBO

#: ``extra(guide_trace, *args, **kwargs) -> (k, batch)``: further guide log-densities for wake-phi
WakeTerm = Callable[..., torch.Tensor]


class ReweightedWakeSleep(IWAEELBO):
    """Per-datapoint reweighted wake-sleep.

    :param int num_particles: k, samples from the guide per datapoint.
    :param float insomnia: weight of wake-phi in the guide's gradient, in
        [0, 1]; the rest goes to sleep-phi (1: wake-phi only, the default;
        0: sleep-phi only).
    :param sleep_inputs: sites of the model's dream passed to the guide as
        keyword arguments of the same name in the sleep phase.
    :param wake_guide_term: optional ``extra(guide_trace, *args, **kwargs)``
        returning ``(k, batch)`` guide log-densities of observed quantities to
        add to wake-phi, e.g. a classifier's :math:`\\log q(y \\mid h_i)` for a
        label the data gives (weighted by the same :math:`\\tilde w_i`).
    """

    def __init__(self, num_particles: int = 5, insomnia: float = 1.0, sleep_inputs: Sequence[str] = ("x",),
                 wake_guide_term: Optional[WakeTerm] = None, data_plate: str = "data",
                 max_plate_nesting: int = float("inf")):
        super().__init__(num_particles=num_particles, data_plate=data_plate, max_plate_nesting=max_plate_nesting)
        if isinstance(insomnia, bool) or not isinstance(insomnia, (int, float)) or not 0.0 <= insomnia <= 1.0:
            raise SpecError(f"insomnia must be a number in [0, 1], got {insomnia!r}")
        self.insomnia = float(insomnia)
        self.sleep_inputs = tuple(sleep_inputs)
        self.wake_guide_term = wake_guide_term
        self._last_terms: dict = {}

    def surrogates(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, model_surrogate, guide_surrogate)`` for one minibatch: the negative
        IWAE bound (no gradient) and the two sums whose gradients are the estimators."""
        loss, model_surrogate, guide_surrogate, self._last_terms = self._surrogates(model, guide, args, kwargs)
        return loss, model_surrogate, guide_surrogate

    def _surrogates(self, model, guide, args, kwargs):
        """:meth:`surrogates` and the monitored terms, all as tensors (so that a recorded step returns them)."""
        w = self._weights(model, guide, args, kwargs, constant_samples=True)
        log_w = w.log_w.detach()
        norm_w = torch.softmax(log_w, dim=0)  # over each datapoint's own particles
        loss = -w.scale * self._bound(log_w).sum()
        model_surrogate = -w.scale * (norm_w * w.log_p).sum()
        guide_surrogate = None
        # the bound per datapoint is -loss / (scale * batch); the divisor rides along as a (constant) tensor
        terms = {"bound_divisor": log_w.new_full((), w.scale * log_w.shape[1], dtype=torch.float64)}
        if self.insomnia > 0:
            log_q = w.log_q if self.wake_guide_term is None else w.log_q + self.wake_guide_term(w.guide_trace, *args, **kwargs).reshape(log_w.shape)
            guide_surrogate = -self.insomnia * w.scale * (norm_w * log_q).sum()
        if self.insomnia < 1:
            sleep_log_q = self._sleep_log_q(model, guide, log_w.shape[1])
            sleep = -(1 - self.insomnia) * w.scale * sleep_log_q.sum()
            guide_surrogate = sleep if guide_surrogate is None else guide_surrogate + sleep
            terms["sleep_log_q"] = sleep_log_q.detach().mean()
        terms["loss"] = loss
        return loss, model_surrogate, guide_surrogate, terms

    @property
    def last_terms(self) -> dict[str, float]:
        """The last update's monitored terms: the bound per datapoint, and the mean sleep log q(h | x) when the
        sleep phase runs (read into floats when asked, not every step)."""
        t = self._last_terms
        if not t:
            return {}
        out = {"bound": -float(t["loss"]) / float(t["bound_divisor"])}
        if "sleep_log_q" in t:
            out["sleep_log_q"] = float(t["sleep_log_q"])
        return out

    def _sleep_log_q(self, model, guide, n: int) -> torch.Tensor:
        """:math:`\\log q(h \\mid x)` at ``n`` dreams :math:`(x, h) \\sim p`, shape ``(n,)``."""
        with torch.no_grad():
            dream = poutine.trace(model).get_trace(batch_size=n)
        missing = [s for s in self.sleep_inputs if s not in dream.nodes]
        if missing:
            raise SpecError(f"the sleep phase needs the model to sample site(s) {missing} when called as model(batch_size=n)")
        inputs = {s: dream.nodes[s]["value"] for s in self.sleep_inputs}
        replayed = poutine.trace(poutine.replay(guide, trace=dream)).get_trace(**inputs)
        unmatched = [name for name, s in replayed.nodes.items()
                     if s["type"] == "sample" and not s["is_observed"] and name not in dream.nodes]
        if unmatched:
            raise SpecError(f"guide site(s) {unmatched} have no counterpart in the model's dream; sleep-phi cannot score them")
        return latent_log_prob(replayed, self.data_plate, self.max_plate_nesting)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """One surrogate whose gradient is the RWS estimator for model and guide together
        (its value is not the loss: use :meth:`loss` for that)."""
        return self.replay_step(model, guide, *args, **kwargs)[0]

    @property
    def replayable(self) -> bool:
        """``loss_and_grads`` is :meth:`replay_step`, its backward and :meth:`report` (see inference.trace_replay),
        unless a subclass adds to it."""
        return type(self).loss_and_grads is ReweightedWakeSleep.loss_and_grads

    def replay_step(self, model, guide, *args, **kwargs) -> tuple:
        """One update as tensors: (the surrogate to differentiate, the loss to report, the monitored terms)."""
        loss, model_surrogate, guide_surrogate, terms = self._surrogates(model, guide, args, kwargs)
        surrogate = model_surrogate if guide_surrogate is None else model_surrogate + guide_surrogate
        return (surrogate, loss, *terms.values())

    def report(self, out) -> float:
        """The float :meth:`loss_and_grads` returns, from :meth:`replay_step`'s outputs; keeps them for ``last_terms``."""
        names = ["bound_divisor", *(["sleep_log_q"] if self.insomnia < 1 else []), "loss"]
        self._last_terms = dict(zip(names, out[2:]))
        loss = out[1].item()
        warn_if_nan(loss, "loss")
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        out = self.replay_step(model, guide, *args, **kwargs)
        if out[0].requires_grad:
            out[0].backward()
        return self.report(out)


def wake_sleep(insomnia: float = 0.0, **options) -> ReweightedWakeSleep:
    """Classic wake-sleep: one guide sample per datapoint for the wake phase
    (:math:`\\nabla_\\theta \\log p(x, h)`, :math:`h \\sim q`) and the guide trained on
    dreams only (``insomnia=0``)."""
    return ReweightedWakeSleep(num_particles=1, insomnia=insomnia, **options)
