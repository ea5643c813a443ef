"""The parts of a run spec shared by every family: data, training, objective.

A family's spec is ``{"family": ..., "model": {...}, "objective": {...},
"data": {...}, "train": {...}}``; ``ppl-models spec MODEL`` prints it with
defaults, and any leaf can be overridden on the command line as
``--set section.key=value`` (or ``--set key=value`` when the key is unique).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .data import BINARIZE_OPTIONS, DATASETS
from .errors import SpecError
from .specs import option


@dataclass
class DataSpec:
    dataset: str = option("mnist5k", doc="data set name", choices=tuple(DATASETS))
    path: Optional[str] = option(None, doc="directory of IDX files (mnist, fashion-mnist)")
    binarize: str = option("threshold", doc="binarisation", choices=tuple(BINARIZE_OPTIONS))
    threshold: float = option(0.5, doc="grey level above which a pixel is 1", min_exclusive=0.0)
    valid_size: Optional[int] = option(None, doc="validation images (None: the data set's default)", min=0)
    test_size: Optional[int] = option(None, doc="test images where no official test split exists", min=1)
    split_seed: int = option(0, doc="seed of the fixed split permutation")


@dataclass
class TrainSpec:
    epochs: int = option(100, doc="passes over the training split", min=1)
    batch_size: int = option(100, doc="minibatch size", min=1)
    lr: float = option(1e-3, doc="Adam learning rate", min_exclusive=0.0)
    lr_schedule: str = option("constant", doc="learning-rate schedule", choices=("constant", "exponential", "cosine"))
    lr_decay: float = option(1.0, doc="per-epoch factor of the exponential schedule", min_exclusive=0.0)
    clip_norm: Optional[float] = option(None, doc="clip the gradient's global norm", min_exclusive=0.0)
    patience: Optional[int] = option(None, doc="early stopping: epochs without validation gain", min=1)
    seed: int = option(0, doc="random seed")
    device: str = option("auto", doc="auto, cpu, cuda or cuda:N")
    eval_particles: int = option(5000, doc="importance samples per test image for the NLL", min=1)


@dataclass
class ObjectiveSpec:
    name: str = option("elbo", doc="training objective", choices=("elbo", "iwae"))
    num_particles: int = option(1, doc="samples per datapoint (k of the IWAE bound)", min=1)
    dreg: bool = option(False, doc="doubly-reparameterised guide gradients (iwae)")

    def validate(self):
        if self.dreg and self.name != "iwae":
            raise SpecError("objective.dreg=true needs objective.name=iwae")


# Fields that may change between a run and its resumption without making it another model.
RESUMABLE_CHANGES = {("train", "epochs"), ("train", "device"), ("train", "eval_particles")}
