"""Parameter validators shared by the model specs, the IR and every hardware block.

Each checks one value and raises ``ParameterError`` (a ``ValueError``) whose message names
where the value belongs, the parameter and the value: ``"layer 2 (conv): kernel must be
an integer >= 1, not 0"``. Torch-free and amaranth-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["ParameterError", "bit_array", "choice", "divides", "flag", "float_array",
           "int_array", "integer", "positive_fields", "positive_shape"]


class ParameterError(ValueError):
    """A parameter outside its domain; the message names where, the parameter and the value."""


def integer(where: str, name: str, value: Any, low: int | None = None,
            high: int | None = None, error: type[ParameterError] = ParameterError,
            plain: bool = False) -> int:
    """``value`` as an ``int`` (bool refused), within ``low..high`` where given; ``plain``
    refuses numpy integers too (a JSON document holds plain ints only)."""
    kinds = int if plain else (int, np.integer)
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, kinds)
            or (low is not None and value < low) or (high is not None and value > high)):
        if low is not None and high is not None:
            want = f"an integer in {low}..{high}"
        elif low == 1:
            want = "a positive integer"
        elif low is not None:
            want = f"an integer >= {low}"
        elif high is not None:
            want = f"an integer <= {high}"
        else:
            want = "an integer"
        raise error(f"{where}: {name} must be {want}, not {value!r}")
    return int(value)


def positive_fields(where: str, obj: Any, *names: str) -> None:
    """Every attribute ``names`` of ``obj`` must be a positive integer (``integer``)."""
    for name in names:
        integer(where, name, getattr(obj, name), 1)


def divides(where: str, name: str, value: int, total: int, what: str,
            error: type[ParameterError] = ParameterError) -> int:
    """``value`` (a positive integer) must divide ``total`` (``what`` names it)."""
    value = integer(where, name, value, 1, error=error)
    if total % value:
        raise error(f"{where}: {name} must divide the {total} {what}, not {value}")
    return value


def flag(where: str, name: str, value: Any,
         error: type[ParameterError] = ParameterError) -> bool:
    """``value`` must be ``True`` or ``False``."""
    if not isinstance(value, (bool, np.bool_)):
        raise error(f"{where}: {name} must be true or false, not {value!r}")
    return bool(value)


def choice(where: str, name: str, value: Any, options: Sequence[Any],
           error: type[ParameterError] = ParameterError) -> Any:
    """``value`` must be one of ``options`` (compared with ``==``, bools never match ints)."""
    if isinstance(value, bool) or value not in options or \
            not any(type(value) is type(o) for o in options if o == value):
        listed = ", ".join(str(o) for o in options)
        raise error(f"{where}: {name} must be one of {listed}, not {value!r}")
    return value


def positive_shape(where: str, name: str, value: Any, dims: Sequence[int],
                   error: type[ParameterError] = ParameterError) -> tuple[int, ...]:
    """A tuple of positive integers of one of the lengths ``dims``."""
    v = tuple(value) if isinstance(value, (list, tuple)) else value
    if (not isinstance(v, tuple) or len(v) not in dims
            or any(isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer))
                   or x < 1 for x in v)):
        want = " or ".join(f"{d} positive integers" for d in dims)
        raise error(f"{where}: {name} must be {want}, not {value!r}")
    return tuple(int(x) for x in v)


def int_array(where: str, name: str, value: Any, *, shape: tuple[int, ...] | None = None,
              ndim: int | None = None, dtype: Any = np.int64, low: int | None = None,
              high: int | None = None) -> np.ndarray:
    """A read-only private copy of ``value`` as an integer array of ``dtype``, with exactly
    ``shape`` (or ``ndim`` dimensions) and every element within ``low..high``."""
    a = np.asarray(value)
    if shape is not None and a.shape != tuple(shape):
        raise ParameterError(f"{where}: {name} must have shape {list(shape)}, not "
                             f"{list(a.shape)}")
    if ndim is not None and a.ndim != ndim:
        raise ParameterError(f"{where}: {name} must have {ndim} dimension(s), not shape "
                             f"{list(a.shape)}")
    if a.size and a.dtype.kind not in "biu":
        raise ParameterError(f"{where}: {name} must hold integers, not {a.dtype}")
    info = np.iinfo(dtype)
    lo = info.min if low is None else max(low, info.min)
    hi = info.max if high is None else min(high, info.max)
    if a.size and (int(a.min()) < lo or int(a.max()) > hi):
        if low is None and high is None:
            raise ParameterError(f"{where}: {name} values {int(a.min())}..{int(a.max())} do "
                                 f"not fit {np.dtype(dtype).name}")
        raise ParameterError(f"{where}: {name} must lie in {lo}..{hi}, found "
                             f"{int(a.min())}..{int(a.max())}")
    out = np.array(a, dtype=dtype, copy=True)
    out.flags.writeable = False
    return out


def bit_array(where: str, name: str, value: Any, *, shape: tuple[int, ...] | None = None,
              ndim: int | None = None) -> np.ndarray:
    """A read-only ``uint8`` array of bits 0/1 (see ``int_array``)."""
    a = np.asarray(value)
    if a.size and a.dtype.kind in "biu" and (int(a.min()) < 0 or int(a.max()) > 1):
        raise ParameterError(f"{where}: {name} must hold bits 0/1, found "
                             f"{int(a.min())}..{int(a.max())}")
    return int_array(where, name, a, shape=shape, ndim=ndim, dtype=np.uint8)


def float_array(where: str, name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A read-only ``float64`` copy of ``value`` with exactly ``shape``, all finite."""
    a = np.asarray(value)
    if a.shape != tuple(shape):
        raise ParameterError(f"{where}: {name} must have shape {list(shape)}, not "
                             f"{list(a.shape)}")
    out = np.array(a, dtype=np.float64, copy=True)
    if out.size and not np.all(np.isfinite(out)):
        raise ParameterError(f"{where}: {name} must be finite")
    out.flags.writeable = False
    return out
