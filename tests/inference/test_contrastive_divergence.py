"""CD / PCD as an objective of the shared driver: the gradient against its formula, exact log-likelihood
goes up on tiny data, exact resume with the persistent chains in the checkpoint, options, bad input."""

import math

import pytest
import torch

from inference.contrastive_divergence import ContrastiveDivergence
from inference.energy_monitors import free_energy_gap, pseudo_log_likelihood, reconstruction_error
from inference.exact_enumeration import log_prob
from inference.training import fit
from ppl_models.data import DynamicBinarization
from ppl_models.errors import CheckpointError, DataError, SpecError
from ppl_models.rbm import RBM, GaussianBernoulliRBM

PATTERNS = torch.tensor(
    [[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], [1, 0, 1, 0, 1, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.float32
)
SGD = {"optimizer": "sgd", "progress": False}


def _tiny_data(n=200):
    g = torch.Generator().manual_seed(1)
    rows = PATTERNS[torch.randint(0, 4, (n,), generator=g)]
    noise = torch.rand(rows.shape, generator=g) < 0.05
    return torch.where(noise, 1 - rows, rows)


def _mean_exact_ll(model, data):
    return float(log_prob(model, data).mean())


def _couplings(model):
    return [n for n, role in model.parameter_roles.items() if role == "coupling"]


@pytest.mark.parametrize("make_model", [lambda: RBM(5, 3, weight_scale=0.5),
                                        lambda: GaussianBernoulliRBM(3, 4, sigma=0.8, learn_sigma=True, weight_scale=0.5)],
                         ids=["rbm", "gbrbm"])
def test_gradient_is_data_minus_chain_average_of_the_free_energy_gradient(make_model):
    """The update is d/dtheta [mean F(data) - mean F(chains)] with the chains held fixed, and the recorded
    loss is that surrogate summed over the batch: checked against autograd of F itself."""
    torch.manual_seed(0)  # the model is built here, not at collection, so its weights do not depend on test order
    model = make_model()
    v = (torch.rand(7, model.num_visible) < 0.5).float() if isinstance(model, RBM) else torch.randn(7, 3)
    cd = ContrastiveDivergence(model, k=2, persistent=True, num_chains=5)
    loss = cd.loss_and_grads(v)
    chains = cd.kernel.initial_params["v"]  # the negative sample this update used
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    surrogate = model.free_energy(v).mean() - model.free_energy(chains).mean()
    surrogate.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-6, msg=name)
    # the loss is a difference of two float32 sums of free energies: its rounding error scales with their size
    scale = 7 * (model.free_energy(v).abs().mean() + model.free_energy(chains).abs().mean()).item()
    assert loss == pytest.approx(7 * surrogate.item(), rel=1e-5, abs=1e-6 * scale)


@pytest.mark.parametrize("persistent", [True, False])
def test_training_raises_exact_log_likelihood(persistent):
    data = _tiny_data()
    torch.manual_seed(0)
    rbm = RBM(6, 4, weight_scale=0.1)
    before = _mean_exact_ll(rbm, data)  # about -6 log 2 = -4.16 at the start
    recon_before = reconstruction_error(rbm, data)
    result = fit(ContrastiveDivergence(rbm, k=1, persistent=persistent), (data,), module=rbm, epochs=60,
                 batch_size=10, lr=0.1, momentum=0.5, **SGD)
    after = _mean_exact_ll(rbm, data)
    # the data's entropy is about log 4 + 6 H(0.05) = 2.6 nats: a good fit approaches -2.6
    assert after > before + 1.0, (before, after)
    assert after > -3.2, after
    assert len(result.history) == 60
    assert reconstruction_error(rbm, data) < recon_before


def test_gaussian_bernoulli_with_learned_sigma_raises_exact_log_likelihood():
    g = torch.Generator().manual_seed(2)
    centres = torch.tensor([[2.0, -1.0], [-1.5, 1.0]])
    data = centres[torch.randint(0, 2, (400,), generator=g)] + 0.3 * torch.randn(400, 2, generator=g)
    torch.manual_seed(0)
    gb = GaussianBernoulliRBM(2, 4, sigma=1.0, learn_sigma=True, weight_scale=0.1)
    before = _mean_exact_ll(gb, data)
    fit(ContrastiveDivergence(gb), (data,), module=gb, epochs=40, batch_size=20, lr=0.02, momentum=0.5, **SGD)
    after = _mean_exact_ll(gb, data)
    assert after > before + 0.5, (before, after)
    assert bool((gb.sigma < 0.9).all()), gb.sigma  # learned: the clusters are narrower than sigma = 1


ROUTES = {"momentum-and-decay": {"momentum": 0.7, "weight_decay": 1e-3},  # through the optimiser
          "plain-sgd-folded": {"momentum": 0.0, "weight_decay": 0.0},  # CD folds the update into its GEMM
          "momentum-folded": {"momentum": 0.7, "weight_decay": 0.0}}  # ... and the momentum too


def _run(directory, epochs, interrupt_after=None, model_seed=5, batch_size=16, route="momentum-and-decay"):
    torch.manual_seed(model_seed)
    rbm = RBM(6, 4, weight_scale=0.1)

    def stop(metrics):
        if interrupt_after is not None and metrics["epoch"] == interrupt_after:
            raise KeyboardInterrupt

    cd = ContrastiveDivergence(rbm, persistent=True, num_chains=9, sparsity_target=0.2)
    result = fit(cd, (_tiny_data(),), module=rbm, epochs=epochs, batch_size=batch_size, lr=0.1, **ROUTES[route],
                 decay=_couplings(rbm), lr_schedule="linear", seed=3, valid=(_tiny_data(40),),
                 checkpoint_path=str(directory / "ckpt.pt"), on_epoch_end=stop, **SGD)
    return rbm, result, cd


@pytest.mark.parametrize("route", list(ROUTES))
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, route):
    straight, straight_result, straight_cd = _run(tmp_path / "a", epochs=5, route=route)
    assert all(p.grad is None for p in straight.parameters()) == route.endswith("folded")  # which route trained
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", epochs=5, interrupt_after=2, route=route)
    resumed, resumed_result, resumed_cd = _run(tmp_path / "b", epochs=5, model_seed=99,  # its own init is overwritten
                                               route=route)
    assert resumed_result.resumed_from == 1  # the interrupt came before epoch 2's checkpoint
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), name
    assert [h["train_loss"] for h in straight_result.history] == [h["train_loss"] for h in resumed_result.history]
    assert torch.equal(straight_cd.kernel.initial_params["v"], resumed_cd.kernel.initial_params["v"])
    assert torch.equal(straight_cd.running_activation, resumed_cd.running_activation)


