"""``ppl-models train`` on several ranks: rank 0 owns the run directory, the others only train beside it.

Under a process group (``torchrun``, or ``ppl-models train --nproc N``) every rank
runs :func:`~ppl_models.catalogue.train`. Rank 0 does what one process does
(lock, spec, resume, training, evaluation, samples, plots) and tells the others
(:func:`tell`) whether there is anything to train; the others (:func:`follow`)
load the same data, build the same model from the same seed and run the same
family's ``train`` into a scratch directory that is thrown away, so that their
:func:`~inference.training.fit` is the data-parallel twin of rank 0's (the
checkpoint itself is read by rank 0 and broadcast by the driver). Evaluation
and samples are rank 0's alone (:func:`inference.distributed.solo`); to spread
an evaluation's AIS runs or particles over ranks, run ``ppl-models evaluate``
under ``torchrun``.
"""

from __future__ import annotations

import tempfile

import torch

from inference import distributed

from .run_directory import RunDirectory

__all__ = ["follow", "tell"]

TRAIN, FINISHED = "train", "finished"


def tell(decision: str) -> None:
    """Rank 0: tell the other ranks to train (``"train"``) or that the run is already finished."""
    distributed.broadcast_object(decision)


def follow(fam, spec) -> None:
    """A rank other than 0: train beside rank 0, writing nothing that lasts; returns None."""
    data = fam.load_data(spec)
    fam.resolve(spec, data)
    if distributed.broadcast_object(None) != TRAIN:
        return
    with tempfile.TemporaryDirectory(prefix=f"ppl-models-rank{distributed.rank()}-") as scratch:
        torch.manual_seed(spec.train.seed)  # the same initial weights as rank 0 (the driver broadcasts them too)
        fam.train(spec, RunDirectory(scratch), data, False, lambda *_: None)
    return
