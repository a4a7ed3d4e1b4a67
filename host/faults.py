"""A link that breaks on purpose: flipped bits, dropped bytes, garbage, silence.

``Faults`` decides, byte by byte and separately for each direction (``"up"``: host to
board, ``"down"``: board to host), what happens to a byte stream: a byte is dropped with
probability ``drop``, else one of its bits is flipped with probability ``flip``, and a
garbage byte follows it with probability ``insert``. The decisions come from one seeded
generator per direction, five draws per byte, so the fate of the ``i``-th byte of a
direction does not depend on how the stream was cut into chunks. ``silence()`` makes a
direction (or both) swallow everything until ``resume()``; every byte's fate is counted
(``counts``).

Three ways to put it in a link:

- ``FaultProxy``: a TCP proxy (threads) listening on a free loopback port and forwarding
  to a target ``host:port``; connect to ``proxy.url`` (``socket://127.0.0.1:PORT``);
- ``pipe_pair``: two connected in-process pyserial-like port objects (a host end and a
  board end), with the faults on the way;
- ``FaultyPort``: wraps any open pyserial port (``loop://`` included): writes go
  through the ``up`` faults, reads through the ``down`` faults.

Torch-free and amaranth-free.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np

__all__ = ["DIRECTIONS", "FaultProxy", "Faults", "FaultyPort", "PipeEnd", "Rates",
           "pipe_pair"]

DIRECTIONS = ("up", "down")


@dataclass
class Rates:
    """Per-byte probabilities of one direction."""

    flip: float = 0.0     # one bit of the byte flipped
    drop: float = 0.0     # the byte lost
    insert: float = 0.0   # a random byte inserted after it

    def __post_init__(self) -> None:
        for name in ("flip", "drop", "insert"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"fault rate {name} must lie in 0..1, not {v}")


@dataclass
class Counts:
    """What one direction did to its bytes."""

    bytes_in: int = 0
    bytes_out: int = 0
    flipped: int = 0
    dropped: int = 0
    inserted: int = 0
    silenced: int = 0     # swallowed while silent

    @property
    def faults(self) -> int:
        return self.flipped + self.dropped + self.inserted


@dataclass
class _Direction:
    rates: Rates
    rng: np.random.Generator
    counts: Counts = field(default_factory=Counts)
    silent: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class Faults:
    """Seeded per-direction fault rates and the silence switch (module docstring).

    ``Faults(seed, flip=0.01, drop=0.005)`` sets both directions alike; ``up=`` and
    ``down=`` (``Rates``) set one direction each and win over the shared arguments.
    """

    def __init__(self, seed: int = 0, *, flip: float = 0.0, drop: float = 0.0,
                 insert: float = 0.0, up: Rates | None = None, down: Rates | None = None):
        shared = Rates(flip, drop, insert)
        seeds = np.random.SeedSequence(seed).spawn(2)
        self._dirs = {
            "up": _Direction(up or Rates(**vars(shared)), np.random.default_rng(seeds[0])),
            "down": _Direction(down or Rates(**vars(shared)), np.random.default_rng(seeds[1])),
        }

    def _dir(self, direction: str) -> _Direction:
        if direction not in self._dirs:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
        return self._dirs[direction]

    def _pick(self, direction: str) -> Iterable[_Direction]:
        return self._dirs.values() if direction == "both" else (self._dir(direction),)

    # -- controls ---------------------------------------------------------------------------

    def rates(self, direction: str) -> Rates:
        return self._dir(direction).rates

    def set_rates(self, direction: str = "both", **rates: float) -> None:
        """Change the rates of ``direction`` (``"up"``, ``"down"`` or ``"both"``)."""
        for d in self._pick(direction):
            with d.lock:
                d.rates = Rates(**{**vars(d.rates), **rates})

    def silence(self, direction: str = "both") -> None:
        """Swallow every byte of ``direction`` until ``resume``."""
        for d in self._pick(direction):
            d.silent = True

    def resume(self, direction: str = "both") -> None:
        for d in self._pick(direction):
            d.silent = False

    def silent(self, direction: str) -> bool:
        return self._dir(direction).silent

    def counts(self, direction: str) -> Counts:
        return self._dir(direction).counts

    def summary(self) -> str:
        parts = []
        for name, d in self._dirs.items():
            c = d.counts
            parts.append(f"{name}: {c.bytes_in} bytes, {c.flipped} flipped, {c.dropped} "
                         f"dropped, {c.inserted} inserted, {c.silenced} silenced")
        return "; ".join(parts)

    # -- the faults -------------------------------------------------------------------------

    def apply(self, direction: str, data: bytes) -> bytes:
        """What of ``data`` (the next bytes of ``direction``) comes out the other end."""
        d = self._dir(direction)
        n = len(data)
        if not n:
            return b""
        with d.lock:
            c = d.counts
            c.bytes_in += n
            if d.silent:
                c.silenced += n
                return b""
            r = d.rates
            if not (r.flip or r.drop or r.insert):
                c.bytes_out += n
                return bytes(data)
            u = d.rng.random((n, 5))
            arr = np.frombuffer(bytes(data), dtype=np.uint8).copy()
            keep = u[:, 2] >= r.drop
            flip = (u[:, 0] < r.flip) & keep
            arr[flip] ^= np.left_shift(1, (u[flip, 1] * 8).astype(np.uint8)).astype(np.uint8)
            insert = u[:, 3] < r.insert
            garbage = (u[:, 4] * 256).astype(np.uint8)
            pairs = np.stack([arr, garbage], axis=1).reshape(-1)
            out = pairs[np.stack([keep, insert], axis=1).reshape(-1)].tobytes()
            c.flipped += int(flip.sum())
            c.dropped += int(n - keep.sum())
            c.inserted += int(insert.sum())
            c.bytes_out += len(out)
            return out


# -- in-process pipes ----------------------------------------------------------------------

class _Buffer:
    def __init__(self) -> None:
        self.data = bytearray()
        self.cond = threading.Condition()
        self.closed = False


class PipeEnd:
    """One end of an in-process byte pipe, with the pyserial calls ``Transport`` uses:
    ``read(size)`` honouring ``timeout`` (``None`` blocks, ``0`` does not wait),
    ``write``, ``in_waiting``, ``close``."""

    def __init__(self, name: str, rx: _Buffer, tx: _Buffer, faults: Faults | None,
                 direction: str):
        self.name = name
        self.timeout: float | None = None
        self._rx, self._tx = rx, tx
        self._faults, self._direction = faults, direction
        self.is_open = True

    @property
    def in_waiting(self) -> int:
        return len(self._rx.data)

    @property
    def closed(self) -> bool:
        """Whether this end or the other one was closed."""
        return not self.is_open or self._rx.closed

    def write(self, data: bytes) -> int:
        if not self.is_open:
            raise OSError("pipe end is closed")
        out = self._faults.apply(self._direction, data) if self._faults else bytes(data)
        with self._tx.cond:
            if self._tx.closed:
                raise OSError("pipe disconnected: the other end is closed")
            self._tx.data += out
            self._tx.cond.notify_all()
        return len(data)

    def read(self, size: int = 1) -> bytes:
        rx = self._rx
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        with rx.cond:
            while len(rx.data) < size and not rx.closed and self.is_open:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                rx.cond.wait(left)
            out = bytes(rx.data[:size])
            del rx.data[:size]
        return out

    def reset_input_buffer(self) -> None:
        with self._rx.cond:
            self._rx.data.clear()

    def close(self) -> None:
        self.is_open = False
        for buf in (self._rx, self._tx):
            with buf.cond:
                buf.closed = True
                buf.cond.notify_all()


def pipe_pair(faults: Faults | None = None) -> tuple[PipeEnd, PipeEnd]:
    """``(host end, board end)``: bytes written to the host end go ``up`` (through
    ``faults``) to the board end, bytes written to the board end come ``down``."""
    up, down = _Buffer(), _Buffer()
    host = PipeEnd("pipe:host", rx=down, tx=up, faults=faults, direction="up")
    board = PipeEnd("pipe:board", rx=up, tx=down, faults=faults, direction="down")
    return host, board


class FaultyPort:
    """An open pyserial-like ``port`` (``loop://`` included) behind ``faults``: bytes
    written pass the ``up`` faults, bytes read the ``down`` faults."""

    def __init__(self, port: Any, faults: Faults):
        self._port = port
        self.faults = faults
        self.name = f"faulty:{getattr(port, 'name', None) or getattr(port, 'port', port)}"

    @property
    def timeout(self) -> float | None:
        return self._port.timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self._port.timeout = value

    @property
    def in_waiting(self) -> int:
        return self._port.in_waiting

    @property
    def is_open(self) -> bool:
        return bool(self._port.is_open)

    def write(self, data: bytes) -> int:
        self._port.write(self.faults.apply("up", data))
        return len(data)

    def read(self, size: int = 1) -> bytes:
        return self.faults.apply("down", self._port.read(size))

    def close(self) -> None:
        self._port.close()


# -- the TCP proxy --------------------------------------------------------------------------

class FaultProxy:
    """A TCP proxy on a free loopback port forwarding to ``target`` (``(host, port)`` or
    ``"socket://host:port"``) through ``faults``; one thread per direction and
    connection. A context manager; ``close`` stops it."""

    def __init__(self, target: tuple[str, int] | str, faults: Faults | None = None,
                 host: str = "127.0.0.1"):
        if isinstance(target, str):
            hostport = target.removeprefix("socket://")
            name, _, port = hostport.rpartition(":")
            target = (name, int(port))
        self.target = target
        self.faults = faults or Faults()
        self._server = socket.create_server((host, 0))
        self._server.settimeout(0.05)
        self.host, self.port = self._server.getsockname()[:2]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.connections = 0
        self._accepter = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._accepter.start()

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=2.0)
            except OSError:
                client.close()
                continue
            self.connections += 1
            for s in (client, upstream):
                s.settimeout(0.05)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst, direction in ((client, upstream, "up"), (upstream, client, "down")):
                t = threading.Thread(target=self._pump, args=(src, dst, direction),
                                     name=f"fault-proxy-{direction}", daemon=True)
                self._threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        try:
            while not self._stop.is_set():
                try:
                    data = src.recv(1 << 16)
                except TimeoutError:
                    continue
                if not data:
                    break
                out = self.faults.apply(direction, data)
                if out:
                    dst.sendall(out)
        except OSError:
            pass
        finally:
            for s in (src, dst):  # one side gone: end the connection both ways
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._accepter.join(timeout=1.0)
        for t in self._threads:
            t.join(timeout=1.0)
        with self._lock:
            for s in self._sockets:
                s.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
