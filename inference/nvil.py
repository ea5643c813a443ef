"""NVIL: neural variational inference and learning (Mnih & Gregor 2014), per datapoint, as a ``pyro.infer.ELBO``.

For a guide with discrete (non-reparameterisable) sites the ELBO's gradient is

.. math::

    \\nabla_\\theta \\mathcal{L} = \\mathbb{E}_q[\\nabla_\\theta \\log p(x, h)], \\qquad
    \\nabla_\\phi \\mathcal{L} = \\mathbb{E}_q[(l(x, h) - b) \\nabla_\\phi \\log q(h \\mid x)], \\quad
    l = \\log p(x, h) - \\log q(h \\mid x),

unbiased for any ``b`` that does not depend on ``h``. NVIL makes the score
term usable by three variance reductions:

- an input-dependent baseline :math:`b_\\psi(x)` (a small MLP, trained to
  minimise :math:`\\mathbb{E}[(l - b_\\psi(x) - c)^2]`) and a running mean
  :math:`c` of :math:`l - b_\\psi(x)`;
- variance normalisation: the centred signal is divided by
  :math:`\\max(1, \\sqrt{v})`, :math:`v` a running average of its square. This
  rescales the guide's gradient by a positive number (an adaptive step size),
  so the estimator's expectation is :math:`\\nabla_\\phi \\mathcal{L} / \\max(1, \\sqrt v)`;
- local learning signals: when model and guide are Markov chains over the
  layers ``chain = ("x", "h1", ..., "hL")`` (the model top-down, the guide
  bottom-up), the signal of layer :math:`i` keeps only the terms that its
  sample can influence,

  .. math::

      l_i = \\sum_{j \\ge i-1} \\log p(h^j \\mid h^{j+1}) - \\sum_{j \\ge i} \\log q(h^j \\mid h^{j-1}),
      \\quad h^0 = x,

  each with its own baseline output and running statistics.

The running statistics used for a minibatch are those from before it (they
are updated after the gradient), so every datapoint's gradient is the same
in a minibatch as alone. The baseline's parameters and statistics are an
``nn.Module`` (:class:`NVILBaseline`) that the training driver optimises and
checkpoints beside the model (:attr:`NVIL.auxiliary`).

Reference: Mnih, Gregor. Neural Variational Inference and Learning in Belief Networks. ICML 2014.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from pyro.infer import ELBO
from pyro.util import warn_if_nan
from torch import nn

from .errors import SpecError
from .importance_weights import log_importance_weights


class NVILBaseline(nn.Module):
    """The baselines and running statistics of NVIL's learning signals.

    :param int x_dim: size of the input the baseline network reads (the first argument of model and guide).
    :param int num_signals: one per local learning signal (the number of guide layers), or 1 for a global one.
    :param int hidden: width of the tanh hidden layer of :math:`b_\\psi(x)` (the paper's 100); 0: no
        input-dependent baseline, only the running mean.
    :param float decay: of the running mean and variance (the paper's 0.8).
    """

    def __init__(self, x_dim: int, num_signals: int = 1, hidden: int = 100, decay: float = 0.8):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise SpecError(f"NVIL baseline decay must be in [0, 1), got {decay!r}")
        self.decay = decay
        self.net = (nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, num_signals))
                    if hidden > 0 else None)
        if self.net is not None:
            nn.init.zeros_(self.net[-1].weight)  # start at b = 0: the running mean carries the first epochs
            nn.init.zeros_(self.net[-1].bias)
        self.register_buffer("mean", torch.zeros(num_signals))
        self.register_buffer("var", torch.zeros(num_signals))

    @property
    def num_signals(self) -> int:
        return self.mean.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`b_\\psi(x)`, shape ``(N, num_signals)``."""
        if self.net is None:
            return x.new_zeros(x.shape[0], self.num_signals)
        return self.net(x.reshape(x.shape[0], -1))

    @torch.no_grad()
    def update(self, centred: torch.Tensor) -> None:
        """Fold a minibatch of :math:`l - b_\\psi(x)` ``(N, num_signals)`` into the running statistics."""
        d = self.decay
        self.var.mul_(d).add_((1 - d) * (centred - self.mean).pow(2).mean(0))
        self.mean.mul_(d).add_((1 - d) * centred.mean(0))


class NVIL(ELBO):
    """NVIL gradients for a model/guide pair whose guide sites are all discrete.

    :param baseline: the :class:`NVILBaseline` (None: plain REINFORCE, no baseline or normalisation).
    :param chain: site names bottom-up for local learning signals (see the module doc); None: one
        global signal :math:`\\log p(x, h) - \\log q(h \\mid x)` for every guide site.
    :param bool normalise_variance: divide the centred signals by :math:`\\max(1, \\sqrt v)`.
    """

    def __init__(self, baseline: Optional[NVILBaseline] = None, chain: Optional[Sequence[str]] = None,
                 normalise_variance: bool = True, data_plate: str = "data", max_plate_nesting: int = 1):
        super().__init__(num_particles=1, max_plate_nesting=max_plate_nesting)
        self.baseline = baseline
        self.chain = tuple(chain) if chain is not None else None
        if self.chain is not None and len(self.chain) < 2:
            raise SpecError(f"chain must name the observed site and at least one latent layer, got {self.chain}")
        expected = 1 if self.chain is None else len(self.chain) - 1
        if baseline is not None and baseline.num_signals != expected:
            raise SpecError(f"the NVIL baseline has {baseline.num_signals} outputs but there are {expected} learning signals")
        self.normalise_variance = normalise_variance
        self.data_plate = data_plate
        self._last_signals: Optional[torch.Tensor] = None

    @property
    def auxiliary(self) -> Optional[nn.Module]:
        """Parameters the objective trains besides the model's (the baseline network)."""
        return self.baseline

    def _weights(self, model, guide, args, kwargs):
        w = log_importance_weights(model, guide, *args, num_particles=1, max_plate_nesting=self.max_plate_nesting,
                                   data_plate=self.data_plate, **kwargs)
        if not isinstance(w.log_q_score, torch.Tensor) or any(
                getattr(s["fn"], "has_rsample", False) for s in w.guide_trace.nodes.values()
                if s["type"] == "sample" and not s["is_observed"]):
            raise SpecError("NVIL is for guides whose sites are all discrete (non-reparameterisable); "
                            "use a reparameterised ELBO for the others")
        if self.chain is not None:
            model_sites, guide_sites = list(w.log_p_sites), list(w.log_q_sites)
            if sorted(model_sites) != sorted(self.chain) or sorted(guide_sites) != sorted(self.chain[1:]):
                raise SpecError(f"local learning signals need model sites {sorted(self.chain)} and guide sites "
                                f"{sorted(self.chain[1:])}; got {sorted(model_sites)} and {sorted(guide_sites)}")
        return w

    def _get_trace(self, model, guide, args, kwargs):
        w = self._weights(model, guide, args, kwargs)
        return w.model_trace, w.guide_trace

    def signals(self, w) -> torch.Tensor:
        """The learning signals ``(N, S)``: global (S = 1) or one per layer of ``chain``."""
        if self.chain is None:
            return (w.log_p - w.log_q)[0].unsqueeze(-1)
        lp = [w.log_p_sites[name][0] for name in self.chain]  # log p(h^j | h^{j+1}), j = 0..L
        lq = [None] + [w.log_q_sites[name][0] for name in self.chain[1:]]  # log q(h^j | h^{j-1}), j = 1..L
        out, tail = [], lp[-1] - lq[-1]  # the terms with index >= L
        for i in range(len(self.chain) - 1, 0, -1):  # i = L .. 1: l_i = tail(i) + log p(h^{i-1} | h^i)
            out.append(tail + lp[i - 1])
            if i > 1:
                tail = out[-1] - lq[i - 1]
        return torch.stack(out[::-1], dim=-1)

    def _score_sites(self, w) -> list[torch.Tensor]:
        """The log q terms each signal multiplies, one ``(N,)`` per signal."""
        if self.chain is None:
            return [w.log_q[0]]
        return [w.log_q_sites[name][0] for name in self.chain[1:]]

    def _surrogate(self, model, guide, args, kwargs):
        w = self._weights(model, guide, args, kwargs)
        signals = self.signals(w).detach()
        if self.baseline is not None:
            b = self.baseline(args[0])
            centred = signals - b.detach() - self.baseline.mean
            if self.normalise_variance:
                centred = centred / self.baseline.var.sqrt().clamp(min=1.0)
            baseline_loss = (signals - b - self.baseline.mean).pow(2).sum()
        else:
            b, centred, baseline_loss = None, signals, None
        terms = [centred[:, i] * lq for i, lq in enumerate(self._score_sites(w))]
        score = terms[0]
        for term in terms[1:]:  # not sum(): its 0 + ... is one more op a step
            score = score + term
        surrogate = w.log_p[0] + score  # theta: grad log p(x, h); phi: the centred signals times grad log q
        elbo = (w.log_p - w.log_q)[0].detach()
        return w, signals, b, surrogate, baseline_loss, elbo

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The negative single-sample ELBO estimate summed over the batch (times the plate scale)."""
        with torch.no_grad():
            w = self._weights(model, guide, args, kwargs)
            loss = -w.scale * (w.log_p - w.log_q).sum().item()
        warn_if_nan(loss, "loss")
        return loss

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """A surrogate whose gradient is NVIL's (model, guide and baseline together); it does not
        update the running statistics (:meth:`loss_and_grads` does)."""
        w, _, _, surrogate, baseline_loss, _ = self._surrogate(model, guide, args, kwargs)
        total = -surrogate.sum() + (baseline_loss if baseline_loss is not None else 0.0)
        return w.scale * total

    #: ``loss_and_grads`` is :meth:`replay_step`'s loss, its backward and :meth:`report` (see inference.trace_replay)
    replayable = True

    def replay_step(self, model, guide, *args, **kwargs) -> tuple:
        """One update as tensors: (the surrogate to differentiate, the negative ELBO estimate to report, the
        signals); the running statistics take the minibatch's centred signals here. Every value the update
        reads from them was computed before, so it is the same whether the gradient is taken before or after."""
        w, signals, b, surrogate, baseline_loss, elbo = self._surrogate(model, guide, args, kwargs)
        total = -surrogate.sum() + (baseline_loss if baseline_loss is not None else 0.0)
        if self.baseline is not None:
            self.baseline.update(signals - b.detach())
        return (total if w.scale == 1.0 else w.scale * total), -w.scale * elbo.sum(), signals

    def report(self, out) -> float:
        """The float :meth:`loss_and_grads` returns, from :meth:`replay_step`'s outputs; records ``last_terms``."""
        _, loss, signals = out
        loss = loss.item()
        self._last_signals = signals.detach()
        warn_if_nan(loss, "loss")
        return loss

    @property
    def last_terms(self) -> dict[str, float]:
        """The last update's learning signals: their mean and variance (computed when read, not every step)."""
        s = self._last_signals
        if s is None:
            return {}
        return {"signal_mean": float(s.mean()), "signal_var": float(s.var()) if s.numel() > 1 else 0.0}

    @property
    def state(self) -> list:
        """The tensors an update writes in place: the baseline's running mean and variance."""
        return [] if self.baseline is None else [self.baseline.mean, self.baseline.var]

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        out = self.replay_step(model, guide, *args, **kwargs)
        out[0].backward()
        return self.report(out)

