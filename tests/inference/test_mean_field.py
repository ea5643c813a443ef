"""The mean-field fixed point against a direct minimisation of the variational free energy; its warning and errors."""

import warnings

import pytest
import torch

from inference.errors import SpecError
from inference.exact_enumeration import binary_states, log_partition, log_prob_observed
from inference.mean_field import MeanFieldModel, MeanFieldNotConverged, mean_field, mean_field_bound
from ppl_models.dbm import DBM


def _dbm(sizes, scale, seed=0):
    torch.manual_seed(seed)
    dbm = DBM(sizes, weight_scale=scale)
    with torch.no_grad():
        for b in dbm.biases:
            b.normal_(0, 0.5)
    return dbm.double()


def test_a_dbm_is_a_mean_field_model():
    assert isinstance(DBM([3, 2, 2]), MeanFieldModel)


@pytest.mark.parametrize("sizes", [[6, 4, 3], [5, 4, 3, 3]])
@pytest.mark.parametrize("damping", [0.0, 0.5])
def test_fixed_point_is_the_minimum_of_the_variational_free_energy(sizes, damping):
    dbm = _dbm(sizes, 0.4)
    v = binary_states(sizes[0], like=dbm.biases[0])[::3]
    result = mean_field(dbm, v, tol=1e-10, max_iter=1000, damping=damping)
    assert result.converged

    # direct minimisation over the logits (an unconstrained parametrisation), independent of the iteration
    logits = [torch.zeros(v.shape[0], n, dtype=torch.float64, requires_grad=True) for n in sizes[1:]]
    opt = torch.optim.LBFGS(logits, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        f = dbm.mean_field_free_energy(v, [torch.sigmoid(a) for a in logits]).sum()
        f.backward()
        return f

    opt.step(closure)
    direct = [torch.sigmoid(a).detach() for a in logits]
    for m, d in zip(result.means, direct):
        torch.testing.assert_close(m, d, atol=1e-5, rtol=0)
    with torch.no_grad():
        f_fixed = dbm.mean_field_free_energy(v, result.means)
        f_direct = dbm.mean_field_free_energy(v, direct)
    assert bool((f_fixed <= f_direct + 1e-9).all())


def test_each_sweep_never_raises_the_free_energy():
    dbm = _dbm([6, 4, 3, 3], 1.0, seed=1)
    v = binary_states(6, like=dbm.biases[0])
    means = dbm.mean_field_init(v)
    previous = dbm.mean_field_free_energy(v, means)
    for _ in range(10):
        means = mean_field(dbm, v, tol=1e-12, max_iter=1, init=means, warn=False).means
        now = dbm.mean_field_free_energy(v, means)
        assert bool((now <= previous + 1e-10).all())  # block coordinate descent
        previous = now


def test_the_bound_lies_below_the_exact_log_likelihood():
    dbm = _dbm([6, 3, 4], 1.0)
    v = binary_states(6, like=dbm.biases[0])
    log_z = float(log_partition(dbm))
    exact = log_prob_observed(dbm, v, torch.tensor(log_z, dtype=torch.float64))
    bound = mean_field_bound(dbm, v, log_z, tol=1e-9, max_iter=500)
    assert bool((bound <= exact + 1e-9).all())
    assert float((exact - bound).max()) > 1e-3  # a real gap: the posterior is not factorised
    torch.testing.assert_close(torch.logsumexp(exact, 0), torch.zeros((), dtype=torch.float64), atol=1e-9, rtol=0)


def test_non_convergence_warns_with_the_reached_tolerance():
    dbm = _dbm([6, 4, 3, 3], 1.0)
    v = binary_states(6, like=dbm.biases[0])
    with pytest.warns(MeanFieldNotConverged, match=r"reached tolerance [0-9.e-]+ after 2 iterations") as record:
        result = mean_field(dbm, v, tol=1e-14, max_iter=2)
    assert not result.converged and result.iterations == 2
    assert f"{result.max_change:.3g}" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean_field(dbm, v, tol=1e-14, max_iter=2, warn=False)


@pytest.mark.parametrize("options, message", [
    ({"tol": 0}, "tol (mean-field tolerance) must be a finite number > 0"),
    ({"max_iter": 0}, "max_iter (mean-field iterations) must be a positive integer"),
    ({"damping": 1.0}, "damping must be a number in [0, 1)"),
])
def test_bad_settings_are_one_line_errors(options, message):
    with pytest.raises(SpecError) as info:
        mean_field(DBM([3, 2, 2]), torch.zeros(1, 3), **options)
    assert message in str(info.value) and "\n" not in str(info.value)
