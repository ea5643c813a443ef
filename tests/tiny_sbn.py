"""A sigmoid belief net small enough to enumerate: h in {0,1}^H, x in {0,1}^D.

p(h) = prod Bernoulli(sigmoid(a)), p(x | h) = prod Bernoulli(sigmoid(W h + b));
guide q(h | x) = prod Bernoulli(sigmoid(V x + c)). Model parameters (a, W, b)
and guide parameters (V, c) are disjoint, so each estimator's gradient can be
read off its own parameters and compared with the exact expectation.
"""

import itertools

import pyro
import pyro.distributions as dist
import torch
from torch import nn


def all_states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


class TinySBN(nn.Module):
    def __init__(self, x_dim=3, h_dim=2, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
        self.a, self.W, self.b = nn.Parameter(r(h_dim)), nn.Parameter(1.5 * r(x_dim, h_dim)), nn.Parameter(r(x_dim))
        self.V, self.c = nn.Parameter(r(h_dim, x_dim)), nn.Parameter(0.5 * r(h_dim))
        self.x_dim, self.h_dim = x_dim, h_dim

    def model_params(self):
        return [self.a, self.W, self.b]

    def guide_params(self):
        return [self.V, self.c]

    def model(self, x=None, batch_size=None):
        pyro.module("sbn", self)
        n = x.shape[0] if x is not None else batch_size
        with pyro.plate("data", n):
            h = pyro.sample("h", dist.Bernoulli(logits=self.a.expand(n, self.h_dim)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=h @ self.W.T + self.b).to_event(1), obs=x)

    def guide(self, x, batch_size=None):
        pyro.module("sbn", self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("h", dist.Bernoulli(logits=x @ self.V.T + self.c).to_event(1))

    # ------------------------------------------------------- exact by enumeration
    def log_joint(self, x, h):
        """log p(x, h) for every pair of rows: x (N, D), h (S, H) -> (N, S)."""
        prior = dist.Bernoulli(logits=self.a).log_prob(h).sum(-1)                     # (S,)
        lik = dist.Bernoulli(logits=h @ self.W.T + self.b).log_prob(x[:, None, :]).sum(-1)  # (N, S)
        return prior + lik

    def log_q(self, x, h):
        """log q(h | x) for every pair: (N, S)."""
        return dist.Bernoulli(logits=(x @ self.V.T + self.c)[:, None, :]).log_prob(h).sum(-1)

    def log_marginal(self, x):
        return torch.logsumexp(self.log_joint(x, all_states(self.h_dim)), -1)

    def posterior(self, x):
        """p(h | x) over all_states(H), (N, S)."""
        return torch.softmax(self.log_joint(x, all_states(self.h_dim)), -1)