def test_resume_with_different_options_is_refused(tmp_path):
    _run(tmp_path, epochs=1)
    with pytest.raises(CheckpointError) as e:
        _run(tmp_path, epochs=2, batch_size=8)
    assert "batch_size" in str(e.value) and "\n" not in str(e.value)


def test_weight_decay_and_sparsity_do_their_job():
    data = _tiny_data()

    def train(weight_decay=0.0, **options):
        torch.manual_seed(0)
        rbm = RBM(6, 8, weight_scale=0.1)
        fit(ContrastiveDivergence(rbm, **options), (data,), module=rbm, epochs=15, batch_size=10, lr=0.1,
            momentum=0.5, weight_decay=weight_decay, decay=_couplings(rbm), **SGD)
        return rbm

    plain, decayed, sparse = train(), train(weight_decay=0.1), train(sparsity_target=0.05, sparsity_cost=1.0)
    assert decayed.weight.norm() < 0.7 * plain.weight.norm()
    assert torch.equal(decayed.visible_bias != 0, plain.visible_bias != 0)  # biases trained, not decayed to 0
    with torch.no_grad():
        assert sparse.hidden_probs(data).mean() < 0.6 * plain.hidden_probs(data).mean()


def test_monitors_on_known_cases():
    rbm = RBM(3, 2, weight_scale=0.0)  # p(h | v) = 1/2, E[v | h] = 1/2 whatever the data
    v = torch.tensor([[1.0, 0.0, 1.0]])
    assert reconstruction_error(rbm, v) == pytest.approx(0.75)
    # zero parameters: F(v) is the same for every v, so each row scores 3 log sigmoid(0)
    assert pseudo_log_likelihood(rbm, v) == pytest.approx(3 * torch.log(torch.tensor(0.5)).item())
    assert free_energy_gap(rbm, v, torch.zeros(4, 3)) == pytest.approx(0.0)


