"""The base of every directed family: a Pyro model/guide pair trained by an objective through the shared driver.

What a directed family shares: data loading (binary data checked where the
likelihood is Bernoulli) and the input size read from the data, training
through :func:`inference.training.fit`, test NLL by importance sampling with
the guide as proposal (k = ``train.eval_particles``, 5000 by default: the
literature's standard), ancestral samples (``E[x | parents]`` of the model's
``x`` site) and the latent posterior (draws of the guide). A family supplies
its spec, :meth:`build` and :meth:`make_objective`; the module it builds has
``model(x=None, batch_size=None)`` and ``guide(x=None, batch_size=None)``
with the observed site named ``x`` inside ``pyro.plate("data")``. The queries
(``ppl-models query``) are :class:`~ppl_models.catalogue.directed_queries.DirectedQueries`.
"""

from __future__ import annotations

import time
from abc import abstractmethod

import torch

from inference.devices import resolve_device
from inference.log_likelihood import log_likelihood as importance_sampled_log_likelihood
from inference.queries import posterior_latents, sample_model
from inference.training import Objective, fit, with_auxiliary

from ..errors import SpecError
from .directed_queries import DirectedQueries
from .family import Family, count
from .plots import save_training_curve
from .run_directory import CHECKPOINT, CURVE, PER_IMAGE_KEY


class DirectedFamily(DirectedQueries, Family):
    kind = "directed"
    #: the field of ``spec.model`` that holds the number of pixels (filled from the data)
    input_size_field = "x_dim"

    # -- data ---------------------------------------------------------------------------
    def needs_binary_data(self, spec) -> bool:
        return getattr(spec.model, "likelihood", "bernoulli") == "bernoulli"

    def resolve(self, spec, data) -> None:
        dim, key = data.train.x.shape[1], self.input_size_field
        if getattr(spec.model, key) is None:
            setattr(spec.model, key, dim)
        elif getattr(spec.model, key) != dim:
            raise SpecError(f"model.{key} is {getattr(spec.model, key)} but data set {spec.data.dataset} "
                            f"has {dim} pixels per image")

    # -- training -----------------------------------------------------------------------
    @abstractmethod
    def make_objective(self, spec, module) -> Objective:
        """The training objective (e.g. ``PyroObjective(IWAEELBO(k), module.model, module.guide)``)."""

    def tensors(self, split) -> tuple:
        """What one datapoint is for the objective: ``(x,)``, or ``(x, y)`` for labelled families."""
        return (split.x,)

    def epoch_monitor(self, module, data):
        """A callback adding per-epoch metrics (None: only the driver's losses)."""
        return None

    def run_metrics(self, spec) -> dict:
        """Facts about the run recorded beside the history (what it was trained with)."""
        return {"objective": spec.objective.name}

    def save_curves(self, spec, history: list, path: str) -> None:
        save_training_curve(history, path, title=f"{spec.family}: negative {spec.objective.name} bound per image (nats)")

    def train(self, spec, run, data, progress, log) -> dict:
        module = self.build(spec)
        self.initialise(module, data)
        log(f"training {spec.family} on {spec.data.dataset} ({data.train.x.shape[0]} images, "
            f"{'no' if data.valid is None else data.valid.x.shape[0]} validation) for {count(spec.train.epochs, 'epoch')} "
            f"-> {run.directory}")
        objective = self.make_objective(spec, module)
        result = fit(objective, self.tensors(data.train), module=with_auxiliary(module, objective),
                     **spec.train.fit_options(), valid=self.tensors(data.valid) if data.valid is not None else None,
                     transform=data.train_transform, checkpoint_path=run.path(CHECKPOINT), progress=progress,
                     on_epoch_end=self.epoch_monitor(module, data), log=log)
        module.cpu()
        metrics = run.save_trained(module, {
            "family": spec.family, **self.run_metrics(spec), "resumed_from_epoch": result.resumed_from,
            "stopped_early": result.stopped_early, "image_shape": list(data.image_shape), "history": result.history,
            **({"replay": objective.replay_status} if hasattr(objective, "replay_status") else {})})
        self.save_curves(spec, result.history, run.path(CURVE))
        return metrics

    def initialise(self, module, data) -> None:
        """Data-dependent initialisation of a fresh module (a resumed run overwrites it from the checkpoint)."""

    # -- evaluation -----------------------------------------------------------------------
    #: how :meth:`log_likelihood` estimates log p(x), for the metrics
    estimator = "importance sampling with the guide (IWAE bound, a stochastic lower bound)"

    def log_likelihood(self, trained, x, num_particles=None, progress=False) -> torch.Tensor:
        k = num_particles or trained.spec.train.eval_particles
        module = trained.module
        return importance_sampled_log_likelihood(module.model, module.guide, x, num_particles=k, progress=progress)

    def evaluate(self, trained, data, num_particles=None, progress=False, seed=None) -> dict:
        spec = trained.spec
        k = num_particles or spec.train.eval_particles
        device = resolve_device(spec.train.device)
        module = trained.module.to(device)
        torch.manual_seed(spec.train.seed if seed is None else seed)
        started = time.perf_counter()
        ll = self.log_likelihood(trained, data.test.x.to(device), k, progress=progress).cpu()
        module.cpu()
        metrics = dict(trained.metrics)
        metrics.update(test_nll=-ll.mean().item(), test_nll_stderr=ll.std().item() / len(ll) ** 0.5,
                       eval_particles=k, test_images=len(ll), estimator=self.estimator,
                       log_likelihood_units=("nats per binary image" if self.needs_binary_data(spec) else
                                             "nats per image, a density of grey levels (it can be negative)"),
                       eval_seconds=time.perf_counter() - started)
        metrics[PER_IMAGE_KEY] = ll
        if metrics.get("history"):
            metrics["final_train_loss"] = metrics["history"][-1]["train_loss"]
        return metrics

    def summary_line(self, metrics: dict, directory=None) -> str:
        how = (f"k={metrics['eval_particles']} importance samples" if "importance" in metrics.get("estimator", "importance")
               else metrics["estimator"])
        units = metrics.get("log_likelihood_units", "nats per image")
        density = "; a density of grey levels, so it can be negative" if "density" in units else ""
        return (f"test NLL {metrics['test_nll']:.2f} ± {metrics['test_nll_stderr']:.2f} nats/image "
                f"({how}, {metrics['test_images']} test images{density})")

    # -- queries --------------------------------------------------------------------------
    def sample(self, trained, n: int, **options) -> torch.Tensor:
        """Mean images E[x | parents] of ``n`` ancestral samples of the model."""
        self.check_options(options)
        return sample_model(trained.module.model, n)["x_mean"]

    def sample_grid(self, trained, n, path, progress=False, **options) -> None:
        from .plots import save_image_grid

        save_image_grid(self.sample(trained, n, **options), trained.image_shape, path,
                        title=f"{trained.spec.family}: {n} samples (mean of p(x | latents), latents ~ prior)")

    def posterior(self, trained, x, num_samples: int = 1) -> dict:
        """Draws of every latent site from the guide q(z | x), each ``(num_samples, N, ...)``."""
        return posterior_latents(trained.module.guide, x, num_samples)
