"""Errors a user can act on. The CLI prints their message as one sentence and exits 2."""


class BnnhwError(Exception):
    """A user-facing error: bad input, a file that is not what it should be, ..."""