def test_validation_loss_minus_training_loss_is_the_free_energy_gap():
    torch.manual_seed(0)
    rbm = RBM(6, 4, weight_scale=0.3)
    cd = ContrastiveDivergence(rbm)
    train, valid = _tiny_data(20), _tiny_data(30)[10:]
    cd.loss_and_grads(train)
    # both losses are measured against the same chains, which cancel in the difference
    with torch.no_grad():
        gap = (cd.loss(valid) / len(valid) - cd.loss(train) / len(train))
        assert gap == pytest.approx(float(rbm.free_energy(valid).mean() - rbm.free_energy(train).mean()), abs=1e-5)


def test_bad_input_gives_one_line_errors():
    rbm = RBM(6, 4)
    for error, make in [(SpecError, lambda: ContrastiveDivergence(rbm, k=0)),
                        (SpecError, lambda: ContrastiveDivergence(rbm, k=-2)),
                        (SpecError, lambda: ContrastiveDivergence(rbm, num_chains=0)),
                        (SpecError, lambda: ContrastiveDivergence(rbm, sparsity_target=1.5)),
                        (SpecError, lambda: fit(ContrastiveDivergence(rbm), (_tiny_data(20),), module=rbm, epochs=1,
                                                lr=0.0, **SGD))]:
        with pytest.raises(error) as e:
            make()
        assert "\n" not in str(e.value)
    with torch.no_grad():
        rbm.weight[0, 0] = float("nan")
    with pytest.raises(SpecError, match="weight must be finite"):
        fit(ContrastiveDivergence(rbm), (_tiny_data(20),), module=rbm, epochs=1, **SGD)


def test_dynamic_binarisation_of_grey_data_trains_and_resumes_exactly(tmp_path):
    grey = _tiny_data().clamp(0.1, 0.9)  # grey levels: only usable through the transform

    def run(directory, interrupt=False, model_seed=0):
        torch.manual_seed(model_seed)
        rbm = RBM(6, 4, weight_scale=0.1)

        def stop(metrics):
            if interrupt and metrics["epoch"] == 2:  # before its checkpoint: resumes from epoch 1
                raise KeyboardInterrupt

        fit(ContrastiveDivergence(rbm), (grey,), module=rbm, epochs=3, batch_size=16, lr=0.1, seed=0,
            transform=DynamicBinarization(), checkpoint_path=str(directory / "c.pt"), on_epoch_end=stop, **SGD)
        return rbm

    straight = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", interrupt=True)
    resumed = run(tmp_path / "b", model_seed=7)
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), resumed.parameters()))
    with pytest.raises(DataError):
        fit(ContrastiveDivergence(RBM(6, 4)), (grey + 1,), module=RBM(6, 4), epochs=1, transform=DynamicBinarization(),
            **SGD)  # not in [0, 1]


@pytest.mark.parametrize("persistent", [True, False])
def test_partial_last_batch_and_other_chain_counts(persistent):
    rbm = RBM(6, 4)
    cd = ContrastiveDivergence(rbm, k=2, persistent=persistent, num_chains=7)
    result = fit(cd, (_tiny_data(50),), module=rbm, epochs=2, batch_size=16, lr=0.05, optimizer="sgd",
                 progress=True)  # 50 = 3 x 16 + 2
    assert len(result.history) == 2
    if persistent:
        assert cd.kernel.initial_params["v"].shape == (7, 6)


