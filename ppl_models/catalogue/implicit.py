"""The implicit families ``gan`` and ``gmmn`` (:mod:`ppl_models.gan`, :mod:`ppl_models.gmmn`): generators that can only be sampled.

Both models draw a latent code z ~ N(0, I) and return a deterministic image
G(z); they have no density on images, so they are evaluated as Wu et al.
(2017) and Gretton et al. (2012) propose for such models:

- the kernel MMD² between generated and held-out test images with its permutation p-value
  (:mod:`inference.mmd`): a small p-value says the test tells the model's images from real ones;
- log p(x) by AIS over the latent code with a Gaussian observation model N(x; G(z), σ² I), σ fitted on
  validation images (:mod:`inference.latent_ais`): a stochastic lower bound on the log-density *of that
  smoothed model*, in nats per image on the grey-level scale [0, 1] (a density: it can be positive).

The GAN trains by the non-saturating loss with one-sided label smoothing and, if ``objective.gradient_penalty``
is above 0, Mescheder et al.'s R1 penalty (:mod:`inference.adversarial`):
one discriminator step, then one generator step, per batch, through the shared driver; the GMMN by MMD²
with a bank of bandwidths (:mod:`inference.moment_matching`). During training the generator's images at
25 fixed latent codes are kept at ``train.snapshots`` epochs (``fixed_latents.png``, one row per epoch).
Queries: ``sample`` and ``log_prob``; an implicit model has no posterior or completion to offer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from inference.adversarial import NonSaturatingGAN
from inference.devices import resolve_device
from inference.errors import SpecError as InferenceSpecError
from inference.latent_ais import fit_sigma, latent_ais_log_likelihood
from inference.mmd import check_bandwidths, mmd_permutation_test
from inference.moment_matching import MomentMatching
from inference.training import with_auxiliary

from ..errors import SpecError
from ..gan import GAN, Discriminator, GANArchitecture
from ..gmmn import GMMN, GMMNArchitecture
from ..specs import option
from . import directed
from .answers import Answer
from .directed import DirectedFamily
from .family import count
from .implicit_plots import FixedLatentSnapshots
from .plots import save_image_grid, save_training_curve
from .query_io import positive
from .run_directory import CHECKPOINT, CURVE, PER_IMAGE_KEY
from .sections import DataSpec, TrainSpec

#: Li et al.'s bank on pixels in [0, 1]; MNIST digits lie about 5 to 12 apart in Euclidean distance
BANDWIDTHS = [2.0, 5.0, 10.0, 20.0, 40.0, 80.0]


def _checked_bandwidths(key: str, values) -> None:
    try:
        check_bandwidths(values)
    except InferenceSpecError as e:
        raise SpecError(f"{key}: {e}") from None


@dataclass
class ImplicitTrainSpec(TrainSpec):
    snapshots: int = option(10, doc="epochs at which the images of 25 fixed latent codes are kept (0: none)", min=0,
                            max=1000)
    mmd_bandwidths: list[float] = option(BANDWIDTHS, doc="Gaussian kernel bandwidths of the test MMD", min_exclusive=0.0)
    mmd_images: int = option(1000, doc="test images (and as many samples) in the MMD test", min=2)
    mmd_permutations: int = option(1000, doc="relabellings of the MMD permutation test", min=1)
    ais_images: int = option(50, doc="test images scored by latent AIS", min=1)
    ais_temperatures: int = option(200, doc="latent AIS temperatures", min=2)
    ais_sigma: Optional[float] = option(None, doc="std of the Gaussian p(x | z) of latent AIS; None: fitted on "
                                        "validation images", min_exclusive=0.0)
    ais_sigma_images: int = option(20, doc="validation images the AIS sigma is fitted on", min=1)

    def validate(self):
        super().validate()
        _checked_bandwidths("train.mmd_bandwidths", self.mmd_bandwidths)
        if self.ais_sigma is not None and self.ais_sigma < 1e-6:  # below this float32 scores every image -inf
            raise SpecError(f"train.ais_sigma must be >= 1e-6 (pixels lie in [0, 1]), got {self.ais_sigma!r}")


@dataclass
class AdversarialSpec:
    name: str = option("nonsaturating", doc="non-saturating GAN loss (Goodfellow et al. 2014)",
                       choices=("nonsaturating",))
    label_smoothing: float = option(0.1, doc="one-sided: the training images' target is 1 - this", min=0.0, max=0.99)
    # off by default: the default reproduces the introduction's GAN, whose stabiliser is label smoothing alone
    gradient_penalty: float = option(0.0, doc="gamma of the R1 penalty gamma/2 sum_i |grad_x logit D(x_i)|^2 on the "
                                     "training images, x in [0, 1] (Mescheder et al. 2018; 0: none)", min=0.0)
    adam_beta1: float = option(0.5, doc="Adam's first-moment decay (0.5: Radford et al.'s GAN setting)",
                               min=0.0, max=0.999)


@dataclass
class MMDSpec:
    name: str = option("mmd", doc="unbiased MMD^2 between generated and training images", choices=("mmd",))
    bandwidths: list[float] = option(BANDWIDTHS, doc="Gaussian kernel bandwidths (pixels in [0, 1])",
                                     min_exclusive=0.0)

    def validate(self):
        _checked_bandwidths("objective.bandwidths", self.bandwidths)


@dataclass
class GANSpec:
    family: str = option("gan", doc="model family", choices=("gan",))
    model: GANArchitecture = field(default_factory=GANArchitecture)
    objective: AdversarialSpec = field(default_factory=AdversarialSpec)
    data: DataSpec = field(default_factory=lambda: DataSpec(binarize="none"))
    # latent AIS by default: 4 runs x 200 temperatures x 50 test images, a few CPU minutes for this generator
    # batch 32 on MNIST-5k's 3500 training images is 110 updates an epoch: 273 epochs are 30,030 iterations
    train: ImplicitTrainSpec = field(default_factory=lambda: ImplicitTrainSpec(epochs=273, batch_size=32, lr=2e-4,
                                                                               eval_particles=4))


@dataclass
class GMMNSpec:
    family: str = option("gmmn", doc="model family", choices=("gmmn",))
    model: GMMNArchitecture = field(default_factory=GMMNArchitecture)
    objective: MMDSpec = field(default_factory=MMDSpec)
    data: DataSpec = field(default_factory=lambda: DataSpec(binarize="none"))
    # Li et al.'s batch of 1000: 4 updates an epoch on MNIST-5k
    train: ImplicitTrainSpec = field(default_factory=lambda: ImplicitTrainSpec(epochs=400, batch_size=1000, lr=1e-3,
                                                                               eval_particles=4))


AIS_WORDS = ("annealed importance sampling over the latent code (Wu et al. 2017) with a Gaussian observation "
             "model N(x; G(z), sigma^2 I): log of the mean of the runs' weights, a stochastic lower bound "
             "(E[estimate] <= log p(x)) on the log-density of that smoothed model")


class ImplicitFamily(DirectedFamily):
    """What ``gan`` and ``gmmn`` share: training with fixed-latent snapshots, MMD and latent-AIS evaluation."""

    queries = ("sample", "log_prob")
    estimator = AIS_WORDS
    evaluate_options = ("temperatures",)

    def needs_binary_data(self, spec) -> bool:
        return False

    def fit_options(self, spec) -> dict:
        return spec.train.fit_options()

    def train(self, spec, run, data, progress, log) -> dict:
        module = self.build(spec)
        log(f"training {spec.family} on {spec.data.dataset} ({data.train.x.shape[0]} images, "
            f"{'no' if data.valid is None else data.valid.x.shape[0]} validation) for "
            f"{count(spec.train.epochs, 'epoch')} -> {run.directory}")
        objective = self.make_objective(spec, module)
        snapshots = FixedLatentSnapshots(module, run, data.image_shape, spec.train.epochs, spec.train.snapshots,
                                         seed=spec.train.seed, title=spec.family)
        result = directed.fit(objective, (data.train.x,), module=with_auxiliary(module, objective),
                              **self.fit_options(spec), valid=(data.valid.x,) if data.valid is not None else None,
                              transform=data.train_transform, checkpoint_path=run.path(CHECKPOINT),
                              progress=progress, on_epoch_end=snapshots, log=log)
        module.cpu()
        metrics = run.save_trained(module, {
            "family": spec.family, "objective": spec.objective.name, "resumed_from_epoch": result.resumed_from,
            "stopped_early": result.stopped_early, "image_shape": list(data.image_shape), "history": result.history})
        save_training_curve(result.history, run.path(CURVE), title=f"{spec.family}: {self.curve_title}")
        return metrics

    # -- evaluation -------------------------------------------------------------------------
    def _decoder(self, module):
        module.eval()  # batch normalisation by its running statistics: each image on its own
        return module

    def observation_sigma(self, trained, data=None, seed: int = 0) -> tuple:
        """σ of the Gaussian observation model: the spec's, the one fitted at evaluation, or fitted now on
        validation images (``(sigma, {grid value: mean log p})``)."""
        t = trained.spec.train
        if t.ais_sigma is not None:
            return t.ais_sigma, None
        if "ais_sigma" in trained.metrics:
            return trained.metrics["ais_sigma"], None
        data = data or trained.data()
        held_out = data.valid if data.valid is not None else data.train
        module = self._decoder(trained.module)
        x = held_out.x[:t.ais_sigma_images].to(next(module.parameters()))
        sigma, scores = fit_sigma(module, x, module.z_dim, num_temperatures=max(2, t.ais_temperatures // 5),
                                  num_runs=2, seed=seed)
        return sigma, scores

    def _ais(self, trained, x, runs=None, temperatures=None, sigma=None, seed=0, progress=False):
        t = trained.spec.train
        module = self._decoder(trained.module)
        return latent_ais_log_likelihood(module, x.to(next(module.parameters())), module.z_dim,
                                         sigma=sigma if sigma is not None else self.observation_sigma(trained)[0],
                                         num_temperatures=temperatures or t.ais_temperatures,
                                         num_runs=runs or t.eval_particles, seed=seed, progress=progress)

    def log_likelihood(self, trained, x, num_particles=None, progress=False) -> torch.Tensor:
        """Latent-AIS log p(x) per image under the Gaussian observation model (``num_particles``: AIS runs)."""
        with torch.no_grad():
            return self._ais(trained, x, runs=num_particles, seed=trained.spec.train.seed, progress=progress).log_prob

    def evaluate(self, trained, data, num_particles=None, progress=False, seed=None, temperatures=None) -> dict:
        t = trained.spec.train
        seed = t.seed if seed is None else seed
        module = trained.module.to(resolve_device(t.device))
        started = time.perf_counter()
        torch.manual_seed(seed)
        m = min(t.mmd_images, data.test.x.shape[0])
        samples = self.sample(trained, m).cpu()
        test = mmd_permutation_test(samples.double(), data.test.x[:m].double(), t.mmd_bandwidths,
                                    t.mmd_permutations, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            sigma, scores = self.observation_sigma(trained, data, seed)
            x = data.test.x[:t.ais_images]
            r = self._ais(trained, x, num_particles, temperatures, sigma, seed, progress)
        module.cpu()
        ll = r.log_prob.cpu()
        metrics = dict(trained.metrics)
        metrics.update(test_mmd2=test.mmd2, test_mmd_p_value=test.p_value, mmd=test.as_dict(),
                       test_log_likelihood=ll.mean().item(), test_nll=-ll.mean().item(),
                       test_nll_stderr=ll.std().item() / len(ll) ** 0.5 if len(ll) > 1 else float("nan"),
                       ais_sigma=float(sigma), ais_sigma_scores=scores, ais_runs=num_particles or t.eval_particles,
                       ais_temperatures=r.num_temperatures, ais_acceptance=r.acceptance.mean().item(),
                       test_images=len(ll), estimator=self.estimator,
                       log_likelihood_units="nats per image, a density of grey levels in [0, 1] (it can be positive)",
                       eval_seconds=time.perf_counter() - started)
        metrics[PER_IMAGE_KEY] = ll
        if metrics.get("history"):
            metrics["final_train_loss"] = metrics["history"][-1]["train_loss"]
        return metrics

    def summary_line(self, metrics: dict, directory=None) -> str:
        return (f"test MMD² {metrics['test_mmd2']:.4g} against {metrics['mmd']['sample_sizes'][1]} test images "
                f"(permutation p = {metrics['test_mmd_p_value']:.3g}); latent-AIS log p(x) "
                f"{metrics['test_log_likelihood']:.2f} ± {metrics['test_nll_stderr']:.2f} nats/image "
                f"(Gaussian observation sigma {metrics['ais_sigma']:.3g}, {metrics['test_images']} test images, "
                f"a density of grey levels)")

    # -- queries ----------------------------------------------------------------------------
    def why_not(self, trained, kind):
        if kind in ("posterior", "complete"):
            return "an implicit model has no likelihood of its own and no guide to condition on"
        return super().why_not(trained, kind)

    def sample_grid(self, trained, n, path, progress=False, **options) -> None:
        save_image_grid(self.sample(trained, n, **options), trained.image_shape, path,
                        title=f"{trained.spec.family}: {n} samples G(z), z ~ N(0, I)")

    def posterior(self, trained, x, num_samples: int = 1) -> dict:
        raise SpecError(f"the {self.name} family has no posterior: an implicit model has no likelihood of its own "
                        "(its log_prob query scores images by latent AIS with a Gaussian observation model)")

    def query_log_prob(self, trained, inputs, num_particles: int = None, temperatures: int = None,
                       sigma: float = None) -> Answer:
        runs = positive("num_particles", num_particles, allow_none=True)
        temperatures = positive("temperatures", temperatures, allow_none=True)
        if sigma is not None and not (isinstance(sigma, (int, float)) and 0 < sigma < float("inf")):
            raise SpecError(f"sigma must be a positive number, got {sigma!r}")
        r = self._ais(trained, inputs.x, runs, temperatures, sigma)
        used = sigma if sigma is not None else self.observation_sigma(trained)[0]
        numbers = {"estimator": AIS_WORDS, "is_bound": True,
                   "settings": {"num_particles": runs or trained.spec.train.eval_particles,
                                "temperatures": r.num_temperatures, "sigma": float(used)},
                   "units": "nats per image, a density of grey levels in [0, 1] (it can be positive)",
                   "mean": float(r.log_prob.mean()), "hmc_acceptance": float(r.acceptance.mean()),
                   "inputs": [{"input": name, "log_prob": float(v), "stderr": float(s)}
                              for name, v, s in zip(inputs.names, r.log_prob, r.stderr)]}
        return Answer("log_prob", numbers, {"log_prob": r.log_prob, "stderr": r.stderr})


class GANFamily(ImplicitFamily):
    name = "gan"
    summary = "generative adversarial network, non-saturating loss with label smoothing (Goodfellow et al. 2014)"
    spec_class = GANSpec
    curve_title = "discriminator and non-saturating generator losses per image (nats)"

    def build(self, spec) -> GAN:
        return GAN(spec.model)

    def make_objective(self, spec, module):
        return NonSaturatingGAN(module, Discriminator(spec.model), label_smoothing=spec.objective.label_smoothing,
                                gradient_penalty=spec.objective.gradient_penalty)

    def fit_options(self, spec) -> dict:
        options = spec.train.fit_options()
        if options["optimizer"] == "adam":  # Adam with beta1 = 0.5, the usual GAN setting
            lr, wd, beta1 = options["lr"], options["weight_decay"], spec.objective.adam_beta1
            options["optimizer"] = lambda m: torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=lr,
                                                              betas=(beta1, 0.999), weight_decay=wd)
        return options


class GMMNFamily(ImplicitFamily):
    name = "gmmn"
    summary = "generative moment matching network, kernel MMD with a bandwidth bank (Li et al. 2015)"
    spec_class = GMMNSpec
    curve_title = "MMD² of generated against training images per batch"

    def build(self, spec) -> GMMN:
        return GMMN(spec.model)

    def make_objective(self, spec, module):
        return MomentMatching(module, spec.objective.bandwidths)
