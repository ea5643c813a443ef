r"""Data-parallel training and parallel estimators on :mod:`torch.distributed` (gloo on CPU, NCCL on CUDA).

Every process (a *rank*) holds the whole model and the whole data set; what is
split is the work. This module is the machinery the shared drivers use when a
process group exists (:func:`init_from_env` creates it from the variables
``torchrun`` sets, or that ``ppl-models train --nproc N`` sets for its
children); without one every function here is the identity and the drivers
run their single-process code unchanged.

- **Training** (:func:`inference.training.fit`): the global minibatch of ``B``
  indices is drawn by one shuffling generator seeded alike on every rank, so
  every rank knows it, and rank ``r`` takes the ``r``-th of ``N`` contiguous
  pieces (:func:`shard`). Each rank's objective accumulates the gradient of its
  piece; :func:`all_reduce_gradients` then sums ``w_r \, g_r`` over the ranks
  in one flat all-reduce, with ``w_r = 1`` for an objective whose loss is a sum
  over the batch (the :class:`~inference.training.Objective` convention: the
  sum of the pieces' gradients *is* the batch's gradient) and ``w_r = n_r / B``
  for one whose gradient is a mean over its batch (contrastive divergence,
  ``gradient_combination = "mean"``), whose weighted sum is the mean over the
  global batch. The loss rides in the same buffer, so every rank sees the
  global loss and a divergence is detected by all at once.
- **Random streams**: rank 0 draws from the stream a single process would
  (seeded with ``seed``); rank ``r > 0`` from the stream seeded with
  :func:`rank_seed` ``(seed, r)``, distinct and reproducible.
- **Estimators** (AIS runs, importance-sampling particles, Gibbs chains), inside
  :func:`sharing` (``ppl-models evaluate`` under ``torchrun`` enters it; outside
  it every rank estimates alone, as after training): each rank computes its
  share with its own stream (:func:`distinct_stream`), and the log-weights or
  chains are gathered (:func:`all_gather_rows`) before anything is averaged, so
  the result is the single-process estimator with the union of the samples.
- **Faults**: every collective runs under the process group's timeout; a rank
  that died (connection closed) or hangs (timeout) makes the others raise
  :class:`DistributedError`, one line, instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
from collections.abc import Sequence

import torch
import torch.distributed as dist

from .errors import PPLModelsError, SpecError

__all__ = ["DEFAULT_TIMEOUT_S", "DistributedError", "all_gather_rows", "all_reduce_gradients", "barrier",
           "broadcast_object", "distinct_stream", "gather_objects", "init_from_env", "is_main", "rank",
           "rank_device", "rank_seed", "shard", "shard_sizes", "sharing", "sharing_work", "solo", "world_size"]

#: seconds a collective waits for the other ranks before the run stops (env ``PPL_MODELS_DIST_TIMEOUT``)
DEFAULT_TIMEOUT_S = 300.0


class DistributedError(PPLModelsError, RuntimeError):
    """A rank died, hung past the timeout, or the process group cannot be set up."""


_solo = [0]  # > 0 inside solo(): this process works alone although a process group exists


def _grouped() -> bool:
    return dist.is_available() and dist.is_initialized() and not _solo[0]


def world_size() -> int:
    """Number of ranks in the default process group (1 when there is none, or inside :func:`solo`)."""
    return dist.get_world_size() if _grouped() else 1


def rank() -> int:
    return dist.get_rank() if _grouped() else 0


_sharing = [0]  # > 0 inside sharing()


@contextlib.contextmanager
def sharing():
    """Inside, the estimators (AIS, importance-sampled log-likelihood, MCMC) split their runs, particles or
    chains across the ranks, every rank calling them alike; outside, each rank estimates alone."""
    _sharing[0] += 1
    try:
        yield
    finally:
        _sharing[0] -= 1


def sharing_work() -> bool:
    """Whether an estimator called now splits its work across ranks (inside :func:`sharing`, several ranks)."""
    return _sharing[0] > 0 and world_size() > 1


@contextlib.contextmanager
def solo():
    """Inside, this process computes alone (no collectives), e.g. rank 0 evaluating after training."""
    _solo[0] += 1
    try:
        yield
    finally:
        _solo[0] -= 1


def is_main() -> bool:
    """Whether this process speaks for the run (progress, logs, files): rank 0, or no process group (a
    launched rank that failed before joining its group goes by ``RANK``, so that one error is one line)."""
    if not (dist.is_available() and dist.is_initialized()) and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        return os.environ.get("RANK", "0") in ("", "0")
    return rank() == 0


def should_report(error: BaseException) -> bool:
    """Whether this process prints ``error``: rank 0 does; another rank only a fault of its own group
    (a peer lost), not the errors every rank meets alike (bad input, which rank 0 reports)."""
    return is_main() or (isinstance(error, DistributedError) and dist.is_available() and dist.is_initialized())


def timeout_seconds() -> float:
    try:
        value = float(os.environ.get("PPL_MODELS_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError:
        raise SpecError(f"PPL_MODELS_DIST_TIMEOUT must be a number of seconds, got "
                        f"{os.environ['PPL_MODELS_DIST_TIMEOUT']!r}") from None
    if not value > 0:
        raise SpecError(f"PPL_MODELS_DIST_TIMEOUT must be > 0 seconds, got {value!r}")
    return value


def init_from_env(backend: str = "auto", device: str | None = None) -> bool:
    """Join the process group described by ``torchrun``'s variables (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``); a no-op (False) when ``WORLD_SIZE`` is unset or 1.

    :param str backend: ``"gloo"``, ``"nccl"``, or ``"auto"``: NCCL when ``device`` is CUDA (or
        ``auto`` on a machine with GPUs), else gloo. NCCL on a machine without GPUs is a one-line error.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return world > 1
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed; train with one process")
    if backend not in ("auto", "gloo", "nccl"):
        raise SpecError(f"unknown backend {backend!r}; expected auto, gloo or nccl")
    wants_cuda = device is not None and str(device).startswith("cuda")
    if backend == "auto":
        backend = "nccl" if (wants_cuda or device in (None, "auto")) and torch.cuda.is_available() else "gloo"
    if backend == "nccl" and not (torch.cuda.is_available() and dist.is_nccl_available()):
        raise DistributedError("backend nccl needs CUDA GPUs and this machine has none (or torch was built without "
                               "NCCL); use the gloo backend (--backend gloo) to train on CPUs")
    if backend == "nccl" or (wants_cuda and torch.cuda.is_available()):  # one GPU per rank of this machine
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds()))
    except (RuntimeError, ValueError) as e:
        raise DistributedError(f"cannot join the process group of {world} ranks ({_short(e)})") from None
    return True


