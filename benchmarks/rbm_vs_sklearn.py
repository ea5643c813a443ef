"""PCD-1 training of a binary RBM: our trainer against scikit-learn's ``BernoulliRBM``.

Same data (MNIST-5k training split, threshold 0.5, float32 for both; scikit-learn is
also timed on float64, numpy's default dtype), same
model (784 visible, 500 hidden, weights N(0, 0.01), zero biases), same
algorithm (PCD-1 with ``batch_size`` persistent chains, plain SGD: no momentum,
no weight decay), same learning rate, batch size and epochs. Training runs of
the two are interleaved (others load the same cores) and the ratio of median
times is reported. Both weight sets are then scored the same way on the test
split: AIS test log-likelihood (same runs, temperatures and seed for both) and
scikit-learn's own pseudo-likelihood (``score_samples``, fixed random state).
Because one PCD run's AIS log-likelihood swings by tens of nats between
seeds, the same protocol is also run with a hidden layer small enough for
exact log Z (default 15 units, several seeds): an exact quality comparison.
Writes ``benchmarks/results/rbm_vs_sklearn.json``.

Run: ``python benchmarks/rbm_vs_sklearn.py [--epochs 5] [--repeats 3] [--ais-temperatures 14500]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from sklearn.neural_network import BernoulliRBM

from inference.ais import ais_log_partition, mean_log_likelihood
from inference.contrastive_divergence import fit
from inference.exact_enumeration import log_partition
from ppl_models.data import load_dataset
from ppl_models.rbm import RBM


def train_ours(x, args, hidden=None, seed=0):
    torch.manual_seed(seed)
    rbm = RBM(784, hidden or args.hidden, weight_scale=0.01)
    config = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "momentum": 0.0,
              "weight_decay": 0.0, "k": 1, "persistent": True, "seed": seed}
    result = fit(rbm, x, config, progress=False)
    return rbm, result.history


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


def score(rbm, x_train, x_test, args) -> dict:
    torch.manual_seed(1)
    t = time.perf_counter()
    ais = ais_log_partition(rbm, x_train, num_runs=args.ais_runs, num_temperatures=args.ais_temperatures)
    seconds = time.perf_counter() - t
    return {
        "ais_log_z": ais.log_z, "ais_log_z_interval_3sigma": [ais.log_z_lower, ais.log_z_upper],
        "test_log_likelihood": mean_log_likelihood(rbm, x_test, ais.log_z),
        "test_log_likelihood_interval": [mean_log_likelihood(rbm, x_test, ais.log_z_upper),
                                         mean_log_likelihood(rbm, x_test, ais.log_z_lower)],
        "ais_seconds": seconds,
        "sklearn_pseudo_likelihood_test": sklearn_pseudo_likelihood(rbm, x_test),
    }


def exact_quality(x_train, x_test, args) -> dict:
    """Same protocol with a hidden layer small enough for exact log Z: test log-likelihood without AIS noise."""
    out = {"hidden": args.exact_hidden, "seeds": list(range(args.exact_seeds)), "ours": [], "sklearn": []}
    for seed in out["seeds"]:
        ours, _ = train_ours(x_train, args, hidden=args.exact_hidden, seed=seed)
        sk = sklearn_to_rbm(train_sklearn(x_train, args, hidden=args.exact_hidden, seed=seed))
        for name, rbm in (("ours", ours), ("sklearn", sk)):
            out[name].append(mean_log_likelihood(rbm, x_test, float(log_partition(rbm))))
    for name in ("ours", "sklearn"):
        out[f"{name}_mean"] = statistics.mean(out[name])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ais-runs", type=int, default=100)
    parser.add_argument("--ais-temperatures", type=int, default=14500)
    parser.add_argument("--exact-hidden", type=int, default=15, help="hidden units of the exact-log-likelihood comparison")
    parser.add_argument("--exact-seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads (1 by default: on a shared 2-core machine, 2 threads per process "
                             "were measured 12x slower than 1 while others ran)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "rbm_vs_sklearn.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # numpy / scikit-learn BLAS alike
    data = load_dataset("mnist5k", binarize="threshold")
    x_train, x_test = data.train.x, data.test.x
    ours_t, sk_t, sk64_t = [], [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        ours, history = train_ours(x_train, args)
        ours_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        sk = train_sklearn(x_train, args)
        sk_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        train_sklearn(x_train, args, np.float64)  # what a user passing numpy's default dtype gets
        sk64_t.append(time.perf_counter() - t)
    result = {
        "benchmark": "rbm_vs_sklearn",
        "what": f"PCD-1, RBM 784x{args.hidden}, batch {args.batch_size}, lr {args.lr}, {args.epochs} epochs, no momentum/decay",
        "data": f"MNIST-5k threshold 0.5: train {x_train.shape[0]}, test {x_test.shape[0]}",
        "repeats": args.repeats, "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "ais": {"runs": args.ais_runs, "temperatures": args.ais_temperatures, "schedule": "Salakhutdinov & Murray 2008, scaled",
                "base": "base-rate RBM from training-data marginals"},
        "ours_seconds": ours_t, "sklearn_seconds": sk_t,
        "speedup_sklearn_over_ours_median": statistics.median(sk_t) / statistics.median(ours_t),
        "speedup_best_of_repeats": min(sk_t) / min(ours_t),
        "sklearn_float64_seconds": sk64_t,
        "speedup_sklearn_float64_over_ours_median": statistics.median(sk64_t) / statistics.median(ours_t),
        "aim_speedup": 3.0,
        "ours_history": history,
        "ours": score(ours, x_train, x_test, args),
        "sklearn": score(sklearn_to_rbm(sk), x_train, x_test, args),
        "exact_test_log_likelihood_small_rbm": exact_quality(x_train, x_test, args),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"train: ours {statistics.median(ours_t):.2f}s, sklearn {statistics.median(sk_t):.2f}s, "
          f"speedup {result['speedup_sklearn_over_ours_median']:.2f}x median / {result['speedup_best_of_repeats']:.2f}x best (aim >= 3); "
          f"sklearn on float64 {statistics.median(sk64_t):.2f}s, speedup {result['speedup_sklearn_float64_over_ours_median']:.2f}x")
    for name in ("ours", "sklearn"):
        s = result[name]
        print(f"{name}: AIS test log-likelihood {s['test_log_likelihood']:.2f} "
              f"[{s['test_log_likelihood_interval'][0]:.2f}, {s['test_log_likelihood_interval'][1]:.2f}] nats, "
              f"sklearn pseudo-likelihood {s['sklearn_pseudo_likelihood_test']:.2f}, AIS {s['ais_seconds']:.0f}s")
    e = result["exact_test_log_likelihood_small_rbm"]
    print(f"784x{e['hidden']} exact test log-likelihood over seeds {e['seeds']}: ours {e['ours']} (mean {e['ours_mean']:.2f}), "
          f"sklearn {e['sklearn']} (mean {e['sklearn_mean']:.2f})")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
