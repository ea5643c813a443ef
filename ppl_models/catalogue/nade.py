"""The autoregressive families ``nade`` and ``fvsbn`` (:mod:`ppl_models.nade`): maximum likelihood, exact NLL.

Neither model has latent variables: the guide is empty, so Pyro's ``Trace_ELBO``
is exactly -log p(x) and training through the shared driver is maximum
likelihood. The test NLL is exact (the chain rule), not an importance-sampled
bound; ``train.eval_particles`` is unused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO

from inference.training import PyroObjective

from ..errors import SpecError
from ..nade import FVSBN, NADE, FVSBNArchitecture, NADEArchitecture
from ..specs import option
from .answers import Answer, draws_to_inference_data, estimate, plain
from .directed import DirectedFamily
from .plots import save_completion_figure, save_training_curve
from .query_io import make_mask, positive
from .sections import DataSpec, TrainSpec


@dataclass
class MaximumLikelihoodSpec:
    name: str = option("mle", doc="maximum likelihood: Trace_ELBO with the empty guide, exactly -log p(x) per image",
                       choices=("mle",))


@dataclass
class NADESpec:
    family: str = option("nade", doc="model family", choices=("nade",))
    model: NADEArchitecture = field(default_factory=NADEArchitecture)
    objective: MaximumLikelihoodSpec = field(default_factory=MaximumLikelihoodSpec)
    data: DataSpec = field(default_factory=DataSpec)
    # on MNIST-5k's default split the validation NLL levels off after about 35 epochs (81.3 nats at 34-39)
    train: TrainSpec = field(default_factory=lambda: TrainSpec(epochs=35, batch_size=100, lr=3e-3))


@dataclass
class FVSBNSpec:
    family: str = option("fvsbn", doc="model family", choices=("fvsbn",))
    model: FVSBNArchitecture = field(default_factory=FVSBNArchitecture)
    objective: MaximumLikelihoodSpec = field(default_factory=MaximumLikelihoodSpec)
    data: DataSpec = field(default_factory=DataSpec)
    # 307k weights on a few thousand images overfit: on MNIST-5k's default split the validation NLL is
    # lowest at epoch 75 (87.8 nats) and rises after it (98.9 at epoch 281)
    train: TrainSpec = field(default_factory=lambda: TrainSpec(epochs=75, batch_size=100, lr=3e-3))


class AutoregressiveFamily(DirectedFamily):
    """What ``nade`` and ``fvsbn`` share: maximum likelihood, exact log p(x), ancestral samples."""

    estimator = "exact (chain rule over the pixels)"

    def initialise(self, module, data) -> None:
        module.initialise_visible_bias(data.train.x)

    def make_objective(self, spec, module):
        return PyroObjective(Trace_ELBO(max_plate_nesting=1), module.model, module.guide)

    def save_curves(self, spec, history: list, path: str) -> None:
        save_training_curve(history, path, title=f"{spec.family}: negative log-likelihood per image (nats, exact)")

    def log_likelihood(self, trained, x, num_particles=None, progress=False) -> torch.Tensor:
        """Exact log p(x) per image; ``num_particles`` is ignored (there is nothing to sample)."""
        module = trained.module
        with torch.no_grad():
            return module.log_prob(x.to(next(module.parameters())))

    def evaluate(self, trained, data, num_particles=None, progress=False, seed=None) -> dict:
        metrics = super().evaluate(trained, data, num_particles, progress, seed)
        metrics.pop("eval_particles", None)  # exact: no particles
        return metrics

    def sample(self, trained, n: int, **options) -> torch.Tensor:
        """``n`` ancestral samples drawn pixel by pixel, shown as the probabilities
        p(x_d = 1 | x_<d) each pixel was drawn with (E[x_d | parents], as for every directed family)."""
        self.check_options(options)
        return trained.module.sample(n)[1]

    def sample_grid(self, trained, n, path, progress=False, **options) -> None:
        from .plots import save_image_grid

        save_image_grid(self.sample(trained, n, **options), trained.image_shape, path,
                        title=f"{trained.spec.family}: {n} ancestral samples (p(x_d = 1 | sampled x_<d))")

    def posterior(self, trained, x, num_samples: int = 1) -> dict:
        """No latent variables: the exact conditionals ``{"conditionals": p(x_d = 1 | x_<d)}``, ``(N, D)``."""
        module = trained.module
        with torch.no_grad():
            return {"conditionals": module.conditionals(x.to(next(module.parameters())))}


    # -- completion after a prefix: exact, by the chain rule ------------------------------------
    def why_not(self, trained, kind):
        if kind == "complete":  # no latents, but the chain rule conditions on a prefix exactly
            return None
        return super().why_not(trained, kind)

    def query_complete(self, trained, inputs, mask="top", num_samples: int = 3) -> Answer:
        """Completions of the pixels after an observed prefix (in the model's raster order: ``--mask top``, or a
        mask file whose observed pixels are a prefix of each image), drawn exactly from p(x_after | x_prefix)
        by continuing the chain rule; and the exact log-probability of each prefix. Any other mask is refused:
        conditioning on pixels after a missing one is not the chain rule (it needs a sum over the missing ones)."""
        s = positive("num_samples", num_samples)
        module, x = trained.module, inputs.x
        observed, mask_text = make_mask(mask, trained.image_shape, x.shape[0], 0)
        observed = observed.to(x.device).expand_as(x)
        prefix = observed.sum(1)
        is_prefix = torch.arange(x.shape[1], device=x.device) < prefix.unsqueeze(1)
        if not bool((observed == is_prefix).all()):
            raise SpecError(f"{self.name} completes the pixels after an observed prefix in its raster order "
                            f"(--mask top, or a mask file observing the first pixels of each image); {mask_text} "
                            "is not a prefix")
        n, d = x.shape
        rows = x.repeat_interleave(s, 0).to(module.bias.dtype)
        given = observed.repeat_interleave(s, 0)
        with torch.no_grad():
            state = module.initial_state(n * s)
            values, probs = torch.empty_like(rows), torch.empty_like(rows)
            log_prefix = rows.new_zeros(n * s)
            for j in range(d):
                logit = module.step_logit(state, j)
                probs[:, j] = torch.sigmoid(logit)
                values[:, j] = torch.where(given[:, j], rows[:, j], torch.bernoulli(probs[:, j]))
                # log p(x_j | x_<j) of the given pixels: the exact log-probability of the prefix
                log_prefix += torch.where(given[:, j], values[:, j] * logit - F.softplus(logit), 0.0)
                state = module.advance(state, j, values[:, j])
        completions, means = values.view(n, s, d), torch.where(given, values, probs).view(n, s, d)
        missing = ~observed
        error = ((means.mean(1) - x).abs() * missing).sum(1) / missing.sum(1).clamp(min=1)
        log_observed = log_prefix.view(n, s)[:, 0]
        numbers = {"estimator": "exact: the chain rule continued from the observed prefix, pixel by pixel "
                                "(ancestral draws of p(x_after | x_prefix), independent)",
                   "mask": mask_text, "settings": {"num_samples": s},
                   "images_shown": "per row: the image, its observed prefix (missing grey), then each completion's "
                                   "p(x_d = 1 | x_<d) of the drawn pixels",
                   "inputs": [{"input": name, "log_prob_observed": estimate(float(v), 0.0),
                               "missing_pixels_mean_abs_error": plain(e)}
                              for name, v, e in zip(inputs.names, log_observed, error)]}
        image_shape = trained.image_shape
        return Answer("complete", numbers, {"completions": completions, "completion_means": means, "mask": observed},
                      draws_to_inference_data({"x": completions.transpose(0, 1)}, inputs.names),
                      lambda path: save_completion_figure(x.cpu(), observed.cpu(), means.cpu(), image_shape, path,
                                                          title=f"{self.name}: exact completion after the prefix, "
                                                                f"{mask_text}"))


class NADEFamily(AutoregressiveFamily):
    name = "nade"
    summary = "neural autoregressive distribution estimator, exact log-likelihood (Larochelle & Murray 2011)"
    spec_class = NADESpec

    def build(self, spec) -> NADE:
        return NADE(spec.model)


class FVSBNFamily(AutoregressiveFamily):
    name = "fvsbn"
    summary = "fully visible sigmoid belief net: a logistic regression per pixel, exact log-likelihood (Frey 1998)"
    spec_class = FVSBNSpec

    def build(self, spec) -> FVSBN:
        return FVSBN(spec.model)
