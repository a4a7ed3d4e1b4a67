"""The host side of the link to a bnnhw board (``docs/protocol.md``).

- ``Transport``: the byte stream (a USB-UART, a TCP socket, a loopback);
- ``Accelerator``: the driver (identify, check, load, infer, status, reset) over it;
- ``AcceleratorError``: what went wrong and what to check, in one sentence;
- ``host.faults``: a fault-injecting link (TCP proxy, in-process pipes) for tests and
  benches.

Imports neither torch nor amaranth (``tests/test_layers.py``).
"""

from .accelerator import Accelerator, LinkStats
from .errors import AcceleratorError
from .faults import FaultProxy, Faults, FaultyPort, Rates, pipe_pair
from .transport import Transport

__all__ = ["Accelerator", "AcceleratorError", "FaultProxy", "Faults", "FaultyPort",
           "LinkStats", "Rates", "Transport", "pipe_pair"]
