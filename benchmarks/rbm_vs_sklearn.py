"""PCD-1 training of a binary RBM: our trainer against scikit-learn's ``BernoulliRBM``.

Same data (MNIST-5k training split, threshold 0.5, float32 for both; scikit-learn is
also timed on float64, numpy's default dtype), same
model (784 visible, 500 hidden, weights N(0, 0.01), zero biases), same
algorithm (PCD-1 with ``batch_size`` persistent chains, plain SGD: no momentum,
no weight decay), same learning rate, batch size and epochs. Training runs of
the two are interleaved (others load the same cores) and the ratio of median
times is reported; repeat ``r`` trains both with seed ``r``, so the repeats
are also independent training runs.

Every trained weight set is then scored the same way on the test split: AIS
test log-likelihood (same runs, temperatures, base model and AIS seed for
both) and scikit-learn's own pseudo-likelihood (``score_samples``, fixed
random state). One AIS estimate can look precise and still be wrong (a
heavy-tailed weight distribution hides from its own spread), so each model's
runs are split into ``--ais-groups`` independent groups whose estimates must
agree, as ``ppl-models evaluate`` does with two halves; and since one PCD
run's log-likelihood also moves between training seeds, the figures reported
are means and spreads over the seeds. The same protocol is also run with a
hidden layer small enough for exact log Z (default 15 units, several seeds):
an exact quality comparison. Writes ``benchmarks/results/rbm_vs_sklearn.json``.

Run (full, about 15 minutes on 1 thread): ``python benchmarks/rbm_vs_sklearn.py``;
quick look (about 2 minutes): ``python benchmarks/rbm_vs_sklearn.py --quick``.
Also times a plain PyTorch PCD-1 loop (the yardstick our trainer should match,
its pseudo-likelihood reported) and the training run's matrix products alone (the
floor no trainer can beat, hence the largest speedup over scikit-learn possible).
Options: ``--epochs --lr --repeats --ais-runs --ais-groups --ais-temperatures``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time

import numpy as np
import torch
from sklearn.neural_network import BernoulliRBM
from threadpoolctl import threadpool_limits

from inference.ais import ais_log_partition, mean_log_likelihood
from inference.contrastive_divergence import ContrastiveDivergence
from inference.exact_enumeration import log_partition
from inference.training import fit
from ppl_models.data import load_dataset
from ppl_models.rbm import RBM


def train_ours(x, args, hidden=None, seed=0):
    torch.manual_seed(seed)
    rbm = RBM(784, hidden or args.hidden, weight_scale=0.01)
    # through the shared driver, timed like scikit-learn's fit, which monitors nothing (verbose=0)
    fit(ContrastiveDivergence(rbm, k=1, persistent=True, compute_loss=False), (x,), module=rbm, epochs=args.epochs,
        batch_size=args.batch_size, optimizer="sgd", lr=args.lr, seed=seed, progress=False)
    return rbm


def train_plain(x, args, hidden=None, seed=0) -> RBM:
    """PCD-1 as a user would write it in plain PyTorch: no kernel, no Pyro, no monitors.

    The yardstick of the issue's speed aim (a loop like this measured 2.75x
    scikit-learn while planning): our trainer should cost no more than it."""
    torch.manual_seed(seed)
    num_hidden = hidden or args.hidden
    w = torch.randn(784, num_hidden) * 0.01
    b, c = torch.zeros(784), torch.zeros(num_hidden)
    chains = torch.zeros(args.batch_size, 784)
    n = x.shape[0]
    for _ in range(args.epochs):
        order = torch.randperm(n)
        for i in range(0, n, args.batch_size):
            v = x[order[i : i + args.batch_size]]
            ph = torch.sigmoid(v @ w + c)
            h = torch.bernoulli(torch.sigmoid(chains @ w + c))
            chains = torch.bernoulli(torch.sigmoid(h @ w.t() + b))
            phn = torch.sigmoid(chains @ w + c)
            w += args.lr * (v.t() @ ph / v.shape[0] - chains.t() @ phn / chains.shape[0])
            b += args.lr * (v.mean(0) - chains.mean(0))
            c += args.lr * (ph.mean(0) - phn.mean(0))
    rbm = RBM(784, num_hidden)
    with torch.no_grad():
        rbm.weight.copy_(w)
        rbm.visible_bias.copy_(b)
        rbm.hidden_bias.copy_(c)
    return rbm


def gemm_floor(x, args) -> float:
    """Seconds for just the matrix products of PCD-1 training, with their shapes, for as many updates.

    An update needs three (the data's hidden means, the chains' visible draw,
    their hidden means) plus the weight gradient (one product with both
    phases' rows): ``10 * batch * 784 * hidden`` flops, as in scikit-learn's
    ``_fit`` and in our trainer. No implementation on this BLAS beats this
    time, so it bounds the speedup over scikit-learn any trainer can reach."""
    torch.manual_seed(0)
    b, n_v, n_h = args.batch_size, x.shape[1], args.hidden
    w, v, h = torch.randn(n_v, n_h) * 0.01, torch.rand(b, n_v).round(), torch.rand(b, n_h)
    v2, h2 = torch.cat([v, v]), torch.cat([h, h])
    out_h, out_v, out_w = torch.empty(b, n_h), torch.empty(b, n_v), torch.empty(n_v, n_h)
    t = time.perf_counter()
    for _ in range(args.epochs * math.ceil(x.shape[0] / b)):
        torch.mm(v, w, out=out_h)
        torch.mm(h, w.t(), out=out_v)
        torch.mm(v, w, out=out_h)
        torch.mm(v2.t(), h2, out=out_w)
    return time.perf_counter() - t


def train_sklearn(x, args, dtype=np.float32, hidden=None, seed=0):
    model = BernoulliRBM(n_components=hidden or args.hidden, learning_rate=args.lr, batch_size=args.batch_size,
                         n_iter=args.epochs, random_state=seed)
    model.fit(x.numpy().astype(dtype))
    return model


def sklearn_to_rbm(model) -> RBM:
    rbm = RBM(model.components_.shape[1], model.components_.shape[0])
    with torch.no_grad():
        rbm.weight.copy_(torch.from_numpy(np.ascontiguousarray(model.components_.T)))
        rbm.visible_bias.copy_(torch.from_numpy(model.intercept_visible_))
        rbm.hidden_bias.copy_(torch.from_numpy(model.intercept_hidden_))
    return rbm


def sklearn_pseudo_likelihood(rbm: RBM, x: torch.Tensor) -> float:
    scorer = BernoulliRBM(n_components=rbm.num_hidden, random_state=0)
    scorer.components_ = rbm.weight.detach().t().double().numpy()
    scorer.intercept_hidden_ = rbm.hidden_bias.detach().double().numpy()
    scorer.intercept_visible_ = rbm.visible_bias.detach().double().numpy()
    scorer.random_state_ = np.random.RandomState(0)
    scorer.n_features_in_ = rbm.num_visible
    return float(scorer.score_samples(x.double().numpy()).mean())


def score(rbm, x_train, x_test, args, seed=1) -> dict:
    torch.manual_seed(seed)
    t = time.perf_counter()
    ais = ais_log_partition(rbm, x_train, num_runs=args.ais_runs, num_temperatures=args.ais_temperatures)
    seconds = time.perf_counter() - t
    # the runs are independent: groups of them are independent estimates of the same log Z
    groups = [ais.log_weights[i::args.ais_groups] for i in range(args.ais_groups)]
    group_log_z = [ais.log_z_base + float(torch.logsumexp(g, 0) - math.log(len(g))) for g in groups]
    spread = max(group_log_z) - min(group_log_z)
    return {
        "ais_log_z": ais.log_z, "ais_log_z_std": ais.log_z_std,
        "ais_log_z_interval_3sigma": [ais.log_z_lower, ais.log_z_upper],
        "ais_log_z_groups": group_log_z, "ais_group_spread": spread,
        # the rule of inference.ais (estimate_is_stable): a finite -3 sigma bound and groups within half a nat
        "ais_stable": bool(ais.log_z_std < 1 / 3 and spread < 0.5),
        "ais_log_weight_std": float(ais.log_weights.std()),
        "test_log_likelihood": mean_log_likelihood(rbm, x_test, ais.log_z),
        "test_log_likelihood_interval": [mean_log_likelihood(rbm, x_test, ais.log_z_upper),
                                         mean_log_likelihood(rbm, x_test, ais.log_z_lower)],
        "ais_seconds": seconds,
        "sklearn_pseudo_likelihood_test": sklearn_pseudo_likelihood(rbm, x_test),
    }


def over_seeds(scores: list) -> dict:
    """Mean and spread over training seeds of the test log-likelihood and pseudo-likelihood."""
    out = {}
    for key in ("test_log_likelihood", "sklearn_pseudo_likelihood_test"):
        values = [s[key] for s in scores]
        out[key] = {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else float("nan"),
                    "min": min(values), "max": max(values)}
    out["ais_group_spread_max"] = max(s["ais_group_spread"] for s in scores)
    out["ais_all_stable"] = all(s["ais_stable"] for s in scores)
    return out


def exact_quality(x_train, x_test, args) -> dict:
    """Same protocol with a hidden layer small enough for exact log Z: test log-likelihood without AIS noise."""
    out = {"hidden": args.exact_hidden, "seeds": list(range(args.exact_seeds)), "ours": [], "sklearn": []}
    for seed in out["seeds"]:
        ours = train_ours(x_train, args, hidden=args.exact_hidden, seed=seed)
        sk = sklearn_to_rbm(train_sklearn(x_train, args, hidden=args.exact_hidden, seed=seed))
        for name, rbm in (("ours", ours), ("sklearn", sk)):
            out[name].append(mean_log_likelihood(rbm, x_test, float(log_partition(rbm))))
    for name in ("ours", "sklearn"):
        out[f"{name}_mean"] = statistics.mean(out[name])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3, help="training runs per trainer (seeds 0, 1, ...): timed and each scored")
    parser.add_argument("--ais-runs", type=int, default=100, help="AIS runs per model")
    parser.add_argument("--ais-groups", type=int, default=2, help="independent groups of the AIS runs whose estimates must agree")
    parser.add_argument("--ais-temperatures", type=int, default=30000)
    parser.add_argument("--quick", action="store_true",
                        help="a quick look: 5 epochs, 2 repeats, 5000 AIS temperatures, 2 exact seeds (overrides those flags)")
    parser.add_argument("--exact-hidden", type=int, default=15, help="hidden units of the exact-log-likelihood comparison")
    parser.add_argument("--exact-seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads (1 by default: on a shared 2-core machine, 2 threads per process "
                             "were measured 12x slower than 1 while others ran)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "rbm_vs_sklearn.json"))
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats, args.ais_temperatures, args.exact_seeds = 5, 2, 5000, 2
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # numpy / scikit-learn BLAS alike
    data = load_dataset("mnist5k", binarize="threshold")
    x_train, x_test = data.train.x, data.test.x
    ours_t, plain_t, sk_t, sk64_t, floor_t = [], [], [], [], []
    ours_models, sk_models, plain_pl = [], [], []
    # one untimed epoch of each trainer on a few images first: one-off costs (torch.optim's first
    # construction imports for about a second, BLAS warm-up) are not training time
    warm = argparse.Namespace(**{**vars(args), "epochs": 1})
    for trainer in (train_ours, train_plain, train_sklearn):
        trainer(x_train[:200], warm, seed=0)
    for seed in range(args.repeats):
        t = time.perf_counter()
        ours = train_ours(x_train, args, seed=seed)
        ours_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        plain = train_plain(x_train, args, seed=seed)
        plain_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        sk = train_sklearn(x_train, args, seed=seed)
        sk_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        train_sklearn(x_train, args, np.float64, seed=seed)  # what a user passing numpy's default dtype gets
        sk64_t.append(time.perf_counter() - t)
        ours_models.append(ours)
        sk_models.append(sklearn_to_rbm(sk))
        floor_t.append(gemm_floor(x_train, args))
        plain_pl.append(sklearn_pseudo_likelihood(plain, x_test))
        print(f"seed {seed}: trained ours {ours_t[-1]:.1f}s, plain PyTorch {plain_t[-1]:.1f}s, sklearn {sk_t[-1]:.1f}s, "
              f"float64 {sk64_t[-1]:.1f}s; the matrix products alone {floor_t[-1]:.1f}s", flush=True)
    scores = {"ours": [], "sklearn": []}
    for seed in range(args.repeats):
        for name, models in (("ours", ours_models), ("sklearn", sk_models)):
            scores[name].append({"seed": seed, **score(models[seed], x_train, x_test, args, seed=1000 + seed)})
            s = scores[name][-1]
            print(f"seed {seed} {name}: AIS test LL {s['test_log_likelihood']:.2f}, log Z groups "
                  f"{', '.join(f'{z:.2f}' for z in s['ais_log_z_groups'])} ({'stable' if s['ais_stable'] else 'NOT stable'}), "
                  f"pseudo-likelihood {s['sklearn_pseudo_likelihood_test']:.2f}, AIS {s['ais_seconds']:.0f}s", flush=True)
    summary = {name: over_seeds(scores[name]) for name in scores}
    diffs = [o["test_log_likelihood"] - k["test_log_likelihood"] for o, k in zip(scores["ours"], scores["sklearn"])]
    se = math.sqrt(sum((summary[n]["test_log_likelihood"]["std"] ** 2) / args.repeats for n in summary)) if args.repeats > 1 else float("nan")
    gflops = 10 * args.batch_size * x_train.shape[1] * args.hidden * args.epochs * math.ceil(x_train.shape[0] / args.batch_size) / 1e9
    result = {
        "benchmark": "rbm_vs_sklearn",
        "what": f"PCD-1, RBM 784x{args.hidden}, batch {args.batch_size}, lr {args.lr}, {args.epochs} epochs, no momentum/decay",
        "data": f"MNIST-5k threshold 0.5: train {x_train.shape[0]}, test {x_test.shape[0]}",
        "repeats": args.repeats, "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
        "ais": {"runs": args.ais_runs, "groups": args.ais_groups, "temperatures": args.ais_temperatures,
                "schedule": "Salakhutdinov & Murray 2008, scaled", "base": "base-rate RBM from training-data marginals",
                "seed": "1000 + training seed, the same for both trainers"},
        "ours_seconds": ours_t, "sklearn_seconds": sk_t,
        "speedup_sklearn_over_ours_median": statistics.median(sk_t) / statistics.median(ours_t),
        "speedup_best_of_repeats": min(sk_t) / min(ours_t),
        "sklearn_float64_seconds": sk64_t,
        "speedup_sklearn_float64_over_ours_median": statistics.median(sk64_t) / statistics.median(ours_t),
        "aim_speedup": 3.0,
        "plain_pytorch_seconds": plain_t,
        "speedup_sklearn_over_plain_pytorch_median": statistics.median(sk_t) / statistics.median(plain_t),
        # below 1: our kernel-driven trainer is faster than the hand-written loop
        "ours_over_plain_pytorch_time_median": statistics.median(ours_t) / statistics.median(plain_t),
        "plain_pytorch_pseudo_likelihood_test": plain_pl,
        # the matrix products of the training run alone: what no trainer can beat
        "gemm_floor_seconds": floor_t,
        "gemm_gflops_per_second_median": gflops / statistics.median(floor_t),
        "ours_over_gemm_floor_time_median": statistics.median(ours_t) / statistics.median(floor_t),
        "best_possible_speedup_over_sklearn": statistics.median(sk_t) / statistics.median(floor_t),
        "scores_per_seed": scores,
        "over_seeds": summary,
        # ours - sklearn, per seed; its standard error from the two trainers' spreads over seeds
        "test_log_likelihood_difference": {"per_seed": diffs, "mean": statistics.mean(diffs), "stderr": se},
        "aim_quality": "ours' mean AIS test log-likelihood and pseudo-likelihood equal to or above sklearn's",
        "exact_test_log_likelihood_small_rbm": exact_quality(x_train, x_test, args),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"train: ours {statistics.median(ours_t):.2f}s, sklearn {statistics.median(sk_t):.2f}s, "
          f"speedup {result['speedup_sklearn_over_ours_median']:.2f}x median / {result['speedup_best_of_repeats']:.2f}x best (aim >= 3); "
          f"sklearn on float64 {statistics.median(sk64_t):.2f}s, speedup {result['speedup_sklearn_float64_over_ours_median']:.2f}x")
    print(f"plain PyTorch PCD loop {statistics.median(plain_t):.2f}s: sklearn / plain {result['speedup_sklearn_over_plain_pytorch_median']:.2f}x, "
          f"ours / plain {result['ours_over_plain_pytorch_time_median']:.2f}x the time")
    print(f"the matrix products alone {statistics.median(floor_t):.2f}s ({result['gemm_gflops_per_second_median']:.0f} GFLOP/s): "
          f"ours {result['ours_over_gemm_floor_time_median']:.2f}x, sklearn {result['best_possible_speedup_over_sklearn']:.2f}x that time, "
          f"so no trainer can be more than {result['best_possible_speedup_over_sklearn']:.2f}x faster than sklearn here")
    for name in ("ours", "sklearn"):
        ll, pl = summary[name]["test_log_likelihood"], summary[name]["sklearn_pseudo_likelihood_test"]
        print(f"{name} over {args.repeats} seeds: AIS test log-likelihood {ll['mean']:.2f} (std {ll['std']:.2f}, "
              f"range {ll['min']:.2f} .. {ll['max']:.2f}), pseudo-likelihood {pl['mean']:.2f} (std {pl['std']:.2f}); "
              f"AIS group spread <= {summary[name]['ais_group_spread_max']:.2f} nats, "
              f"{'all stable' if summary[name]['ais_all_stable'] else 'NOT all stable'}")
    d = result["test_log_likelihood_difference"]
    print(f"ours - sklearn: {d['mean']:.2f} ± {d['stderr']:.2f} nats (per seed {', '.join(f'{x:.2f}' for x in diffs)})")
    e = result["exact_test_log_likelihood_small_rbm"]
    print(f"784x{e['hidden']} exact test log-likelihood over seeds {e['seeds']}: ours {e['ours']} (mean {e['ours_mean']:.2f}), "
          f"sklearn {e['sklearn']} (mean {e['sklearn_mean']:.2f})")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
