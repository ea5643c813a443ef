"""The DCIM family (Flach, Shekhovtsov & Fikar 2017): a sigmoid DNN and its tied generator, on the directed base.

The pair is a Pyro model/guide (:mod:`ppl_models.dcim`) trained on ``(image,
label)`` pairs by the paper's estimators or by sampling estimators
(:mod:`inference.dcim_objectives`). Its evaluation is the forward model's test
accuracy and the reverse model's loss :math:`-\\log p_{rev}(x \\mid y)` by the
mean recursion (per image and per pixel, the paper's scale) and, when asked
for with ``num_particles``, the reverse model's test NLL by importance
sampling with the forward model as proposal (:mod:`inference.dcim_queries`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from inference.dcim_objectives import make_objective as make_dcim_objective
from inference.dcim_objectives import reverse_weight_value
from inference.dcim_queries import class_probabilities, class_probability_draws, generate, sampled_accuracy, scores
from inference.devices import resolve_device
from inference.log_likelihood import log_likelihood as importance_sampled_log_likelihood
from inference.training import PyroObjective

from ..dcim import DCIM, DCIMLayer, DCIMSpec, dense_spec, paper_cnn_spec
from ..errors import DataError, SpecError
from ..specs import option
from .answers import Answer
from .directed import DirectedFamily
from .plots import image_grid, new_figure, save_png
from .query_io import positive
from .sections import DataSpec, TrainSpec

ARCHS = ("dense", "cnn", "custom")
OBJECTIVE_NAMES = ("discriminative", "generative", "alternative", "elbo", "rws", "wake_sleep")
SAMPLING_OBJECTIVES = ("elbo", "rws", "wake_sleep")  # Pyro model/guide estimators, no reverse-term weight
CLASS_SAMPLES = 20  # forward samples averaged when a sampling estimator's classifier is scored
SAMPLE_MODES = {"ancestral": "every layer sampled from the class down, image probabilities shown",
                "top": "the last hidden layer sampled, probabilities propagated down",
                "mean": "no sampling: the class's mean image by the downward mean recursion"}


@dataclass
class DCIMModelSpec:
    arch: str = option("dense", doc="dense: sigmoid layers `hidden`; cnn: the paper's 8-layer CNN; "
                       "custom: the layers in `layers`", choices=ARCHS)
    hidden: list[int] = option([512, 512], doc="dense: hidden layer sizes, bottom first", min=1)
    layers: list[DCIMLayer] = option([], doc="custom: hidden layers {kind, units, window, stride, padding}, bottom first")
    input_shape: Optional[list[int]] = option(None, doc="image shape [D] or [C, H, W]; None: from the data", min=1)
    n_classes: Optional[int] = option(None, doc="number of classes; None: from the data's labels", min=2)

    def validate(self):
        if self.arch == "dense" and not self.hidden:
            raise SpecError("model.hidden must list at least one hidden layer size for arch dense, got []")
        if self.arch == "custom" and not self.layers:
            raise SpecError("model.layers must list at least one hidden layer for arch custom, got []")


@dataclass
class DCIMObjectiveSpec:
    name: str = option("generative", doc="training objective", choices=OBJECTIVE_NAMES)
    reverse_weight: str = option("pixel_mean", doc="weight of the reverse term: pixel_mean (1/D, the paper's "
                                 "Keras weighting) or sum (1, the full log-likelihood)", choices=("pixel_mean", "sum"))
    reverse_scale: float = option(1.0, doc="extra factor on the reverse term", min=0.0)
    layer: Optional[int] = option(None, doc="alternative: the inner layer sampled (default m-1, the last hidden)", min=1)
    sampling: str = option("marginal", doc="alternative: how the inner layer is sampled",
                           choices=("marginal", "ancestral"))
    num_particles: Optional[int] = option(None, doc="elbo / rws: forward-model samples per image (None: 1 for elbo, "
                                          "5 for rws; wake_sleep uses 1)", min=1)
    insomnia: Optional[float] = option(None, doc="rws / wake_sleep: weight of wake-phi against sleep-phi in the "
                                       "forward model's gradient, in [0, 1] (None: 1 for rws, 0 for wake_sleep)",
                                       min=0.0, max=1.0)
    class_weight: float = option(1.0, doc="rws / wake_sleep: weight of the observed label's log q(y | h) in wake-phi "
                                 "(0: the forward model learns to classify from dreams only)", min=0.0)

    def validate(self):
        if self.layer is not None and self.name != "alternative":
            raise SpecError(f"objective.layer is used by the alternative objective only, but objective.name is {self.name!r}")
        if self.num_particles is not None and self.name not in ("elbo", "rws"):
            raise SpecError(f"objective.num_particles is used by the elbo and rws objectives only, "
                            f"but objective.name is {self.name!r}")
        if self.insomnia is not None and self.name not in ("rws", "wake_sleep"):
            raise SpecError(f"objective.insomnia is used by the rws and wake_sleep objectives only, "
                            f"but objective.name is {self.name!r}")


@dataclass
class DCIMRunSpec:
    family: str = option("dcim", doc="model family", choices=("dcim",))
    model: DCIMModelSpec = field(default_factory=DCIMModelSpec)
    objective: DCIMObjectiveSpec = field(default_factory=DCIMObjectiveSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=lambda: TrainSpec(epochs=20))


def dcim_spec(spec) -> DCIMSpec:
    """The architecture (:class:`DCIMSpec`) a run spec describes; unresolved sizes default to MNIST's."""
    m = spec.model
    n_classes = m.n_classes or 10
    if m.arch == "cnn":
        return paper_cnn_spec(tuple(m.input_shape or (1, 28, 28)), n_classes)
    if m.arch == "dense":
        return dense_spec(m.hidden, math.prod(m.input_shape or [784]), n_classes)
    return DCIMSpec(input_shape=list(m.input_shape or [784]), hidden=list(m.layers), n_classes=n_classes)


