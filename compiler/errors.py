"""User-facing errors.

Every error a user can cause (bad model, bad flag, bad package, missing tool) is an
``EdgecError``: the CLI prints its message as one line and exits with code 2. Anything
else escaping is a bug in edgec.
"""

from __future__ import annotations


class EdgecError(Exception):
    """An error caused by the user's input or environment, reported as one line."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ModelError(EdgecError):
    """The ONNX model cannot be read, checked or imported."""


class UnsupportedOpsError(ModelError):
    """The model uses operators that edgec cannot convert."""


class TargetError(EdgecError):
    """Unknown target or preset, or a missing tool for it."""


class PackageError(EdgecError):
    """A .edgec package is corrupt, foreign or of an unknown format version."""


class InputError(EdgecError):
    """Inputs given at run time do not match the package's inputs."""


class OutputError(EdgecError):
    """An output file cannot be created where the user asked for it."""
