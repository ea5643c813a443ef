"""AIS time of a two-hidden-layer DBM against an RBM's at the literature's protocol, with the matrix-product floor.

Salakhutdinov & Hinton (2009) estimate a DBM's log Z with about 20,000 temperatures and 100 AIS runs.
Here both models go through the same :func:`inference.ais.ais_log_partition`: the RBM (784x500) along
Salakhutdinov & Murray's base-rate path, the DBM (784-500-1000) along the same path on its even block
(v, h2) with the odd layer (h1) summed out analytically. One DBM temperature costs four matrix
products (v W1 and h2 W2' for h1's input, h1 W1' and h1 W2 for the even layers'), the RBM's two, so
the expected ratio is (784*500 + 500*1000) / (784*500), about 2.3. The floor is those matrix products
alone, in a plain loop on fixed inputs; each estimator's time over its floor says what the
sampler's own work (sigmoids, draws, weights) costs.

Against a hand-written PyTorch loop of the same maths: ``benchmarks/dbm_ais_vs_plain.py``.

Weights: a trained run's (``--dbm-run DIR`` / ``--rbm-run DIR``) or random (speed does not depend on them).
Writes ``benchmarks/results/dbm_ais.json``.

Run: ``python benchmarks/dbm_ais.py [--threads 2] [--temperatures 20000] [--runs 100] [--repeats 1]``
(``--temperatures 2000``: a tenth of the work; the JSON also gives every time scaled to ``--protocol-temperatures``)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inference.ais import ais_log_partition, default_schedule  # noqa: E402
from ppl_models.dbm import DBM  # noqa: E402
from ppl_models.rbm import RBM  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def load_module(directory, fallback):
    if directory is None:
        return fallback
    from ppl_models import catalogue

    return catalogue.load(directory).module


def timed_ais(model, runs, schedule, seed):
    torch.manual_seed(seed)
    started = time.perf_counter()
    result = ais_log_partition(model, num_runs=runs, schedule=schedule, base=model.base_rate(None))
    return time.perf_counter() - started, result.log_z


@torch.no_grad()
def matmul_floor(weights, runs, steps):
    """Seconds of ``steps`` rounds of the products one AIS temperature needs: for each weight matrix W
    (a, b), a (runs, a) x (a, b) and a (runs, b) x (b, a) product."""
    inputs = [(torch.rand(runs, w.shape[0]), torch.rand(runs, w.shape[1])) for w in weights]
    started = time.perf_counter()
    for _ in range(steps):
        for w, (x, y) in zip(weights, inputs):
            torch.mm(x, w)
            torch.mm(y, w.t())
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--temperatures", type=int, default=20000)
    parser.add_argument("--protocol-temperatures", type=int, default=20000,
                        help="also report every time scaled linearly to this many temperatures (a step's cost does "
                             "not depend on the temperature: measure fewer on a busy machine)")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repetitions; medians are reported")
    parser.add_argument("--layers", type=int, nargs="+", default=[784, 500, 1000], help="DBM layer sizes")
    parser.add_argument("--dbm-run", default=None)
    parser.add_argument("--rbm-run", default=None)
    parser.add_argument("--out", default=os.path.join(RESULTS, "dbm_ais.json"))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    dbm = load_module(args.dbm_run, DBM(args.layers))
    rbm = load_module(args.rbm_run, RBM(args.layers[0], args.layers[1]))
    schedule = default_schedule(args.temperatures)
    times = {"rbm": [], "dbm": [], "rbm_floor": [], "dbm_floor": []}
    log_z = {}
    with threadpool_limits(args.threads), torch.no_grad():
        torch.set_num_threads(args.threads)
        for repeat in range(args.repeats):
            for name, model in (("rbm", rbm), ("dbm", dbm)):
                seconds, log_z[name] = timed_ais(model, args.runs, schedule, seed=repeat)
                times[name].append(seconds)
                weights = [model.weight.detach()] if name == "rbm" else [w.detach() for w in model.weights]
                times[f"{name}_floor"].append(matmul_floor(weights, args.runs, args.temperatures - 1))
                print(f"repeat {repeat + 1}: {name} AIS {seconds:.1f}s (floor {times[f'{name}_floor'][-1]:.1f}s), "
                      f"log Z {log_z[name]:.2f}", flush=True)
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "protocol": {"temperatures": args.temperatures, "runs": args.runs, "schedule": "Salakhutdinov & Murray 2008, scaled",
                     "dbm_layers": dbm.layer_sizes, "rbm": [rbm.num_visible, rbm.num_hidden],
                     "weights": {"dbm": args.dbm_run or "random N(0, 0.01)", "rbm": args.rbm_run or "random N(0, 0.01)"}},
        "seconds": times, "median_seconds": median,
        "median_seconds_at_protocol": {k: v * (args.protocol_temperatures - 1) / (args.temperatures - 1)
                                       for k, v in median.items()},
        "protocol_temperatures": args.protocol_temperatures,
        "dbm_over_rbm": median["dbm"] / median["rbm"],
        "floor_dbm_over_rbm": median["dbm_floor"] / median["rbm_floor"],
        "expected_product_ratio": sum(a * b for a, b in zip(dbm.layer_sizes, dbm.layer_sizes[1:])) / (rbm.num_visible * rbm.num_hidden),
        "rbm_over_its_floor": median["rbm"] / median["rbm_floor"], "dbm_over_its_floor": median["dbm"] / median["dbm_floor"],
        "log_z": log_z, "threads": args.threads, "torch": torch.__version__, "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "note": "wall-clock seconds on a shared machine; ratios of medians",
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"DBM AIS / RBM AIS: {result['dbm_over_rbm']:.2f} (matrix products alone: {result['floor_dbm_over_rbm']:.2f}; "
          f"expected {result['expected_product_ratio']:.2f}); over their floors: RBM {result['rbm_over_its_floor']:.2f}, "
          f"DBM {result['dbm_over_its_floor']:.2f} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
