"""A linear-Gaussian VAE: the one deep-latent model whose log p(x) is closed form.

p(z) = N(0, I), p(x | z) = N(W z + b, s^2 I)  =>  p(x) = N(b, W W' + s^2 I),
posterior p(z | x) = N(S W'(x - b) / s^2, S) with S = (I + W'W / s^2)^{-1}.
The guide is a diagonal Gaussian q(z | x) = N(A x + c, diag(exp(2 r))); with
``exact_guide=True`` it is the exact (full-covariance) posterior, reading the
model's parameters; with ``exact_guide="shift"`` it is the exact posterior
computed from detached model parameters, shifted by its own parameter
``shift`` (zero: exact).
"""

import pyro
import pyro.distributions as dist
import torch
from torch import nn


class LinearGaussian(nn.Module):
    def __init__(self, x_dim=3, z_dim=2, seed=0, exact_guide=False):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(x_dim, z_dim, generator=g, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(x_dim, generator=g, dtype=torch.float64))
        self.log_s = nn.Parameter(torch.tensor(-0.3, dtype=torch.float64))
        self.A = nn.Parameter(0.3 * torch.randn(z_dim, x_dim, generator=g, dtype=torch.float64))
        self.c = nn.Parameter(0.1 * torch.randn(z_dim, generator=g, dtype=torch.float64))
        self.r = nn.Parameter(-0.5 + 0.1 * torch.randn(z_dim, generator=g, dtype=torch.float64))
        self.shift = nn.Parameter(torch.zeros(z_dim, dtype=torch.float64))
        self.z_dim, self.exact_guide = z_dim, exact_guide

    def model_params(self):
        return [self.W, self.b, self.log_s]

    def guide_params(self):
        return [self.A, self.c, self.r]

    def model(self, x):
        for name in ("W", "b", "log_s"):
            pyro.param(name, getattr(self, name))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.log_s.exp()).to_event(1), obs=x)

    def posterior(self, x):
        s2 = (2 * self.log_s).exp()
        prec = torch.eye(self.z_dim, dtype=x.dtype) + self.W.T @ self.W / s2
        cov = torch.linalg.inv(prec)
        mean = (x - self.b) @ self.W @ cov.T / s2
        return mean, cov

    def guide(self, x):
        names = {True: ("W", "b", "log_s"), "shift": ("shift",), False: ("A", "c", "r")}[self.exact_guide]
        for name in names:
            pyro.param(name, getattr(self, name))
        with pyro.plate("data", x.shape[0]):
            if self.exact_guide == "shift":
                with torch.no_grad():
                    mean, cov = self.posterior(x)
                pyro.sample("z", dist.MultivariateNormal(mean + self.shift, scale_tril=torch.linalg.cholesky(cov)))
            elif self.exact_guide:
                mean, cov = self.posterior(x)
                pyro.sample("z", dist.MultivariateNormal(mean, scale_tril=torch.linalg.cholesky(cov)))
            else:
                pyro.sample("z", dist.Normal(x @ self.A.T + self.c, self.r.exp()).to_event(1))

    def log_marginal(self, x):
        """Exact log p(x) per row."""
        cov = self.W @ self.W.T + (2 * self.log_s).exp() * torch.eye(self.W.shape[0], dtype=x.dtype)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x)

    def exact_elbo(self, x):
        """Closed-form ELBO of the diagonal guide per row: log p(x) - KL(q || posterior)."""
        m_q, v_q = x @ self.A.T + self.c, (2 * self.r).exp()
        mean, cov = self.posterior(x)
        q = torch.distributions.MultivariateNormal(m_q, torch.diag_embed(v_q))
        p = torch.distributions.MultivariateNormal(mean, cov)
        return self.log_marginal(x) - torch.distributions.kl_divergence(q, p)

    def data(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=g, dtype=torch.float64)
        with torch.no_grad():
            return z @ self.W.T + self.b + self.log_s.exp() * torch.randn(n, self.W.shape[0], generator=g, dtype=torch.float64)
