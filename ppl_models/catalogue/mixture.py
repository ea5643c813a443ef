"""The mixture-of-Bernoullis family: the literature's MNIST baseline, trained by EM or by SVI with the
component enumerated (``TraceEnum_ELBO``); its test log-likelihood is exact, not a bound."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from pyro.infer import TraceEnum_ELBO

from inference.expectation_maximization import ExpectationMaximization
from inference.training import PyroObjective

from ..mixture import BernoulliMixture, MixtureArchitecture
from ..specs import option
from .answers import Answer, draws_to_inference_data
from .directed import DirectedFamily
from .query_io import positive
from .sections import DataSpec, TrainSpec


@dataclass
class MixtureObjectiveSpec:
    name: str = option("em", doc="em: closed-form EM, one iteration per epoch (Dempster et al. 1977); "
                       "enum_elbo: SVI on -log p(x) with the component enumerated", choices=("em", "enum_elbo"))


@dataclass
class MixtureSpec:
    family: str = option("mixture", doc="model family", choices=("mixture",))
    model: MixtureArchitecture = field(default_factory=lambda: MixtureArchitecture(num_components=50))
    objective: MixtureObjectiveSpec = field(default_factory=MixtureObjectiveSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=lambda: TrainSpec(epochs=50, batch_size=1000, lr=0.05))


class MixtureFamily(DirectedFamily):
    name = "mixture"
    summary = "mixture of multivariate Bernoullis, EM or enumerated SVI, exact log-likelihood (Everitt & Hand 1981)"
    spec_class = MixtureSpec
    estimator = "exact (log-sum-exp over the components)"

    def build(self, spec) -> BernoulliMixture:
        return BernoulliMixture(spec.model)

    def initialise(self, module, data) -> None:
        if module.arch.init == "data":
            module.init_from_data(data.train.x)

    def make_objective(self, spec, module):
        if spec.objective.name == "em":
            return ExpectationMaximization(module)
        return PyroObjective(TraceEnum_ELBO(max_plate_nesting=1), module.model, module.guide)

    def log_likelihood(self, trained, x, num_particles=None, progress=False):
        with torch.no_grad():
            return trained.module.log_prob(x.to(next(trained.module.parameters())))

    def posterior(self, trained, x, num_samples: int = 1) -> dict:
        """The exact posterior over the component of each image, p(z = k | x), shape ``(N, K)``."""
        with torch.no_grad():
            return {"z": trained.module.responsibilities(x.to(next(trained.module.parameters())))}

    def query_posterior(self, trained, inputs, num_samples: int = 100) -> Answer:
        """The exact posterior over the component, p(z = k | x); draws of it for the ArviZ data."""
        s = positive("num_samples", num_samples)
        r = trained.module.responsibilities(inputs.x)
        draws = {"z": torch.distributions.Categorical(probs=r).sample((s,))}
        numbers = {"estimator": "exact: p(z = k | x) = pi_k p(x | k) / p(x) (the responsibilities); draws are exact",
                   "settings": {"num_samples": s},
                   "latents": {"z": {"probabilities": r, "most_probable": r.argmax(-1)}}}
        return Answer("posterior", numbers, {"z_probs": r, **draws}, draws_to_inference_data(draws, inputs.names))

