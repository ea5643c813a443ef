"""The shared training driver: one :func:`fit` for every family.

A family hands :func:`fit` an :class:`Objective` (a Pyro ELBO wrapped with
its model and guide by :class:`PyroObjective`, contrastive divergence whose
persistent chains are a Gibbs kernel's state, EM, ...), the module that owns
the parameters and the training tensors. The driver owns everything around
the update: device, seeding, minibatches (one shuffling scheme), the
optimiser (:mod:`inference.optimizers`: Adam or SGD with momentum and weight
decay) and its per-update schedule, gradient clipping, a progress bar,
per-epoch metrics through one callback, early stopping, divergence, and one
versioned checkpoint format.

Exact resume: at the end of every epoch the driver writes one atomic
checkpoint holding the parameters, optimiser and schedule state, the
objective's own state (e.g. persistent chains), every random state (the
global torch RNG that Pyro and the samplers draw from, the shuffling
generator, the binarisation generator), the metric history and the
early-stopping state. A run killed at any point and restarted with the same
arguments continues from the last finished epoch and ends with parameters
equal, bit for bit, to those of an uninterrupted run.

Data-parallel: under a :mod:`torch.distributed` process group (``torchrun``, or
``ppl-models train --nproc N``) every rank runs this same loop on its piece of
each global batch, and the gradients (and the loss) are all-reduced before the
optimiser step, so that a global batch of B on N ranks is one process with
batch B, up to the order of floating-point sums (:mod:`inference.data_parallel`,
:mod:`inference.distributed`). Without a process group nothing changes.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Collection, Optional, Protocol, Sequence, runtime_checkable

import pyro
import torch
from tqdm.auto import tqdm

from . import data_parallel, distributed
from .checkpoint import rng_state, save_atomic, set_rng_state
from .devices import resolve_device, to_device
from .errors import CheckpointError, SpecError, TrainingDiverged
from .minibatches import make_loader
from .optimizers import OptimizerChoice, foldable_sgd_momentum, make_optimizer, make_schedule
from .trace_replay import TraceReplay

__all__ = ["CHECKPOINT_FORMAT", "FitResult", "Objective", "PyroObjective", "evaluate_loss", "fit", "with_auxiliary"]

#: written into every checkpoint; a checkpoint of another format is refused with a one-line error
CHECKPOINT_FORMAT = "ppl-models/training-checkpoint/2"


@runtime_checkable
class Objective(Protocol):
    """What :func:`fit` trains with.

    ``loss_and_grads(*batch)`` returns the per-datapoint loss *summed* over the
    batch (a float) and accumulates its gradient into the parameters' ``.grad``;
    ``loss(*batch)`` returns the same number without side effects (validation).
    Optional hooks, called when present: ``end_epoch()`` after an epoch's last
    update (EM's M-step), and ``state_dict()`` / ``load_state_dict(state)`` for
    state that must survive a resume (persistent chains, running averages).
    An objective with parameters of its own (NVIL's baseline network) exposes
    them as an ``auxiliary`` module: :func:`with_auxiliary` joins it to the
    model's module, so that the driver optimises and checkpoints both.

    An objective that alternates updates (a GAN: the discriminator, then the
    generator) names them in a ``phases`` tuple: each batch then takes one
    optimiser step per phase, in order, through
    ``loss_and_grads(*batch, phase=name)``; each phase's loss per datapoint is
    recorded as ``<phase>_loss`` and ``train_loss`` is their sum.

    An objective that can apply an SGD update more cheaply than the optimiser
    can from ``.grad`` (contrastive divergence folds it into the GEMM of its
    statistic) has ``sgd_step(*batch, lr, momentum, state, fused)`` (the loss, the
    parameters and the optimiser's momentum buffers in ``state`` updated in place)
    and a true ``fused_sgd``: the driver calls it instead of ``loss_and_grads``
    and ``optimizer.step()`` when the optimiser is SGD, with or without momentum,
    without weight decay (:func:`inference.optimizers.foldable_sgd_momentum`), in
    one process, with no clipping and one phase.
    """

    def loss_and_grads(self, *batch: torch.Tensor) -> float: ...

    def loss(self, *batch: torch.Tensor) -> float: ...


class PyroObjective:
    """A :class:`pyro.infer.ELBO` (or anything with its ``loss`` / ``loss_and_grads``) bound to a model and guide.

    Example::

        fit(PyroObjective(IWAEELBO(num_particles=5), vae.model, vae.guide), (x,), module=vae, epochs=10)

    :param bool replay: run each step as the recorded tensor program of the first
        (:class:`inference.trace_replay.TraceReplay`: same losses, gradients and random
        stream, without Pyro's handlers); used only when the ELBO declares ``replayable``,
        otherwise every step runs through Pyro. ``replay_status`` says what each input
        shape ran on.
    """

    def __init__(self, elbo, model: Callable, guide: Callable, replay: bool = False):
        self.elbo, self.model, self.guide = elbo, model, guide
        self._replay = None
        if replay and getattr(elbo, "replayable", False):
            owners = [m for m in (getattr(model, "__self__", None), getattr(guide, "__self__", None))
                      if isinstance(m, torch.nn.Module)]
            # an ELBO with more to a step than a loss (NVIL's running statistics) records its replay_step and
            # turns its outputs into the reported loss itself; the tensors it updates are allowed writes
            step = getattr(elbo, "replay_step", None)
            program = ((lambda *batch: step(self.model, self.guide, *batch)) if step is not None
                       else self._differentiable_loss)
            self._replay = TraceReplay(self._pyro_step, program,
                                       buffers=lambda: [b for m in owners for b in m.buffers()]
                                       + list(getattr(elbo, "state", [])),
                                       state=lambda: list(getattr(elbo, "state", [])),
                                       report=getattr(elbo, "report", None))

    @property
    def replay_status(self) -> dict:
        if self._replay is None:
            return {"all": "Pyro route (replay off, or the ELBO does not declare replayable)"}
        return self._replay.status

    def _pyro_step(self, *batch):
        return self.elbo.loss_and_grads(self.model, self.guide, *batch)

    def _differentiable_loss(self, *batch):
        return self.elbo.differentiable_loss(self.model, self.guide, *batch)

    def loss_and_grads(self, *batch):
        return self._pyro_step(*batch) if self._replay is None else self._replay(*batch)

    def loss(self, *batch):
        return self.elbo.loss(self.model, self.guide, *batch)

    @property
    def auxiliary(self) -> Optional[torch.nn.Module]:
        """Parameters the ELBO itself trains (NVIL's baseline network), or None."""
        return getattr(self.elbo, "auxiliary", None)


def with_auxiliary(module: torch.nn.Module, objective) -> torch.nn.Module:
    """The module :func:`fit` should train: ``module`` itself, or ``module`` and the objective's
    ``auxiliary`` parameters side by side (``.model`` and ``.auxiliary`` of a ModuleDict)."""
    aux = getattr(objective, "auxiliary", None)
    if aux is None:
        return module
    return torch.nn.ModuleDict({"model": module, "auxiliary": aux})


@dataclass
class FitResult:
    """What :func:`fit` returns: per-epoch metrics and where training ended."""

    history: list = field(default_factory=list)
    best_epoch: Optional[int] = None
    stopped_early: bool = False
    resumed_from: Optional[int] = None


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{name} must be a positive integer, got {value!r}")


def evaluate_loss(objective: Objective, data: Sequence[torch.Tensor], batch_size: int) -> float:
    """The objective's loss per datapoint over ``data``, in batches, without gradients."""
    total = 0.0
    with torch.no_grad():
        for batch in make_loader(*data, batch_size=batch_size, shuffle=False):
            total += objective.loss(*batch)
    return total / data[0].shape[0]


def _check_finite_parameters(module, epoch: int, lr: float) -> None:
    for name, p in module.named_parameters():
        # a NaN or an infinity makes the sum non-finite, so a finite sum clears p in one pass (a twentieth of the time of
        # isfinite over a 784x500 weight); a non-finite sum of finite values (overflow) is looked at again
        if not math.isfinite(float(p.detach().sum())) and not bool(torch.isfinite(p).all()):
            raise TrainingDiverged(f"training diverged: parameter {name} is not finite after epoch {epoch}; "
                                   f"lower lr (now {lr:g}) or set clip_norm (the last finished epoch's checkpoint is kept)")


def fit(objective: Objective, train: Sequence[torch.Tensor], *, module: torch.nn.Module, epochs: int,
        batch_size: int = 100, optimizer: OptimizerChoice = "adam", lr: float = 1e-3, momentum: float = 0.0,
        weight_decay: float = 0.0, decay: Optional[Collection[str]] = None, lr_schedule: str = "constant",
        lr_final: float = 0.0, lr_decay: float = 1.0, clip_norm: Optional[float] = None, seed: int = 0,
        device: Optional[str] = None, valid: Optional[Sequence[torch.Tensor]] = None,
        patience: Optional[int] = None, transform: Optional[Callable] = None,
        checkpoint_path: Optional[str] = None, progress: bool = True, validate: bool = False,
        on_epoch_end: Optional[Callable[[dict], None]] = None, log: Optional[Callable[[str], None]] = None) -> FitResult:
    """Train ``module``'s parameters by minimising ``objective`` over minibatches of ``train``.

    :param objective: an :class:`Objective`; wrap a Pyro ELBO in :class:`PyroObjective`.
    :param train: tensors sharing their first dimension, e.g. ``(x,)`` or ``(x, y)``;
        each batch is passed as ``objective.loss_and_grads(*batch)``.
    :param optimizer: ``"adam"``, ``"sgd"`` (with ``momentum``) or ``factory(module)``;
        ``weight_decay`` applies to the parameters named in ``decay`` (default all).
    :param str lr_schedule: see :mod:`inference.optimizers` (``lr_final``, ``lr_decay``).
    :param valid: same layout as ``train``; its loss per datapoint is recorded every epoch
        and drives early stopping when ``patience`` is set (best weights restored).
    :param transform: applied to the first tensor of each training batch with the
        driver's own generator, e.g. dynamic binarisation.
    :param checkpoint_path: where the per-epoch checkpoint lives; an existing one is resumed
        from (``epochs`` may be raised; the other settings must match).
    :param on_epoch_end: called with each epoch's metrics dict before it is checkpointed;
        what it adds is kept in the history. It must not draw from the global RNG.
    :param log: called with a line for a person: where a resumed run picks up.
    :param bool progress: a progress bar (also off when stderr is not a terminal).
    :returns: :class:`FitResult` with one metrics dict per epoch.
    """
    if isinstance(objective, pyro.infer.ELBO):
        raise SpecError("fit takes an Objective; wrap a Pyro ELBO with its model and guide: "
                        "PyroObjective(elbo, model, guide)")
    if not isinstance(objective, Objective):
        raise SpecError(f"objective must have loss_and_grads(*batch) and loss(*batch), got {type(objective).__name__}")
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    if patience is not None:
        _check_positive_int("patience", patience)
    if clip_norm is not None and not clip_norm > 0:
        raise SpecError(f"clip_norm must be > 0 or None, got {clip_norm!r}")
    dev = distributed.rank_device(resolve_device(device))
    module.to(dev)
    train = [to_device(t, dev) for t in train]  # once, pinned and non-blocking when the device is a GPU
    valid = [to_device(t, dev) for t in valid] if valid is not None else None
    n_train = train[0].shape[0]
    steps_per_epoch = math.ceil(n_train / batch_size)
    # data-parallel under a process group (inference.data_parallel); one process: world 1, rank 0
    world, me = distributed.world_size(), distributed.rank()
    combination = data_parallel.check(objective, batch_size)
    if me != 0:  # progress, logs and monitors are rank 0's; the others get its metrics
        progress, log = False, None

    if callable(optimizer) and not isinstance(optimizer, str):
        opt = optimizer(module)
    else:
        opt = make_optimizer(module, optimizer, lr, momentum, weight_decay, decay)
    scheduler = make_schedule(opt, lr_schedule, epochs=epochs, steps_per_epoch=steps_per_epoch,
                              lr_final=lr_final, lr_decay=lr_decay)
    settings = {"batch_size": batch_size, "optimizer": optimizer if isinstance(optimizer, str) else "factory",
                "lr": lr, "momentum": momentum, "weight_decay": weight_decay, "lr_schedule": lr_schedule,
                "lr_final": lr_final, "lr_decay": lr_decay, "clip_norm": clip_norm, "seed": seed, "patience": patience}
    shuffle_gen = torch.Generator()
    transform_gen = torch.Generator(device=dev)
    result = FitResult()
    best = {"loss": math.inf, "epoch": None, "state": None, "bad_epochs": 0}
    start_epoch = 1

    checkpointing = distributed.broadcast_object(checkpoint_path is not None)
    ckpt = data_parallel.read_checkpoint(checkpoint_path, dev)
    if ckpt is not None:
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            found = ckpt.get("format", "none") if isinstance(ckpt, dict) else type(ckpt).__name__
            raise CheckpointError(f"checkpoint {checkpoint_path} was written by an earlier ppl-models (format {found!r}, "
                                  f"this version writes {CHECKPOINT_FORMAT!r}); delete it to train from scratch "
                                  "(a finished run's model.pt still loads for evaluate and sample)")
        for key, value in settings.items():
            if ckpt["settings"].get(key) != value:
                raise CheckpointError(f"checkpoint {checkpoint_path} was written with {key}={ckpt['settings'].get(key)!r}, "
                                      f"this run has {key}={value!r}; use the same settings or another checkpoint")
        module.load_state_dict(ckpt["module"])
        opt.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        rng, objective_state = data_parallel.rank_state(ckpt, objective, seed, dev, checkpoint_path, log)
        if hasattr(objective, "load_state_dict"):
            objective.load_state_dict(objective_state)
        if rng is not None:
            set_rng_state(rng)
        shuffle_gen.set_state(ckpt["shuffle_gen"])
        transform_gen.set_state(ckpt["transform_gen"].to(transform_gen.get_state().device))
        result.history = ckpt["history"]
        best = ckpt["best"]
        start_epoch = ckpt["epoch"] + 1
        result.resumed_from = ckpt["epoch"]
        if best["bad_epochs"] >= (patience or math.inf):
            start_epoch = epochs + 1  # the run had already stopped early
            result.stopped_early = True
        if log is not None:
            left = max(0, epochs - ckpt["epoch"]) if not result.stopped_early else 0
            log(f"resuming from the checkpoint of epoch {ckpt['epoch']} ({checkpoint_path}): "
                f"{left} epoch{'' if left == 1 else 's'} to go")
    else:
        pyro.set_rng_seed(distributed.rank_seed(seed, me))  # distinct per rank; rank 0's is a single process's
        data_parallel.broadcast_module(module)
        shuffle_gen.manual_seed(seed)
        transform_gen.manual_seed(seed + 1)

    loader = make_loader(*train, batch_size=batch_size, generator=shuffle_gen)
    bar = tqdm(total=steps_per_epoch * max(0, epochs - start_epoch + 1), disable=None if progress else True, unit="step",
               dynamic_ncols=True, leave=False)
    params = [p for p in module.parameters() if p.requires_grad]
    phases = tuple(getattr(objective, "phases", None) or (None,))
    momentum, fused_kernel = foldable_sgd_momentum(opt), opt.param_groups[0].get("fused")
    folded = (getattr(objective, "fused_sgd", False) and momentum is not None and world == 1 and clip_norm is None
              and phases == (None,)  # and the optimiser steps every trainable parameter, as the objective would
              and {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in params})
    if folded:  # no optimizer.step() will run: tell the schedule (else it warns that it stepped first)
        opt._opt_called = True
    module.train()
    try:
        with pyro.validation_enabled(validate):
            for epoch in range(start_epoch, epochs + 1):
                started = time.perf_counter()
                total = 0.0
                phase_totals = dict.fromkeys((p for p in phases if p is not None), 0.0)
                for step, batch in enumerate(loader):
                    if transform is not None:
                        batch = (transform(batch[0], generator=transform_gen), *batch[1:])
                    global_n = batch[0].shape[0]
                    if world > 1:  # the global batch (order and transform as one process), then this rank's piece
                        batch = tuple(distributed.shard(t) for t in batch)
                    for phase in phases:  # (None,) unless the objective alternates updates (see Objective)
                        lr_now = opt.param_groups[0]["lr"]
                        if folded:  # the objective applies the update itself (see Objective): no .grad, no step
                            loss = objective.sgd_step(*batch, lr=lr_now, momentum=momentum, state=opt.state,
                                                      fused=fused_kernel)
                        else:
                            opt.zero_grad(set_to_none=True)
                            loss = (objective.loss_and_grads(*batch) if phase is None
                                    else objective.loss_and_grads(*batch, phase=phase))
                            if world > 1:  # sum over ranks of w_r g_r, and the global loss
                                loss = distributed.all_reduce_gradients(
                                    params, data_parallel.step_weight(combination, batch[0].shape[0], global_n), loss)
                        if not math.isfinite(loss):
                            during = "" if phase is None else f" ({phase} update)"
                            raise TrainingDiverged(
                                f"training diverged: loss is {loss} at epoch {epoch}, step {step + 1}{during}; "
                                "lower lr or set clip_norm (the last finished epoch's checkpoint is kept)")
                        if not folded:
                            if clip_norm is not None:
                                torch.nn.utils.clip_grad_norm_(params, clip_norm)
                            opt.step()
                        total += loss
                        if phase is not None:
                            phase_totals[phase] += loss
                    if lr_schedule != "constant":  # a constant schedule's step only counts (20 us of a 3 ms VAE step)
                        scheduler.step()
                    bar.update()
                if hasattr(objective, "end_epoch"):
                    objective.end_epoch()
                _check_finite_parameters(module, epoch, lr_now)
                metrics = {"epoch": epoch, "train_loss": total / n_train, "lr": lr_now,
                           **{f"{p}_loss": t / n_train for p, t in phase_totals.items()}}
                if valid is not None and me == 0:
                    module.eval()
                    metrics["valid_loss"] = evaluate_loss(objective, valid, batch_size)
                    module.train()
                metrics["seconds"] = time.perf_counter() - started  # the epoch, before the caller's monitors
                if on_epoch_end is not None and me == 0:
                    on_epoch_end(metrics)
                metrics = distributed.broadcast_object(metrics)  # rank 0's, so that every rank decides alike
                if valid is not None:
                    if metrics["valid_loss"] < best["loss"]:
                        best.update(loss=metrics["valid_loss"], epoch=epoch, bad_epochs=0,
                                    state=copy.deepcopy(module.state_dict()) if patience else None)
                    else:
                        best["bad_epochs"] += 1
                result.history.append(metrics)
                bar.set_postfix({k: round(v, 3) for k, v in metrics.items() if k.endswith("loss")}, refresh=False)
                bar.set_description(f"epoch {epoch}/{epochs}")
                extras = data_parallel.rank_states(objective) if checkpointing else {}  # every rank's streams
                if checkpointing and me == 0:
                    save_atomic({"format": CHECKPOINT_FORMAT, "epoch": epoch, "settings": settings,
                                 "module": module.state_dict(), "optimizer": opt.state_dict(),
                                 "scheduler": scheduler.state_dict(),
                                 "objective": objective.state_dict() if hasattr(objective, "state_dict") else None,
                                 "rng": rng_state(), "shuffle_gen": shuffle_gen.get_state(),
                                 "transform_gen": transform_gen.get_state(), "history": result.history,
                                 "best": best, **extras}, checkpoint_path)
                if patience is not None and best["bad_epochs"] >= patience:
                    result.stopped_early = True
                    break
    finally:
        bar.close()
    if world > 1:  # the ranks leave together, or learn here (within the timeout) that one of them did not make it
        distributed.barrier("the end of training")
    module.eval()
    result.best_epoch = best["epoch"]
    if patience is not None and best["state"] is not None:
        module.load_state_dict(best["state"])
    return result