def _fused_cases():
    from inference.single_site_gibbs import SingleSiteGibbs
    from ppl_models.dbm_pretraining import TiedCopiesRBM
    from ppl_models.fvbm import FullyVisibleBM

    def tied():
        rbm = TiedCopiesRBM(6, 4, visible_copies=2, hidden_copies=1, weight_scale=0.5)
        return rbm, {"data_statistics": rbm.tile}

    return {
        "rbm": lambda: (RBM(6, 4, weight_scale=0.5), {}),
        "rbm-sparsity": lambda: (RBM(6, 4, weight_scale=0.5), {"sparsity_target": 0.1, "sparsity_cost": 0.5}),
        "gbrbm-learned-sigma": lambda: (GaussianBernoulliRBM(6, 4, sigma=0.8, learn_sigma=True, weight_scale=0.5), {}),
        "tied-copies": tied,
        # no energy_gradient_factors: the update goes through energy_gradients
        "fvbm": lambda: (FullyVisibleBM(6, weight_scale=0.5), {"kernel_class": SingleSiteGibbs}),
    }


OPTIMISER_SETTINGS = {"plain": {}, "momentum": {"momentum": 0.7}, "momentum-fused": {"momentum": 0.7, "fused": True}}


@pytest.mark.parametrize("setting", list(OPTIMISER_SETTINGS))
@pytest.mark.parametrize("case", list(_fused_cases()))
def test_sgd_step_is_loss_and_grads_then_the_optimisers_step(case, setting):
    """Folded updates (the weights' step, or their momentum's, accumulated by the GEMM) from the same state
    and random stream as ``loss_and_grads`` followed by ``torch.optim.SGD`` with the same settings: the
    same losses, the same chains, parameters and momentum buffers equal up to the rounding of the folded
    products (float64 here)."""
    settings = OPTIMISER_SETTINGS[setting]
    routes = {}
    for route in ("folded", "optimiser"):
        torch.manual_seed(0)
        model, options = _fused_cases()[case]()
        model.double()
        v = _tiny_data(9)[:, :model.num_visible].double()
        if isinstance(model, GaussianBernoulliRBM):
            v = torch.randn(9, model.num_visible, dtype=torch.float64)
        cd = ContrastiveDivergence(model, k=1, persistent=True, num_chains=5, **options)
        lr = 0.3
        opt = torch.optim.SGD(model.parameters(), lr=lr, **settings)
        losses = []
        for _ in range(3):  # the chains, the sparsity average and the momentum carry over between updates
            if route == "folded":
                losses.append(cd.sgd_step(v, lr=lr, momentum=settings.get("momentum", 0.0), state=opt.state,
                                          fused=settings.get("fused")))
            else:
                opt.zero_grad(set_to_none=True)
                losses.append(cd.loss_and_grads(v))
                opt.step()
        buffers = {n: opt.state[p].get("momentum_buffer") for n, p in model.named_parameters()}
        routes[route] = (losses, {n: p.detach().clone() for n, p in model.named_parameters()},
                         cd.kernel.initial_params["v"].clone(), torch.get_rng_state(), buffers)
        if route == "folded":
            assert all(p.grad is None for p in model.parameters())  # nothing written to .grad
    (loss_f, params_f, chains_f, rng_f, buf_f), (loss_o, params_o, chains_o, rng_o, buf_o) = (routes["folded"],
                                                                                             routes["optimiser"])
    assert loss_f == pytest.approx(loss_o, rel=1e-12, abs=1e-12)
    assert torch.equal(rng_f, rng_o)  # the same draws; Gaussian chains then differ by the parameters' rounding
    torch.testing.assert_close(chains_f, chains_o, rtol=1e-12, atol=1e-12)
    assert params_f.keys() == params_o.keys()
    for name in params_f:
        torch.testing.assert_close(params_f[name], params_o[name], rtol=1e-13, atol=1e-14, msg=name)
        if "momentum" in settings:
            torch.testing.assert_close(buf_f[name], buf_o[name], rtol=1e-13, atol=1e-14, msg=f"{name}'s momentum")
        else:
            assert buf_f[name] is None and buf_o[name] is None
    initial = dict(_seeded(case).named_parameters())
    moved = {n: float((params_f[n] - initial[n].detach().double()).abs().max()) for n in params_f}
    assert all(m > 1e-3 for m in moved.values()), moved  # every trainable parameter took a real step


