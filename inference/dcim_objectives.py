"""Training objectives of the DCIM (Flach, Shekhovtsov & Fikar 2017), as ELBO subclasses.

For an image :math:`x` with class :math:`y`, the paper's estimators, all
computed by the mean recursion (the DNN's deterministic pass):

- discriminative: :math:`-\\log p_{fwd}(y \\mid x)`, the class cross-entropy;
- generative (bidirectional conditional likelihood):
  :math:`-\\log p_{fwd}(y \\mid x) - w \\log p_{rev}(x \\mid y)`, the reverse
  term from one-hot :math:`y` propagated down through the transposed weights;
- alternative: :math:`-\\log p_{fwd}(y \\mid x) - w \\log p_{rev}(x \\mid \\tilde h)`
  with :math:`\\tilde h` an inner layer sampled from the forward model for this
  image (default the last hidden layer); the sample is a constant for the
  gradient, which reaches :math:`W` through the reverse mean recursion.

Beyond the paper, the pair is a Pyro model/guide and also trains by
sampling estimators: ``"elbo"`` (Pyro's TraceGraph_ELBO, score-function
gradients), ``"rws"`` (per-datapoint reweighted wake-sleep,
:mod:`inference.reweighted_wake_sleep`, with the observed class scored by the
forward model in wake-phi) and ``"wake_sleep"`` (its k = 1, sleep-only case).

The weight :math:`w` of the reverse term (``reverse_weight``) matters:
``"pixel_mean"`` (default) is :math:`1/D` for :math:`D` pixels, the per-pixel
mean binary cross-entropy of the paper's Keras code; ``"sum"`` is 1, the full
log-likelihood (with one layer the generative loss is then exactly the RBM's
block pseudo-likelihood); a number is used as :math:`w` itself.

Each objective is a :class:`pyro.infer.ELBO` subclass: ``loss(model, guide, x, y)``
and ``loss_and_grads(model, guide, x, y)`` (gradients accumulated into
``.grad``) return floats, so the shared SVI driver and :class:`pyro.infer.SVI`
both run them. The DCIM is found from the bound methods
(``model=dcim.model``: ``model.__self__``) or given as ``module=`` to
``__init__``. The module is registered with ``pyro.module`` inside the loss so
that ``pyro.infer.SVI`` sees its parameters. The loss is the mean over the
minibatch of the per-image loss (``batch_reduction="sum"`` for the sum).

The DCIM interface used: ``class_logits(x)``, ``image_logits(value, from_layer)``,
``up_means(x, to_layer)``, ``sample_up(x, to_layer)``, ``check_images(x)``,
``check_labels(y, n, what)``, ``n_layers``, ``name``.

References:
 [1] Flach, Shekhovtsov, Fikar. Generative learning for deep networks. arXiv:1709.08524, 2017.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import pyro
import torch
import torch.nn.functional as F
from pyro.infer import ELBO, TraceGraph_ELBO

from .errors import SpecError

from .reweighted_wake_sleep import ReweightedWakeSleep

REVERSE_WEIGHTS = ("pixel_mean", "sum")
BATCH_REDUCTIONS = ("mean", "sum")
INNER_SAMPLING = ("marginal", "ancestral")


def class_nll(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image :math:`-\\log \\mathrm{softmax}(logits)_y`, shape ``(N,)``."""
    return F.cross_entropy(logits, y, reduction="none")


