"""What an evaluation is asked to do, and the error it raises when it cannot: below every other eval module."""

from __future__ import annotations


class EvalError(ValueError):
    """An evaluation that cannot run as asked; the message names the file, split or key."""
