import pyro
import pytest
import torch

# Tests use small tensors: one intra-op thread avoids OpenMP hand-off costs that
# dominate tiny ops (measured 2.3 ms vs 73 ms per IWAE step with 2 threads on a
# busy 2-core machine). Benchmarks set their own thread count.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded_clean_pyro():
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    with pyro.validation_enabled(True):
        yield
