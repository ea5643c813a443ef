"""ppl-models: a catalogue of deep generative models in Pyro.

``ppl_models`` says what a model is (Pyro model/guide pairs, energy functions,
data, declarative specs); :mod:`inference` says how to fit and query it.
"""

from .errors import CheckpointError, DataError, PPLModelsError, SpecError

__version__ = "0.1.0"


def load(directory: str):
    """Load a trained model directory written by ``ppl-models train``."""
    from .catalogue import load as _load

    return _load(directory)


def build(spec):
    """Build an untrained model from a spec: a dict, a model file path (YAML or JSON), or a spec object."""
    from .catalogue import build as _build

    return _build(spec)


__all__ = ["load", "build", "PPLModelsError", "SpecError", "DataError", "CheckpointError"]
