"""What a query reads and writes: its inputs (images of a data split, a ``.npy`` file, PNGs), the mask of a
completion, and the answer's files (JSON, a picture, ArviZ netCDF). Every bad input is a one-line error
raised before anything is computed or written."""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from inference.fileio import write_bytes_atomic

from ..errors import DataError, SpecError
from .plots import IMAGE_FORMATS
from .run_directory import check_output_file

SPLITS = ("train", "valid", "test")
DEFAULT_INDEX = "0:16"
MASKS = ("top", "bottom", "left", "right", "random:F", "FILE.npy", "FILE.png")
#: each query option's command-line flag, for messages
FLAGS = {"num_samples": "--samples", "num_particles": "--particles", "estimator": "--estimator", "mask": "--mask",
         "mask_seed": "--mask-seed", "fill": "--fill", "sweeps": "--sweeps", "draws": "--draws", "thin": "--thin",
         "temperatures": "--temperatures"}
#: the query kinds that draw (and so have ArviZ data) and those that have a picture
WITH_DRAWS, WITH_PICTURE = ("sample", "posterior", "complete"), ("sample", "complete")


@dataclass
class Inputs:
    """Images a query is asked about.

    :ivar torch.Tensor x: ``(N, D)`` pixel values in [0, 1] (0/1 for a binary model).
    :ivar list names: one per image, e.g. ``test[3]``, ``a.png``, ``x.npy[2]``.
    :ivar labels: ``(N,)`` class labels where known (images of a data split), else None.
    :ivar str source: where they came from, in words.
    """

    x: torch.Tensor
    names: list
    labels: Optional[torch.Tensor] = None
    source: str = "images given in Python"

    @classmethod
    def of(cls, x, labels=None) -> "Inputs":
        if isinstance(x, Inputs):
            return x
        if not torch.is_tensor(x) or x.dim() != 2:
            found = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise DataError(f"inputs must be an (N, D) tensor of images, got {found}")
        return cls(x, [f"x[{i}]" for i in range(x.shape[0])], labels)


def option_name(name: str) -> str:
    """An option as messages name it: ``num_particles (--particles)``."""
    return f"{name} ({FLAGS[name]})" if name in FLAGS else name


def parse_index(text: str, size: int, what: str) -> list[int]:
    """``"0:16"``, ``"5"`` or ``"1,4,9"`` as row indices of a split of ``size`` rows, or a one-line error."""
    try:
        if ":" in text:
            start, _, stop = text.partition(":")
            start, stop = int(start or 0), int(stop) if stop else size
            if stop > size or start < 0 or start >= stop:
                raise IndexError
            return list(range(start, stop))
        rows = [int(part) for part in text.split(",")]
    except ValueError:
        raise SpecError(f"--index must be START:STOP, N or N,M,..., got {text!r}") from None
    except IndexError:
        raise DataError(f"--index {text} is out of range: the {what} has {size} images (0..{size - 1})") from None
    bad = [r for r in rows if not 0 <= r < size]
    if bad:
        raise DataError(f"--index {text} is out of range: the {what} has {size} images (0..{size - 1}), got {bad[0]}")
    return rows


def _from_split(trained, split: str, index: str, binarize_seed: int) -> Inputs:
    if split not in SPLITS:
        raise SpecError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    data = trained.data()
    part = getattr(data, split)
    what = f"{data.name} {split} split"
    if part is None:
        raise DataError(f"the {what} is empty (data.valid_size is 0); choose --split train or test")
    rows = parse_index(index, len(part), what)
    x = part.x[rows]
    if split == "train" and data.train_transform is not None and trained.family.needs_binary_data(trained.spec):
        x = data.train_transform(x, generator=torch.Generator().manual_seed(binarize_seed))  # dynamic: binarise once
    return Inputs(x, [f"{split}[{r}]" for r in rows], part.y[rows], f"{what}, images {index}")


