"""User-facing errors, shared by both packages (:mod:`ppl_models` re-exports them).

Every error a user can cause by what they pass in (a file, a spec, a flag) is
one of these: the CLI prints its message on one line and exits non-zero, with
no traceback. Messages name the thing that is wrong, the value found, and what
was expected.
"""


class PPLModelsError(Exception):
    """Base class of every error that is the user's input, not our bug."""


class SpecError(PPLModelsError, ValueError):
    """A model spec or option is unknown, ill-typed or out of range."""


class DataError(PPLModelsError, ValueError):
    """A data file is missing, corrupt, or holds data of the wrong shape or values."""


class CheckpointError(PPLModelsError, RuntimeError):
    """A checkpoint or model directory cannot be used (corrupt, or another model's)."""


class TrainingDiverged(PPLModelsError, FloatingPointError):
    """The objective or a parameter became NaN or infinite; the last good checkpoint is kept."""
