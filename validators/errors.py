"""The one error the validators package raises.

Validators never import :mod:`drills` (the import direction is
``drills -> validators``), so they cannot raise ``drills.errors.ValidationError``
themselves. They raise :class:`ValidatorError` instead and the drill runner
translates it at the boundary. A check that merely *fails* is a
:class:`~validators.base.Finding`, not an exception; this error means a
validator could not run at all (no connection, unreadable baseline).
"""

from __future__ import annotations

__all__ = ["ValidatorError"]


class ValidatorError(Exception):
    """A validator could not run at all; the message never contains a secret."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
