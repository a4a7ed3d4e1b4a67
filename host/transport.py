"""The byte stream to a board: a USB-UART, a TCP socket to a simulated board, a loopback.

``Transport(url)`` opens ``url`` with pyserial's ``serial_for_url``, so ``/dev/ttyUSB1``
(a board's USB-UART), ``socket://127.0.0.1:PORT`` (a simulated board or a fault proxy)
and ``loop://`` (bytes written come back) all work; it also wraps an already open
pyserial-like port (``read(size)``, ``write``, ``timeout``, ``in_waiting``, ``close``),
such as the in-process pipe ends of ``host.faults``. ``read`` returns whatever arrived,
waiting at most a timeout for the first byte. Every failure to open, read or write is an
``AcceleratorError`` saying which port and what to check.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Self
from urllib.parse import urlsplit

import serial

from .errors import AcceleratorError

__all__ = ["Transport"]

DEFAULT_BAUD = 3_000_000
READ_CHUNK = 1 << 16


def _open_error(url: str, baud: int, e: BaseException) -> AcceleratorError:
    """One actionable sentence for a port that would not open."""
    if isinstance(e, ValueError) and "protocol" in str(e):
        return AcceleratorError(
            f"{url!r} is not a port bnnhw can open: give a serial device (/dev/ttyUSB1, "
            f"COM3), socket://HOST:PORT for a simulated board, or loop:// for a loopback")
    if isinstance(e, ValueError):
        return AcceleratorError(f"cannot open {url} at {baud} baud ({e}): check the baud "
                                f"rate and the port settings")
    cause = e.__context__ if isinstance(e.__context__, OSError) else e
    code = getattr(cause, "errno", None)
    if url.lower().startswith("socket://"):
        where = url[len("socket://"):]
        if "expected a string in the form" in str(e):
            return AcceleratorError(f"{url!r} is not a socket address: write it "
                                    f"socket://HOST:PORT, for example socket://127.0.0.1:5000")
        if isinstance(cause, ConnectionRefusedError) or code == errno.ECONNREFUSED:
            return AcceleratorError(f"nothing accepts connections at {where} (connection "
                                    f"refused): start the simulated board or the proxy, or "
                                    f"check the host and port in {url}")
        if isinstance(cause, socket.gaierror):
            return AcceleratorError(f"the host name in {url} cannot be resolved: check it, "
                                    f"or give an IP address such as 127.0.0.1")
        if isinstance(cause, (TimeoutError, socket.timeout)):
            return AcceleratorError(f"connecting to {where} timed out: check that the host "
                                    f"is reachable and the port is open")
        return AcceleratorError(f"cannot connect to {where} ({cause}): check the host and "
                                f"port in {url}")
    if code == errno.ENOENT:
        return AcceleratorError(f"serial port {url} does not exist: check that the board is "
                                f"plugged in and powered, and which port it got (ls "
                                f"/dev/ttyUSB* /dev/ttyACM*; FTDI boards often use the "
                                f"second one for the UART)")
    if code in (errno.EACCES, errno.EPERM):
        return AcceleratorError(f"no permission to open serial port {url}: add your user "
                                f"to the group that owns it (dialout or uucp) and log in "
                                f"again")
    if code == errno.EBUSY:
        return AcceleratorError(f"serial port {url} is busy: close the other program "
                                f"using it (a terminal, another bnnhw run)")
    return AcceleratorError(f"cannot open serial port {url} ({cause}): check the port name "
                            f"and that the board is connected")


def _check_socket_url(url: str) -> None:
    if not url.lower().startswith("socket://"):
        return
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise AcceleratorError(f"{url!r} is not a socket address: write it "
                               f"socket://HOST:PORT, for example socket://127.0.0.1:5000")


class Transport:
    """A byte stream to a board (see the module docstring).

    ``url``: a pyserial URL or device name, or an open pyserial-like port object.
    ``baud``: the UART's rate (ignored by sockets and loopbacks). ``timeout``: how long
    ``read`` waits for a first byte unless told otherwise. ``write_timeout``: how long a
    write may block (a stalled link is an error, not a hang).
    """

    def __init__(self, url: str | Any, baud: int = DEFAULT_BAUD, timeout: float = 0.1,
                 write_timeout: float | None = 10.0):
        self.baud = int(baud)
        self.timeout = float(timeout)
        self.bytes_written = 0
        self.bytes_read = 0
        if isinstance(url, str):
            self.url = url
            _check_socket_url(url)
            try:
                self._port = serial.serial_for_url(url, baudrate=self.baud, timeout=timeout,
                                                   write_timeout=write_timeout)
            except (serial.SerialException, ValueError, OSError) as e:
                raise _open_error(url, self.baud, e) from None
            sock = getattr(self._port, "_socket", None)
            if isinstance(sock, socket.socket):  # frames leave at once, as on a UART
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            self._port = url
            self.url = str(getattr(url, "name", None) or getattr(url, "port", None) or url)
            self._port.timeout = timeout
        self._port_timeout: float | None = timeout

    def __repr__(self) -> str:
        return f"Transport({self.url!r}, baud={self.baud})"

    @property
    def port(self) -> Any:
        """The underlying pyserial-like port."""
        return self._port

    @property
    def is_open(self) -> bool:
        return bool(getattr(self._port, "is_open", True))

    def _set_timeout(self, timeout: float) -> None:
        if self._port_timeout != timeout:
            self._port.timeout = timeout
            self._port_timeout = timeout

    def _failed(self, action: str, e: BaseException) -> AcceleratorError:
        text = str(e)
        if "disconnected" in text or "reset by peer" in text or "Broken pipe" in text:
            return AcceleratorError(f"the connection to {self.url} was closed while "
                                    f"{action}: check that the simulated board (or proxy) "
                                    f"is still running")
        return AcceleratorError(f"{action} {self.url} failed ({e}): check that the board is "
                                f"still connected and powered")

    def write(self, data: bytes) -> None:
        """Send all of ``data``."""
        try:
            self._port.write(data)
        except serial.SerialTimeoutException:
            raise AcceleratorError(f"writing to {self.url} stalled: the link does not take "
                                   f"bytes (check the cable, flow control and that the "
                                   f"board is running)") from None
        except (serial.SerialException, OSError) as e:
            raise self._failed("writing to", e) from None
        self.bytes_written += len(data)

    def read(self, max_bytes: int = READ_CHUNK, timeout: float | None = None) -> bytes:
        """What arrived, at most ``max_bytes``: waits up to ``timeout`` (default: the
        transport's) for a first byte, then takes what else is there without waiting;
        ``b""`` if nothing came."""
        wait = self.timeout if timeout is None else max(0.0, float(timeout))
        port = self._port
        try:
            if port.in_waiting:
                self._set_timeout(0)
                data = port.read(max_bytes)
            else:
                self._set_timeout(wait)
                data = port.read(1)
                if data and max_bytes > 1:
                    self._set_timeout(0)
                    data += port.read(max_bytes - 1)
        except (serial.SerialException, OSError) as e:
            raise self._failed("reading from", e) from None
        self.bytes_read += len(data)
        return bytes(data)

    def reset_input(self) -> None:
        """Drop whatever has arrived and not been read."""
        while self.read(READ_CHUNK, 0):
            pass

    def close(self) -> None:
        sock = getattr(self._port, "_socket", None)
        if isinstance(sock, socket.socket):
            # pyserial's socket:// close sleeps 0.3 s "for quick reconnects"; close the
            # socket the same way without the sleep
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
            self._port._socket = None
            self._port.is_open = False
            return
        try:
            self._port.close()
        except (serial.SerialException, OSError):
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
