"""GAN and GMMN: the non-saturating objective's losses and gradients against hand-derived formulas, the driver's
alternating discriminator/generator steps against a hand-computed SGD update, the generator as a Pyro model with
one sample site, moment matching fitting a toy distribution (checked by the MMD permutation test), fixed-latent
snapshots, and bad input (architecture, bandwidths, a diverging GAN) as one-line errors."""

import json
import os

import pyro
import pytest
import torch
from torch import nn

import inference.adversarial as adversarial
from inference.adversarial import NonSaturatingGAN
from inference.errors import SpecError
from inference.mmd import mmd_permutation_test
from inference.moment_matching import MomentMatching
from inference.training import fit, with_auxiliary
from ppl_models.gan import GAN, Discriminator, GANArchitecture, GeneratorModel
from ppl_models.gmmn import GMMN, GMMNArchitecture
from tests.cli_util import run_cli

S = 0.9  # the real images' target with label smoothing 0.1


class LinearGenerator(nn.Module):
    """y_j = A z_j + c at fixed codes z_j: its samples are known, its gradients derivable by hand."""

    def __init__(self, z):
        super().__init__()
        self.z = z
        self.A = nn.Parameter(torch.tensor([[0.5], [-1.0]], dtype=torch.float64))
        self.c = nn.Parameter(torch.tensor([0.2, 0.1], dtype=torch.float64))

    def sample(self, n):
        return self.z[:n] @ self.A.T + self.c


class LinearDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.7, -0.4], dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

    def forward(self, x):
        return x @ self.w + self.b


X = torch.tensor([[1.0, 2.0], [-0.5, 0.3], [0.8, -1.2]], dtype=torch.float64)
Z = torch.tensor([[0.4], [-1.1], [2.0]], dtype=torch.float64)


def hand_discriminator(w, b, y):
    """L_D and its gradient in (w, b): dL/dg = sigma(g) - s for a real image, sigma(g) for a fake one."""
    g_real, g_fake = X @ w + b, y @ w + b
    loss = -(S * torch.log(torch.sigmoid(g_real)) + (1 - S) * torch.log(torch.sigmoid(-g_real))).sum() \
        - torch.log(torch.sigmoid(-g_fake)).sum()
    d_real, d_fake = torch.sigmoid(g_real) - S, torch.sigmoid(g_fake)
    return loss, d_real @ X + d_fake @ y, d_real.sum() + d_fake.sum()


def hand_generator(w, b, y):
    """L_G = -sum log sigma(g(y_j)), dL/dg_j = sigma(g_j) - 1, y_j = A z_j + c."""
    g = y @ w + b
    d = torch.sigmoid(g) - 1
    return -torch.log(torch.sigmoid(g)).sum(), torch.outer(w, d @ Z), d.sum() * w


def test_losses_and_gradients_match_the_hand_derived_formulas():
    gen, disc = LinearGenerator(Z), LinearDiscriminator()
    objective = NonSaturatingGAN(gen, disc, label_smoothing=1 - S)
    y = gen.sample(3).detach()

    loss = objective.loss_and_grads(X, phase="discriminator")
    want, grad_w, grad_b = hand_discriminator(disc.w.detach(), disc.b.detach(), y)
    assert loss == pytest.approx(float(want), rel=1e-12)
    assert torch.allclose(disc.w.grad, grad_w) and torch.allclose(disc.b.grad, grad_b)
    assert gen.A.grad is None and gen.c.grad is None  # the discriminator's phase leaves the generator alone

    disc.zero_grad(set_to_none=True)
    loss = objective.loss_and_grads(X, phase="generator")
    want, grad_a, grad_c = hand_generator(disc.w.detach(), disc.b.detach(), y)
    assert loss == pytest.approx(float(want), rel=1e-12)
    assert torch.allclose(gen.A.grad, grad_a) and torch.allclose(gen.c.grad, grad_c)
    assert disc.w.grad is None and disc.b.grad is None

    # the validation loss is the two phases' sum, without gradients
    w, b = disc.w.detach(), disc.b.detach()
    assert objective.loss(X) == pytest.approx(float(hand_discriminator(w, b, y)[0] + hand_generator(w, b, y)[0]),
                                              rel=1e-12)


