"""The DCIM paper's experiments (Flach, Shekhovtsov & Fikar 2017) on the data we have.

Runs, each trained by the shared SVI driver (:func:`inference.training.fit`)
with Adam, batch 100, images binarised at grey level > 0.5:

- ``mnist-dense-*``: dense 784-512-512-10 sigmoid net, discriminative vs
  generative (reverse term weighted per pixel, the paper's Keras weighting);
  optionally the same pair by sampling estimators of the Pyro model/guide
  pair (``--sampling elbo rws wake_sleep``): Pyro's ``TraceGraph_ELBO``, our
  per-datapoint reweighted wake-sleep (k=5, wake-phi with the class term) and
  classic wake-sleep.
  Data: training = all 5,000 MNIST-5k digits (they come from MNIST's training
  set) + 5,000 of the 10,000 official MNIST test (t10k) digits; validation =
  2,000 other t10k digits; test = the remaining 3,000 t10k digits (the t10k
  split is a seeded permutation, seed 0; the three parts are disjoint).
- ``fashion-dense-*``: the same two on Fashion-MNIST: training = 55,000 of the
  official 60,000 training images, validation = the other 5,000, test = the
  official 10,000 (or ``--fashion-train N`` training images, documented in the JSON).
- ``mnist-cnn-*``: the paper's CNN (:func:`ppl_models.dcim_layers.paper_cnn_spec`)
  on the MNIST split above, generative and alternative objectives.

Per epoch it records the training loss, the validation accuracy and the
validation reverse loss (nats per pixel, by the downward mean recursion from
the label): the paper's Fig. 1. After training: validation and test accuracy,
test reverse loss per pixel and per image, and (dense nets, ``--nll-particles``)
the reverse model's test NLL ``-log p_rev(x | y)`` by importance sampling with
the forward model as proposal. Figures: training curves (Fig. 1) and
class-conditional sample grids, one row per class (Fig. 2, Fig. 3), both ways:
``ancestral`` (every layer sampled, the image's probabilities shown) and
``top`` (only the last hidden layer sampled, probabilities propagated down).

Usage (results merge into ``benchmarks/results/dcim_paper.json``)::

    python benchmarks/dcim_paper.py                    # everything, paper-sized where time allows
    python benchmarks/dcim_paper.py --only mnist-dense --epochs 2 --quick
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inference.dcim_objectives import make_objective  # noqa: E402
from inference.dcim_queries import accuracy, generate, reverse_loss  # noqa: E402
from inference.log_likelihood import log_likelihood  # noqa: E402
from inference.training import PyroObjective, fit  # noqa: E402
from ppl_models.data import load_dataset  # noqa: E402
from ppl_models.data.mnist5k import mnist5k_path, read_mnist5k  # noqa: E402
from ppl_models.dcim import DCIM, dense_spec, paper_cnn_spec  # noqa: E402
from inference.fileio import write_bytes_atomic  # noqa: E402
from ppl_models.catalogue.plots import image_grid  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
JSON_PATH = os.path.join(RESULTS, "dcim_paper.json")
MNIST_DIR = os.environ.get("PPL_MODELS_MNIST_DIR", os.path.join(HERE, "..", "..", "shared", "data", "mnist"))
PAPER = {"cnn-generative": {"valid_accuracy": 0.989, "reverse_loss_per_pixel": 0.23},
         "cnn-alternative": {"valid_accuracy": 0.990, "reverse_loss_per_pixel": 0.14},
         "dense": "generative learning: insignificant drop of validation accuracy vs discriminative"}


def _save(fig, path):
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def mnist_data(threshold=0.5):
    """MNIST-5k (all 5,000) + 5,000 t10k for training, 2,000 t10k validation, 3,000 t10k test."""
    t10k = load_dataset("mnist", path=MNIST_DIR, binarize="threshold", threshold=threshold,
                        valid_size=2000, test_size=3000, split_seed=0)
    images, labels = read_mnist5k(mnist5k_path())
    x5k = (torch.from_numpy(images.reshape(-1, 784)).float() / 255.0 > threshold).float()
    train_x = torch.cat([x5k, t10k.train.x])
    train_y = torch.cat([torch.from_numpy(labels).long(), t10k.train.y])
    note = (f"train = 5000 MNIST-5k (from MNIST's training set) + {len(t10k.train.y)} t10k; "
            f"{t10k.note}; binarised x > {threshold}")
    return {"train": (train_x, train_y), "valid": (t10k.valid.x, t10k.valid.y),
            "test": (t10k.test.x, t10k.test.y), "note": note}


def fashion_data(n_train=None, threshold=0.5):
    d = load_dataset("fashion-mnist", binarize="threshold", threshold=threshold, valid_size=5000, split_seed=0)
    x, y = d.train.x, d.train.y
    note = d.note + f"; binarised x > {threshold}"
    if n_train is not None and n_train < len(y):
        x, y = x[:n_train], y[:n_train]
        note += f"; training subset: the first {n_train} of the {len(d.train.y)} carved training images"
    return {"train": (x, y), "valid": (d.valid.x, d.valid.y), "test": (d.test.x, d.test.y), "note": note}


SAMPLING = ("elbo", "rws", "wake_sleep")


def objective_for(name, dcim, class_weight=1.0, insomnia=None):
    if name == "elbo":
        return make_objective("elbo")  # sums over the batch already
    if name in ("rws", "wake_sleep"):
        options = {} if insomnia is None else {"insomnia": insomnia}
        return make_objective(name, module=dcim, class_weight=class_weight, **options)
    options = {} if name == "discriminative" else {"reverse_weight": "pixel_mean"}
    return make_objective(name, module=dcim, batch_reduction="sum", **options)


def alt_reverse_loss(dcim, x, batch=500):
    """The alternative objective's reverse term per pixel: image scored from a forward sample of x^{m-1}."""
    k = dcim.n_layers - 1
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            xb = dcim.check_images(x[s:s + batch])
            h = torch.bernoulli(dcim.up_means(xb, to_layer=k)[k])
            logits = dcim.image_logits(h, from_layer=k)
            out.append(torch.nn.functional.binary_cross_entropy_with_logits(
                logits, xb.reshape(logits.shape), reduction="none").flatten(1).mean(-1))
    return float(torch.cat(out).mean())


