"""The sigmoid belief net family: one model/guide pair (:mod:`ppl_models.sbn`), five training algorithms.

``nvil`` (Mnih & Gregor 2014), ``vimco`` (Mnih & Rezende 2016), ``rws``
(reweighted wake-sleep, Bornschein & Bengio 2015), ``wake_sleep`` (Hinton et
al. 1995) and ``tracegraph`` (Pyro's own ``TraceGraph_ELBO``, the library
baseline), all through the shared driver. The test NLL is the shared
importance-sampled bound (k = 5000); a net with at most
:data:`EXACT_BITS` hidden units in all is also scored exactly by enumeration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from pyro.infer import TraceGraph_ELBO

from inference.directed_enumeration import exact_log_marginal
from inference.iwae_elbo import IWAEELBO
from inference.nvil import NVIL, NVILBaseline
from inference.reweighted_wake_sleep import ReweightedWakeSleep
from inference.training import PyroObjective
from inference.vimco import VIMCO

from ..errors import SpecError
from ..sbn import SBNArchitecture, SigmoidBeliefNet
from ..specs import option
from .directed import DirectedFamily
from .sections import DataSpec, TrainSpec

OBJECTIVES = ("nvil", "vimco", "rws", "wake_sleep", "tracegraph", "iwae")
MULTI_SAMPLE = ("vimco", "rws", "iwae")
#: nets with at most this many hidden units are also scored by exact enumeration
EXACT_BITS = 16


@dataclass
class SBNObjectiveSpec:
    name: str = option("nvil", doc="nvil | vimco | rws | wake_sleep | tracegraph (Pyro's TraceGraph_ELBO) | "
                       "iwae (the k-sample bound with a plain score-function gradient)", choices=OBJECTIVES)
    num_particles: Optional[int] = option(None, doc="vimco, rws, iwae: samples per datapoint k (None: 5); the "
                                          "others use 1", min=1)
    insomnia: float = option(1.0, doc="rws: weight of wake-phi against sleep-phi in the guide's gradient, in [0, 1]",
                             min=0.0, max=1.0)
    baseline_hidden: int = option(100, doc="nvil: tanh units of the input-dependent baseline b(x) (0: running "
                                  "mean only)", min=0)
    baseline_decay: float = option(0.8, doc="nvil: decay of the running mean and variance of the signals",
                                   min=0.0, max=0.99)
    local_signals: bool = option(True, doc="nvil: one learning signal per layer (only the terms it can change)")
    normalise_variance: bool = option(True, doc="nvil: divide the centred signal by max(1, running sd)")
    replay: bool = option(True, doc="nvil, vimco, rws, wake_sleep, iwae: run each update as the tensor program recorded from the first, "
                          "without Pyro's handlers (same losses, gradients, running statistics and random numbers; "
                          "checked against Pyro, which takes over when they differ); an NVIL epoch takes 1.05x a "
                          "hand-written loop's with it, 1.27x without (benchmarks/sbn_vs_plain.py)")

    def validate(self):
        k = self.num_particles
        if k is not None and self.name not in MULTI_SAMPLE and k != 1:
            raise SpecError(f"objective.num_particles={k} but objective {self.name} uses one sample per datapoint; "
                            f"the multi-sample objectives are {', '.join(MULTI_SAMPLE)}")
        if k == 1 and self.name in ("vimco", "rws"):
            raise SpecError(f"objective {self.name} needs objective.num_particles >= 2, got 1"
                            + (" (one sample per datapoint is wake_sleep)" if self.name == "rws" else
                               " (its baselines compare each sample with the others)"))

    @property
    def k(self) -> int:
        return (self.num_particles or 5) if self.name in MULTI_SAMPLE else 1


@dataclass
class SBNSpec:
    family: str = option("sbn", doc="model family", choices=("sbn",))
    model: SBNArchitecture = field(default_factory=SBNArchitecture)
    objective: SBNObjectiveSpec = field(default_factory=SBNObjectiveSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=lambda: TrainSpec(epochs=100, batch_size=100, lr=3e-3))


class SBNFamily(DirectedFamily):
    name = "sbn"
    summary = ("sigmoid belief net with a recognition network: NVIL, VIMCO, reweighted wake-sleep, wake-sleep "
               "or TraceGraph_ELBO (Neal 1992; Mnih & Gregor 2014)")
    spec_class = SBNSpec

    def build(self, spec) -> SigmoidBeliefNet:
        return SigmoidBeliefNet(spec.model)

    def initialise(self, module, data) -> None:
        module.initialise_visible_bias(data.train.x)

    def make_objective(self, spec, module):
        o = spec.objective
        if o.name == "nvil":
            signals = len(spec.model.hidden) if o.local_signals else 1
            baseline = NVILBaseline(spec.model.x_dim, signals, hidden=o.baseline_hidden, decay=o.baseline_decay)
            elbo = NVIL(baseline, chain=module.chain if o.local_signals else None,
                        normalise_variance=o.normalise_variance)
        elif o.name == "vimco":
            elbo = VIMCO(num_particles=o.k, max_plate_nesting=1)
        elif o.name == "iwae":
            elbo = IWAEELBO(num_particles=o.k, max_plate_nesting=1)
        elif o.name == "rws":
            elbo = ReweightedWakeSleep(num_particles=o.k, insomnia=o.insomnia, max_plate_nesting=1)
        elif o.name == "wake_sleep":
            elbo = ReweightedWakeSleep(num_particles=1, insomnia=0.0, max_plate_nesting=1)
        else:
            elbo = TraceGraph_ELBO(max_plate_nesting=1)
        return PyroObjective(elbo, module.model, module.guide, replay=o.replay)

    def run_metrics(self, spec) -> dict:
        return {"objective": spec.objective.name, "num_particles": spec.objective.k}

    def evaluate(self, trained, data, num_particles=None, progress=False, seed=None) -> dict:
        metrics = super().evaluate(trained, data, num_particles, progress, seed)
        module = trained.module
        if module.num_hidden <= EXACT_BITS:
            ll = exact_log_marginal(module.model, module.guide, data.test.x)
            metrics.update(test_nll_exact=-ll.mean().item(),
                           importance_sampling_gap=metrics["test_nll"] + ll.mean().item())
        return metrics

    def summary_line(self, metrics: dict, directory=None) -> str:
        line = super().summary_line(metrics, directory)
        if "test_nll_exact" in metrics:
            line += f"; exact {metrics['test_nll_exact']:.2f} by enumeration"
        return line

    def posterior(self, trained, x, num_samples: int = 1) -> dict:
        """Draws of every hidden layer from the recognition network q(h | x), each ``(num_samples, N, units)``."""
        with torch.no_grad():
            return super().posterior(trained, x, num_samples)
