"""The DCIM's architecture: layer specs, the shape chain, and the tied links.

A DCIM has layers :math:`x^0` (the image), :math:`x^1 \\dots x^{m-1}` (binary
hidden layers) and :math:`x^m` (the class). Between layers :math:`k-1` and
:math:`k` sits one *link*: a linear map :math:`W^k` used upward by the forward
(recognition) model and, transposed, downward by the reverse (generator)
model. A link holds the only weight of its layer pair, so the two directions
share storage and receive one gradient.

- :class:`DenseLink`: :math:`W^k x` and :math:`W^{k\\top} h` for a matrix.
- :class:`ConvLink`: a 2-d convolution upward and the transposed convolution
  with the same kernel downward, with ``output_padding`` chosen so the
  downward map lands exactly on the input shape: it is the exact adjoint
  (matrix transpose) of the upward map.

Shapes are chained at spec time: :meth:`DCIMSpec.layer_shapes` raises a
one-line :class:`~ppl_models.errors.SpecError` naming the first layer that
does not fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import SpecError
from .specs import option

LAYER_KINDS = ("dense", "conv")


@dataclass
class DCIMLayer:
    """One hidden layer of binary units and the link that produces it from the layer below."""

    kind: str = option("dense", doc="dense (matrix) or conv (2-d convolution) link from the layer below", choices=LAYER_KINDS)
    units: int = option(512, doc="dense: number of units; conv: number of channels (kernels)", min=1)
    window: int = option(3, doc="conv only: square kernel size", min=1)
    stride: int = option(1, doc="conv only: stride", min=1)
    padding: int = option(0, doc="conv only: zero padding on each side", min=0)


@dataclass
class DCIMSpec:
    """Architecture of a DCIM: image shape, hidden layers bottom-up, number of classes.

    The class layer is always a dense softmax layer on top of the last hidden
    layer (flattened). ``input_shape`` is ``[D]`` for dense nets or
    ``[C, H, W]`` when the first link is convolutional.
    """

    input_shape: list[int] = option([784], doc="image shape: [D] or [C, H, W]", min=1)
    hidden: list[DCIMLayer] = option([], doc="hidden layers, bottom (next to the image) first")
    n_classes: int = option(10, doc="number of classes (the top, softmax layer)", min=2)

    def validate(self):
        self.layer_shapes()

    def layer_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of :math:`x^0, \\dots, x^m`; raises :class:`SpecError` where they do not chain."""
        if len(self.input_shape) not in (1, 3):
            raise SpecError(f"spec.input_shape must be [D] or [C, H, W], got {list(self.input_shape)}")
        shapes = [tuple(int(s) for s in self.input_shape)]
        for i, layer in enumerate(self.hidden):
            below = shapes[-1]
            where = f"spec.hidden[{i}]"
            if layer.kind == "dense":
                shapes.append((layer.units,))
                continue
            if layer.kind != "conv":
                raise SpecError(f"{where}.kind must be one of {list(LAYER_KINDS)}, got {layer.kind!r}")
            if len(below) != 3:
                raise SpecError(
                    f"{where}: a conv layer needs a [C, H, W] layer below it, got shape {list(below)} "
                    "(a conv layer cannot follow a dense layer or a flat input)"
                )
            _, h, w = below
            if layer.window > min(h, w) + 2 * layer.padding:
                raise SpecError(
                    f"{where}: conv window {layer.window} (padding {layer.padding}) does not fit "
                    f"its input of shape {list(below)}"
                )
            out_h = (h + 2 * layer.padding - layer.window) // layer.stride + 1
            out_w = (w + 2 * layer.padding - layer.window) // layer.stride + 1
            shapes.append((layer.units, out_h, out_w))
        shapes.append((self.n_classes,))
        return shapes


def dense_spec(hidden=(512, 512), input_dim: int = 784, n_classes: int = 10) -> DCIMSpec:
    """The paper's dense net (default 784-512-512-10)."""
    return DCIMSpec(input_shape=[input_dim], hidden=[DCIMLayer("dense", u) for u in hidden], n_classes=n_classes)