def weighting(spec) -> str:
    """How the reverse term was weighted, in words, for metrics and tables."""
    o = spec.objective
    if o.name == "discriminative":
        return "none (no reverse term)"
    if o.name in SAMPLING_OBJECTIVES:
        return o.name
    return o.reverse_weight + ("" if o.reverse_scale == 1.0 else f" x {o.reverse_scale}")


def save_dcim_curves(history: list, path: str, title: str) -> None:
    """Training / validation loss and validation accuracy per epoch (the paper's Fig. 1, one run)."""
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = new_figure(1, 2, figsize=(9, 3.2))
    for key in ("train_loss", "valid_loss"):
        if any(key in h for h in history):
            left.plot(epochs, [h.get(key, float("nan")) for h in history], label=key.replace("_", " "))
    left.set_ylabel("objective per image (nats)")
    right.plot(epochs, [h.get("valid_accuracy", float("nan")) for h in history], color="C2")
    right.set_ylabel("validation accuracy")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    save_png(fig, path)


class DCIMFamily(DirectedFamily):
    name = "dcim"
    summary = ("deep conditional independent model: a sigmoid DNN and its tied generator, learned generatively "
               "(Flach, Shekhovtsov & Fikar 2017)")
    spec_class = DCIMRunSpec
    sample_options = ("mode", "class")
    queries = DirectedFamily.queries + ("classify",)

    def needs_binary_data(self, spec) -> bool:
        return False  # the reverse loss is a cross-entropy, defined for grey levels in [0, 1] too

    def resolve(self, spec, data) -> None:
        """Fill in the image shape and the number of classes from the data, check labels, chain the shapes."""
        m = spec.model
        splits = [(name, getattr(data, name)) for name in ("train", "valid", "test") if getattr(data, name) is not None]
        for name, split in splits:
            if getattr(split, "y", None) is None:
                raise DataError(f"the dcim family trains on labelled images, but data set {spec.data.dataset} "
                                f"has no labels in its {name} split")
        top = max(int(split.y.max()) for _, split in splits if len(split.y))
        low = min(int(split.y.min()) for _, split in splits if len(split.y))
        if low < 0:
            raise DataError(f"data set {spec.data.dataset} has a negative label ({low}); expected class indices 0..C-1")
        if m.n_classes is None:
            m.n_classes = max(2, top + 1)
        elif top >= m.n_classes:
            raise DataError(f"data set {spec.data.dataset} has labels up to {top} but model.n_classes is {m.n_classes}; "
                            f"expected labels in 0..{m.n_classes - 1}")
        dim = data.train.x.shape[1]
        if m.input_shape is None:
            first_conv = m.arch == "cnn" or (m.arch == "custom" and m.layers[0].kind == "conv")
            m.input_shape = [1, *data.image_shape] if first_conv else [dim]
        elif math.prod(m.input_shape) != dim:
            raise SpecError(f"model.input_shape is {m.input_shape} ({math.prod(m.input_shape)} pixels) but data set "
                            f"{spec.data.dataset} has {dim} pixels per image")
        try:
            dcim_spec(spec).layer_shapes()
        except SpecError as e:
            raise SpecError(f"model.arch={m.arch} on images of shape {m.input_shape}: {e}") from None
        n_hidden = len(dcim_spec(spec).hidden)
        if spec.objective.layer is not None and spec.objective.layer > n_hidden:
            raise SpecError(f"objective.layer must be a hidden layer index in 1..{n_hidden} for this architecture, "
                            f"got {spec.objective.layer}")

    def build(self, spec) -> DCIM:
        return DCIM(dcim_spec(spec))

    def make_objective(self, spec, module: DCIM):
        """The paper's estimators (mean recursion) or a sampling estimator, summed over the minibatch."""
        o = spec.objective
        if o.name == "elbo":
            elbo = make_dcim_objective("elbo", num_particles=o.num_particles or 1)
        elif o.name == "rws":
            elbo = make_dcim_objective("rws", module=module, num_particles=o.num_particles or 5,
                                       insomnia=1.0 if o.insomnia is None else o.insomnia, class_weight=o.class_weight)
        elif o.name == "wake_sleep":
            elbo = make_dcim_objective("wake_sleep", module=module, insomnia=o.insomnia or 0.0,
                                       class_weight=o.class_weight)
        else:
            options = {"module": module, "batch_reduction": "sum"}
            if o.name != "discriminative":
                n_pixels = math.prod(module.layer_shapes[0])
                options["reverse_weight"] = (o.reverse_weight if o.reverse_scale == 1.0 else
                                             o.reverse_scale * reverse_weight_value(o.reverse_weight, n_pixels))
            if o.name == "alternative":
                options.update(layer=o.layer, sampling=o.sampling)
            elbo = make_dcim_objective(o.name, **options)
        return PyroObjective(elbo, module.model, module.guide)

    def tensors(self, split) -> tuple:
        return (split.x, split.y)

    def epoch_monitor(self, module, data):
        if data.valid is None:
            return None

        def on_epoch_end(metrics):  # validation accuracy per epoch, for the curve
            module.eval()
            dev = module.biases[0].device
            metrics["valid_accuracy"] = scores(module, data.valid.x.to(dev), data.valid.y.to(dev))["accuracy"]
            module.train()

        return on_epoch_end

    def run_metrics(self, spec) -> dict:
        return {"arch": spec.model.arch, "objective": spec.objective.name, "reverse_weighting": weighting(spec)}

    def save_curves(self, spec, history, path) -> None:
        save_dcim_curves(history, path, title=f"dcim {spec.model.arch}, {spec.objective.name} objective "
                                              f"(reverse weight {weighting(spec)})")

    # -- evaluation -------------------------------------------------------------------------
    estimator = "reverse model -log p(x | y) by importance sampling with the forward model as proposal"

    def log_likelihood(self, trained, x, num_particles=None, progress=False, y=None) -> torch.Tensor:
        """log p_rev(x | y) per image by importance sampling with the forward model as proposal; without
        ``y``, the reverse model's marginal :math:`\\log \\sum_y p(y)\\, p_{rev}(x \\mid y)`, one estimate per class."""
        module = trained.module
        k = num_particles or trained.spec.train.eval_particles
        chunk = max(1, min(k, 200 if len(module.layer_shapes[1]) == 1 else 10))
        with torch.no_grad():
            log_prior = torch.log_softmax(module.class_prior_logits(), -1)

        def given(labels):  # the pair's joint log p(x, y) by IS, minus log p(y)
            return importance_sampled_log_likelihood(module.model, module.guide, x, labels, num_particles=k,
                                                     particle_chunk=chunk, progress=progress) - log_prior[labels]

        if y is not None:
            return given(y)
        labels = [torch.full((x.shape[0],), c, dtype=torch.long, device=x.device) for c in range(module.n_classes)]
        return torch.logsumexp(torch.stack([given(c) + log_prior[c] for c in labels]), 0)

    def evaluate(self, trained, data, num_particles=None, progress=False, seed=None) -> dict:
        """Test accuracy and reverse loss; with ``num_particles`` also the reverse model's test NLL
        :math:`-\\log p_{rev}(x \\mid y)` by importance sampling with the forward model as proposal."""
        spec = trained.spec
        device = resolve_device(spec.train.device)
        module = trained.module.to(device)
        started = time.perf_counter()
        x, y = data.test.x.to(device), data.test.y.to(device)
        module.check_labels(y, x.shape[0], "evaluation")
        test = scores(module, x, y)
        n_pixels = x[0].numel()
        metrics = dict(trained.metrics)
        metrics.update(test_accuracy=test["accuracy"], test_reverse_loss_per_image=test["reverse_loss_per_image"],
                       test_reverse_loss_per_pixel=test["reverse_loss_per_image"] / n_pixels, test_images=len(y),
                       reverse_weighting=weighting(spec))
        if spec.objective.name in SAMPLING_OBJECTIVES:
            # these estimators train the stochastic forward model: classify by its samples too
            torch.manual_seed(spec.train.seed if seed is None else seed)
            metrics["test_accuracy_sampled"] = sampled_accuracy(module, x, y, CLASS_SAMPLES)
            metrics["class_samples"] = CLASS_SAMPLES
        if data.valid is not None:
            valid = scores(module, data.valid.x.to(device), data.valid.y.to(device))
            metrics.update(valid_accuracy=valid["accuracy"],
                           valid_reverse_loss_per_pixel=valid["reverse_loss_per_image"] / n_pixels)
        for key in ("test_reverse_nll", "test_reverse_nll_stderr", "eval_particles"):
            metrics.pop(key, None)  # an NLL from an earlier evaluation with other particles would mislead
        if num_particles:
            torch.manual_seed(spec.train.seed if seed is None else seed)
            nll = -self.log_likelihood(trained, x, num_particles, progress=progress, y=y)
            metrics.update(test_reverse_nll=nll.mean().item(), test_reverse_nll_stderr=nll.std().item() / len(nll) ** 0.5,
                           eval_particles=num_particles)
        module.cpu()
        metrics["eval_seconds"] = time.perf_counter() - started
        if metrics.get("history"):
            metrics["final_train_loss"] = metrics["history"][-1]["train_loss"]
        return metrics

    def summary_line(self, metrics: dict, directory=None) -> str:
        line = (f"test accuracy {metrics['test_accuracy']:.4f}, reverse loss {metrics['test_reverse_loss_per_pixel']:.4f} "
                f"nats/pixel ({metrics['test_reverse_loss_per_image']:.1f} nats/image) on {metrics['test_images']} "
                f"test images; trained {metrics.get('objective', '?')}, reverse weight {metrics['reverse_weighting']}")
        if "test_accuracy_sampled" in metrics:
            line += (f"; accuracy {metrics['test_accuracy_sampled']:.4f} when classifying by "
                     f"{metrics['class_samples']} forward samples")
        if "test_reverse_nll" in metrics:
            line += (f"; reverse NLL -log p(x|y) {metrics['test_reverse_nll']:.2f} ± {metrics['test_reverse_nll_stderr']:.2f}"
                     f" nats/image (k={metrics['eval_particles']} importance samples)")
        return line

    # -- queries ----------------------------------------------------------------------------
    @staticmethod
    def _classes(module: DCIM, n: int, label) -> torch.Tensor:
        if label is None:
            return torch.arange(n) % module.n_classes  # one column per class in a grid of n_classes columns
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < module.n_classes:
            raise DataError(f"class must be a class index in 0..{module.n_classes - 1}, got {label!r}")
        return torch.full((n,), label, dtype=torch.long)

    def sample(self, trained, n: int, **options) -> torch.Tensor:
        """``n`` class-conditional images (probabilities), flat ``(n, D)``.

        :param str mode: ``"top"`` (default: sample the last hidden layer given the class, then
            propagate probabilities down, as the paper's figures), ``"ancestral"`` (sample every
            layer down to the first hidden one) or ``"mean"``.
        :param int class: the class; default: cycle through the classes.
        """
        self.check_options(options)
        mode = options.get("mode", "top")
        module = trained.module
        m = module.n_layers
        sample_to = {"ancestral": 1, "top": max(1, m - 1), "mean": m}
        if mode not in sample_to:
            raise SpecError(f"mode must be one of {list(sample_to)} for dcim samples, got {mode!r}")
        return generate(module, self._classes(module, n, options.get("class")), sample_to=sample_to[mode]).reshape(n, -1)

    def sample_grid(self, trained, n: int, path: str, progress=False, **options) -> None:
        """A picture of ``n`` samples per way (``mode="both"``, the default: ancestral beside top-layer sampling)."""
        self.check_options(options)
        mode = options.pop("mode", "both")
        if mode != "both" and mode not in SAMPLE_MODES:
            raise SpecError(f"mode must be one of {['both', *SAMPLE_MODES]} for dcim pictures, got {mode!r}")
        modes = ["ancestral", "top"] if mode == "both" else [mode]
        label = options.get("class")
        per_row = min(n, 8) if label is not None else trained.module.n_classes
        fig, axes = new_figure(1, len(modes), figsize=(4.5 * len(modes), 4.8), squeeze=False)
        for ax, way in zip(axes[0], modes):
            images = self.sample(trained, n, mode=way, **options)
            ax.imshow(image_grid(images, trained.image_shape, nrow=per_row), cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_title(f"{way}: {SAMPLE_MODES[way]}", fontsize=7)
            ax.axis("off")
        what = f"class {label}" if label is not None else "one column per class"
        fig.suptitle(f"dcim: {n} samples of p_rev(x | y), {what}", fontsize=9)
        save_png(fig, path)

    def log_prob_units(self, spec) -> str:
        return "nats per image (of grey levels, a cross-entropy rather than a normalised density)"

    def particle_chunk(self, module) -> int:
        return 200 if len(module.layer_shapes[1]) == 1 else 10  # conv layers hold a map per particle

    def query_classify(self, trained, inputs, num_samples: int = 100) -> Answer:
        """p_fwd(y | x) by Monte Carlo over forward samples (with its standard error), beside the mean recursion."""
        s = positive("num_samples", num_samples)
        module, x = trained.module, inputs.x
        draws = class_probability_draws(module, x, s).double()  # (S, N, C)
        probs, stderr = draws.mean(0), draws.std(0, unbiased=s > 1) / s ** 0.5
        recursion = class_probabilities(module, x).double()
        rows = [{"input": name, "probabilities": probs[i], "stderr": stderr[i], "predicted": int(probs[i].argmax()),
                 "mean_recursion": recursion[i], "mean_recursion_predicted": int(recursion[i].argmax())}
                for i, name in enumerate(inputs.names)]
        numbers = {"estimator": f"Monte Carlo over {s} forward samples h ~ p_fwd(h | x): p(y | x) = mean of "
                                "p(y | h_s), with its standard error; mean_recursion is the DNN's output, a "
                                "deterministic approximation of the same probabilities",
                   "settings": {"num_samples": s}, "inputs": rows}
        if inputs.labels is not None:
            labels = inputs.labels.to(probs.device)
            for row, label in zip(rows, labels.tolist()):
                row["label"] = label
            numbers["accuracy"] = float((probs.argmax(-1) == labels).double().mean())
            numbers["accuracy_mean_recursion"] = float((recursion.argmax(-1) == labels).double().mean())
        return Answer("classify", numbers, {"probabilities": probs, "stderr": stderr, "mean_recursion": recursion})

