"""CD / PCD trainer: exact log-likelihood goes up on tiny data; exact resume; options; bad input."""

import pytest
import torch

from inference.contrastive_divergence import CDConfig, fit, pseudo_log_likelihood, reconstruction_error
from inference.exact_enumeration import log_prob
from ppl_models.errors import CheckpointError, DataError, SpecError
from ppl_models.rbm import RBM, GaussianBernoulliRBM

PATTERNS = torch.tensor(
    [[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], [1, 0, 1, 0, 1, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.float32
)


def _tiny_data(n=200):
    g = torch.Generator().manual_seed(1)
    rows = PATTERNS[torch.randint(0, 4, (n,), generator=g)]
    noise = torch.rand(rows.shape, generator=g) < 0.05
    return torch.where(noise, 1 - rows, rows)


def _mean_exact_ll(model, data):
    return float(log_prob(model, data).mean())


@pytest.mark.parametrize("persistent", [True, False])
def test_training_raises_exact_log_likelihood(persistent):
    data = _tiny_data()
    torch.manual_seed(0)
    rbm = RBM(6, 4, weight_scale=0.1)
    before = _mean_exact_ll(rbm, data)  # about -6 log 2 = -4.16 at the start
    result = fit(rbm, data, {"epochs": 60, "batch_size": 10, "lr": 0.1, "k": 1, "persistent": persistent, "seed": 0}, progress=False)
    after = _mean_exact_ll(rbm, data)
    # the data's entropy is about log 4 + 6 H(0.05) = 2.6 nats: a good fit approaches -2.6
    assert after > before + 1.0, (before, after)
    assert after > -3.2, after
    assert len(result.history) == 60
    assert result.history[-1]["recon_error"] < result.history[0]["recon_error"]
    assert result.history[-1]["pseudo_ll"] > result.history[0]["pseudo_ll"]


def test_gaussian_bernoulli_with_learned_sigma_raises_exact_log_likelihood():
    g = torch.Generator().manual_seed(2)
    centres = torch.tensor([[2.0, -1.0], [-1.5, 1.0]])
    data = centres[torch.randint(0, 2, (400,), generator=g)] + 0.3 * torch.randn(400, 2, generator=g)
    torch.manual_seed(0)
    gb = GaussianBernoulliRBM(2, 4, sigma=1.0, learn_sigma=True, weight_scale=0.1)
    before = _mean_exact_ll(gb, data)
    fit(gb, data, {"epochs": 40, "batch_size": 20, "lr": 0.02, "k": 1, "seed": 0}, progress=False)
    after = _mean_exact_ll(gb, data)
    assert after > before + 0.5, (before, after)
    assert bool((gb.sigma < 0.9).all()), gb.sigma  # learned: the clusters are narrower than sigma = 1


def _run(tmp_path, epochs, interrupt_after=None, model_seed=5):
    torch.manual_seed(model_seed)
    rbm = RBM(6, 4, weight_scale=0.1)

    def stop(epoch, metrics):
        if interrupt_after is not None and epoch == interrupt_after:
            raise KeyboardInterrupt

    config = {"epochs": epochs, "batch_size": 16, "lr": 0.1, "momentum": 0.7, "weight_decay": 1e-3,
              "sparsity_target": 0.2, "lr_schedule": "linear", "seed": 3}
    result = fit(rbm, _tiny_data(), config, checkpoint=str(tmp_path / "ckpt.pt"), callback=stop, progress=False)
    return rbm, result


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    straight, straight_result = _run(tmp_path / "a", epochs=5)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", epochs=5, interrupt_after=1)
    resumed, resumed_result = _run(tmp_path / "b", epochs=5, model_seed=99)  # its own init is overwritten
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), name
    assert straight_result.history == resumed_result.history
    assert torch.equal(straight_result.kernel.initial_params["v"], resumed_result.kernel.initial_params["v"])


def test_resume_with_different_options_is_refused(tmp_path):
    _run(tmp_path, epochs=1)
    with pytest.raises(CheckpointError) as e:
        fit(RBM(6, 4), _tiny_data(), {"epochs": 2, "batch_size": 8}, checkpoint=str(tmp_path / "ckpt.pt"), progress=False)
    assert "batch_size" in str(e.value) and "\n" not in str(e.value)


def test_weight_decay_and_sparsity_do_their_job():
    data = _tiny_data()

    def train(**options):
        torch.manual_seed(0)
        rbm = RBM(6, 8, weight_scale=0.1)
        fit(rbm, data, {"epochs": 15, "batch_size": 10, "lr": 0.1, "seed": 0, **options}, progress=False)
        return rbm

    plain, decayed, sparse = train(), train(weight_decay=0.1), train(sparsity_target=0.05, sparsity_cost=1.0)
    assert decayed.weight.norm() < 0.7 * plain.weight.norm()
    with torch.no_grad():
        assert sparse.hidden_probs(data).mean() < 0.6 * plain.hidden_probs(data).mean()


def test_monitors_on_known_cases():
    rbm = RBM(3, 2, weight_scale=0.0)  # p(h | v) = 1/2, E[v | h] = 1/2 whatever the data
    v = torch.tensor([[1.0, 0.0, 1.0]])
    assert reconstruction_error(rbm, v) == pytest.approx(0.75)
    # zero parameters: F(v) is the same for every v, so each row scores 3 log sigmoid(0)
    assert pseudo_log_likelihood(rbm, v) == pytest.approx(3 * torch.log(torch.tensor(0.5)).item())


def test_monitors_can_be_turned_off_without_changing_training():
    # the monitors draw from their own generator, so switching them off must not move the training stream
    runs = {}
    for size in (0, 50):
        torch.manual_seed(0)
        model = RBM(6, 3, weight_scale=0.1)
        result = fit(model, _tiny_data(), {"epochs": 2, "seed": 3, "monitor_size": size}, progress=False)
        runs[size] = (model, result.history)
    (off, off_history), (on, on_history) = runs[0], runs[50]
    assert all(torch.equal(a, b) for a, b in zip(off.parameters(), on.parameters()))
    assert set(off_history[0]) == {"epoch", "lr"} and {"recon_error", "pseudo_ll"} <= set(on_history[0])


def test_bad_input_gives_one_line_errors():
    rbm = RBM(6, 4)
    cases = [
        (DataError, dict(data=torch.full((5, 6), 0.5))),  # grey levels to a binary RBM
        (DataError, dict(data=torch.tensor([[float("nan")] * 6]))),
        (SpecError, dict(config={"k": 0})),
        (SpecError, dict(config={"k": -2})),
        (SpecError, dict(config={"sweeps": 1})),
        (SpecError, dict(config={"lr": 0.0})),
    ]
    for error, kwargs in cases:
        args = {"data": _tiny_data(20), "config": {}, **kwargs}
        with pytest.raises(error) as e:
            fit(rbm, args["data"], args["config"], progress=False)
        assert "\n" not in str(e.value)
    with torch.no_grad():
        rbm.weight[0, 0] = float("nan")
    with pytest.raises(SpecError):
        fit(rbm, _tiny_data(20), {}, progress=False)


def test_dynamic_binarisation_of_grey_data_trains_and_resumes_exactly(tmp_path):
    from ppl_models.data import DynamicBinarization

    grey = _tiny_data().clamp(0.1, 0.9)  # grey levels: only usable through the transform
    config = {"epochs": 3, "batch_size": 16, "lr": 0.1, "seed": 0}

    def run(directory, interrupt=False, model_seed=0):
        torch.manual_seed(model_seed)
        rbm = RBM(6, 4, weight_scale=0.1)

        def stop(epoch, metrics):
            if interrupt and epoch == 0:
                raise KeyboardInterrupt

        fit(rbm, grey, config, checkpoint=str(directory / "c.pt"), callback=stop, progress=False,
            transform=DynamicBinarization())
        return rbm

    straight = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", interrupt=True)
    resumed = run(tmp_path / "b", model_seed=7)
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), resumed.parameters()))
    with pytest.raises(DataError):
        fit(RBM(6, 4), grey, config, progress=False)  # grey levels without a transform
    with pytest.raises(DataError):
        fit(RBM(6, 4), grey + 1, config, progress=False, transform=DynamicBinarization())  # not in [0, 1]


@pytest.mark.parametrize("persistent", [True, False])
def test_partial_last_batch_and_other_chain_counts(persistent):
    rbm = RBM(6, 4)
    config = {"epochs": 2, "batch_size": 16, "num_chains": 7, "persistent": persistent, "k": 2, "lr": 0.05}
    result = fit(rbm, _tiny_data(50), config, progress=True)  # 50 = 3 x 16 + 2
    assert len(result.history) == 2
    if persistent:
        assert result.kernel.initial_params["v"].shape == (7, 6)


def test_config_is_a_spec():
    cfg = CDConfig()
    assert cfg.k == 1 and cfg.persistent
