"""Questions to ask a trained DCIM (Flach, Shekhovtsov & Fikar 2017).

- :func:`class_probabilities`, :func:`predict`, :func:`accuracy`: the forward
  model's :math:`p(y \\mid x)` by the mean recursion (the DNN's output), or,
  with ``num_samples``, by Monte Carlo over the forward model's own samples,
  :math:`\\frac1S \\sum_s p(y \\mid h^{m-1}_s)`, :math:`h_s \\sim p_{fwd}(h \\mid x)`:
  the classifier that sampling estimators (ELBO, wake-sleep) train.
- :func:`reverse_loss`: the reverse model's :math:`-\\log p_{rev}(x \\mid y)` by
  the downward mean recursion from one-hot :math:`y`, per image (nats), per
  pixel (its mean over pixels, the paper's reverse loss) or as a pixel map.
- :func:`generate`: class-conditional images: sample the reverse model from
  :math:`y` down to a chosen layer, then propagate probabilities down to the
  image, as the paper's figures do (``sample_to=1``: ancestral down to the
  first hidden layer; ``sample_to=m``: no sampling, the mean image of the class).

All run without gradients and accept images flat ``(N, D)`` or shaped.
The DCIM interface used: ``class_logits``, ``image_logits``, ``sample_down``,
``check_images``, ``check_labels``, ``n_layers``.
"""

from __future__ import annotations

from typing import Optional

import torch

from .errors import SpecError

from .dcim_objectives import image_nll

REVERSE_REDUCTIONS = ("image", "pixel", "none")


@torch.no_grad()
def class_probabilities(dcim, x: torch.Tensor, num_samples: Optional[int] = None) -> torch.Tensor:
    """:math:`p_{fwd}(y \\mid x)`, shape ``(N, n_classes)``: by the mean recursion
    (``num_samples=None``) or averaged over ``num_samples`` ancestral samples of the
    forward model's hidden layers."""
    if num_samples is None:
        return torch.softmax(dcim.class_logits(x), -1)
    return class_probability_draws(dcim, x, num_samples).mean(0)


@torch.no_grad()
def class_probability_draws(dcim, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """:math:`p(y \\mid h^{m-1}_s)` for ``num_samples`` forward samples :math:`h_s \\sim p_{fwd}(h \\mid x)`,
    shape ``(num_samples, N, n_classes)``: their mean is the Monte Carlo :math:`p_{fwd}(y \\mid x)`, their
    spread its standard error."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise SpecError(f"num_samples must be a positive integer or None, got {num_samples!r}")
    x = dcim.check_images(x)
    m = dcim.n_layers
    draws = []
    for _ in range(num_samples):
        h = dcim.sample_up(x, to_layer=m - 1)[m - 1]
        draws.append(torch.softmax(dcim.logits_up(m, h), -1))
    return torch.stack(draws)


@torch.no_grad()
def predict(dcim, x: torch.Tensor, num_samples: Optional[int] = None) -> torch.Tensor:
    """The most probable class of each image, int64 ``(N,)`` (``num_samples``: see :func:`class_probabilities`)."""
    if num_samples is None:
        return dcim.class_logits(x).argmax(-1)
    return class_probabilities(dcim, x, num_samples).argmax(-1)


@torch.no_grad()
def accuracy(dcim, x: torch.Tensor, y: torch.Tensor, num_samples: Optional[int] = None) -> float:
    """Fraction of images whose most probable class is ``y``."""
    y = dcim.check_labels(y, dcim.check_images(x).shape[0], "accuracy")
    return float((predict(dcim, x, num_samples) == y).double().mean())


@torch.no_grad()
def reverse_loss(dcim, x: torch.Tensor, y: torch.Tensor, per: str = "pixel") -> torch.Tensor:
    """Reverse-model loss :math:`-\\log p_{rev}(x \\mid y)` by the downward mean recursion.

    :param str per: ``"pixel"`` (default): per-image mean over pixels, shape
        ``(N,)``, the paper's reverse loss (0.23 / 0.14 for its CNN);
        ``"image"``: per-image sum, nats, ``(N,)``; ``"none"``: the per-pixel
        map ``(N, *input_shape)``.
    """
    if per not in REVERSE_REDUCTIONS:
        raise SpecError(f"per must be one of {list(REVERSE_REDUCTIONS)}, got {per!r}")
    x = dcim.check_images(x)
    y = dcim.check_labels(y, x.shape[0], "reverse_loss")
    nll = image_nll(dcim.image_logits(y), x)
    if per == "none":
        return nll
    per_image = nll.flatten(1)
    return per_image.mean(-1) if per == "pixel" else per_image.sum(-1)


@torch.no_grad()
def generate(dcim, y: torch.Tensor, sample_to: Optional[int] = 1, binary: bool = False) -> torch.Tensor:
    """Images of classes ``y`` from the reverse model, shape ``(N, *input_shape)``.

    :param y: int64 class indices ``(N,)`` (repeat a class for several images).
    :param sample_to: sample layers ``m-1 .. sample_to`` ancestrally, then
        propagate probabilities down (mean recursion) to the image. ``1``
        (default): fully ancestral above the image; ``m`` or ``None``: no
        sampling, the class's mean image.
    :param bool binary: return a binary sample of the image instead of its
        probabilities.
    """
    m = dcim.n_layers
    k = m if sample_to is None else sample_to
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= m:
        raise SpecError(f"sample_to must be a layer index in 1..{m} or None, got {sample_to!r}")
    y = dcim.check_labels(y, None, "generate")
    top = dcim.sample_down(y, to_layer=k)[k]
    probs = torch.sigmoid(dcim.image_logits(top, from_layer=k))
    return torch.bernoulli(probs) if binary else probs


@torch.no_grad()
def scores(dcim, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> dict:
    """Accuracy (mean recursion) and reverse loss per image over ``(x, y)``, in batches (a CNN's layers are large)."""
    correct, reverse = 0.0, 0.0
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        correct += float((dcim.class_logits(xb).argmax(-1) == yb).sum())
        reverse += float(reverse_loss(dcim, xb, yb, per="image").sum())
    n = max(1, len(y))
    return {"accuracy": correct / n, "reverse_loss_per_image": reverse / n}


@torch.no_grad()
def sampled_accuracy(dcim, x: torch.Tensor, y: torch.Tensor, num_samples: int, batch_size: int = 500) -> float:
    """:func:`accuracy` by Monte Carlo over ``num_samples`` forward samples, in batches."""
    correct = sum(accuracy(dcim, x[s:s + batch_size], y[s:s + batch_size], num_samples=num_samples)
                  * len(y[s:s + batch_size]) for s in range(0, len(y), batch_size))
    return correct / max(1, len(y))
