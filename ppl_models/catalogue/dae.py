"""The ``dae`` family: a denoising autoencoder read as a generative Markov chain (:mod:`ppl_models.dae`).

Training: the denoising criterion (with walkback as an option) through the shared driver
(:class:`inference.walkback.WalkbackObjective`). Sampling: the corrupt-then-denoise chain
(:class:`inference.denoising_chain.DenoisingChain`) through the MCMC driver, with R-hat and ESS over
chains. Completion: the same chain with the observed pixels clamped (Bengio et al.'s recipe, approximate).

What the evaluation can honestly say. The model is the chain's stationary distribution :math:`\\pi`; it
has no closed-form density and no guide. The figures are (1) the kernel MMD of chain samples against test
images with its permutation p-value (:mod:`inference.mmd`), (2) the reconstruction NLL of test images from
corrupted copies, the training criterion (``-log P(x | x~)``, which is *not* a log-likelihood of
:math:`x`), and (3) a chain estimate of :math:`\\log \\pi(x)`, the log of the mean of
:math:`P_\\theta(x \\mid \\tilde x_s)` over the chain's corrupted states
(:func:`inference.denoising_chain.stationary_log_prob`): a stochastic lower bound of the stationary
log-probability once the chain has mixed, and on 784 pixels a very loose one (a Parzen estimate with
the model's own kernel), not comparable to the likelihoods of the other families.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from inference.block_gibbs import bernoulli_draw
from inference.denoising_chain import DenoisingChain, stationary_log_prob
from inference.devices import resolve_device
from inference.mcmc_driver import run_mcmc
from inference.mmd import mmd_permutation_test
from inference.walkback import WalkbackObjective

from ..dae import DAEArchitecture, DenoisingAutoencoder
from ..errors import SpecError
from ..specs import option
from .answers import Answer, draws_to_inference_data
from .directed import DirectedFamily
from .family import Family
from .plots import save_completion_figure, save_image_grid, save_training_curve
from .query_io import make_mask, positive
from .run_directory import PER_IMAGE_KEY
from .sections import DataSpec, TrainSpec

#: Gaussian kernel bandwidths of the test MMD on pixels in [0, 1] (Li et al. 2015's bank)
BANDWIDTHS = [2.0, 5.0, 10.0, 20.0, 40.0, 80.0]
#: chains of the log pi(x) estimate (the draws per chain make up the rest of train.eval_particles)
ESTIMATE_CHAINS = 100
#: the estimate keeps every corrupted state: at most this many numbers (1 GiB of float32)
MAX_KEPT = 2**28
CHAIN_WORDS = ("chain estimate of the stationary log pi(x): log of the mean of P(x | x~) over the corrupted states "
               "x~ of corrupt-denoise chains after warm-up (a Parzen estimate with the model's own kernel); a "
               "stochastic lower bound of log pi(x) once the chains have mixed, loose in many pixels; the DAE has "
               "no likelihood of its own")


@dataclass
class DenoisingSpec:
    name: str = option("denoising", doc="reconstruction log-likelihood of x from a corrupted copy x~",
                       choices=("denoising",))
    walkback_steps: int = option(1, doc="corrupted states per image along the chain started at it (1: the plain "
                                 "denoising autoencoder; more: walkback, Bengio et al. 2013)", min=1)


@dataclass
class DAETrainSpec(TrainSpec):
    eval_particles: int = option(10000, doc="corrupted chain states x~ in the chain estimate of log pi(x)", min=1)
    chain_steps: int = option(200, doc="corrupt-denoise steps of a chain (warm-up) before its state is shown, "
                              "scored or used", min=1)
    mmd_images: int = option(1000, doc="test images (and as many chain samples) in the MMD test", min=2)
    mmd_permutations: int = option(1000, doc="relabellings of the MMD permutation test", min=1)


@dataclass
class DAESpec:
    family: str = option("dae", doc="model family", choices=("dae",))
    model: DAEArchitecture = field(default_factory=DAEArchitecture)
    objective: DenoisingSpec = field(default_factory=DenoisingSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: DAETrainSpec = field(default_factory=DAETrainSpec)


class DAEFamily(DirectedFamily):
    """Trained like a directed family (one objective through :func:`inference.training.fit`), queried as a chain."""

    name = "dae"
    kind = "chain"
    summary = "denoising autoencoder as a generative Markov chain: corrupt, then denoise (Bengio et al. 2013)"
    spec_class = DAESpec
    queries = ("sample", "log_prob", "complete")
    estimator = CHAIN_WORDS

    def build(self, spec) -> DenoisingAutoencoder:
        return DenoisingAutoencoder(spec.model)

    def make_objective(self, spec, module):
        return WalkbackObjective(module, spec.objective.walkback_steps)

    def run_metrics(self, spec) -> dict:
        return {"objective": spec.objective.name, "walkback_steps": spec.objective.walkback_steps}

    def save_curves(self, spec, history: list, path: str) -> None:
        save_training_curve(history, path, title=f"dae: reconstruction NLL -log P(x | x~) per image (nats; "
                                                 f"walkback {spec.objective.walkback_steps})")

    # -- the chain ------------------------------------------------------------------------
    def _chain(self, module, n, steps, draws=1, k=1, mask=None, values=None, diagnose=False):
        """``n`` chains from uniformly random images after ``steps`` warm-up steps: the kernel and the driver's
        result."""
        like = next(module.parameters())
        start = bernoulli_draw(like.new_full((n, module.x_dim), 0.5))
        kernel = DenoisingChain(module, start, k=k, clamp_mask=mask, clamp_values=values)
        with torch.no_grad():
            result = run_mcmc(kernel, num_samples=draws, warmup_steps=steps, disable_progbar=True, warn=False,
                              diagnose=diagnose)
        return kernel, result

    def _log_prob(self, trained, x, num_particles=None):
        module, t = trained.module, trained.spec.train
        s = num_particles or t.eval_particles
        if s * module.x_dim > MAX_KEPT:
            raise SpecError(f"{s} corrupted chain states (--particles / train.eval_particles) of {module.x_dim} pixels "
                            f"are more than the estimate keeps in memory; use at most {MAX_KEPT // module.x_dim}")
        chains = min(ESTIMATE_CHAINS, s)
        _, result = self._chain(module, chains, t.chain_steps, draws=math.ceil(s / chains))
        with torch.no_grad():
            return stationary_log_prob(module, module.check_data(x), result.samples["x_tilde"])

    def log_likelihood(self, trained, x, num_particles=None, progress=False) -> torch.Tensor:
        """The chain estimate of :math:`\\log \\pi(x)` per image (see the module docstring: a loose stochastic
        lower bound of the stationary log-probability; ``num_particles`` corrupted states)."""
        return self._log_prob(trained, x, num_particles)[0]

    def evaluate(self, trained, data, num_particles=None, progress=False, seed=None) -> dict:
        t = trained.spec.train
        module = trained.module.to(resolve_device(t.device))
        torch.manual_seed(t.seed if seed is None else seed)
        started = time.perf_counter()
        x = module.check_data(data.test.x.to(next(module.parameters())), "test images")
        ll, _ = self._log_prob(trained, x, num_particles)
        with torch.no_grad():
            recon = -module.reconstruction_log_prob(x, module.corrupt(x)).double()
        m = min(t.mmd_images, x.shape[0])
        kernel, _ = self._chain(module, m, t.chain_steps)
        test = mmd_permutation_test(kernel.initial_params["x"].double().cpu(), x[:m].double().cpu(), BANDWIDTHS,
                                    t.mmd_permutations, generator=torch.Generator().manual_seed(t.seed))
        module.cpu()
        ll = ll.cpu()
        metrics = dict(trained.metrics)
        metrics.update(test_log_likelihood=float(ll.mean()), test_nll=-float(ll.mean()),
                       test_nll_stderr=float(ll.std() / math.sqrt(len(ll))) if len(ll) > 1 else math.nan,
                       estimator=CHAIN_WORDS, eval_particles=num_particles or t.eval_particles,
                       chain_steps=t.chain_steps, test_reconstruction_nll=float(recon.mean()),
                       test_reconstruction_nll_stderr=float(recon.std() / math.sqrt(len(recon))) if len(recon) > 1
                       else math.nan,
                       test_mmd2=test.mmd2, test_mmd_p_value=test.p_value, mmd=test.as_dict(), test_images=len(ll),
                       log_likelihood_units="nats per binary image", eval_seconds=time.perf_counter() - started)
        metrics[PER_IMAGE_KEY] = ll
        if metrics.get("history"):
            metrics["final_train_loss"] = metrics["history"][-1]["train_loss"]
        return metrics

    def summary_line(self, metrics: dict, directory=None) -> str:
        return (f"test MMD² {metrics['test_mmd2']:.4g} of {metrics['mmd']['sample_sizes'][0]} chain samples against "
                f"as many test images (permutation p = {metrics['test_mmd_p_value']:.3g}); reconstruction NLL "
                f"{metrics['test_reconstruction_nll']:.2f} nats/image (-log P(x | x~), the training criterion, not a "
                f"likelihood); chain estimate of log pi(x) {metrics['test_log_likelihood']:.2f} ± "
                f"{metrics['test_nll_stderr']:.2f} ({metrics['eval_particles']} corrupted chain states, a loose "
                f"stochastic lower bound, {metrics['test_images']} test images)")

    # -- queries --------------------------------------------------------------------------
    def why_not(self, trained, kind):
        if kind == "posterior":
            return ("it has no latent variables (the corrupted copy x~ comes from a fixed noise process, "
                    "not inferred)")
        return Family.why_not(self, trained, kind)

    def sample(self, trained, n: int, **options) -> torch.Tensor:
        """:math:`P_\\theta(x = 1 \\mid \\tilde x)` of the last step of ``n`` chains after ``train.chain_steps``
        steps."""
        self.check_options(options)
        kernel, _ = self._chain(trained.module, n, trained.spec.train.chain_steps)
        return kernel.last_probs

    def sample_grid(self, trained, n, path, progress=False, **options) -> None:
        save_image_grid(self.sample(trained, n, **options), trained.image_shape, path,
                        title=f"dae: {n} corrupt-denoise chains after {trained.spec.train.chain_steps} steps "
                              "(P(x = 1 | x~) of the last step)")

    def posterior(self, trained, x, num_samples: int = 1) -> dict:
        """No latent variables: corrupted copies ``x_tilde`` ~ C(x~ | x) and the denoiser's
        ``denoised`` = P(x = 1 | x~) for each, each ``(num_samples, N, D)``."""
        module = trained.module
        x = module.check_data(x.to(next(module.parameters())))
        with torch.no_grad():
            x_tilde = torch.stack([module.corrupt(x) for _ in range(num_samples)])
            return {"x_tilde": x_tilde, "denoised": torch.sigmoid(module.denoise_logits(x_tilde))}

    def query_sample(self, trained, inputs, num_samples: int = 16, sweeps: int = None, draws: int = 100,
                     thin: int = 1) -> Answer:
        n, draws, thin = positive("num_samples", num_samples), positive("draws", draws), positive("thin", thin)
        steps = positive("sweeps", sweeps, allow_none=True) or trained.spec.train.chain_steps
        kernel, result = self._chain(trained.module, n, steps, draws, thin, diagnose=True)
        images = kernel.last_probs
        numbers = {"estimator": "the corrupt-denoise chain (inference.denoising_chain.DenoisingChain) through "
                                "pyro.infer.MCMC: one chain per sample from uniformly random pixels",
                   "settings": {"chains": n, "warmup_steps": steps, "draws": draws, "steps_between_draws": thin},
                   "images_shown": "P(x = 1 | x~) of each chain's last step",
                   "diagnostics": {"r_hat_max": result.r_hat, "ess_min": result.ess, "mixed": result.mixed,
                                   "message": result.message}}
        image_shape = trained.image_shape
        return Answer("sample", numbers, {"images": images, "x": result.samples["x"]}, result.inference_data,
                      lambda path: save_image_grid(images, image_shape, path,
                                                   title=f"dae: {n} chains after {steps} + {draws * thin} steps"))

    def query_log_prob(self, trained, inputs, num_particles: int = None) -> Answer:
        s = positive("num_particles", num_particles, allow_none=True) or trained.spec.train.eval_particles
        ll, se = self._log_prob(trained, inputs.x, s)
        numbers = {"estimator": CHAIN_WORDS, "is_bound": True,
                   "bound": "E[estimate] <= log pi(x) when the chains have mixed (Jensen); the gap shrinks slowly "
                            "with more corrupted states in many pixels",
                   "settings": {"num_particles": s, "chains": min(ESTIMATE_CHAINS, s),
                                "warmup_steps": trained.spec.train.chain_steps},
                   "units": "nats per binary image", "mean": float(ll.mean()),
                   "inputs": [{"input": name, "log_prob": float(v), "stderr": float(e)}
                              for name, v, e in zip(inputs.names, ll, se)]}
        return Answer("log_prob", numbers, {"log_prob": ll, "stderr": se})

    def query_complete(self, trained, inputs, mask="top", mask_seed: int = 0, num_samples: int = 3,
                       sweeps: int = None, draws: int = 100) -> Answer:
        s, draws = positive("num_samples", num_samples), positive("draws", draws)
        steps = positive("sweeps", sweeps, allow_none=True) or trained.spec.train.chain_steps
        module, x = trained.module, inputs.x
        observed, mask_text = make_mask(mask, trained.image_shape, x.shape[0], mask_seed)
        n, d = x.shape
        per_chain = observed.to(x.device).expand(n, d).repeat_interleave(s, 0)  # chains: input-major, s each
        values = x.repeat_interleave(s, 0)
        kernel, result = self._chain(module, n * s, steps, draws, mask=per_chain, values=values)
        means = torch.where(per_chain, values, kernel.last_probs).reshape(n, s, d)
        missing = ~per_chain.reshape(n, s, d)[:, 0]
        error = ((means.mean(1) - x).abs() * missing).sum(1) / missing.sum(1).clamp(min=1)
        numbers = {"estimator": "the corrupt-denoise chain with the observed pixels reset after every step (Bengio "
                                "et al. 2013's inpainting): approximate, its stationary distribution is not exactly "
                                "pi(x_missing | x_observed)",
                   "mask": mask_text, "settings": {"num_samples": s, "warmup_steps": steps, "draws": draws,
                                                   "mask_seed": mask_seed},
                   "images_shown": "per row: the image, its observed part (missing grey), then P(x = 1 | x~) of each "
                                   "chain's last step on the missing pixels",
                   "inputs": [{"input": name, "missing_pixels_mean_abs_error": float(e)}
                              for name, e in zip(inputs.names, error)]}
        image_shape = trained.image_shape
        last = result.samples["x"][:, -1].reshape(n, s, d)
        return Answer("complete", numbers, {"completions": last, "completion_means": means, "mask": observed},
                      draws_to_inference_data({"x": last.transpose(0, 1)}, inputs.names),
                      lambda path: save_completion_figure(x.cpu(), observed.cpu(), means.cpu(), image_shape, path,
                                                          title=f"dae: completion by the clamped chain ({steps} "
                                                                f"steps), {mask_text}"))