def test_the_driver_steps_the_discriminator_then_the_generator():
    """One batch, plain SGD: w, b move by their gradient at the start; A, c by theirs under the *updated*
    discriminator, on the same generated images (one discriminator step per generator step)."""
    gen, disc = LinearGenerator(Z), LinearDiscriminator()
    w0, b0, a0, c0 = (p.detach().clone() for p in (disc.w, disc.b, gen.A, gen.c))
    y = gen.sample(3).detach()
    lr = 0.1
    objective = NonSaturatingGAN(gen, disc, label_smoothing=1 - S)
    result = fit(objective, (X,), module=with_auxiliary(gen, objective), epochs=1, batch_size=3, progress=False,
                 optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=lr))
    d_loss, grad_w, grad_b = hand_discriminator(w0, b0, y)
    w1, b1 = w0 - lr * grad_w, b0 - lr * grad_b
    g_loss, grad_a, grad_c = hand_generator(w1, b1, y)
    assert torch.allclose(disc.w, w1) and torch.allclose(disc.b, b1)
    assert torch.allclose(gen.A, a0 - lr * grad_a) and torch.allclose(gen.c, c0 - lr * grad_c)
    h = result.history[0]
    assert h["discriminator_loss"] == pytest.approx(float(d_loss) / 3)
    assert h["generator_loss"] == pytest.approx(float(g_loss) / 3)
    assert h["train_loss"] == pytest.approx(h["discriminator_loss"] + h["generator_loss"])


