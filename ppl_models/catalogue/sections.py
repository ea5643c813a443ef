"""The spec sections every family shares: data and training.

A family's spec is ``{"family": ..., "model": {...}, "objective": {...},
"data": {...}, "train": {...}}``; ``ppl-models spec MODEL`` prints it with
the family's defaults, and any leaf can be overridden on the command line as
``--set section.key=value`` (or ``--set key=value`` when the key is unique).
A family changes a default with ``field(default_factory=lambda: TrainSpec(lr=...))``:
a partly given section keeps the family's defaults for the keys it omits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from inference.optimizers import OPTIMIZERS, SCHEDULES

from ..data import BINARIZE_OPTIONS, DATASETS
from ..errors import SpecError
from ..specs import option


#: seeds go to torch, Python and NumPy alike, and NumPy takes 0 .. 2**32 - 1
MAX_SEED = 2**32 - 1


@dataclass
class DataSpec:
    dataset: str = option("mnist5k", doc="data set name", choices=tuple(DATASETS))
    path: Optional[str] = option(None, doc="directory of IDX files (mnist, fashion-mnist)")
    binarize: str = option("threshold", doc="binarisation", choices=tuple(BINARIZE_OPTIONS))
    threshold: float = option(0.5, doc="grey level above which a pixel is 1", min_exclusive=0.0)
    valid_size: Optional[int] = option(None, doc="validation images (None: the data set's default)", min=0)
    test_size: Optional[int] = option(None, doc="test images where no official test split exists", min=1)
    split_seed: int = option(0, doc="seed of the fixed split permutation", min=0, max=MAX_SEED)


@dataclass
class TrainSpec:
    epochs: int = option(100, doc="passes over the training split", min=1)
    batch_size: int = option(100, doc="minibatch size", min=1)
    optimizer: str = option("adam", doc="adam, or sgd with momentum", choices=OPTIMIZERS)
    lr: float = option(1e-3, doc="learning rate", min_exclusive=0.0)
    momentum: float = option(0.0, doc="sgd: momentum of the parameter velocity, in [0, 1)", min=0.0)
    weight_decay: float = option(0.0, doc="L2 penalty (energy models: on the couplings only)", min=0.0)
    lr_schedule: str = option("constant", doc="learning-rate schedule, per update (linear: down to lr_final x lr "
                              "at the last update; raising epochs on resume stretches it)", choices=SCHEDULES)
    lr_final: float = option(0.0, doc="linear: fraction of lr reached at the last update", min=0.0, max=1.0)
    lr_decay: float = option(1.0, doc="exponential: factor per epoch", min_exclusive=0.0)
    clip_norm: Optional[float] = option(None, doc="clip the gradient's global norm", min_exclusive=0.0)
    patience: Optional[int] = option(None, doc="early stopping: epochs without validation gain", min=1)
    seed: int = option(0, doc="random seed", min=0, max=MAX_SEED)
    device: str = option("auto", doc="auto, cpu, cuda or cuda:N")
    eval_particles: int = option(5000, doc="importance samples per test image for the NLL", min=1)

    def validate(self):
        if self.momentum >= 1:
            raise SpecError(f"train.momentum must lie in [0, 1), got {self.momentum!r}")

    def fit_options(self) -> dict:
        """The keyword arguments of :func:`inference.training.fit` this section sets."""
        return {key: getattr(self, key) for key in ("epochs", "batch_size", "optimizer", "lr", "momentum",
                                                     "weight_decay", "lr_schedule", "lr_final", "lr_decay",
                                                     "clip_norm", "patience", "seed", "device")}


# Fields that may change between a run and its resumption without making it another model.
RESUMABLE_CHANGES = {("train", "epochs"), ("train", "device"), ("train", "eval_particles")}
