"""Deep conditional independent model (DCIM): a sigmoid DNN and its tied generator.

Layers :math:`x^0` (image), :math:`x^1, \\dots, x^{m-1}` (binary hidden) and
:math:`x^m` (class, categorical), one weight :math:`W^k` per adjacent pair and
ONE bias :math:`b^k` per layer. The forward (recognition) model and the
reverse (generator) model share the weights by transposition:

.. math::

    p(x^k_i = 1 \\mid x^{k-1}) = \\sigma(W^k x^{k-1} + b^k)_i, \\qquad
    p(x^m \\mid x^{m-1}) = \\mathrm{softmax}(W^m x^{m-1} + b^m),

    p(x^{k-1}_i = 1 \\mid x^k) = \\sigma(W^{k\\top} x^k + b^{k-1})_i, \\qquad
    p(x^m) = \\mathrm{softmax}(b^m).

With one layer the two conditionals are those of one RBM with energy
:math:`-x^{1\\top} W^1 x^0 - b^{0\\top} x^0 - b^{1\\top} x^1`. The *mean
recursion* replaces a layer's marginal by the conditional at the mean of the
layer below, :math:`\\mathbb{E}[x^k] \\approx \\sigma(W^k \\mathbb{E}[x^{k-1}] + b^k)`:
upward it is exactly the forward pass of a sigmoid DNN; it is exact for the
first layer computed and approximate above it.

As a Pyro pair the reverse model is :meth:`DCIM.model` (y -> ... -> x, x
observed) and the forward model is its guide :meth:`DCIM.guide`
(x -> ... -> y), both reading the same parameters, with per-datapoint sites
inside ``pyro.plate("data")``. Sites: ``"y"``, ``"h{k}"`` for hidden layer
:math:`k = 1 \\dots m-1`, ``"x"``.

References:
 [1] Flach, Shekhovtsov, Fikar. Generative learning for deep networks. arXiv:1709.08524, 2017.

Example::

    dcim = DCIM(dense_spec([512, 512]))
    probs = dcim.up_means(x)[dcim.n_layers]          # class probabilities (N, 10)
    image = dcim.down_means(y, from_layer=dcim.n_layers)[0]   # mean image of classes y
"""

from __future__ import annotations

import math
from typing import Optional

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .dcim_layers import ARCHITECTURES, DCIMLayer, DCIMSpec, build_links, dense_spec, paper_cnn_spec
from .errors import DataError, SpecError

__all__ = ["DCIM", "DCIMSpec", "DCIMLayer", "dense_spec", "paper_cnn_spec", "ARCHITECTURES"]


