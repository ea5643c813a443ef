"""Binarisation protocols and checks on what a model is fed.

Two protocols are used in the literature for binarised MNIST:

- *threshold*: x_i = 1 if the grey level exceeds a threshold (0.5), fixed once;
- *dynamic*: x_i ~ Bernoulli(grey level), resampled every time a training
  image is used (Salakhutdinov & Murray, "On the quantitative analysis of deep
  belief networks", ICML 2008; used by the IWAE paper, Burda et al. 2016),
  while the validation and test sets are binarised once, stochastically, with a
  fixed seed so that every model is scored on the same binary images.
"""

from __future__ import annotations

import dataclasses

import torch

from ..errors import DataError
from .splits import Split, Splits

__all__ = ["BINARIZE_OPTIONS", "DynamicBinarization", "binarize_splits", "check_binary", "check_features"]

#: The accepted values of ``binarize``.
BINARIZE_OPTIONS = ("threshold", "dynamic", "none")


@dataclasses.dataclass(frozen=True)
class DynamicBinarization:
    """Draw binary images x ~ Bernoulli(p) from grey levels p in [0, 1].

    Stateless and picklable, so it can ride along into DataLoader workers; the
    randomness comes from ``generator`` (or torch's global generator), which
    must live on ``x``'s device.

    Example::

        >>> DynamicBinarization()(torch.tensor([0.0, 1.0]))
        tensor([0., 1.])
    """

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        try:
            return torch.bernoulli(x, generator=generator)
        except RuntimeError:  # torch checks p in [0, 1] anyway: name the problem instead of re-checking
            bad = x[(x < 0) | (x > 1) | ~torch.isfinite(x)]
            found = f"found {bad.flatten()[0].item()!r}" if bad.numel() else "the draw failed"
            raise DataError(f"dynamic binarisation needs grey levels in [0, 1], {found}") from None


def check_binary(x: torch.Tensor, what: str = "data") -> torch.Tensor:
    """Raise :class:`DataError` unless every value of ``x`` is exactly 0 or 1; return ``x``.

    The message names ``what`` and the first offending value and its position.
    """
    bad = (x != 0) & (x != 1)
    if bool(bad.any()):
        position = tuple(int(i) for i in bad.nonzero()[0])
        value = x[position].item()
        raise DataError(
            f"{what} must be binary (every value 0 or 1), found {value!r} at index {position}; "
            "binarise it first (load_dataset(..., binarize='threshold' or 'dynamic'))"
        )
    return x


def check_features(x, dim: int, what: str = "data") -> torch.Tensor:
    """Raise :class:`DataError` unless ``x`` is a float tensor (N, dim) of finite values in [0, 1]; return ``x``."""
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{what} must be a torch.Tensor of shape (N, {dim}), got {type(x).__name__}")
    if not x.is_floating_point():
        raise DataError(f"{what} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != 2 or x.shape[1] != dim:
        raise DataError(f"{what} must have shape (N, {dim}), got {tuple(x.shape)}")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        position = tuple(int(i) for i in (~finite).nonzero()[0])
        raise DataError(f"{what} must be finite, found {x[position].item()} at index {position}")
    if x.numel() and (bool((x < 0).any()) or bool((x > 1).any())):
        position = tuple(int(i) for i in ((x < 0) | (x > 1)).nonzero()[0])
        raise DataError(f"{what} must lie in [0, 1], found {x[position].item()!r} at index {position}")
    return x


def _threshold(split: Split | None, threshold: float, inplace: bool) -> Split | None:
    if split is None:
        return None
    # In place where allowed: 60,000 Fashion-MNIST images are 190 MB of float32.
    x = split.x.gt_(threshold) if inplace else (split.x > threshold).to(torch.float32)
    return Split(x, split.y)


def _sample_once(split: Split | None, generator: torch.Generator) -> Split | None:
    if split is None:
        return None
    return Split(torch.bernoulli(split.x, generator=generator), split.y)


def binarize_splits(grey: Splits, mode: str, threshold: float, seed: int, *, inplace: bool = False) -> Splits:
    """Apply a binarisation protocol to grey-level splits.

    :param Splits grey: splits with values in [0, 1] and ``binarize == "none"``.
    :param str mode: "threshold" (x > threshold, every split), "dynamic" (train
        stays grey with a :class:`DynamicBinarization` transform; valid then test
        drawn once from a CPU generator seeded with ``seed``) or "none".
    :param float threshold: used by "threshold" only.
    :param int seed: seeds the one-off draw of the "dynamic" valid / test sets.
    :param bool inplace: let "threshold" overwrite ``grey``'s tensors (saves a copy
        of the data when nobody else holds them, as in :func:`load_dataset`).
    """
    if mode == "none":
        return grey
    if mode == "threshold":
        parts = {p: _threshold(getattr(grey, p), threshold, inplace) for p in ("train", "valid", "test")}
        note = f"binarised with threshold x > {threshold}"
        transform = None
    elif mode == "dynamic":
        generator = torch.Generator(device=grey.test.x.device).manual_seed(seed)
        parts = {"train": grey.train, "valid": _sample_once(grey.valid, generator)}
        parts["test"] = _sample_once(grey.test, generator)
        note = f"train grey (resampled per use), valid/test binarised once with seed {seed}"
        transform = DynamicBinarization()
    else:
        raise DataError(f"binarize must be one of {', '.join(map(repr, BINARIZE_OPTIONS))}, got {mode!r}")
    return dataclasses.replace(
        grey, **parts, binarize=mode, train_transform=transform, note=f"{grey.note}; {note}" if grey.note else note
    )