def test_folded_sgd_step_matches_torch_sgd_on_factored_and_dense_gradients():
    """:func:`folded_sgd_step_` against ``torch.optim.SGD`` on gradients given outright: a product's factors
    and a tensor, over twenty float32 steps, with and without momentum, by torch's loop and fused kernels
    (the first step sets the buffer to the gradient, as torch does); the dense parameter bit for bit (the
    fused kernel rounds differently from the loop, so this fails if the setting is not passed on)."""
    from inference.folded_sgd import folded_sgd_step_

    torch.manual_seed(0)
    for momentum, fused in ((0.0, None), (0.9, None), (0.9, True)):
        w, b = torch.randn(70, 50), torch.randn(500)
        w_ref, b_ref = w.clone().requires_grad_(), b.clone().requires_grad_()
        opt = torch.optim.SGD([w_ref, b_ref], lr=0.1, momentum=momentum, fused=fused)
        state = opt.state.__class__(dict)
        for _ in range(20):
            a, c, g = torch.randn(70, 30), torch.randn(30, 50), torch.randn(500)
            w_ref.grad, b_ref.grad = a @ c, g.clone()
            opt.step()
            folded_sgd_step_({"w": w, "b": b}, {"w": (a, c), "b": g}, 0.1, momentum=momentum, state=state, fused=fused)
        torch.testing.assert_close(w, w_ref.detach(), rtol=1e-5, atol=1e-5)
        assert torch.equal(b, b_ref.detach())
        if momentum:
            torch.testing.assert_close(state[w]["momentum_buffer"], opt.state[w_ref]["momentum_buffer"])
            assert torch.equal(state[b]["momentum_buffer"], opt.state[b_ref]["momentum_buffer"])
    with pytest.raises(ValueError, match="state"):
        folded_sgd_step_({"b": b}, {"b": g}, 0.1, momentum=0.5)


def _seeded(case):
    torch.manual_seed(0)
    return _fused_cases()[case]()[0]


def test_fit_with_sgd_without_decay_takes_the_folded_step_and_follows_the_optimiser_route():
    """fit with SGD without weight decay (plain, or with momentum) calls ``sgd_step`` (no ``.grad`` written),
    matches ``fused_sgd=False`` over three epochs of a linear schedule (float64: the runs stay on one
    trajectory) with no scheduler warning, and does not take it with weight decay."""
    import warnings

    data = _tiny_data(60).double()

    def run(fused_sgd, momentum=0.0, weight_decay=0.0):
        torch.manual_seed(0)
        rbm = RBM(6, 4, weight_scale=0.1).double()
        cd = ContrastiveDivergence(rbm, k=1, persistent=True, fused_sgd=fused_sgd)
        calls = []
        step = cd.sgd_step
        cd.sgd_step = lambda *a, **k: calls.append(1) or step(*a, **k)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            result = fit(cd, (data,), module=rbm, epochs=3, batch_size=10, lr=0.2, momentum=momentum,
                         weight_decay=weight_decay, lr_schedule="linear", lr_final=0.5, **SGD)
        return rbm, result, len(calls)

    _, _, decay_calls = run(True, momentum=0.5, weight_decay=0.01)
    assert decay_calls == 0
    for momentum in (0.0, 0.5):
        folded, folded_result, folded_calls = run(True, momentum)
        plain, plain_result, plain_calls = run(False, momentum)
        assert (folded_calls, plain_calls) == (18, 0)
        assert all(p.grad is None for p in folded.parameters())
        for (name, a), (_, b) in zip(folded.named_parameters(), plain.named_parameters()):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
        for a, b in zip(folded_result.history, plain_result.history):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-12)
            assert a["lr"] == b["lr"]


def test_sgd_step_with_a_non_finite_loss_changes_no_parameter():
    torch.manual_seed(0)
    rbm = RBM(6, 4, weight_scale=0.1)
    cd = ContrastiveDivergence(rbm, k=1, persistent=True)
    cd.sgd_step(_tiny_data(10), lr=0.1)
    with torch.no_grad():
        rbm.visible_bias[0] = float("inf")
    before = {n: p.detach().clone() for n, p in rbm.named_parameters()}
    loss = cd.sgd_step(_tiny_data(10), lr=0.1)
    assert not math.isfinite(loss)
    for name, p in rbm.named_parameters():
        assert torch.equal(p, before[name]), name