def check_batch_size(batch_size: int) -> None:
    """One line when the world size does not divide the batch size (called before anything is written)."""
    world = world_size()
    if world > 1 and batch_size % world:
        raise SpecError(f"batch size {batch_size} is not divisible by the world size {world} (processes); "
                        f"use a batch size that is a multiple of {world}, or a number of processes that divides {batch_size}")


def rank_device(device: torch.device) -> torch.device:
    """Under a process group, a bare ``cuda`` means this rank's GPU (``LOCAL_RANK``)."""
    if device.type == "cuda" and device.index is None and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def rank_seed(seed: int, r: int) -> int:
    """The seed of rank ``r``'s random streams: ``seed`` itself for rank 0 (so one rank is one process),
    a hash of both for the others (distinct, reproducible, below 2**32 as NumPy requires)."""
    if r == 0:
        return int(seed)
    return int.from_bytes(hashlib.sha256(f"ppl-models:{seed}:{r}".encode()).digest()[:4], "little")


@contextlib.contextmanager
def distinct_stream():
    """Inside, rank ``r > 0`` draws from its own stream, seeded by :func:`rank_seed` of a number drawn
    from the stream it had (the ranks of an estimator are usually seeded alike by the caller); rank 0's
    stream is untouched, so one rank draws exactly what a single process draws."""
    r = rank() if sharing_work() else 0
    if r > 0:
        base = int(torch.randint(0, 2**31 - 1, ()))
        torch.manual_seed(rank_seed(base, r))
    yield