def _read_image_file(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise DataError(f"input {path} does not exist" if not os.path.exists(path) else f"input {path} is not a file")
    extension = os.path.splitext(path)[1].lower()
    if extension == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(f"input {path} is not a readable .npy array ({' '.join(str(e).split())[:120]})") from None
    if extension == ".png":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"input {path} is not a readable PNG ({' '.join(str(e).split())[:120]})") from None
    raise DataError(f"input {path}: unknown format {extension or '(no extension)'!r}; use .npy or .png")


def _from_files(trained, files, binarize: bool) -> Inputs:
    shape, d = tuple(trained.image_shape), math.prod(trained.image_shape)
    rows, names = [], []
    for path in files:
        array = _read_image_file(path)
        if array.dtype == bool or np.issubdtype(array.dtype, np.integer):
            array = array.astype(np.float32)
        if not np.issubdtype(array.dtype, np.floating):
            raise DataError(f"input {path} holds {array.dtype} values; expected numbers in [0, 1]")
        if array.shape in (shape, (d,)):
            array = array.reshape(1, d)
        elif array.ndim >= 2 and array.shape[1:] in (shape, (d,)):
            array = array.reshape(array.shape[0], d)
        else:
            raise DataError(f"input {path} has shape {array.shape}, but the model's images are "
                            f"{'x'.join(map(str, shape))} ({d} pixels): expected ({d},), {shape}, (N, {d}) or "
                            f"(N, {', '.join(map(str, shape))})")
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            bad = array[~np.isfinite(array) | (array < 0) | (array > 1)].flat[0]
            raise DataError(f"input {path} holds {bad!r}; pixel values must lie in [0, 1]")
        rows.append(torch.from_numpy(np.array(array, dtype=np.float32)))
        one_picture = array.shape[0] == 1 and not path.endswith(".npy")
        names += [path] if one_picture else [f"{path}[{i}]" for i in range(array.shape[0])]
    x = torch.cat(rows)
    if trained.family.needs_binary_data(trained.spec):
        grey = (x != 0) & (x != 1)
        if bool(grey.any()) and not binarize:
            where = names[int(grey.nonzero()[0, 0])]
            raise DataError(f"input {where} has grey levels but the {trained.family.name} model needs binary pixels "
                            f"(0 or 1); pass --binarize to threshold them at {trained.spec.data.threshold}")
        x = (x > trained.spec.data.threshold).float() if binarize else x
    return Inputs(x, names, None, ", ".join(files))


