"""Exceptions with messages that name the problem (bad input never yields a silent wrong answer)."""


class DiffSamplerError(Exception):
    """Base class of every error this library raises on purpose."""


class UnknownTargetError(DiffSamplerError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ShapeError(DiffSamplerError, ValueError):
    """An array or tensor has the wrong shape."""


class NonFiniteError(DiffSamplerError, FloatingPointError):
    """A NaN or infinity appeared where a finite number is required."""


class MissingDependencyError(DiffSamplerError, ImportError):
    """An optional dependency (an extra of the package) is not installed."""


class ConfigError(DiffSamplerError, ValueError):
    """A configuration key is unknown or a value is out of range."""


class CheckpointError(DiffSamplerError, RuntimeError):
    """A checkpoint is corrupt, incomplete or belongs to another run."""


class TrainingError(DiffSamplerError, RuntimeError):
    """Training stopped because a loss, gradient or energy became non-finite."""


class TargetSpecError(DiffSamplerError, ValueError):
    """A target spec (FILE.py:NAME, package.module:NAME) or its options cannot give a target."""


class EnergyChangedError(TargetSpecError):
    """A run's recorded user energy (or its reference samples) moved or changed since training."""


class UserEnergyError(DiffSamplerError, RuntimeError):
    """A user's energy function raised: the message says where in the run (phase, iteration, batch
    size); the user's own exception is chained as the cause."""
