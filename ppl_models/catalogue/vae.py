"""The VAE and IWAE families: one model/guide pair (:mod:`ppl_models.vae`), two objectives."""

from __future__ import annotations

from dataclasses import dataclass, field

from inference.iwae_elbo import IWAEELBO
from inference.multi_sample_elbo import MultiSampleELBO
from inference.training import PyroObjective

from ..errors import SpecError
from ..specs import option
from ..vae import VAE, VAEArchitecture
from .directed import DirectedFamily
from .sections import DataSpec, TrainSpec


@dataclass
class ObjectiveSpec:
    name: str = option("elbo", doc="training objective", choices=("elbo", "iwae"))
    num_particles: int = option(1, doc="samples per datapoint (k of the IWAE bound)", min=1)
    dreg: bool = option(False, doc="doubly-reparameterised guide gradients (iwae)")
    replay: bool = option(True, doc="run each update as the tensor program recorded from the first, without Pyro's "
                          "handlers (same losses, gradients and random numbers; checked against Pyro, which takes over "
                          "when they differ; not with dreg)")

    def validate(self):
        if self.dreg and self.name != "iwae":
            raise SpecError("objective.dreg=true needs objective.name=iwae")


@dataclass
class VAESpec:
    family: str = option("vae", doc="model family", choices=("vae",))
    model: VAEArchitecture = field(default_factory=VAEArchitecture)
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)


@dataclass
class IWAESpec(VAESpec):
    family: str = option("iwae", doc="model family", choices=("iwae",))
    objective: ObjectiveSpec = field(default_factory=lambda: ObjectiveSpec(name="iwae", num_particles=5))


class VAEFamily(DirectedFamily):
    name = "vae"
    summary = "variational autoencoder, Gaussian latent, Bernoulli / grey-level likelihood (Kingma & Welling 2014)"
    spec_class = VAESpec

    def build(self, spec) -> VAE:
        return VAE(spec.model)

    def make_objective(self, spec, module):
        o = spec.objective
        elbo = (IWAEELBO(num_particles=o.num_particles, dreg=o.dreg) if o.name == "iwae"
                else MultiSampleELBO(num_particles=o.num_particles))
        return PyroObjective(elbo, module.model, module.guide, replay=o.replay)

    def latent_decoder(self, module):
        """z ~ N(0, I) and the decoder's own likelihood p(x | z) (Bernoulli, continuous Bernoulli or Gaussian),
        for ``ppl-models query DIR log_prob --estimator latent_ais``."""
        decoder = module.decoder
        return module.arch.z_dim, lambda x: (lambda z: decoder.distribution(z).log_prob(x))


class IWAEFamily(VAEFamily):
    name = "iwae"
    summary = "importance-weighted autoencoder: the VAE pair on the k-sample bound, optional DReG gradients (Burda et al. 2016)"
    spec_class = IWAESpec