def shard_sizes(n: int, world: int | None = None) -> list:
    """How ``n`` items split into ``world`` contiguous pieces: as equal as can be, larger first."""
    world = world_size() if world is None else world
    return [n // world + (1 if r < n % world else 0) for r in range(world)]


def shard(items: torch.Tensor, world: int | None = None, r: int | None = None) -> torch.Tensor:
    """Rank ``r``'s contiguous piece of ``items`` (first dimension), the pieces of :func:`shard_sizes`."""
    world = world_size() if world is None else world
    r = rank() if r is None else r
    sizes = shard_sizes(items.shape[0], world)
    start = sum(sizes[:r])
    return items[start:start + sizes[r]]


def _short(error: BaseException) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__


def _failed(what: str, error: BaseException) -> DistributedError:
    return DistributedError(
        f"rank {rank()} of {world_size()}: {what} failed: another rank stopped or did not answer within "
        f"{timeout_seconds():g}s ({_short(error)}); the last finished epoch's checkpoint is kept, run the same "
        "command again to resume")


def _collective(what: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except DistributedError:
        raise
    except (RuntimeError, ValueError, ConnectionError, OSError) as e:  # gloo/NCCL raise RuntimeError subclasses
        raise _failed(what, e) from None


def barrier(what: str = "barrier") -> None:
    """Wait for every rank, at most the timeout; gloo names the ranks that did not arrive."""
    if world_size() == 1:
        return
    if dist.get_backend() == "gloo":
        _collective(what, dist.monitored_barrier, timeout=datetime.timedelta(seconds=timeout_seconds()))
    else:
        _collective(what, dist.barrier)


def broadcast_object(obj=None, src: int = 0):
    """``obj`` of rank ``src``, on every rank (pickled; for decisions and checkpoints, not per-step data)."""
    if world_size() == 1:
        return obj
    box = [obj]
    _collective("broadcast", dist.broadcast_object_list, box, src=src)
    return box[0]


def gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    _collective("gather", dist.all_gather_object, out, obj)
    return out


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """The ranks' tensors concatenated along the first dimension, in rank order (their first
    dimensions may differ; the other dimensions must agree)."""
    if world_size() == 1:
        return x
    sizes = [int(s) for s in _all_gather_tensor(torch.tensor([x.shape[0]], device=x.device), "gather sizes")]
    padded = x.new_zeros((max(sizes),) + tuple(x.shape[1:]))
    padded[:x.shape[0]] = x
    pieces = _all_gather_tensor(padded.contiguous(), "gather")
    return torch.cat([p[:n] for p, n in zip(pieces.split(max(sizes)), sizes)])


def _all_gather_tensor(x: torch.Tensor, what: str) -> torch.Tensor:
    out = [torch.empty_like(x) for _ in range(world_size())]
    _collective(what, dist.all_gather, out, x)
    return torch.cat(out)


def all_reduce_gradients(params: Sequence[torch.Tensor], weight: float, loss: float) -> float:
    """Replace each parameter's ``.grad`` by :math:`\\sum_r w_r\\, g_r` over the ranks and return
    :math:`\\sum_r \\text{loss}_r`, in one all-reduce of one flat buffer.

    A parameter no rank gave a gradient keeps ``.grad = None``, so that the optimiser skips it as it
    would in one process (Adam with a zero gradient would still move it and bump its version: a GAN's
    generator between its two phases); one that only some ranks gave a gradient counts 0 for the others.
    One buffer rather than one call per tensor: a collective costs a fixed latency (tens of
    microseconds on gloo over loopback, more across machines) and a model has a handful of tensors.
    """
    if world_size() == 1:
        return loss
    like = params[0]
    # the loss travels in the gradients' dtype as a high and a low part (a float32 alone would keep
    # 7 digits of a sum of thousands of nats); no second collective, no float64 copy of the gradients
    hi = torch.tensor(loss, dtype=like.dtype)
    lo = torch.tensor(loss - float(hi), dtype=like.dtype)
    present = torch.tensor([p.grad is not None for p in params], dtype=like.dtype)
    flat = torch.cat([(p.grad.reshape(-1) * weight) if p.grad is not None else
                      torch.zeros(p.numel(), dtype=like.dtype, device=like.device) for p in params]
                     + [torch.cat([present, torch.stack([hi, lo])]).to(like.device)])
    _collective("gradient all-reduce", dist.all_reduce, flat)
    offset = 0
    flags = flat[-len(params) - 2:-2].tolist()
    for p, flag in zip(params, flags):
        if flag > 0:
            piece = flat[offset:offset + p.numel()].view_as(p)
            if p.grad is None:
                p.grad = piece.clone()
            else:
                p.grad.copy_(piece)
        offset += p.numel()
    return float(flat[-2].double() + flat[-1].double())
