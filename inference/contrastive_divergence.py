r"""CD-k and PCD-k training of RBMs, with the negative phase drawn by :class:`~inference.block_gibbs.BlockGibbs`.

The log-likelihood gradient of an energy model is a difference of two
expectations of :math:`\partial F / \partial\theta`,

.. math::

    -\frac{\partial \log p(v)}{\partial \theta}
      = \mathbb E_{\text{data}}\Big[\frac{\partial F(v)}{\partial\theta}\Big]
      - \mathbb E_{\text{model}}\Big[\frac{\partial F(v)}{\partial\theta}\Big].

The model expectation is estimated from Gibbs chains: CD-k (Hinton 2002)
restarts them at the minibatch and runs ``k`` sweeps; PCD-k (Tieleman 2008)
keeps persistent chains across parameter updates. Here those chains *are* the
kernel's state and each update calls the kernel's ``sample`` once (``k``
sweeps). The hidden side is Rao-Blackwellised: the statistic at each visible
state uses :math:`p(h \mid v)` (the kernel's ``last_hidden_probs``), so an
update costs five matrix products for k = 1, like scikit-learn's
``BernoulliRBM``, and the positive and negative statistics share one GEMM
(rows weighted +1/n and -1/m) so the weight matrix is written once.

Updates are SGD with momentum, L2 weight decay on the weights, an optional
sparsity target on the hidden biases (Lee, Ekanadham & Ng 2008), and a
learning-rate schedule. Each epoch ends with monitors (reconstruction error,
pseudo-likelihood) and an atomic checkpoint from which :func:`fit` resumes
exactly (parameters ``torch.equal`` to an uninterrupted run).

References

1. G. E. Hinton, "Training products of experts by minimizing contrastive divergence", 2002.
2. T. Tieleman, "Training restricted Boltzmann machines using approximations to the likelihood gradient", ICML 2008.
3. H. Lee, C. Ekanadham, A. Ng, "Sparse deep belief net model for visual area V2", NIPS 2008.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable, Optional

import torch
from tqdm.auto import tqdm

from .errors import CheckpointError, DataError, PPLModelsError, SpecError
from ppl_models.specs import from_dict, option, to_dict

from .block_gibbs import BlockGibbs, bernoulli_draw
from .checkpoint import load_checkpoint, rng_state, save_atomic, set_rng_state

__all__ = ["CDConfig", "CDResult", "fit", "pseudo_log_likelihood", "reconstruction_error"]

_FORMAT = "ppl-models/contrastive-divergence/1"


@dataclasses.dataclass
class CDConfig:
    """Options of :func:`fit` (build from a dict with ``ppl_models.specs.from_dict(CDConfig, d)``)."""

    k: int = option(1, doc="Gibbs sweeps per parameter update", min=1)
    persistent: bool = option(True, doc="PCD (persistent chains) if true, CD if false")
    num_chains: Optional[int] = option(None, doc="persistent chains (default: batch_size)", min=1)
    epochs: int = option(10, doc="passes over the training data", min=1)
    batch_size: int = option(20, doc="minibatch size", min=1)
    lr: float = option(0.05, doc="learning rate", min_exclusive=0.0)
    lr_schedule: str = option("constant", doc="learning-rate schedule", choices=["constant", "linear", "exponential"])
    lr_final: float = option(0.0, doc="'linear': fraction of lr reached at the last update", min=0.0)
    lr_decay: float = option(0.9, doc="'exponential': factor per epoch", min_exclusive=0.0)
    momentum: float = option(0.5, doc="momentum of the parameter velocity", min=0.0)
    weight_decay: float = option(0.0, doc="L2 penalty on the weights", min=0.0)
    sparsity_target: Optional[float] = option(None, doc="target mean activation of each hidden unit", min_exclusive=0.0)
    sparsity_cost: float = option(0.1, doc="weight of the sparsity penalty", min=0.0)
    sparsity_decay: float = option(0.9, doc="decay of the running mean activation", min=0.0)
    monitor_size: int = option(1000, doc="training points scored by the per-epoch monitors (reconstruction error, "
                               "pseudo-likelihood); 0 turns them off, e.g. for timing", min=0)
    seed: Optional[int] = option(None, doc="seed torch's RNG at the start of a fresh run")

    def validate(self):
        if self.sparsity_target is not None and self.sparsity_target >= 1:
            raise SpecError(f"sparsity_target must lie in (0, 1), got {self.sparsity_target!r}")
        if self.momentum >= 1:
            raise SpecError(f"momentum must lie in [0, 1), got {self.momentum!r}")


@dataclasses.dataclass
class CDResult:
    """:ivar list history: one dict of monitors per epoch. :ivar kernel: the BlockGibbs holding the chains."""

    history: list
    kernel: BlockGibbs


@torch.no_grad()
def reconstruction_error(model, v: torch.Tensor) -> float:
    """Mean over rows of :math:`\\lVert v - E[v \\mid h = p(h \\mid v)] \\rVert^2` (deterministic)."""
    return float((v - model.visible_mean(model.hidden_probs(v))).pow(2).sum(-1).mean())


@torch.no_grad()
def pseudo_log_likelihood(model, v: torch.Tensor, generator: torch.Generator | None = None) -> float:
    """scikit-learn's stochastic pseudo-log-likelihood of binary ``v``, averaged over rows.

    For each row one unit :math:`i` is picked at random and
    :math:`V \\log \\sigma(F(\\tilde v) - F(v))` is returned, :math:`\\tilde v` being
    :math:`v` with unit :math:`i` flipped (``BernoulliRBM.score_samples``).
    """
    n, V = v.shape
    idx = torch.randint(0, V, (n,), generator=generator, device=v.device)
    flipped = v.clone()
    rows = torch.arange(n, device=v.device)
    flipped[rows, idx] = 1 - flipped[rows, idx]
    return float((V * torch.nn.functional.logsigmoid(model.free_energy(flipped) - model.free_energy(v))).mean())


def _learning_rate(cfg: CDConfig, epoch: int, step: int, total_steps: int) -> float:
    if cfg.lr_schedule == "linear":
        return cfg.lr * (1 - (1 - cfg.lr_final) * step / max(total_steps - 1, 1))
    if cfg.lr_schedule == "exponential":
        return cfg.lr * cfg.lr_decay**epoch
    return cfg.lr


def _same_config(saved: dict, cfg: CDConfig, path: str) -> None:
    current = to_dict(cfg)
    for key in current:
        if key != "epochs" and saved.get(key) != current[key]:
            raise CheckpointError(
                f"checkpoint {path} was written with {key}={saved.get(key)!r}, this run has {key}={current[key]!r}"
            )


def fit(
    model,
    data: torch.Tensor,
    config: CDConfig | dict | None = None,
    *,
    checkpoint: str | None = None,
    resume: bool = True,
    progress: bool = True,
    callback: Callable[[int, dict], None] | None = None,
    transform: Callable | None = None,
) -> CDResult:
    """Train ``model`` (an RBM-like :class:`~inference.block_gibbs.TwoBlockEnergy` with
    ``energy_gradients``) on ``data`` (N, V) by CD-k / PCD-k.

    :param config: a :class:`CDConfig` or a dict of its fields.
    :param str checkpoint: file written atomically after every epoch; if it exists and
        ``resume``, training continues from it (``epochs`` may be raised; other options must match).
    :param bool progress: show a tqdm bar with the latest monitors.
    :param callback: called as ``callback(epoch, metrics)`` after each epoch's checkpoint.
    :param transform: applied to every minibatch before use, called as ``transform(x)`` and, for the
        monitor set (once, reproducibly), ``transform(x, generator=g)``; e.g.
        ``ppl_models.data.DynamicBinarization()`` for dynamic binarisation of grey-level ``data``
        (which must then lie in [0, 1]).
    :returns: :class:`CDResult`; the model is trained in place.
    """
    cfg = from_dict(CDConfig, config if config is not None else {}, "config")
    model.validate_parameters()
    if transform is None:
        model.validate_visible(data, "data")
    else:
        from ppl_models.data import check_features

        check_features(data, model.num_visible, "data")
    if data.dim() != 2 or data.shape[0] == 0:
        raise DataError(f"data must have shape (N, {model.num_visible}) with N >= 1, got {tuple(data.shape)}")
    params = dict(model.named_parameters())
    trainable = {n: p for n, p in params.items() if p.requires_grad}
    n = data.shape[0]
    num_batches = math.ceil(n / cfg.batch_size)
    num_chains = cfg.num_chains or cfg.batch_size
    kernel = BlockGibbs(model, num_chains=num_chains, k=cfg.k)

    start_epoch, history = 0, []
    velocity = {name: torch.zeros_like(p) for name, p in trainable.items()}
    running_activation = chains = None
    if checkpoint is not None and resume and os.path.exists(checkpoint):
        state = load_checkpoint(checkpoint, map_location=data.device)
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise CheckpointError(f"checkpoint {checkpoint} is not a contrastive-divergence checkpoint")
        _same_config(state["config"], cfg, checkpoint)
        model.load_state_dict(state["model"])
        velocity, running_activation = state["velocity"], state["running_activation"]
        if cfg.persistent:
            kernel.initial_params = state["chains"]
            chains = kernel.initial_params
        set_rng_state(state["rng"])
        start_epoch, history = state["epoch"], state["history"]
    else:
        if cfg.seed is not None:
            torch.manual_seed(cfg.seed)
        if cfg.persistent:
            chains = kernel.initial_params  # random persistent chains, drawn from the seeded RNG

    monitor = data[: min(cfg.monitor_size, n)]
    if transform is not None:
        # its own generator: the monitor set must not move the training RNG stream (exact resume)
        monitor = transform(monitor, generator=torch.Generator(device=data.device).manual_seed(0))
    binary = getattr(model, "visible_type", "bernoulli") == "bernoulli"
    weight_decay = {name: (cfg.weight_decay if name == "weight" else 0.0) for name in trainable}
    bar = tqdm(total=(cfg.epochs - start_epoch) * num_batches, disable=not progress, desc="PCD" if cfg.persistent else "CD")
    try:
        for epoch in range(start_epoch, cfg.epochs):
            order = torch.randperm(n, device=data.device)
            for b in range(num_batches):
                lr = _learning_rate(cfg, epoch, epoch * num_batches + b, cfg.epochs * num_batches)
                with torch.no_grad():
                    v_pos = data[order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
                    if transform is not None:
                        v_pos = transform(v_pos)
                    h_pos = model.hidden_probs(v_pos)
                    if not cfg.persistent:  # CD: chains restart at the data
                        chains = {"v": v_pos, "h": bernoulli_draw(h_pos)}
                    chains = kernel.sample(chains)
                    # data rows weighted +1/n, chain rows -1/m: the whole gradient in one GEMM
                    v_both = torch.cat([v_pos, chains["v"]])
                    h_both = torch.cat([h_pos, kernel.last_hidden_probs])
                    weights = torch.cat([h_pos.new_full((v_pos.shape[0],), 1.0 / v_pos.shape[0]),
                                         h_pos.new_full((chains["v"].shape[0],), -1.0 / chains["v"].shape[0])])
                    grads = model.energy_gradients(v_both, h_both, weights)
                    if cfg.sparsity_target is not None:
                        mean_h = h_pos.mean(0)
                        running_activation = (
                            mean_h if running_activation is None
                            else running_activation.mul(cfg.sparsity_decay).add_(mean_h, alpha=1 - cfg.sparsity_decay)
                        )
                        grads["hidden_bias"].add_(running_activation - cfg.sparsity_target, alpha=cfg.sparsity_cost)
                    for name, p in trainable.items():
                        grad = grads[name]
                        if weight_decay[name]:
                            grad.add_(p, alpha=weight_decay[name])
                        if cfg.momentum:
                            velocity[name].mul_(cfg.momentum).add_(grad, alpha=-lr)
                            p.add_(velocity[name])
                        else:  # plain SGD: one pass over the weights
                            p.add_(grad, alpha=-lr)
                bar.update(1)
            metrics = _epoch_metrics(model, monitor, epoch, binary, lr)
            history.append(metrics)
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if k in ("recon_error", "pseudo_ll")}, refresh=False)
            if checkpoint is not None:
                save_atomic(
                    {
                        "format": _FORMAT,
                        "config": to_dict(cfg),
                        "epoch": epoch + 1,
                        "model": model.state_dict(),
                        "velocity": velocity,
                        "running_activation": running_activation,
                        "chains": chains if cfg.persistent else None,
                        "rng": rng_state(),
                        "history": history,
                    },
                    checkpoint,
                )
            if callback is not None:
                callback(epoch, metrics)
    finally:
        bar.close()
    return CDResult(history=history, kernel=kernel)


def _epoch_metrics(model, monitor, epoch: int, binary: bool, lr: float) -> dict:
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise PPLModelsError(
                f"training diverged in epoch {epoch + 1}: parameter {name} is not finite; lower the learning rate (lr={lr:g})"
            )
    metrics = {"epoch": epoch + 1, "lr": lr}
    if monitor.shape[0] == 0:  # monitors off (monitor_size=0)
        return metrics
    metrics["recon_error"] = reconstruction_error(model, monitor)
    if binary:
        # a fixed generator per epoch keeps the monitor off the training RNG stream (exact resume)
        gen = torch.Generator(device=monitor.device).manual_seed(epoch)
        metrics["pseudo_ll"] = pseudo_log_likelihood(model, monitor, gen)
    return metrics