def image_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-pixel binary cross-entropy of ``x`` (binary or grey in [0, 1]) under
    Bernoulli ``logits``, same shape as ``x``; sum over pixels for nats per image."""
    return F.binary_cross_entropy_with_logits(logits, x.reshape(logits.shape), reduction="none")


def reverse_weight_value(reverse_weight: Union[str, float], n_pixels: int) -> float:
    """The factor :math:`w` on the per-image reverse log-likelihood (see the module doc)."""
    if reverse_weight == "pixel_mean":
        return 1.0 / n_pixels
    if reverse_weight == "sum":
        return 1.0
    if isinstance(reverse_weight, (int, float)) and not isinstance(reverse_weight, bool):
        if math.isfinite(reverse_weight) and reverse_weight >= 0:
            return float(reverse_weight)
    raise SpecError(f"reverse_weight must be 'pixel_mean', 'sum' or a number >= 0, got {reverse_weight!r}")


class DCIMObjective(ELBO):
    """Shared machinery: find the module, register it, reduce over the batch, backprop.

    Subclasses define :meth:`terms`, the per-image loss terms; the loss is
    their sum, weighted by :attr:`weights` (1 where absent). After each call
    ``last_terms`` holds the minibatch means of the unweighted terms (nats per
    image), for monitoring.
    """

    name = "objective"

    def __init__(self, module=None, batch_reduction: str = "mean"):
        super().__init__(num_particles=1)
        if batch_reduction not in BATCH_REDUCTIONS:
            raise SpecError(f"batch_reduction must be one of {list(BATCH_REDUCTIONS)}, got {batch_reduction!r}")
        self.module = module
        self.batch_reduction = batch_reduction
        self.weights: dict[str, float] = {}
        self.last_terms: dict[str, float] = {}

    def _dcim(self, model, guide):
        if self.module is not None:
            return self.module
        owner = getattr(model, "__self__", None)
        if owner is None or getattr(guide, "__self__", owner) is not owner:
            raise SpecError(
                f"the {self.name} objective needs the DCIM: pass the bound methods dcim.model and dcim.guide, "
                f"or build it with module=dcim"
            )
        return owner

    def terms(self, dcim, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image loss terms, each of shape ``(N,)``, in nats."""
        raise NotImplementedError

    def _get_trace(self, model, guide, args, kwargs):
        # ELBO's abstract hook: these estimators run the mean recursion, not traces
        raise NotImplementedError(f"the {self.name} objective does not trace the model and guide")

    def differentiable_loss(self, model, guide, x, y=None, *args, **kwargs) -> torch.Tensor:
        dcim = self._dcim(model, guide)
        pyro.module(dcim.name, dcim)
        x = dcim.check_images(x)
        y = dcim.check_labels(y, x.shape[0], f"the {self.name} objective")
        terms = self.terms(dcim, x, y)
        per_image = sum(self.weights.get(k, 1.0) * v for k, v in terms.items())
        self.last_terms = {k: float(v.detach().mean()) for k, v in terms.items()}
        return per_image.mean() if self.batch_reduction == "mean" else per_image.sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())


class DiscriminativeLoss(DCIMObjective):
    """:math:`-\\log p_{fwd}(y \\mid x)` by the mean recursion: a sigmoid DNN's cross-entropy."""

    name = "discriminative"

    def terms(self, dcim, x, y):
        return {"class_nll": class_nll(dcim.class_logits(x), y)}


class GenerativeLoss(DCIMObjective):
    """The paper's bidirectional conditional likelihood,
    :math:`-\\log p_{fwd}(y \\mid x) - w \\log p_{rev}(x \\mid y)`, both by the mean recursion.

    :param reverse_weight: ``"pixel_mean"`` (default, :math:`w = 1/D`, as the
        paper's Keras code), ``"sum"`` (:math:`w = 1`, full log-likelihood) or a number.
    """

    name = "generative"

    def __init__(self, module=None, reverse_weight: Union[str, float] = "pixel_mean", batch_reduction: str = "mean"):
        super().__init__(module, batch_reduction)
        reverse_weight_value(reverse_weight, 1)  # validate now, with a clear message
        self.reverse_weight = reverse_weight

    def reverse_logits(self, dcim, x, y):
        return dcim.image_logits(y)

    def terms(self, dcim, x, y):
        self.weights = {"reverse_nll": reverse_weight_value(self.reverse_weight, x[0].numel())}
        rev = image_nll(self.reverse_logits(dcim, x, y), x).flatten(1).sum(-1)
        return {"class_nll": class_nll(dcim.class_logits(x), y), "reverse_nll": rev}


class AlternativeGenerativeLoss(GenerativeLoss):
    """The paper's alternative reverse objective (its Sec. 3.2, our reading):
    :math:`-\\log p_{fwd}(y \\mid x) - w \\log p_{rev}(x \\mid \\tilde h^k)`, where
    :math:`\\tilde h^k` is sampled from the forward model for the current image
    and the image is scored by the downward mean recursion from it.

    :param int layer: the inner layer sampled, ``1..m-1`` (default ``m-1``, the last hidden layer).
    :param str sampling: ``"marginal"`` (default): :math:`\\tilde h^k \\sim
        \\mathrm{Bernoulli}(\\mu^k)` with :math:`\\mu^k` the upward mean recursion,
        i.e. a Bernoulli sample of the DNN's activations; ``"ancestral"``: sample
        every forward layer :math:`1..k` in turn.
    """

    name = "alternative"

    def __init__(self, module=None, reverse_weight="pixel_mean", layer: Optional[int] = None,
                 sampling: str = "marginal", batch_reduction: str = "mean"):
        super().__init__(module, reverse_weight, batch_reduction)
        if sampling not in INNER_SAMPLING:
            raise SpecError(f"sampling must be one of {list(INNER_SAMPLING)}, got {sampling!r}")
        if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 1):
            raise SpecError(f"layer must be a hidden layer index >= 1, got {layer!r}")
        self.layer = layer
        self.sampling = sampling

    def reverse_logits(self, dcim, x, y):
        m = dcim.n_layers
        k = m - 1 if self.layer is None else self.layer
        if not 1 <= k <= m - 1:
            raise SpecError(f"layer must be a hidden layer index in 1..{m - 1} for this net, got {k}")
        with torch.no_grad():
            if self.sampling == "marginal":
                sample = torch.bernoulli(dcim.up_means(x, to_layer=k)[k])
            else:
                sample = dcim.sample_up(x, to_layer=k)[k]
        return dcim.image_logits(sample, from_layer=k)


