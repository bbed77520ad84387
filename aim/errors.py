"""Errors the toolkit raises on bad input: each names the input and the fix."""


class AimError(Exception):
    """Base class: a message meant for a person, one line, naming the input and the fix."""


class ImageError(AimError):
    """An image file is missing, unreadable or corrupt."""


class BackboneError(AimError):
    """A backbone name or folder cannot be resolved or loaded."""


class FusionMismatchError(AimError):
    """A fuser checkpoint was made for another backbone (model, revision, dtype, size or layer)."""
