"""The user-facing errors, re-exported from :mod:`inference.errors`.

They live on the inference side so that :mod:`inference` needs nothing of
:mod:`ppl_models` (the package edges run one way); model files raise them by
this name.
"""

from inference.errors import CheckpointError, DataError, PPLModelsError, SpecError, TrainingDiverged

__all__ = ["PPLModelsError", "SpecError", "DataError", "CheckpointError", "TrainingDiverged"]