def check_inputs(trained, inputs: Inputs) -> Inputs:
    """``inputs`` if they are images the model takes: ``(N, D)`` values in [0, 1], 0/1 for a binary model."""
    x, d = inputs.x, math.prod(trained.image_shape)
    if x.dim() != 2 or x.shape[1] != d or x.shape[0] == 0:
        raise DataError(f"inputs must be (N, {d}) images for this {trained.family.name} model, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
        raise DataError("input pixel values must lie in [0, 1]")
    if trained.family.needs_binary_data(trained.spec) and bool(((x != 0) & (x != 1)).any()):
        raise DataError(f"the {trained.family.name} model needs binary pixels (0 or 1); binarise the inputs first")
    return inputs


def read_inputs(trained, split: Optional[str] = None, index: Optional[str] = None, files=(),
                binarize: bool = False, seed: int = 0) -> Inputs:
    """The images a query is asked about: ``files`` (.npy arrays, PNGs) or rows ``index`` of a data split."""
    if files:
        if split is not None or index is not None:
            raise SpecError("give either --input FILE... or --split/--index, not both")
        return _from_files(trained, files, binarize)
    return _from_split(trained, split or "test", index or DEFAULT_INDEX, seed)


def make_mask(mask, image_shape: tuple, n: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """The observed pixels of a completion, True where a pixel is given: ``(D,)`` shared or ``(N, D)`` per
    input, and the mask in words. ``mask``: top / bottom / left / right (that half observed), ``random:F``
    (a random fraction F observed, drawn with ``seed``, the same for every input), a .npy / .png file
    (nonzero / white = observed), or a bool tensor."""
    h, w = image_shape
    d = h * w
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    halves = {"top": rows < h // 2, "bottom": rows >= h // 2, "left": cols < w // 2, "right": cols >= w // 2}
    if torch.is_tensor(mask):
        out, text = mask.to(torch.bool).reshape(-1, d).squeeze(0), "given as a tensor"
    elif not isinstance(mask, str):
        raise SpecError(f"mask must be one of {', '.join(MASKS)} or a bool tensor, got {mask!r}")
    elif mask in halves:
        out, text = halves[mask], f"the {mask} half observed"
    elif mask.startswith("random:"):
        try:
            fraction = float(mask.partition(":")[2])
        except ValueError:
            fraction = float("nan")
        if not 0 <= fraction <= 1:
            raise SpecError(f"--mask random:F needs a fraction F of observed pixels in [0, 1], got {mask!r}")
        chosen = torch.randperm(d, generator=torch.Generator().manual_seed(seed))[:round(fraction * d)]
        out = torch.zeros(d, dtype=torch.bool)
        out[chosen] = True
        text = f"a random {fraction:g} of the pixels observed (mask seed {seed})"
    elif mask.lower().endswith((".npy", ".png")):
        array = _read_image_file(mask)
        if array.shape in ((h, w), (d,)):
            out = torch.from_numpy(array.reshape(d) != 0)
        elif array.ndim >= 2 and array.shape[0] == n and array.shape[1:] in ((h, w), (d,)):
            out = torch.from_numpy(array.reshape(n, d) != 0)
        else:
            raise DataError(f"mask {mask} has shape {array.shape}; expected ({h}, {w}), ({d},) or one per input "
                            f"({n}, {d})")
        text = f"nonzero pixels of {mask} observed"
    else:
        raise SpecError(f"--mask must be one of {', '.join(MASKS)}, got {mask!r}")
    if out.shape not in ((d,), (n, d)):
        raise DataError(f"mask has shape {tuple(out.shape)}; expected ({d},) or ({n}, {d})")
    if bool(out.all()):
        raise DataError(f"mask ({text}) observes every pixel: nothing is left to complete")
    return out, text


def check_outputs(kind: str, output: Optional[str], png: Optional[str], netcdf: Optional[str]) -> None:
    """One-line errors for output files a query cannot write (checked before anything is computed)."""
    if output is not None:
        check_output_file(output, (".json",))
    if png is not None:
        if kind not in WITH_PICTURE:
            raise SpecError(f"a {kind} answer has no picture; --png is for {' and '.join(WITH_PICTURE)}")
        check_output_file(png, IMAGE_FORMATS)
    if netcdf is not None:
        if kind not in WITH_DRAWS:
            raise SpecError(f"a {kind} answer has no draws; --netcdf is for {', '.join(WITH_DRAWS)}")
        check_output_file(netcdf, (".nc",))


def write_answer(answer, output: Optional[str] = None, png: Optional[str] = None, netcdf: Optional[str] = None) -> str:
    """Write the answer's files (each atomically) and return its JSON."""
    text = answer.to_json()
    if png is not None and answer.picture is not None:
        answer.picture(png)
    if netcdf is not None and answer.inference_data is not None:
        with tempfile.TemporaryDirectory() as folder:  # netCDF writers want a path: write there, then move atomically
            answer.inference_data.to_netcdf(os.path.join(folder, "draws.nc"))
            with open(os.path.join(folder, "draws.nc"), "rb") as f:
                write_bytes_atomic(netcdf, f.read())
    if output is not None:
        write_bytes_atomic(output, (text + "\n").encode())
    return text



def positive(name: str, value, allow_none: bool = False):
    """``value`` if it is a positive integer (or None when allowed), else a one-line error naming ``name``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{name} must be a positive integer, got {value!r}")
    return value


def choice(name: str, value, choices) -> str:
    if value not in choices:
        raise SpecError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value
