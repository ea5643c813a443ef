"""README figures for the sigmoid belief nets: every training algorithm on the same nets and data.

For each data set, architecture and objective (NVIL, VIMCO, reweighted wake-sleep, wake-sleep and
Pyro's TraceGraph_ELBO as the library baseline) this trains ``ppl-models train sbn`` into a run
directory under ``runs/sbn/`` with the same optimiser, batch and number of updates, and records the
test NLL by importance sampling with the recognition network as proposal (k = 5000), seconds per
epoch and the whole run's time in ``benchmarks/results/sbn_mnist5k.json`` (merged: each invocation
rewrites only the rows it ran). Sample grids of each architecture's best run go beside it.

MNIST-5k: all 4,000 training images (``data.valid_size=0``), the other 1,000 as test set. Fashion-MNIST:
all 60,000 training images (``data.valid_size=0``) for 20 epochs (12,000 updates, as 300 epochs of
MNIST-5k), the NLL at k = 5000 on the first 1,000 of the 10,000 test images (the full test set at
k = 5000 takes about 8 minutes per run on one core).

Run: ``python benchmarks/sbn_mnist5k.py [--datasets mnist5k fashion-mnist] [--archs 200-200 200-200-200]
[--objectives nvil vimco rws wake_sleep tracegraph] [--threads 1]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppl_models import catalogue  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
OBJECTIVES = ["nvil", "vimco", "rws", "wake_sleep", "tracegraph"]
DATA = {"mnist5k": {"overrides": ["data.dataset=mnist5k", "data.valid_size=0"], "epochs": 300, "test_images": None},
        "fashion-mnist": {"overrides": ["data.dataset=fashion-mnist", "data.valid_size=0", "train.eval_particles=100"],
                          "epochs": 20, "test_images": 1000}}


def run_one(dataset: str, arch: str, objective: str, args) -> dict:
    d = DATA[dataset]
    epochs = args.epochs or d["epochs"]
    out = os.path.join(args.runs_dir, f"{dataset}_{arch}_{objective}")
    hidden = [int(u) for u in arch.split("-")]
    overrides = [*d["overrides"], f"model.hidden={json.dumps(hidden)}", f"objective.name={objective}",
                 f"train.epochs={epochs}", f"train.lr={args.lr}", "train.batch_size=100", "train.seed=0"]
    if objective in ("vimco", "rws"):
        overrides.append(f"objective.num_particles={args.k}")
    if d["test_images"] is None:
        overrides.append(f"train.eval_particles={args.eval_particles}")
    if not args.reuse:
        shutil.rmtree(out, ignore_errors=True)
    spec = catalogue.make_spec("sbn", overrides=overrides)
    started = time.perf_counter()
    metrics = catalogue.train(spec, out, progress=sys.stderr.isatty(), log=print)
    wall = time.perf_counter() - started
    row = {"test_nll": metrics["test_nll"], "test_nll_stderr": metrics["test_nll_stderr"],
           "eval_particles": metrics["eval_particles"], "test_images": metrics["test_images"]}
    if d["test_images"] is not None:  # k = 5000 on the first test images
        trained = catalogue.load(out)
        data = trained.family.load_data(trained.spec)
        torch.manual_seed(0)
        t0 = time.perf_counter()
        ll = trained.family.log_likelihood(trained, data.test.x[:d["test_images"]], args.eval_particles)
        row = {"test_nll": -ll.mean().item(), "test_nll_stderr": ll.std().item() / len(ll) ** 0.5,
               "eval_particles": args.eval_particles, "test_images": len(ll),
               "eval_seconds": time.perf_counter() - t0}
    history = metrics["history"]
    row.update(objective=objective, num_particles=metrics.get("num_particles"), epochs=len(history),
               seconds_per_epoch_median=statistics.median(h["seconds"] for h in history),
               train_seconds=sum(h["seconds"] for h in history), wall_seconds=wall,
               final_train_loss=history[-1]["train_loss"], run_directory=out,
               command="ppl-models train sbn " + " ".join(f"--set {o}" for o in overrides))
    print(f"  {dataset} {arch} {objective}: test NLL {row['test_nll']:.2f} ± {row['test_nll_stderr']:.2f} "
          f"(k={row['eval_particles']}, {row['test_images']} images), {row['seconds_per_epoch_median']:.2f} s/epoch",
          flush=True)
    return row


NAMES = {"nvil": "NVIL", "vimco": "VIMCO", "rws": "RWS", "wake_sleep": "wake-sleep", "tracegraph": "TraceGraph_ELBO"}


def markdown_table(result: dict) -> str:
    """One row per data set and net, one column per objective: test NLL ± stderr, seconds per epoch."""
    rows = result.get("rows", {})
    groups = sorted({key.rsplit("/", 1)[0] for key in rows}, key=lambda g: (g.split("/")[0] != "mnist5k", g))
    lines = ["| data, net | " + " | ".join(NAMES[o] for o in OBJECTIVES) + " |", "|---" * (len(OBJECTIVES) + 1) + "|"]
    for group in groups:
        cells = []
        best = min((rows[f"{group}/{o}"]["test_nll"] for o in OBJECTIVES if f"{group}/{o}" in rows), default=None)
        for o in OBJECTIVES:
            r = rows.get(f"{group}/{o}")
            if r is None:
                cells.append("not run")
                continue
            nll = f"{r['test_nll']:.2f}"
            cells.append(f"{'**' + nll + '**' if r['test_nll'] == best else nll} ± {r['test_nll_stderr']:.2f} "
                         f"({r['seconds_per_epoch_median']:.2f} s)")
        dataset, arch = group.split("/")
        lines.append(f"| {dataset}, {arch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["mnist5k"], choices=list(DATA))
    p.add_argument("--archs", nargs="+", default=["200-200", "200-200-200"])
    p.add_argument("--objectives", nargs="+", default=OBJECTIVES, choices=OBJECTIVES)
    p.add_argument("--epochs", type=int, default=None, help="default: 300 on MNIST-5k, 20 on Fashion-MNIST")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--k", type=int, default=5, help="samples per datapoint for vimco and rws")
    p.add_argument("--eval-particles", type=int, default=5000)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the 2-core machine is shared)")
    p.add_argument("--runs-dir", default="runs/sbn")
    p.add_argument("--reuse", action="store_true", help="keep finished run directories (re-evaluates them)")
    p.add_argument("--out", default=os.path.join(RESULTS, "sbn_mnist5k.json"))
    p.add_argument("--table", action="store_true", help="print the README table from --out and exit")
    args = p.parse_args()
    if args.table:
        print(markdown_table(json.load(open(args.out))))
        return
    torch.set_num_threads(args.threads)
    for dataset in args.datasets:
        for arch in args.archs:
            best = None
            for objective in args.objectives:
                row = run_one(dataset, arch, objective, args)
                # merge into the file as it is now: other invocations may have written other rows
                result = json.load(open(args.out)) if os.path.exists(args.out) else {}
                result.update({"benchmark": "sbn_mnist5k", "threads": torch.get_num_threads(),
                               "machine": platform.processor() or platform.machine(),
                               "optimiser": f"Adam {args.lr:g}, batch 100, constant rate"})
                result.setdefault("rows", {})[f"{dataset}/{arch}/{objective}"] = row | {"date": time.strftime("%Y-%m-%d")}
                with open(args.out, "w") as f:
                    json.dump(result, f, indent=2)
                if best is None or row["test_nll"] < best[1]:
                    best = (objective, row["test_nll"], row["run_directory"])
            shutil.copyfile(os.path.join(best[2], "samples.png"),
                            os.path.join(RESULTS, f"sbn_{dataset}_{arch}_samples.png"))
            print(f"best on {dataset} {arch}: {best[0]} ({best[1]:.2f}); its samples -> sbn_{dataset}_{arch}_samples.png")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
