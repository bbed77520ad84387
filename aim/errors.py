"""Every error the toolkit raises on bad input, in one place: each names the input and the fix.

The CLI prints any ``AimError`` as one line (``error: ...``) and exits with status 2; anything else
is a bug and keeps its traceback.
"""


class AimError(Exception):
    """Base class: a message meant for a person, one line, naming the input and the fix."""


class ConfigError(AimError, ValueError):
    """A configuration field (FusionConfig, ConnectorConfig, a training or evaluation config) has a
    value it cannot take. Also a ValueError, as dataclass validation errors usually are."""


class ImageError(AimError):
    """An image file is missing, unreadable or corrupt."""


class BackboneError(AimError):
    """A backbone name or folder cannot be resolved or loaded."""


class FusionMismatchError(AimError):
    """A fuser checkpoint was made for another backbone (model, revision, dtype, size or layer)."""


class VectorMismatchError(AimError):
    """A vector checkpoint (in-context or task vectors) was made for another backbone."""


class BankError(AimError):
    """A bank folder that is missing, damaged, or made for another backbone or fuser."""


class DatasetError(AimError):
    """A dataset file or folder that cannot be read as records: wrong fields, a broken line."""


class LockedError(AimError):
    """Another process is writing the folder (its lock file names the holder)."""


class MetricError(AimError, ValueError):
    """A metric asked for something it cannot score (no ground-truth answers, say)."""