def paper_cnn_spec(input_shape=(1, 28, 28), n_classes: int = 10) -> DCIMSpec:
    """The paper's 8-layer CNN: (window, stride, kernels) = (3,1,32), (3,1,32), (2,2,32),
    (3,1,64), (3,1,64), (2,2,64), then dense 50 and the 10 classes; no padding
    ('valid' in Keras), so 28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 4."""
    convs = [(3, 1, 32), (3, 1, 32), (2, 2, 32), (3, 1, 64), (3, 1, 64), (2, 2, 64)]
    hidden = [DCIMLayer("conv", units=c, window=k, stride=s) for k, s, c in convs]
    return DCIMSpec(input_shape=list(input_shape), hidden=hidden + [DCIMLayer("dense", 50)], n_classes=n_classes)


ARCHITECTURES = {"dense": dense_spec, "cnn": paper_cnn_spec}


def _glorot_(weight: torch.Tensor, fan_in: int, fan_out: int):
    # Glorot-uniform (Keras' default, as in the paper's code); symmetric in
    # fan-in and fan-out, which suits a weight used in both directions.
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        weight.uniform_(-bound, bound)


class DenseLink(nn.Module):
    """:math:`W \\in \\mathbb{R}^{n_{out} \\times n_{in}}`: ``up(x) = W x``, ``down(h) = W^T h``.

    The input may have any shape (a conv layer below is flattened); ``down``
    restores it.
    """

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        n_in, n_out = math.prod(in_shape), math.prod(out_shape)
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        _glorot_(self.weight, n_in, n_out)

    def up(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(-len(self.in_shape)) @ self.weight.t()

    def down(self, h: torch.Tensor) -> torch.Tensor:
        return (h @ self.weight).unflatten(-1, self.in_shape)


class ConvLink(nn.Module):
    """A convolution kernel :math:`K` (``(C_out, C_in, k, k)``): ``up`` = ``conv2d(x, K)``,
    ``down`` = ``conv_transpose2d(h, K)``, the exact transpose of ``up`` as a linear map.

    ``output_padding = (H + 2p - k) mod s`` restores the input size when the
    stride does not divide it; the rows and columns the upward convolution
    never reads get no weight downward (only their bias), as the transpose says.
    """

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...], window: int, stride: int, padding: int):
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.stride, self.padding = stride, padding
        c_in, h, w = in_shape
        self.output_padding = ((h + 2 * padding - window) % stride, (w + 2 * padding - window) % stride)
        self.weight = nn.Parameter(torch.empty(out_shape[0], c_in, window, window))
        _glorot_(self.weight, c_in * window * window, out_shape[0] * window * window)

    def _batched(self, t: torch.Tensor, shape) -> tuple[torch.Tensor, torch.Size]:
        batch = t.shape[: t.dim() - len(shape)]
        return t.reshape(-1, *shape), batch

    def up(self, x: torch.Tensor) -> torch.Tensor:
        flat, batch = self._batched(x, self.in_shape)
        out = F.conv2d(flat, self.weight, stride=self.stride, padding=self.padding)
        return out.reshape(*batch, *self.out_shape)

    def down(self, h: torch.Tensor) -> torch.Tensor:
        flat, batch = self._batched(h, self.out_shape)
        out = F.conv_transpose2d(
            flat, self.weight, stride=self.stride, padding=self.padding, output_padding=self.output_padding
        )
        return out.reshape(*batch, *self.in_shape)


def build_links(spec: DCIMSpec) -> tuple[list[tuple[int, ...]], nn.ModuleList]:
    """The layer shapes and one link per adjacent pair (the last, to the classes, dense)."""
    shapes = spec.layer_shapes()
    links = []
    for k in range(1, len(shapes)):
        layer = spec.hidden[k - 1] if k - 1 < len(spec.hidden) else DCIMLayer("dense", spec.n_classes)
        if layer.kind == "conv":
            links.append(ConvLink(shapes[k - 1], shapes[k], layer.window, layer.stride, layer.padding))
        else:
            links.append(DenseLink(shapes[k - 1], shapes[k]))
    return shapes, nn.ModuleList(links)
