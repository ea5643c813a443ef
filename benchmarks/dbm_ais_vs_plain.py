"""A two-layer DBM's AIS log Z against a hand-written PyTorch loop of the same maths, with the floor.

Issue 14 asks a DBM's AIS to be within 1.1x of a hand-written loop. Both sides run the same
algorithm on a 784-500-1000 DBM (random weights: a step's cost does not depend on them), 100 runs,
Salakhutdinov & Murray's schedule scaled to ``--temperatures``, one thread:

- **ours**: :func:`inference.ais.ais_log_partition` on :class:`ppl_models.dbm.DBM`, the base-rate path
  on the even block (v, h2) with the odd layer h1 summed out analytically
  (:class:`ppl_models.rbm_annealing.VisibleLogitsAnnealingPath`);
- **plain**: :func:`plain_dbm_ais`, the same maths written out as one would by hand: v and h2 kept as two
  tensors, h1's input ``b1 + v W1 + h2 W2'``, the log-weight increment
  ``-(b_k - b_{k-1}) (v.(b_A - b0) - h2.b2) + sum softplus(b_k x) - softplus(b_{k-1} x)``, then one
  Gibbs sweep of the tempered model (h1, then v and h2 from ``(1-b) b_A + b (bias + input)``);
  it draws its uniforms in the same order and shapes as ours, so for the same seed it follows the same
  chains until a float rounding flips one draw;
- **the floor**: the four matrix products of a temperature alone (their shapes and layouts checked
  against those ``_floor.record_products`` reads off our step), timed on the model's own weights.

Before timing, :func:`check` runs both on a small DBM whose log Z is enumerated exactly: the two agree
with each other for the same seed and with the exact value within AIS's own error; the timed runs' log Z
are reported side by side too.

Writes ``benchmarks/results/dbm_ais_vs_plain.json``.
Run: ``python benchmarks/dbm_ais_vs_plain.py [--threads 1] [--temperatures 1000] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _floor import median_seconds, record_products  # noqa: E402
from inference.ais import ais_log_partition, default_schedule  # noqa: E402
from inference.exact_enumeration import log_partition  # noqa: E402
from ppl_models.dbm import DBM  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@torch.no_grad()
def plain_dbm_ais(W1, W2, b0, b1, b2, base_v, betas: list, runs: int):
    """log Z of a 2-layer DBM by AIS along the base-rate path on (v, h2), h1 summed out; log-weights too.

    The base model: independent v with logits ``base_v``, uniform h2 and h1, so
    ``log Z_A = sum softplus(base_v) + (H1 + H2) log 2``."""
    V, H1, H2 = W1.shape[0], W1.shape[1], W2.shape[1]
    log_z_base = float(F.softplus(base_v).sum()) + (H1 + H2) * math.log(2)
    W1t, W2t = W1.t(), W2.t()
    gap_v = base_v - b0  # the linear part of f_b(v, h2) - f_b'(v, h2) is -(b - b') (v.(base_v - b0) - h2.b2)
    u = torch.rand(runs, V + H2)  # one block of uniforms, as ours draws the even block
    v = (u[:, :V] < torch.sigmoid(base_v)).float()
    h2 = (u[:, V:] < 0.5).float()
    log_w = torch.zeros(runs, dtype=torch.float64)
    last = len(betas) - 1
    for k in range(1, last + 1):
        b_prev, b = betas[k - 1], betas[k]
        x = torch.addmm(b1, v, W1).addmm_(h2, W2t)  # h1's input
        inc = (b - b_prev) * (h2 @ b2 - v @ gap_v) + (F.softplus(b * x) - F.softplus(b_prev * x)).sum(1)
        log_w += inc.double()
        if k < last:
            h1 = (torch.rand(runs, H1) < torch.sigmoid(b * x)).float()
            u = torch.rand(runs, V + H2)
            v = (u[:, :V] < torch.sigmoid(torch.addmm(b0, h1, W1t).mul_(b).add_(base_v, alpha=1 - b))).float()
            h2 = (u[:, V:] < torch.sigmoid(torch.addmm(b2, h1, W2).mul_(b))).float()
    return log_z_base + float(torch.logsumexp(log_w, 0) - math.log(runs)), log_w


def parameters(dbm: DBM):
    (W1, W2), (b0, b1, b2) = [w.detach() for w in dbm.weights], [b.detach() for b in dbm.biases]
    return W1, W2, b0, b1, b2


#: the delta-method standard deviation of ours' last log Z (the run's own Monte Carlo error)
LAST_STD = []


def ours(dbm: DBM, base_v, schedule, runs: int, seed: int) -> float:
    torch.manual_seed(seed)
    base = torch.cat([base_v, base_v.new_zeros(dbm.layer_sizes[2])])
    result = ais_log_partition(dbm, num_runs=runs, schedule=schedule, base=base)
    LAST_STD[:] = [result.log_z_std]
    return result.log_z


def plain(dbm: DBM, base_v, schedule, runs: int, seed: int) -> float:
    torch.manual_seed(seed)
    return plain_dbm_ais(*parameters(dbm), base_v, schedule.tolist(), runs)[0]


@torch.no_grad()
def matrix_products_floor(dbm: DBM, runs: int, repeats: int) -> float:
    """Median seconds of one temperature's four products alone, on the model's own weights and operands of
    the layouts ours uses (v and h2 are column slices of the even block); each W is read twice a temperature,
    as in AIS, so the floor keeps the cache hits the real loop has (fresh copies per product would not)."""
    W1, W2, b0, b1, b2 = parameters(dbm)
    V = W1.shape[0]
    even = (torch.rand(runs, V + W2.shape[1]) < 0.5).float()
    v, h2 = even[:, :V], even[:, V:]
    h1 = (torch.rand(runs, W1.shape[1]) < 0.5).float()
    W1t, W2t = W1.t(), W2.t()

    def once():
        torch.addmm(b1, v, W1)
        torch.mm(h2, W2t)
        torch.mm(h1, W1t)
        torch.addmm(b2, h1, W2)

    return median_seconds(once, repeats)


def check(runs=2000, temperatures=300, seeds=3) -> dict:
    """A 6-4-3 DBM with strong weights and biases: both loops against exact enumeration and each other."""
    gen = torch.Generator().manual_seed(1)
    sizes = [6, 4, 3]
    dbm = DBM.from_parameters([torch.randn(a, b, generator=gen) for a, b in zip(sizes, sizes[1:])],
                              [torch.randn(n, generator=gen) * 0.5 for n in sizes])
    exact = float(log_partition(dbm))
    base_v = torch.randn(sizes[0], generator=gen)
    schedule = default_schedule(temperatures)
    rows = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        result = ais_log_partition(dbm, num_runs=runs, schedule=schedule,
                                   base=torch.cat([base_v, base_v.new_zeros(sizes[2])]))
        p = plain(dbm, base_v, schedule, runs, seed)
        rows.append({"seed": seed, "ours": result.log_z, "plain": p, "ours_std": result.log_z_std})
        if abs(p - result.log_z) > 1e-4:
            raise AssertionError(f"plain loop {p} != ours {result.log_z} for seed {seed}: not the same maths")
        if abs(result.log_z - exact) > 4 * result.log_z_std + 1e-3:
            raise AssertionError(f"AIS log Z {result.log_z} +- {result.log_z_std} is not the exact {exact}")
    return {"dbm": sizes, "runs": runs, "temperatures": temperatures, "exact_log_z": exact, "seeds": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--temperatures", type=int, default=1000)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3, help="interleaved pairs (the order alternates); medians reported")
    p.add_argument("--layers", type=int, nargs=3, default=[784, 500, 1000])
    p.add_argument("--loaded", action="store_true", help="record that other jobs shared the machine")
    p.add_argument("--out", default=os.path.join(RESULTS, "dbm_ais_vs_plain.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    checked = check()
    print(f"check: 6-4-3 DBM, exact log Z {checked['exact_log_z']:.4f}; ours / plain per seed "
          + ", ".join(f"{r['ours']:.4f} / {r['plain']:.4f}" for r in checked["seeds"]), flush=True)
    torch.manual_seed(0)
    dbm = DBM(args.layers)
    V, H1, H2 = args.layers
    base_v = torch.logit(torch.rand(args.layers[0]) * 0.8 + 0.1)  # a data-like base rate: speed does not care
    schedule = default_schedule(args.temperatures)
    # ours over 3 temperatures: 2 products for h1's input at each, 2 for the one transition between them
    products = record_products(lambda: ours(dbm, base_v, torch.tensor([0.0, 0.5, 1.0]), args.runs, 0))
    assert len(products) == 6, f"expected 6 matrix products in two AIS steps, recorded {len(products)}"
    products = products[:4]  # one full temperature
    assert [[s[0] for s in specs] for _, specs in products] == [
        [(args.runs, V), (V, H1)], [(args.runs, H2), (H2, H1)], [(args.runs, H1), (H1, V)], [(args.runs, H1), (H1, H2)]]
    ours(dbm, base_v, default_schedule(20), args.runs, 0)  # warm-up both
    plain(dbm, base_v, default_schedule(20), args.runs, 0)
    times, log_z, log_z_std = {"ours": [], "plain": []}, {"ours": [], "plain": []}, []
    runners = {"ours": ours, "plain": plain}
    for repeat in range(args.repeats):
        for name in (("ours", "plain") if repeat % 2 == 0 else ("plain", "ours")):
            t = time.perf_counter()
            log_z[name].append(runners[name](dbm, base_v, schedule, args.runs, seed=repeat))
            times[name].append(time.perf_counter() - t)
            if name == "ours":
                log_z_std.append(LAST_STD[0])
        print(f"repeat {repeat + 1}: ours {times['ours'][-1]:.2f}s (log Z {log_z['ours'][-1]:.3f}), "
              f"plain {times['plain'][-1]:.2f}s (log Z {log_z['plain'][-1]:.3f})", flush=True)
    floor = matrix_products_floor(dbm, args.runs, repeats=200) * (args.temperatures - 1)
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "command": "python benchmarks/" + os.path.basename(__file__) + " " + " ".join(argv if argv is not None
                                                                                      else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d", time.gmtime()), "time_utc": time.strftime("%H:%M", time.gmtime()),
        "protocol": {"dbm_layers": args.layers, "runs": args.runs, "temperatures": args.temperatures,
                     "schedule": "Salakhutdinov & Murray 2008, scaled", "weights": "random N(0, 0.01)"},
        "seconds": times, "median_seconds": median, "matrix_products_s": floor,
        "matrix_products": [[list(s[0]) for s in specs] for _, specs in products],
        "ratio_ours_over_plain": median["ours"] / median["plain"],
        "paired_ratios": [a / b for a, b in zip(times["ours"], times["plain"])],
        "paired_ratio_median": statistics.median(a / b for a, b in zip(times["ours"], times["plain"])),
        "ratio_ours_over_floor": median["ours"] / floor, "ratio_plain_over_floor": median["plain"] / floor,
        "aim": 1.1,
        "log_z": log_z, "log_z_std_ours": log_z_std,
        "max_abs_log_z_difference": max(abs(a - b) for a, b in zip(log_z["ours"], log_z["plain"])),
        "log_z_note": "same seed per repeat on both sides: they follow the same chains until a rounding flips a draw",
        "check": checked,
        "threads": args.threads, "loaded": args.loaded, "torch": torch.__version__, "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"log Z: ours - plain at most {result['max_abs_log_z_difference']:.2g} nats for the same seed (ours' own "
          f"std {statistics.median(log_z_std):.2g})")
    print(f"ours / plain {result['ratio_ours_over_plain']:.3f}; ours / floor {result['ratio_ours_over_floor']:.2f}, "
          f"plain / floor {result['ratio_plain_over_floor']:.2f} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
