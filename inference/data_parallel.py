r"""What :func:`inference.training.fit` does differently when it runs on several ranks.

One process per rank runs the same :func:`~inference.training.fit`; this file
holds the parts that only exist when there is more than one (with one they are
the identity, so a single process trains bit for bit as before):

- :func:`check`: the world size must divide the batch size (every full batch
  splits evenly), and an objective that updates parameters outside the
  gradient (EM's closed-form M-step in ``end_epoch``) is refused unless it says
  it reduces its own statistics.
- :func:`step_weight`: the weight :math:`w_r` of rank ``r``'s gradient in the
  all-reduce (:func:`inference.distributed.all_reduce_gradients`): 1 for an
  objective whose loss is a sum over its batch, :math:`n_r / B` for one whose
  gradient is a mean (``gradient_combination = "mean"``: contrastive divergence).
- Checkpoints: rank 0 reads the file and broadcasts it, so every rank resumes
  from the same state even without a shared file system; at the end of an
  epoch every rank's own state (its random streams, its objective's state such
  as persistent chains) is gathered and rank 0 writes them all into the one
  atomic file (``world_size`` and ``ranks`` beside the usual keys, whose
  ``rng`` / ``objective`` are rank 0's, so a one-process run reads it too).
- Resuming with another number of processes (:func:`rank_state`): the
  parameters, optimiser, schedule, data order and metrics carry over; each
  rank's random stream restarts from the seed and the epoch (the run goes on
  correctly, not bit for bit as the uninterrupted run would have); an
  objective state that is per rank is re-split by the objective's
  ``reshard_state(states, world, rank)`` (persistent chains: pooled and dealt
  out again), or the resume is refused with the reason.
"""

from __future__ import annotations

import os

import pyro
import torch

from . import distributed
from .checkpoint import load_checkpoint, rng_state
from .errors import CheckpointError, PPLModelsError, SpecError

__all__ = ["broadcast_module", "check", "rank_state", "rank_states", "read_checkpoint", "step_weight"]

COMBINATIONS = ("sum", "mean")


def check(objective, batch_size: int) -> str:
    """How the objective's gradients combine across ranks (``"sum"`` or ``"mean"``); one-line errors
    for a batch size the world size does not divide and for an objective that cannot run data-parallel."""
    world = distributed.world_size()
    combination = getattr(objective, "gradient_combination", "sum")
    if combination not in COMBINATIONS:
        raise SpecError(f"{type(objective).__name__}.gradient_combination must be one of {COMBINATIONS}, "
                        f"got {combination!r}")
    if world == 1:
        return combination
    distributed.check_batch_size(batch_size)
    if hasattr(objective, "end_epoch") and not getattr(objective, "reduces_end_epoch", False):
        raise SpecError(f"{type(objective).__name__} updates the parameters in end_epoch from statistics of its "
                        "own ranks' data, which data-parallel training does not combine; train it with one process")
    return combination


def step_weight(combination: str, local: int, global_: int) -> float:
    """:math:`w_r`: 1 for a summed loss, the rank's share of the global batch for a mean gradient."""
    return 1.0 if combination == "sum" else local / global_


def broadcast_module(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (a fresh start: identical, whatever each rank's init)."""
    if distributed.world_size() == 1:
        return
    for tensor in module.state_dict().values():
        if torch.is_tensor(tensor):
            distributed._collective("parameter broadcast", torch.distributed.broadcast, tensor, src=0)


def read_checkpoint(path: str | None, device: torch.device):
    """The checkpoint at ``path`` (None if there is none): read directly by one process; by rank 0 and
    broadcast under a process group (where an unreadable file stops every rank with rank 0's error)."""
    if distributed.world_size() == 1:
        return load_checkpoint(path, map_location=device) if path is not None and os.path.exists(path) else None
    payload = None
    if distributed.is_main() and path is not None and os.path.exists(path):
        try:
            payload = load_checkpoint(path, map_location="cpu")
        except PPLModelsError as e:
            payload = e
    payload = distributed.broadcast_object(payload)
    if isinstance(payload, Exception):
        raise payload
    return payload


def _to(obj, device):
    if torch.is_tensor(obj):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(v, device) for v in obj)
    return obj


def rank_states(objective) -> dict:
    """Every rank's random streams and objective state, for rank 0's checkpoint (``{}`` on one process)."""
    if distributed.world_size() == 1:
        return {}
    mine = {"rng": rng_state(), "objective": _to(objective.state_dict(), "cpu") if hasattr(objective, "state_dict") else None}
    return {"world_size": distributed.world_size(), "ranks": distributed.gather_objects(mine)}


def rank_state(ckpt: dict, objective, seed: int, device, path: str | None, log=None) -> tuple:
    """This rank's ``(random state or None, objective state)`` from a checkpoint; with None the streams
    have been reseeded here (the checkpoint was written by another number of processes)."""
    written, world, me = ckpt.get("world_size", 1), distributed.world_size(), distributed.rank()
    ranks = ckpt.get("ranks") or [{"rng": ckpt["rng"], "objective": ckpt.get("objective")}]
    if written == world:
        mine = ranks[me]
        return mine["rng"], _to(mine["objective"], device) if world > 1 else mine["objective"]
    states = [r["objective"] for r in ranks]
    if all(s is None for s in states):
        state = None
    elif hasattr(objective, "reshard_state"):
        state = _to(objective.reshard_state([_to(s, device) for s in states], world, me), device)
    else:
        raise CheckpointError(f"checkpoint {path} was written by {written} process{'es' if written > 1 else ''} and "
                              f"holds each one's {type(objective).__name__} state, which cannot be split among {world}; "
                              f"resume it with {written} process{'es' if written > 1 else ''}")
    pyro.set_rng_seed(distributed.rank_seed(distributed.rank_seed(seed, 1_000_000 + ckpt["epoch"]), me))
    if log is not None:
        log(f"the checkpoint was written by {written} process{'es' if written > 1 else ''} and this run has {world}: "
            "parameters, optimiser, data order and metrics carry over, each rank's random stream restarts from the "
            "seed and the epoch (a correct continuation, not bit for bit the uninterrupted run)")
    return None, state
