"""Typed errors with one-line messages; the CLI prints ``str(err)`` and exits with ``err.exit_code``.

Exit codes (documented in README):
  0 success, 1 some items of a batch failed, 2 bad input or usage, 3 missing or invalid asset,
  4 refused unsafe file, 5 output cannot be written (exists without --overwrite, unwritable, disk full),
  130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""
from __future__ import annotations


class SpectreError(Exception):
    """Base class: a user-facing failure whose message fits on one line."""

    exit_code = 1

    def __str__(self) -> str:  # keep messages on one line whatever the caller passed
        return " ".join(super().__str__().split())


class InputError(SpectreError):
    """Unreadable, corrupt or unsupported input (video, image, landmarks, config)."""

    exit_code = 2


class ConfigError(InputError):
    """A config file or option is invalid."""


class AssetError(SpectreError):
    """A required asset (face model, checkpoint) is missing or is not what it claims to be."""

    exit_code = 3


class CheckpointError(AssetError):
    """A checkpoint does not match the network it is loaded into."""


class UnsafeFileError(SpectreError):
    """A file tried to execute code or reference objects we refuse to unpickle."""

    exit_code = 4


class OutputError(SpectreError):
    """An output cannot be written (exists without --overwrite, unwritable folder, disk full)."""

    exit_code = 5


class NoFaceError(InputError):
    """No face was found in any frame of the input."""
