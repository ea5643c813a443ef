"""The RBM families: ``rbm`` (binary) and ``gbrbm`` (Gaussian-Bernoulli, grey levels), on the energy base.

``gbrbm`` models grey levels: with ``model.standardize`` (the default) each
pixel is z-scored with the training split's mean and standard deviation
(floored at ``model.min_scale``, since border pixels barely vary), the usual
protocol (Hinton's practical guide, Sec. 13.2; Cho et al. 2011); the scaling
is part of the model (:class:`~ppl_models.rbm.GaussianBernoulliRBM`) and its
log-likelihoods are densities of the pixel values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..errors import SpecError
from ..rbm import RBM, GaussianBernoulliRBM
from ..specs import option
from .energy import EnergyFamily, num_visible
from .sections import DataSpec, TrainSpec


@dataclass
class RBMModelSpec:
    num_hidden: int = option(500, doc="hidden units", min=1)
    num_visible: Optional[int] = option(None, doc="visible units; None: pixels per image of the data", min=1)
    weight_scale: float = option(0.01, doc="std of the initial weights (Hinton's guide: 0.01)", min=0.0)
    base_rate_init: bool = option(True, doc="start the visible biases at the training data's log-odds / means")


@dataclass
class GBRBMModelSpec(RBMModelSpec):
    num_hidden: int = option(200, doc="hidden units", min=1)
    sigma: float = option(1.0, doc="initial (or fixed) std of every visible unit, in standardised units",
                          min_exclusive=0.0)
    learn_sigma: bool = option(False, doc="train the per-unit log std (Cho et al. 2011)")
    standardize: bool = option(True, doc="z-score each pixel with the training split's mean and std")
    min_scale: float = option(0.1, doc="floor of the per-pixel std used by standardize (grey levels in [0, 1])",
                              min_exclusive=0.0)


@dataclass
class CDObjectiveSpec:
    name: str = option("pcd", doc="pcd: persistent chains (Tieleman 2008); cd: chains restart at the data",
                       choices=("pcd", "cd"))
    k: int = option(1, doc="Gibbs sweeps per parameter update", min=1)
    num_chains: Optional[int] = option(100, doc="persistent chains of PCD (None: batch_size)", min=1)
    sparsity_target: Optional[float] = option(None, doc="target mean activation of each hidden unit",
                                              min_exclusive=0.0)
    sparsity_cost: float = option(0.1, doc="weight of the sparsity penalty", min=0.0)
    fused_sgd: bool = option(True, doc="with SGD and no weight decay (train.weight_decay 0; any train.momentum): fold the update, or the momentum's, into the statistic's GEMM (the same update up to rounding, without a pass over the weights); false: the optimiser applies it")

    def validate(self):
        if self.sparsity_target is not None and self.sparsity_target >= 1:
            raise SpecError(f"objective.sparsity_target must lie in (0, 1), got {self.sparsity_target!r}")


@dataclass
class EnergyTrainSpec(TrainSpec):
    """The shared training section with an energy model's defaults and its evaluation settings."""

    batch_size: int = option(20, doc="minibatch size", min=1)
    optimizer: str = option("sgd", doc="adam, or sgd with momentum", choices=("adam", "sgd"))
    lr: float = option(0.01, doc="learning rate", min_exclusive=0.0)
    momentum: float = option(0.9, doc="sgd: momentum of the parameter velocity, in [0, 1)", min=0.0)
    weight_decay: float = option(1e-3, doc="L2 penalty on the couplings (smoother models, and AIS that agrees "
                                 "with itself: see benchmarks/rbm_mnist5k.py)", min=0.0)
    lr_schedule: str = option("linear", doc="learning-rate schedule, per update (linear: down to lr_final x lr at "
                              "the last update; raising epochs on resume stretches it)",
                              choices=("constant", "linear", "exponential", "cosine"))
    lr_decay: float = option(0.9, doc="exponential: factor per epoch", min_exclusive=0.0)
    eval_particles: int = option(100, doc="AIS runs (importance samples of log Z), split into two groups", min=1)
    ais_temperatures: int = option(14500, doc="AIS temperatures (Salakhutdinov & Murray's schedule, scaled)", min=3)
    ais_schedule: Optional[list[float]] = option(None, doc="explicit AIS temperatures, increasing from 0 to 1 "
                                                 "(overrides ais_temperatures)")
    sample_sweeps: int = option(1000, doc="Gibbs sweeps per picture in samples.png", min=1)

    def validate(self):
        super().validate()
        s = self.ais_schedule
        if s is not None:
            if len(s) < 2 or s[0] != 0 or s[-1] != 1:
                raise SpecError(f"train.ais_schedule must start at 0 and end at 1 (at least 2 values), got {s!r}")
            for i in range(1, len(s)):
                if s[i] <= s[i - 1]:
                    raise SpecError(f"train.ais_schedule must be strictly increasing in [0, 1], got {s[i - 1]!r} "
                                    f"then {s[i]!r} at index {i}")


@dataclass
class RBMRunSpec:
    family: str = option("rbm", doc="model family", choices=("rbm",))
    model: RBMModelSpec = field(default_factory=RBMModelSpec)
    objective: CDObjectiveSpec = field(default_factory=CDObjectiveSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: EnergyTrainSpec = field(default_factory=EnergyTrainSpec)


@dataclass
class GBRBMRunSpec:
    family: str = option("gbrbm", doc="model family", choices=("gbrbm",))
    model: GBRBMModelSpec = field(default_factory=GBRBMModelSpec)
    objective: CDObjectiveSpec = field(default_factory=CDObjectiveSpec)
    data: DataSpec = field(default_factory=lambda: DataSpec(dataset="digits", binarize="none"))
    train: EnergyTrainSpec = field(default_factory=lambda: EnergyTrainSpec(lr=0.001, weight_decay=0.0))


class RBMFamily(EnergyFamily):
    name = "rbm"
    summary = ("binary restricted Boltzmann machine, CD-k / PCD-k by block Gibbs, AIS log Z "
               "(Hinton 2002; Tieleman 2008; Salakhutdinov & Murray 2008)")
    spec_class = RBMRunSpec

    def build(self, spec) -> RBM:
        return RBM(num_visible(spec), spec.model.num_hidden, weight_scale=spec.model.weight_scale)


class GBRBMFamily(EnergyFamily):
    name = "gbrbm"
    summary = ("Gaussian-Bernoulli RBM for grey levels, per-pixel standardised, optional learned variances "
               "(Cho, Ilin & Raiko 2011)")
    spec_class = GBRBMRunSpec

    def needs_binary_data(self, spec) -> bool:
        return False

    def build(self, spec) -> GaussianBernoulliRBM:
        m = spec.model
        return GaussianBernoulliRBM(num_visible(spec), m.num_hidden, sigma=m.sigma, learn_sigma=m.learn_sigma,
                                    weight_scale=m.weight_scale)

    def initialise(self, spec, module, x_pixels) -> None:
        if spec.model.standardize:
            module.fit_standardization(x_pixels, spec.model.min_scale)
        super().initialise(spec, module, x_pixels)