def batched(fn, dcim, x, y, batch=1000):
    return torch.cat([fn(dcim, x[s:s + batch], y[s:s + batch]) for s in range(0, len(x), batch)])


def evaluate(dcim, x, y):
    acc = float((batched(lambda d, a, b: (d.class_logits(a).argmax(-1) == b).float(), dcim, x, y)).mean())
    rev = batched(lambda d, a, b: reverse_loss(d, a, b, per="image"), dcim, x, y)
    return {"accuracy": acc, "reverse_loss_per_image": float(rev.mean()),
            "reverse_loss_per_pixel": float(rev.mean()) / x[0].numel()}


def reverse_nll(dcim, x, y, k):
    """-log p_rev(x | y) per image, importance sampling with the forward model as proposal."""
    with torch.no_grad():
        log_xy = log_likelihood(dcim.model, dcim.guide, x, y, num_particles=k, batch_size=100, particle_chunk=min(k, 200))
        log_y = torch.log_softmax(dcim.class_prior_logits(), -1)[y]
    nll = -(log_xy - log_y)
    return float(nll.mean()), float(nll.std() / math.sqrt(len(nll)))


def save_curves(runs, names, path, title):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for name in names:
        h = runs[name]["history"]
        e = [r["epoch"] for r in h]
        label = runs[name]["objective"]
        axes[0].plot(e, [r["valid_accuracy"] for r in h], label=label)
        axes[1].plot(e, [r["valid_reverse_loss_per_pixel"] for r in h], label=label)
        axes[2].plot(e, [r["train_class_nll"] for r in h], label=label)
    for ax, t in zip(axes, ["validation accuracy", "validation reverse loss (nats/pixel)",
                            "training class loss (nats/image)"]):
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def save_samples(dcim, path, title, per_class=10, image_shape=(28, 28)):
    """Rows = classes; left block ancestral, right block top layer sampled then means down."""
    import matplotlib.pyplot as plt

    m = dcim.n_layers
    y = torch.arange(dcim.n_classes).repeat_interleave(per_class)
    torch.manual_seed(0)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    for ax, (sample_to, what) in zip(axes, [(1, "ancestral (every layer sampled)"),
                                            (m - 1, f"x^{m - 1} sampled, probabilities propagated down")]):
        images = generate(dcim, y, sample_to=sample_to).reshape(len(y), -1)
        ax.imshow(image_grid(images, image_shape, nrow=per_class), cmap="gray", vmin=0, vmax=1)
        ax.set_title(what, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def run(name, arch, objective, data, epochs, lr, args, class_weight=1.0, insomnia=None):
    torch.manual_seed(0)
    dcim = DCIM(dense_spec([512, 512]) if arch == "dense" else paper_cnn_spec())
    obj = objective_for(objective, dcim, class_weight, insomnia)
    vx, vy = data["valid"]
    n_eval = len(vy) if args.eval_all else min(len(vy), 2000)
    history = []

    def on_epoch_end(metrics):
        dcim.eval()
        ev = evaluate(dcim, vx[:n_eval], vy[:n_eval])
        tx, ty = data["train"]
        sub = torch.arange(0, len(ty), max(1, len(ty) // 2000))
        with torch.no_grad():
            cnll = float(torch.nn.functional.cross_entropy(dcim.class_logits(tx[sub]), ty[sub]))
        row = {"epoch": metrics["epoch"], "train_loss": metrics["train_loss"], "seconds": metrics["seconds"],
               "valid_accuracy": ev["accuracy"], "valid_reverse_loss_per_pixel": ev["reverse_loss_per_pixel"],
               "train_class_nll": cnll}
        history.append(row)
        dcim.train()
        print(f"  {name} epoch {row['epoch']}: loss {row['train_loss']:.4f} valid acc {row['valid_accuracy']:.4f} "
              f"rev {row['valid_reverse_loss_per_pixel']:.4f} ({row['seconds']:.1f}s)", flush=True)

    started = time.perf_counter()
    fit(PyroObjective(obj, dcim.model, dcim.guide), data["train"], module=dcim, epochs=epochs, batch_size=100, lr=lr,
        seed=0, device="cpu", progress=False, on_epoch_end=on_epoch_end)
    seconds = time.perf_counter() - started
    dcim.eval()
    result = {"arch": arch, "objective": objective, "epochs": epochs, "lr": lr, "batch_size": 100,
              "reverse_weight": None if objective in ("discriminative", *SAMPLING) else "pixel_mean (1/784)",
              "train_images": len(data["train"][1]), "valid_images": len(vy), "test_images": len(data["test"][1]),
              "data": data["note"], "train_seconds": seconds, "history": history,
              "valid": evaluate(dcim, vx, vy), "test": evaluate(dcim, *data["test"])}
    if objective in SAMPLING:
        # these estimators train the stochastic forward model, not its mean recursion: classify by
        # averaging p(y | h) over forward samples as well
        torch.manual_seed(0)
        for split, (x, y) in (("valid", (vx, vy)), ("test", data["test"])):
            result[split]["accuracy_sampled"] = accuracy(dcim, x, y, num_samples=args.class_samples)
        result["class_samples"] = args.class_samples
        if objective != "elbo":
            result["class_weight"] = class_weight
            result["insomnia"] = insomnia if insomnia is not None else (1.0 if objective == "rws" else 0.0)
    if objective == "alternative":
        result["test"]["alternative_reverse_loss_per_pixel"] = alt_reverse_loss(dcim, data["test"][0])
        result["valid"]["alternative_reverse_loss_per_pixel"] = alt_reverse_loss(dcim, vx)
    if arch == "dense" and args.nll_particles:
        n = min(args.nll_images, len(data["test"][1]))
        t0 = time.perf_counter()
        nll, se = reverse_nll(dcim, data["test"][0][:n], data["test"][1][:n], args.nll_particles)
        result["test"].update(reverse_nll_is=nll, reverse_nll_is_stderr=se, nll_particles=args.nll_particles,
                              nll_images=n, nll_seconds=time.perf_counter() - t0)
    png = os.path.join(RESULTS, f"dcim_{name}_samples.png")
    save_samples(dcim, png, f"{name}: class-conditional samples (rows: classes 0-9)")
    result["samples_png"] = os.path.relpath(png, os.path.dirname(HERE))
    print(f"{name}: valid {result['valid']} test {result['test']} ({seconds:.0f}s)", flush=True)
    return result


def markdown_table(results) -> str:
    """The README table: one row per run, test numbers on the held-out test split."""
    rows = ["| data | net | objective (reverse weight) | train imgs | epochs | valid acc | test acc | "
            "test reverse loss (nats/pixel) | test reverse NLL, IS (nats/image) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["runs"].items():
        weight = r["reverse_weight"] or ("-" if r["objective"] == "discriminative" else "sampling estimator")
        if r.get("class_weight", 1.0) != 1.0:
            weight += f", class weight {r['class_weight']:g}"
        if r["objective"] == "rws" and r.get("insomnia", 1.0) != 1.0:
            weight += f", insomnia {r['insomnia']:g}"
        rev = f"{r['test']['reverse_loss_per_pixel']:.3f}"
        if "alternative_reverse_loss_per_pixel" in r["test"]:
            rev += f" (from sampled x^{{m-1}}: {r['test']['alternative_reverse_loss_per_pixel']:.3f})"
        nll = (f"{r['test']['reverse_nll_is']:.1f} ± {r['test']['reverse_nll_is_stderr']:.1f} "
               f"(k={r['test']['nll_particles']}, {r['test']['nll_images']} imgs)") if "reverse_nll_is" in r["test"] else "-"
        acc = f"{r['test']['accuracy']:.4f}"
        if "accuracy_sampled" in r["test"]:
            acc += f" (sampled: {r['test']['accuracy_sampled']:.4f})"
        rows.append(f"| {name.split('-')[0]} | {r['arch']} | {r['objective']} ({weight}) | {r['train_images']} | "
                    f"{r['epochs']} | {r['valid']['accuracy']:.4f} | {acc} | {rev} | {nll} |")
    return "\n".join(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=["mnist-dense", "fashion-dense", "mnist-cnn"])
    p.add_argument("--epochs", type=int, default=30, help="dense MNIST epochs")
    p.add_argument("--fashion-epochs", type=int, default=20)
    p.add_argument("--fashion-train", type=int, default=None, help="training subset of Fashion-MNIST")
    p.add_argument("--cnn-epochs", type=int, default=10)
    p.add_argument("--cnn-objectives", nargs="*", default=["generative", "alternative"])
    p.add_argument("--sampling", nargs="*", default=[], choices=SAMPLING,
                   help="also train the dense MNIST pair by these sampling estimators")
    p.add_argument("--sampling-epochs", type=int, default=30)
    p.add_argument("--rws-class-weights", nargs="*", type=float, default=[],
                   help="extra rws runs with these weights on the label's term in wake-phi")
    p.add_argument("--rws-insomnia", nargs="*", type=float, default=[],
                   help="extra rws runs with these shares of wake-phi (the rest sleep-phi)")
    p.add_argument("--skip-paper", action="store_true", help="with --sampling: train only the sampling runs")
    p.add_argument("--nll-particles", type=int, default=100)
    p.add_argument("--class-samples", type=int, default=20,
                   help="sampling estimators: forward samples averaged for the sampled-classifier accuracy")
    p.add_argument("--nll-images", type=int, default=1000)
    p.add_argument("--eval-all", action="store_true", help="per-epoch validation on every image (default 2,000)")
    p.add_argument("--quick", action="store_true", help="tiny data subsets, to check the script")
    # 1 thread: on this 2-core machine shared with other jobs, a dense generative
    # step took 24 ms with 1 thread and 90-900 ms with 2 (CNN step 0.3 s vs 4.8 s)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=JSON_PATH, help="results file (merged into, run by run)")
    p.add_argument("--merge", nargs="*", default=[], help="merge the runs of these results files into --json, "
                   "print the table and exit")
    p.add_argument("--table", action="store_true", help="print the markdown table of --json and exit")
    args = p.parse_args(argv)
    if args.merge or args.table:
        results = json.load(open(args.json))
        for path in args.merge:
            results["runs"].update(json.load(open(path))["runs"])
        if args.merge:
            with open(args.json + ".tmp", "w") as f:
                json.dump(results, f, indent=1)
            os.replace(args.json + ".tmp", args.json)
        print(markdown_table(results))
        return
    torch.set_num_threads(args.threads)
    os.makedirs(RESULTS, exist_ok=True)
    results = json.load(open(args.json)) if os.path.exists(args.json) and not args.quick else {}
    results.setdefault("runs", {})
    results["paper"] = PAPER
    results["setup"] = {"optimizer": "Adam", "batch_size": 100, "binarize": "threshold 0.5", "threads": args.threads,
                        "torch": torch.__version__, "note": "CPU shared with other engineers; timings indicative"}

    def shrink(d, n):
        # strided, not the first n: MNIST-5k is sorted by class
        return {k: (v[0][::len(v[1]) // n], v[1][::len(v[1]) // n]) if isinstance(v, tuple) else v
                for k, v in d.items()} if args.quick else d

    def record(name, result):
        results["runs"][name] = result
        if not args.quick:
            with open(args.json + ".tmp", "w") as f:
                json.dump(results, f, indent=1)
            os.replace(args.json + ".tmp", args.json)

    if "mnist-dense" in args.only or "mnist-cnn" in args.only:
        mnist = shrink(mnist_data(), 500)
    if "mnist-dense" in args.only:
        paper = [] if args.skip_paper else ["discriminative", "generative"]
        for obj in paper + args.sampling:
            record(f"mnist-dense-{obj}", run(f"mnist-dense-{obj}", "dense", obj, mnist,
                                             args.sampling_epochs if obj in SAMPLING else args.epochs, 1e-3, args))
        for w in args.rws_class_weights:
            name = f"mnist-dense-rws-cw{w:g}"
            record(name, run(name, "dense", "rws", mnist, args.sampling_epochs, 1e-3, args, class_weight=w))
        for a in args.rws_insomnia:
            name = f"mnist-dense-rws-insomnia{a:g}"
            record(name, run(name, "dense", "rws", mnist, args.sampling_epochs, 1e-3, args, insomnia=a))
        shown = [f"mnist-dense-{o}" for o in ("discriminative", "generative", *SAMPLING)
                 if f"mnist-dense-{o}" in results["runs"]]
        save_curves(results["runs"], shown,
                    os.path.join(RESULTS, "dcim_mnist_dense_curves.png"), "MNIST, dense 784-512-512-10 (cf. paper Fig. 1)")
    if "fashion-dense" in args.only:
        fashion = shrink(fashion_data(args.fashion_train), 500)
        for obj in ["discriminative", "generative"]:
            record(f"fashion-dense-{obj}", run(f"fashion-dense-{obj}", "dense", obj, fashion,
                                               args.fashion_epochs, 1e-3, args))
        save_curves(results["runs"], ["fashion-dense-discriminative", "fashion-dense-generative"],
                    os.path.join(RESULTS, "dcim_fashion_dense_curves.png"), "Fashion-MNIST, dense 784-512-512-10")
    if "mnist-cnn" in args.only:
        for obj in args.cnn_objectives:
            record(f"mnist-cnn-{obj}", run(f"mnist-cnn-{obj}", "cnn", obj, mnist, args.cnn_epochs, 1e-3, args))
        save_curves(results["runs"], [f"mnist-cnn-{o}" for o in args.cnn_objectives],
                    os.path.join(RESULTS, "dcim_mnist_cnn_curves.png"), "MNIST, the paper's CNN (cf. Fig. 3)")
    if args.quick:
        print(json.dumps({k: {"valid": v["valid"], "test": v["test"]} for k, v in results["runs"].items()}, indent=1))


if __name__ == "__main__":
    main()
