"""Every error a user can fix, with one base class: :class:`RosetteError`.

The command line prints a ``RosetteError`` as one line (``error: ...``) and exits with 2;
anything else is a bug and keeps its traceback. Each class also derives from the builtin
it replaced (``ValueError`` / ``RuntimeError``), so ``except ValueError`` in user code keeps
working. This module imports nothing, so every layer may use it (the onnx path included).
"""

from __future__ import annotations

__all__ = ["RosetteError", "InputError", "CheckpointError", "ModelError", "ConversionError", "ExportError",
           "SynthError", "EvaluationError", "ConfigError", "TrainingDataError", "OutputError",
           "QuantityError", "SummaryError", "ClusterError"]


class RosetteError(Exception):
    """Base of every error a user can fix: bad input, model, config, or output folder."""


class InputError(RosetteError, ValueError):
    """An image cannot be used as model input (wrong shape, dtype, values, ...)."""


class CheckpointError(RosetteError, ValueError):
    """A checkpoint file cannot be read or does not fit the architecture."""


class ModelError(RosetteError, ValueError):
    """The model given to the runner cannot be used (missing file, no such weights, ...)."""


class ConversionError(RosetteError, RuntimeError):
    """A converted weight format (TorchScript / ONNX) disagrees with eager PyTorch."""


class ExportError(RosetteError, RuntimeError):
    """The package could not be built or did not pass validation/testing; nothing was written."""


class SynthError(RosetteError, ValueError):
    """Invalid settings for the synthetic-tissue generator."""


class EvaluationError(RosetteError, ValueError):
    """An evaluation dataset or report cannot be used."""


class ConfigError(RosetteError, ValueError):
    """A training config is invalid (unknown key, bad value, missing file)."""


class TrainingDataError(InputError):
    """Training images or masks cannot be used (missing mask, wrong shape, empty mask, ...)."""


class OutputError(RosetteError, ValueError):
    """An output location cannot be written (e.g. ``--out`` is an existing file)."""


class QuantityError(RosetteError, ValueError):
    """Input that rosette quantities cannot be computed from (the message names it)."""


class SummaryError(RosetteError, ValueError):
    """A summary file or run directory that cannot be read, or a bad argument (the message names it)."""


class ClusterError(RosetteError, RuntimeError):
    """A dask cluster that cannot be started, reached or used (``--dask``), or a missing dask install."""