class QuadraticDiscriminator(LinearDiscriminator):
    """g(x) = w.x + b + a/2 |x|^2: grad_x g = w + a x depends on x, so the penalty's gradient in (w, a) needs the
    second derivative through the images (a linear g's input gradient is w alone)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(-0.6, dtype=torch.float64))

    def forward(self, x):
        return x @ self.w + self.b + self.a / 2 * (x * x).sum(-1)


GAMMA = 2.5


def test_r1_penalty_and_its_gradient_match_the_closed_form():
    """Linear (logistic) D = sigma(w.x + b): grad_x g = w for every image, so R1 = gamma/2 n |w|^2 with gradient
    gamma n w in w and 0 in b; the discriminator's phase adds both to L_D's, the generator's phase is untouched,
    and the validation loss adds the penalty."""
    gen, disc = LinearGenerator(Z), LinearDiscriminator()
    n, w, b = X.shape[0], disc.w.detach().clone(), disc.b.detach().clone()
    penalty, logits = adversarial.r1_penalty(disc, X, GAMMA)
    assert float(penalty.detach()) == pytest.approx(GAMMA / 2 * n * float(w @ w), rel=1e-12)
    assert torch.allclose(logits, X @ w + b)

    objective = NonSaturatingGAN(gen, disc, label_smoothing=1 - S, gradient_penalty=GAMMA)
    y = gen.sample(3).detach()
    loss = objective.loss_and_grads(X, phase="discriminator")
    want, grad_w, grad_b = hand_discriminator(w, b, y)
    assert loss == pytest.approx(float(want) + GAMMA / 2 * n * float(w @ w), rel=1e-12)
    assert torch.allclose(disc.w.grad, grad_w + GAMMA * n * w) and torch.allclose(disc.b.grad, grad_b)
    assert gen.A.grad is None and gen.c.grad is None

    disc.zero_grad(set_to_none=True)
    loss = objective.loss_and_grads(X, phase="generator")
    want_g, grad_a, grad_c = hand_generator(w, b, y)
    assert loss == pytest.approx(float(want_g), rel=1e-12)  # R1 is the discriminator's alone
    assert torch.allclose(gen.A.grad, grad_a) and torch.allclose(gen.c.grad, grad_c)
    assert objective.loss(X) == pytest.approx(float(want + want_g) + GAMMA / 2 * n * float(w @ w), rel=1e-12)


def test_r1_penalty_differentiates_through_the_input_gradient():
    """g(x) = w.x + b + a/2 |x|^2: R1 = gamma/2 sum_i |w + a x_i|^2, so dR1/dw = gamma sum_i (w + a x_i),
    dR1/da = gamma sum_i (w + a x_i).x_i, dR1/db = 0 (a penalty whose graph were cut at grad_x would give 0)."""
    disc = QuadraticDiscriminator()
    w, a = disc.w.detach(), disc.a.detach()
    slopes = w + a * X  # grad_x g at each image
    penalty, _ = adversarial.r1_penalty(disc, X, GAMMA)
    assert float(penalty.detach()) == pytest.approx(GAMMA / 2 * float((slopes ** 2).sum()), rel=1e-12)
    penalty.backward()
    assert torch.allclose(disc.w.grad, GAMMA * slopes.sum(0))
    assert torch.allclose(disc.a.grad, GAMMA * (slopes * X).sum())
    assert disc.b.grad is None or float(disc.b.grad) == 0.0  # b drops out of grad_x g


def test_a_gan_trains_with_the_r1_penalty(capsys, tmp_path):
    run = str(tmp_path / "gan_r1")
    code, _, err = run_cli(capsys, "train", "gan", *TINY_GAN, "--set", "objective.gradient_penalty=1.5",
                           "--epochs", "2", "--out", run)
    assert code == 0, err
    assert json.load(open(os.path.join(run, "spec.json")))["objective"]["gradient_penalty"] == 1.5
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    history = metrics["history"]
    assert len(history) == 2 and all(torch.isfinite(torch.tensor([h["discriminator_loss"], h["generator_loss"],
                                                                   h["valid_loss"]])).all() for h in history)
    assert torch.isfinite(torch.tensor(metrics["test_mmd2"]))


def test_a_wrong_phase_or_smoothing_is_refused():
    gen, disc = LinearGenerator(Z), LinearDiscriminator()
    with pytest.raises(SpecError, match="unknown phase"):
        NonSaturatingGAN(gen, disc).loss_and_grads(X, phase="critic")
    with pytest.raises(SpecError, match="label_smoothing must lie in"):
        NonSaturatingGAN(gen, disc, label_smoothing=1.0)
    with pytest.raises(SpecError, match="gradient_penalty must be a finite number >= 0"):
        NonSaturatingGAN(gen, disc, gradient_penalty=-0.5)


@pytest.mark.parametrize("module", [GAN(GANArchitecture(x_dim=6, z_dim=3, generator_hidden=[5])),
                                    GMMN(GMMNArchitecture(x_dim=6, z_dim=3, hidden=[5]))])
def test_the_generator_is_a_pyro_model_with_one_sample_site(module):
    module.eval()
    trace = pyro.poutine.trace(module.model).get_trace(batch_size=4)
    sampled = [n for n, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]
               and type(s["fn"]).__name__ != "_Subsample"]  # the data plate's own node
    assert sampled == ["z"]
    z, x = trace.nodes["z"]["value"], trace.nodes["x"]["value"]
    assert z.shape == (4, 3) and torch.equal(x, module(z))  # the image is a deterministic function of z
    draws = pyro.infer.Predictive(module.model, num_samples=1)(batch_size=5)
    assert draws["x"][0].shape == (5, 6) and 0 <= float(draws["x"].min()) and float(draws["x"].max()) <= 1


def test_the_discriminator_reads_standardised_images():
    disc = Discriminator(GANArchitecture(x_dim=4, discriminator_hidden=[3]))
    x = torch.rand(2, 4)
    assert torch.allclose(disc(x), disc.net(2 * x - 1).squeeze(-1))
    assert torch.allclose(disc.probability(x), torch.sigmoid(disc(x)))


def test_moment_matching_fits_a_toy_distribution():
    """A GMMN trained on a 2-D Gaussian blob: the permutation test tells the untrained generator from the data and
    cannot tell the trained one (a test that can fail both ways)."""
    torch.manual_seed(0)
    data = torch.tensor([0.7, 0.3]) + 0.05 * torch.randn(1000, 2)
    fresh = torch.tensor([0.7, 0.3]) + 0.05 * torch.randn(300, 2)
    gen = GeneratorModel(2, 2, [16], batch_norm=False, leaky_slope=0.2, output="sigmoid")
    bandwidths = (0.02, 0.05, 0.1, 0.2)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        before = mmd_permutation_test(gen.sample(300), fresh, bandwidths, 199, generator=g)
    fit(MomentMatching(gen, bandwidths), (data,), module=gen, epochs=60, batch_size=200, lr=0.01, progress=False)
    with torch.no_grad():
        after = mmd_permutation_test(gen.sample(300), fresh, bandwidths, 199, generator=g)
    assert before.p_value < 0.01 and after.p_value > 0.01, (before, after)
    assert after.mmd2 < before.mmd2 / 20


TINY_GAN = ["--dataset", "digits", "--no-progress", "--seed", "1", "--set", "model.generator_hidden=[8]",
            "--set", "model.discriminator_hidden=[8]", "--set", "z_dim=3", "--eval-particles", "2",
            "--set", "train.ais_temperatures=5", "--set", "train.ais_images=3", "--set", "train.ais_sigma=0.2",
            "--set", "train.mmd_images=30", "--set", "train.mmd_permutations=20", "--set", "train.snapshots=2"]


def test_fixed_latent_snapshots_and_a_diverging_gan(capsys, tmp_path, monkeypatch):
    run = str(tmp_path / "gan")
    code, _, err = run_cli(capsys, "train", "gan", *TINY_GAN, "--epochs", "4", "--out", run)
    assert code == 0, err
    kept = torch.load(os.path.join(run, "fixed_latents.pt"), weights_only=True)
    assert sorted(kept) == [1, 2, 4] and kept[4].shape == (25, 64)
    assert open(os.path.join(run, "fixed_latents.png"), "rb").read(4) == b"\x89PNG"
    history = json.load(open(os.path.join(run, "metrics.json")))["history"]
    assert {"discriminator_loss", "generator_loss", "valid_loss"} <= set(history[0])

    weights = open(os.path.join(run, "model.pt"), "rb").read()
    real = adversarial.discriminator_loss
    monkeypatch.setattr(adversarial, "discriminator_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    code, _, err = run_cli(capsys, "train", "gan", *TINY_GAN, "--epochs", "6", "--out", run)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "training diverged" in err and "epoch 5" in err and "discriminator update" in err
    assert torch.load(os.path.join(run, "checkpoint.pt"), weights_only=False)["epoch"] == 4  # the last good one
    assert open(os.path.join(run, "model.pt"), "rb").read() == weights


@pytest.mark.parametrize("family, argv, message", [
    ("gan", ["--set", "model.generator_hidden=[]"], "model.generator_hidden must list at least one hidden width"),
    ("gan", ["--set", "model.discriminator_hidden=[0]"], "model.discriminator_hidden must be >= 1"),
    ("gan", ["--set", "objective.label_smoothing=1.5"], "objective.label_smoothing must be <= 0.99"),
    ("gan", ["--set", "objective.gradient_penalty=-1"], "objective.gradient_penalty must be >= 0.0"),
    ("gmmn", ["--set", "objective.bandwidths=[]"], "objective.bandwidths: bandwidths must list at least one"),
    ("gmmn", ["--set", "objective.bandwidths=[2,-1]"], "objective.bandwidths must be > 0.0"),
    ("gmmn", ["--set", "train.mmd_bandwidths=[]"], "train.mmd_bandwidths: bandwidths must list at least one"),
    ("gmmn", ["--set", "model.hidden=[]"], "model.hidden must list at least one hidden width"),
])
def test_bad_input_is_a_one_line_error_that_writes_nothing(family, argv, message, capsys, tmp_path):
    out = str(tmp_path / "run")
    code, _, err = run_cli(capsys, "train", family, "--dataset", "digits", "--no-progress", *argv, "--epochs", "1",
                           "--out", out)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(out)