class DCIM(nn.Module):
    """The DCIM of [1] as one module: ``links[k-1]`` holds :math:`W^k`, ``biases[k]`` holds :math:`b^k`.

    :param DCIMSpec spec: the architecture (see :func:`dense_spec`, :func:`paper_cnn_spec`).
    :param str name: the module's name in Pyro's param store.

    Layer values are tensors of shape ``(*batch, *layer_shapes[k])``; the class
    layer is one-hot where a value is expected, and methods that take classes
    also accept int64 indices. Images may be flat ``(N, prod(input_shape))`` or
    shaped ``(N, *input_shape)``; they are returned in the shape of
    ``input_shape``.
    """

    def __init__(self, spec: DCIMSpec, name: str = "dcim"):
        super().__init__()
        self.spec = spec
        self.name = name
        self.layer_shapes, self.links = build_links(spec)
        self.n_layers = len(self.layer_shapes) - 1  # m: index of the class layer
        self.n_classes = spec.n_classes
        biases = [torch.zeros(self.layer_shapes[0])]
        for k in range(1, self.n_layers + 1):
            shape = self.layer_shapes[k]
            # conv layers: one bias per channel, as a DNN's conv layer has; the
            # image gets one per pixel since only the generator ever produces it
            biases.append(torch.zeros(shape[0], 1, 1) if len(shape) == 3 else torch.zeros(shape))
        self.biases = nn.ParameterList([nn.Parameter(b) for b in biases])

    # ----------------------------------------------------------------- checks
    def check_images(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` reshaped to ``(N, *input_shape)``; :class:`DataError` if it cannot be."""
        shape = self.layer_shapes[0]
        if not torch.is_tensor(x):
            raise DataError(f"x must be a tensor of images, got {type(x).__name__}")
        if tuple(x.shape[1:]) == shape:
            return x
        if x.dim() == 2 and x.shape[1] == math.prod(shape):
            return x.reshape(x.shape[0], *shape)
        raise DataError(
            f"x must have shape (N, {math.prod(shape)}) or (N, {', '.join(map(str, shape))}), got {tuple(x.shape)}"
        )

    def check_labels(self, y: Optional[torch.Tensor], n: Optional[int] = None, what: str = "this") -> torch.Tensor:
        """``y`` as int64 class indices of shape ``(N,)``; :class:`DataError` if missing or out of range."""
        if y is None:
            raise DataError(f"{what} needs labels y (class indices 0..{self.n_classes - 1}), got None")
        if not torch.is_tensor(y) or y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
            got = f"{tuple(y.shape)} {y.dtype}" if torch.is_tensor(y) else type(y).__name__
            raise DataError(f"y must be a 1-d integer tensor of class indices, got {got}")
        if n is not None and y.shape[0] != n:
            raise DataError(f"y must hold one label per image ({n}), got {y.shape[0]}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise DataError(f"y must hold class indices in 0..{self.n_classes - 1}, found {bad}")
        return y.long()

    def _layer_value(self, value: torch.Tensor, k: int) -> torch.Tensor:
        if k == 0:
            return self.check_images(value)
        if k == self.n_layers and not value.dtype.is_floating_point:
            return F.one_hot(self.check_labels(value), self.n_classes).to(self.biases[-1].dtype)
        return value

    def _check_layer(self, k: int, what: str, low: int = 0) -> int:
        if not isinstance(k, int) or not low <= k <= self.n_layers:
            raise SpecError(f"{what} must be a layer index in {low}..{self.n_layers}, got {k!r}")
        return k

    # ------------------------------------------------------------- conditionals
    def logits_up(self, k: int, below: torch.Tensor) -> torch.Tensor:
        """Logits of :math:`p(x^k \\mid x^{k-1})`: :math:`W^k x^{k-1} + b^k` (softmax logits for the class)."""
        return self.links[k - 1].up(below) + self.biases[k]

    def logits_down(self, k: int, above: torch.Tensor) -> torch.Tensor:
        """Logits of :math:`p(x^{k-1} \\mid x^k)`: :math:`W^{k\\top} x^k + b^{k-1}`."""
        return self.links[k - 1].down(above) + self.biases[k - 1]

    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax logits of :math:`p(y \\mid x)` by the upward mean recursion (the DNN's output)."""
        mu = self.check_images(x)
        for k in range(1, self.n_layers):
            mu = torch.sigmoid(self.logits_up(k, mu))
        return self.logits_up(self.n_layers, mu)

    def image_logits(self, value: torch.Tensor, from_layer: Optional[int] = None) -> torch.Tensor:
        """Logits of :math:`p(x^0 \\mid \\cdot)` by the downward mean recursion from layer ``from_layer``
        (default the class layer, where ``value`` may be class indices)."""
        k = self.n_layers if from_layer is None else self._check_layer(from_layer, "from_layer", 1)
        mu = self._layer_value(value, k)
        for j in range(k, 1, -1):
            mu = torch.sigmoid(self.logits_down(j, mu))
        return self.logits_down(1, mu)

    # ----------------------------------------------------------- mean recursion
    def up_means(self, x: torch.Tensor, to_layer: Optional[int] = None) -> dict[int, torch.Tensor]:
        """Approximate marginals :math:`\\mathbb{E}[x^k \\mid x^0]` by the upward mean recursion,
        as ``{k: mean}`` for ``k = 0..to_layer``; the class layer holds softmax probabilities."""
        top = self.n_layers if to_layer is None else self._check_layer(to_layer, "to_layer")
        means = {0: self.check_images(x)}
        for k in range(1, top + 1):
            logits = self.logits_up(k, means[k - 1])
            means[k] = torch.softmax(logits, -1) if k == self.n_layers else torch.sigmoid(logits)
        return means

    def down_means(self, value: torch.Tensor, from_layer: Optional[int] = None, to_layer: int = 0) -> dict[int, torch.Tensor]:
        """Approximate marginals of the reverse model by the downward mean recursion from the
        value of layer ``from_layer`` (default the class layer: one-hot or indices), as
        ``{k: mean}`` for ``k = from_layer..to_layer``; the image mean is at key 0."""
        top = self.n_layers if from_layer is None else self._check_layer(from_layer, "from_layer")
        self._check_layer(to_layer, "to_layer")
        means = {top: self._layer_value(value, top)}
        for k in range(top, to_layer, -1):
            means[k - 1] = torch.sigmoid(self.logits_down(k, means[k]))
        return means

    # ------------------------------------------------------- ancestral sampling
    def sample_up(self, x: torch.Tensor, to_layer: Optional[int] = None) -> dict[int, torch.Tensor]:
        """Ancestral sample of the forward model, ``{k: sample}`` for ``k = 0..to_layer``
        (binary hidden layers as floats, the class one-hot)."""
        top = self.n_layers if to_layer is None else self._check_layer(to_layer, "to_layer")
        values = {0: self.check_images(x)}
        for k in range(1, top + 1):
            logits = self.logits_up(k, values[k - 1])
            if k == self.n_layers:
                values[k] = F.one_hot(dist.Categorical(logits=logits).sample(), self.n_classes).to(logits.dtype)
            else:
                values[k] = torch.bernoulli(torch.sigmoid(logits))
        return values

    def sample_down(self, value: torch.Tensor, from_layer: Optional[int] = None, to_layer: int = 0) -> dict[int, torch.Tensor]:
        """Ancestral sample of the reverse model below layer ``from_layer`` given its value
        (default the class layer: one-hot or indices), ``{k: sample}`` for ``k = from_layer..to_layer``."""
        top = self.n_layers if from_layer is None else self._check_layer(from_layer, "from_layer")
        self._check_layer(to_layer, "to_layer")
        values = {top: self._layer_value(value, top)}
        for k in range(top, to_layer, -1):
            values[k - 1] = torch.bernoulli(torch.sigmoid(self.logits_down(k, values[k])))
        return values

    def class_prior_logits(self) -> torch.Tensor:
        """Logits of the reverse model's top layer, :math:`p(y) = \\mathrm{softmax}(b^m)`."""
        return self.biases[self.n_layers]

    # -------------------------------------------------------------- Pyro pair
    def _event(self, k: int) -> int:
        return len(self.layer_shapes[k])

    def model(self, x: Optional[torch.Tensor] = None, y: Optional[torch.Tensor] = None, batch_size: Optional[int] = None):
        """Reverse (generator) model :math:`p(y) \\prod_k p(x^{k-1} \\mid x^k)`, ``x`` observed.

        ``y`` is observed when given. With ``x=None`` it draws images: as many as
        ``y`` has labels, or ``batch_size``. ``x`` may hold grey levels in [0, 1]:
        its log-probability is then the binary cross-entropy the paper trains on
        (not a normalised density), so the Bernoulli's support check is off.
        """
        pyro.module(self.name, self)
        if x is not None:
            x = self.check_images(x)
            n = x.shape[0]
        else:
            n = y.shape[0] if y is not None else batch_size
            if n is None:
                raise DataError("model(x=None) needs labels y or batch_size to know how many images to draw")
        if y is not None:
            y = self.check_labels(y, n, "the model")
        m = self.n_layers
        with pyro.plate("data", n):
            prior = self.class_prior_logits().expand(n, self.n_classes)
            label = pyro.sample("y", dist.Categorical(logits=prior), obs=y)
            h = F.one_hot(label, self.n_classes).to(prior.dtype)
            for k in range(m, 1, -1):
                h = pyro.sample(f"h{k - 1}", dist.Bernoulli(logits=self.logits_down(k, h)).to_event(self._event(k - 1)))
            image = dist.Bernoulli(logits=self.logits_down(1, h), validate_args=False)
            return pyro.sample("x", image.to_event(self._event(0)), obs=x)

    def guide(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, batch_size: Optional[int] = None):
        """Forward (recognition) model :math:`\\prod_k p(x^k \\mid x^{k-1})`; samples ``y`` only when not given."""
        pyro.module(self.name, self)
        x = self.check_images(x)
        n = x.shape[0]
        if y is not None:
            self.check_labels(y, n, "the guide")
        m = self.n_layers
        with pyro.plate("data", n):
            h = x
            for k in range(1, m):
                h = pyro.sample(f"h{k}", dist.Bernoulli(logits=self.logits_up(k, h)).to_event(self._event(k)))
            if y is None:
                return pyro.sample("y", dist.Categorical(logits=self.logits_up(m, h)))
            return y