def class_log_prob(dcim, weight: float = 1.0):
    """``weight`` times the forward model's :math:`\\log q(y \\mid h^{m-1}_i)` of the observed
    label at each guide sample of the last hidden layer, ``(k, N)``: the wake-phi term that
    teaches the forward model to classify the data (the guide never samples ``y`` when it is given)."""
    def term(guide_trace, x, y=None, *args, **kwargs):
        m = dcim.n_layers
        h = guide_trace.nodes[f"h{m - 1}"]["value"]
        log_probs = torch.log_softmax(dcim.logits_up(m, h), -1)
        y = dcim.check_labels(y, x.shape[0], "the class term of reweighted wake-sleep")
        return weight * log_probs.gather(-1, y.expand(log_probs.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return term


def reweighted_wake_sleep(module=None, num_particles: int = 5, insomnia: float = 1.0,
                          class_weight: float = 1.0) -> ReweightedWakeSleep:
    """Reweighted wake-sleep on the pair (reverse = model, forward = guide, tied weights):
    wake-theta fits :math:`p_{rev}(x, y)`, wake-phi / sleep-phi fit the forward model to
    its posterior; wake-phi also scores the observed label, :math:`\\log q(y \\mid h_i)`,
    times ``class_weight`` (0: only dreams teach the forward model to classify; larger
    values trade the reverse model's fit for accuracy, as the paper's 1/D weighting does)."""
    if isinstance(class_weight, bool) or not isinstance(class_weight, (int, float)) or not class_weight >= 0:
        raise SpecError(f"class_weight must be a number >= 0, got {class_weight!r}")
    if class_weight and module is None:
        raise SpecError("the class term of reweighted wake-sleep needs the DCIM: pass module=dcim")
    if module is not None and module.n_layers < 2:
        raise SpecError("(reweighted) wake-sleep needs a DCIM with at least one hidden layer to sample; this one has none")
    return ReweightedWakeSleep(num_particles=num_particles, insomnia=insomnia, max_plate_nesting=1,
                               wake_guide_term=class_log_prob(module, class_weight) if class_weight else None)


def wake_sleep(module=None, insomnia: float = 0.0, class_weight: float = 1.0) -> ReweightedWakeSleep:
    """Classic wake-sleep on the pair: one forward sample per image for wake-theta, the
    forward model trained on dreams (plus wake-phi, with its class term, when ``insomnia > 0``)."""
    return reweighted_wake_sleep(module, num_particles=1, insomnia=insomnia, class_weight=class_weight)


OBJECTIVES = {
    "discriminative": DiscriminativeLoss,
    "generative": GenerativeLoss,
    "alternative": AlternativeGenerativeLoss,
    "elbo": TraceGraph_ELBO,
    "rws": reweighted_wake_sleep,
    "wake_sleep": wake_sleep,
}


def make_objective(name: str, **options) -> ELBO:
    """Build the DCIM objective called ``name`` (one of :data:`OBJECTIVES`) with ``options``.

    ``"elbo"`` is Pyro's :class:`~pyro.infer.TraceGraph_ELBO` on the model/guide
    pair (score-function gradients for the binary layers); ``"rws"`` and
    ``"wake_sleep"`` report the negative IWAE bound on :math:`\\log p_{rev}(x, y)`.
    These three sum over the minibatch rather than average.
    """
    if name not in OBJECTIVES:
        raise SpecError(f"unknown objective {name!r}; expected one of: {', '.join(OBJECTIVES)}")
    try:
        return OBJECTIVES[name](**options)
    except TypeError as e:
        raise SpecError(f"bad option for objective {name!r}: {e}") from None
