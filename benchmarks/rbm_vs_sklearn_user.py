"""PCD-1 training of a 784x500 RBM as users meet it: our trainer against scikit-learn's ``BernoulliRBM``.

``rbm_vs_sklearn.py`` is the strict comparison (one thread, float32 on both sides, quality scored by
AIS). This one times what a user gets without tuning anything, at identical settings (batch 20, 20
persistent chains, lr 0.05, no momentum, no weight decay, ``--epochs`` epochs on the MNIST-5k training
split):

- **default threads, float64**: the data as a user's numpy array (numpy's default dtype), every library
  at its own default thread count; scikit-learn fits the float64 array as given, our trainer is handed
  the same array and converts it (``torch.as_tensor(x).float()``, inside the timed region);
- **one thread, float32**: the strict setting, for reference in the same run.

Training runs alternate (ours, sklearn, ours, ...) so that load hits both alike; medians over
``--repeats``. Writes ``benchmarks/results/rbm_vs_sklearn_user.json``.

Run: ``python benchmarks/rbm_vs_sklearn_user.py [--epochs 5] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
from sklearn.neural_network import BernoulliRBM
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inference.contrastive_divergence import ContrastiveDivergence  # noqa: E402
from inference.training import fit  # noqa: E402
from ppl_models.data import load_dataset  # noqa: E402
from ppl_models.rbm import RBM  # noqa: E402


def ours(x_numpy, epochs, seed):
    x = torch.as_tensor(x_numpy).float()
    torch.manual_seed(seed)
    rbm = RBM(x.shape[1], 500, weight_scale=0.01)
    fit(ContrastiveDivergence(rbm, k=1, persistent=True, compute_loss=False), (x,), module=rbm, epochs=epochs,
        batch_size=20, optimizer="sgd", lr=0.05, seed=seed, progress=False)


def sklearn(x_numpy, epochs, seed):
    BernoulliRBM(n_components=500, learning_rate=0.05, batch_size=20, n_iter=epochs, random_state=seed).fit(x_numpy)


def race(x_numpy, epochs, repeats) -> dict:
    times = {"ours": [], "sklearn": []}
    ours(x_numpy[:200], 1, 0), sklearn(x_numpy[:200], 1, 0)  # one-off set-up costs are not training
    for seed in range(repeats):
        for name, trainer in (("ours", ours), ("sklearn", sklearn)):
            t = time.perf_counter()
            trainer(x_numpy, epochs, seed)
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"seconds": times, "ours_median_s": med["ours"], "sklearn_median_s": med["sklearn"],
            "ratio_ours_over_sklearn": med["ours"] / med["sklearn"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "rbm_vs_sklearn_user.json"))
    args = p.parse_args()
    x64 = load_dataset("mnist5k", binarize="threshold").train.x.numpy().astype(np.float64)
    default_threads = torch.get_num_threads()
    user = race(x64, args.epochs, args.repeats)
    user["threads"] = {"torch": default_threads, "blas": "library default"}
    with threadpool_limits(1):
        torch.set_num_threads(1)
        strict = race(x64.astype(np.float32), args.epochs, args.repeats)
        torch.set_num_threads(default_threads)
    strict["threads"] = 1
    result = {"benchmark": "rbm_vs_sklearn_user", "what": "PCD-1, RBM 784x500, batch 20, lr 0.05, no momentum or "
              "decay, MNIST-5k training split", "epochs": args.epochs, "repeats": args.repeats,
              "threads": default_threads, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "load_average": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d"),
              "default_threads_float64": user, "one_thread_float32": strict}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"default threads ({default_threads}), float64: ours / sklearn {user['ratio_ours_over_sklearn']:.2f}; "
          f"one thread, float32: {strict['ratio_ours_over_sklearn']:.2f} -> {args.out}")


if __name__ == "__main__":
    main()
