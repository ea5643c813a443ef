"""Fashion-MNIST figures of the energy families (issue 12): RBM 784x500, DBM 784-500-1000, DBN 784-500-500-1000
(and with up-down fine-tuning), FVBM; one row per invocation, appended to benchmarks/results/energy_fashion.json.

    OMP_NUM_THREADS=1 python benchmarks/energy_fashion.py ROW [--out-root runs/fashion]

ROW is one of :data:`ROWS`. Each row runs ``catalogue.train`` (train, evaluate, sample grid) exactly as
``ppl-models train FAMILY --dataset fashion-mnist ...`` would, with one change: the test split is cut to the
first 1,000 of the 10,000 official test images (AIS's log Z does not depend on it; the per-image bound does,
and the DBM's mean-field on 10,000 images would cost more than its training). Training uses the full 55,000
training images (5,000 held out for validation, the data set's default) for the few epochs that make about
as many updates as the MNIST-5k row (3,500 images): 20 epochs there = 70,000 images = 1.27 epochs here.
Binarisation: threshold 0.5, the default and what the MNIST-5k rows used.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import sys
import time

import torch

from ppl_models import catalogue
from ppl_models.data.splits import Split

RESULTS = os.path.join(os.path.dirname(__file__), "results")
JSON = os.path.join(RESULTS, "energy_fashion.json")
TEST_IMAGES = 1000
DATA = ["data.dataset=fashion-mnist"]

#: row -> (family, overrides, MNIST-5k counterpart's schedule, this row's schedule in updates)
ROWS = {
    "rbm_500": ("rbm", ["model.num_hidden=500", "train.epochs=6", "train.batch_size=20", "train.optimizer=sgd",
                        "train.lr=0.01", "train.momentum=0.9", "train.weight_decay=0.001",
                        "train.lr_schedule=linear", "train.ais_temperatures=14500"],
                "MNIST-5k: 100 epochs x 3,500 = 350,000 images; here 6 x 55,000 = 330,000"),
    "dbn_500_500_1000": ("dbn", ["train.epochs=1", "train.ais_temperatures=14500"],
                         "MNIST-5k: 20 epochs per RBM x 3,500 = 70,000 images; here 1 x 55,000 per RBM"),
    "dbm_500_1000": ("dbm", ["model.hidden=[500,1000]", "pretrain.epochs=[1,1]", "train.lr=0.001", "train.epochs=1",
                             "train.ais_temperatures=30000"],
                     ("MNIST-5k: pretraining 20 + 20 epochs, joint 10 epochs x 3,500; here 1 + 1, joint 1 x 55,000 "
                      "(joint: 55,000 images against 35,000)")),
    "dbn_updown": ("dbn", ["train.epochs=1", "train.up_down_epochs=1", "train.ais_temperatures=14500"],
                   ("the DBN row's three RBMs (checkpoints copied) + 1 epoch of up-down (MNIST-5k: 10 x 3,500 = "
                    "35,000 images; here 55,000)")),
    "fvbm": ("fvbm", ["train.epochs=1"], "MNIST-5k: 20 epochs x 3,500 = 70,000 images; here 1 x 55,000"),
}


def first_test_images(load_data):
    def load(spec):
        data = load_data(spec)
        return dataclasses.replace(data, test=Split(data.test.x[:TEST_IMAGES].clone(), data.test.y[:TEST_IMAGES].clone()))
    return load


def _save(results):
    results["note"] = __doc__
    tmp = JSON + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1, default=str)
    os.replace(tmp, JSON)


def reevaluate(args):
    """AIS again at more temperatures on the same 1,000 test images; the run's metrics.json is left as it is."""
    family = ROWS[args.row][0]
    out = os.path.join(args.out_root, args.row)
    fam = catalogue.family(family)
    trained = catalogue.load(out)
    data = first_test_images(fam.load_data)(trained.spec)
    load_before = os.getloadavg()
    metrics = catalogue.evaluate(out, data=data, temperatures=args.reevaluate, output=out + f"_ais{args.reevaluate}.json")
    print(catalogue.summary(metrics, out), flush=True)
    results = json.load(open(JSON))
    keep = ("test_log_likelihood", "test_log_likelihood_stderr", "ais_log_z", "ais_log_z_std", "ais_log_z_halves",
            "ais_stable", "ais_runs", "ais_temperatures", "ais_seconds", "test_images")
    results["rows"][args.row].setdefault("ais_repeats", []).append(
        {**{k: metrics.get(k) for k in keep},
         "command": f"OMP_NUM_THREADS=1 python benchmarks/energy_fashion.py {args.row} --reevaluate {args.reevaluate}",
         "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "loaded": f"yes (load average {load_before[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end)"})
    _save(results)


@torch.no_grad()
def top_ais_check(args):
    """Is the top RBM's AIS log Z (from the base-rate model of the data's representation) missing a mode? AIS from
    a uniform base takes another path; and the fraction of 'on' pixels after the pass down shows where block-Gibbs
    chains settle when started from random hidden states (as the sample grid), from random visible states, and
    from test images passed up."""
    from inference.ais import ais_log_partition
    from inference.queries import gibbs_chains
    out = os.path.join(args.out_root, args.row)
    trained = catalogue.load(out)
    net, top = trained.module, trained.module.top
    data = first_test_images(trained.family.load_data)(trained.spec)
    torch.manual_seed(0)
    started = time.perf_counter()
    ais = ais_log_partition(top, num_runs=100, num_temperatures=args.top_ais_check, base=None, groups=2)
    seconds = time.perf_counter() - started

    def run(z, sweeps=300):
        for _ in range(sweeps):
            z = torch.bernoulli(top.visible_probs(torch.bernoulli(top.hidden_probs(z))))
        return z

    def settle(z):
        return float(net.generate(run(z))[1].mean())

    from_hidden = gibbs_chains(top, 64, 299, 1, diagnose=False)
    # how much of Z the states where chains settle hold: log p(z) = -F_top(z) - log Z per state
    neg_f = {"from random hidden states": -top.free_energy(from_hidden.v).double(),
             "from test images passed up": -top.free_energy(
                 run(torch.bernoulli(net.up(data.test.x[:64], len(net.rbms) - 1)))).double()}
    check = {
        "command": f"OMP_NUM_THREADS=1 python benchmarks/energy_fashion.py {args.row} --top-ais-check "
                   f"{args.top_ais_check}",
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "uniform_base_ais_log_z": ais.log_z, "uniform_base_ais_log_z_std": ais.log_z_std,
        "uniform_base_ais_halves": list(ais.group_log_z), "uniform_base_ais_stable": bool(ais.stable),
        "ais_temperatures": args.top_ais_check, "ais_runs": 100, "ais_seconds": seconds,
        "stored_ais_log_z": trained.metrics.get("ais_log_z"),
        "pixel_on_fraction_test_images": float(data.test.x[:64].mean()),
        "pixel_on_fraction_after_300_sweeps": {
            "from random hidden states (the sample grid's start)": float(net.generate(from_hidden.v)[1].mean()),
            "from random visible states": settle(torch.bernoulli(torch.full((64, top.num_visible), 0.5))),
            "from 64 test images passed up": settle(torch.bernoulli(net.up(data.test.x[:64], len(net.rbms) - 1)))},
        "top_state_log_p_after_300_sweeps (max, mean over 64 chains; -F_top - stored log Z)": {
            k: [float(f.max()) - trained.metrics["ais_log_z"], float(f.mean()) - trained.metrics["ais_log_z"]]
            for k, f in neg_f.items()}}
    print(json.dumps(check, indent=1), flush=True)
    results = json.load(open(JSON))
    results["rows"][args.row].setdefault("top_rbm_checks", []).append(check)
    _save(results)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("row", choices=tuple(ROWS))
    p.add_argument("--out-root", default="runs/fashion")
    p.add_argument("--reevaluate", type=int, default=None, metavar="T",
                   help="score the row's trained run again with AIS at T temperatures (kept under ais_repeats)")
    p.add_argument("--top-ais-check", type=int, default=None, metavar="T",
                   help="DBN rows: the top RBM's AIS log Z again from a uniform base (T temperatures), and where "
                        "its Gibbs chains settle from two kinds of start (kept under top_rbm_checks)")
    args = p.parse_args(argv)
    if args.reevaluate is not None:
        return reevaluate(args)
    if args.top_ais_check is not None:
        return top_ais_check(args)
    family, overrides, schedule = ROWS[args.row]
    out = os.path.join(args.out_root, args.row)
    if args.row == "dbn_updown":  # resume the DBN row's trained RBMs, run only the fine-tuning
        src = os.path.join(args.out_root, "dbn_500_500_1000")
        os.makedirs(out, exist_ok=True)
        for name in ("checkpoint.pt", "checkpoint_rbm2.pt", "checkpoint_rbm3.pt"):
            if not os.path.exists(os.path.join(out, name)):
                shutil.copy(os.path.join(src, name), os.path.join(out, name))
        if not os.path.exists(os.path.join(out, "spec.json")):  # the DBN's spec, now with the fine-tuning
            spec_dict = json.load(open(os.path.join(src, "spec.json")))
            spec_dict["train"]["up_down_epochs"] = 1
            with open(os.path.join(out, "spec.json"), "w") as f:
                json.dump(spec_dict, f, indent=1)
    fam = catalogue.family(family)
    fam.load_data = first_test_images(fam.load_data)  # this process only
    spec = catalogue.make_spec(family, overrides=DATA + overrides)
    load_before = os.getloadavg()
    started_utc = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    started = time.perf_counter()
    metrics = catalogue.train(spec, out, progress=False, log=lambda m: print(m, flush=True))
    wall = time.perf_counter() - started
    print(catalogue.summary(metrics, out), flush=True)
    pngs = {}
    for name in ("samples.png", "completion.png"):
        if os.path.exists(os.path.join(out, name)):
            prefix = "dbn_updown" if args.row == "dbn_updown" else args.row.split("_")[0]
            target = os.path.join(RESULTS, f"{prefix}_fashion_{name}")  # e.g. dbm_fashion_samples.png
            shutil.copy(os.path.join(out, name), target)
            pngs[name] = f"benchmarks/results/{prefix}_fashion_{name}"
    keep = {k: v for k, v in metrics.items() if k != "history"}
    row = {"command": f"OMP_NUM_THREADS=1 python benchmarks/energy_fashion.py {args.row} --out-root {args.out_root}",
           "equivalent_cli": f"ppl-models train {family} --dataset fashion-mnist "
                             + " ".join(f"--set {o}" for o in overrides) + f" --out {out}",
           "started_utc": started_utc, "threads": torch.get_num_threads(),
           "loaded": f"yes, shared 2-core machine (load average {load_before[0]:.1f} at start, "
                     f"{os.getloadavg()[0]:.1f} at end): timings are upper bounds",
           "schedule": schedule, "test_images": f"first {TEST_IMAGES} of the 10,000 official test images",
           "training_images": 55000, "wall_seconds": wall, "spec": json.load(open(os.path.join(out, "spec.json"))),
           "history_last": (metrics.get("history") or [None])[-1], "metrics": keep, "pngs": pngs}
    results = json.load(open(JSON)) if os.path.exists(JSON) else {"rows": {}}
    results["rows"][args.row] = row
    _save(results)
    print(f"row {args.row}: {wall:.0f} s -> {JSON}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
