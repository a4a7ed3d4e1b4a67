"""The host driver's user-facing error."""

from __future__ import annotations

from bnnhw.errors import BnnhwError

__all__ = ["AcceleratorError"]


class AcceleratorError(BnnhwError):
    """The board, its port or its answers: one sentence saying what went wrong and what to
    check (the port, the baud rate, that a bnnhw bitstream is loaded, the design)."""
