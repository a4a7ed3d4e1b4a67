"""An exclusive lock on a file, for caches shared by processes (the synthesis and the
Verilator build caches): ``with locked(path): ...`` waits for the lock, creating the
file if needed, and releases it on leaving the block."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

__all__ = ["locked"]


@contextlib.contextmanager
def locked(path: str | os.PathLike[str]) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
