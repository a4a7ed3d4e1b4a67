"""A simulated board: a design's byte stream served on a loopback TCP socket.

``SimBoard(design)`` builds the design with the C++ server ``sim/harness/board_main.cpp``
(``sim.verilator.verilator_exe_build``, cached by design hash) and starts it: it listens
on ``127.0.0.1:port`` and moves the bytes a client sends into the design's ``rx`` stream
and the design's ``tx`` bytes back to the client, clocking the model freely while there is
work and sleeping in ``poll()`` when there is none. A host driver talks to it as to a
board on a serial line, e.g. ``serial.serial_for_url(board.url)`` (pyserial's
``socket://`` URL).

The design's ports: ``clk``, ``rst`` (synchronous, active high), ``rx__payload[7:0]`` /
``rx__valid`` / ``rx__ready`` (bytes in), ``tx__payload[7:0]`` / ``tx__valid`` /
``tx__ready`` (bytes out) and ``busy`` (1 while it has work in flight): an Amaranth
component with members ``rx: In(stream.Signature(8))``, ``tx: Out(stream.Signature(8))``,
``busy: Out(1)``, or Verilog text with those ports.

One client at a time; when it disconnects the design keeps its state and the next one is
served. Bytes the design sends while no client is connected are dropped (nobody is at the
other end of the line). ``cycles_per_byte`` paces both directions like a UART (at most one
byte per that many cycles; 333 at 100 MHz is 3 Mbaud), so the cycles a transfer takes
are those of the real link.

The server stops on SIGINT/SIGTERM and when the Python process that started it exits
(``PR_SET_PDEATHSIG``, plus a ``getppid()`` check). Linux delivers that signal when the
*thread* that started it ends: start a board from a thread that outlives it (the main
thread, typically). ``stop()`` (also on leaving a ``with`` block, and at interpreter exit)
terminates it and waits, killing it if it does not stop in time.
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

from sim.verilator import HARNESS_DIR, VerilatorBuild, verilator_exe_build

__all__ = ["BOARD_MAIN", "BoardStats", "SimBoard", "SimBoardError"]

BOARD_MAIN = HARNESS_DIR / "board_main.cpp"
START_TIMEOUT_S = 30.0   # from process start to the "listening on" line
STOP_TIMEOUT_S = 5.0     # from SIGTERM to exit, before SIGKILL
PORTS = ("rx", "tx", "busy")


class SimBoardError(RuntimeError):
    """The simulated board could not be started; the message carries its output."""


@dataclass(frozen=True)
class BoardStats:
    """What a stopped board did: cycles clocked, the wall time spent clocking them, and
    the bytes that entered ``rx`` and left ``tx``."""

    cycles: int
    busy_seconds: float
    rx_bytes: int
    tx_bytes: int

    @property
    def cycles_per_second(self) -> float:
        return self.cycles / self.busy_seconds if self.busy_seconds > 0 else float("inf")


def _check_ports(design) -> None:
    members = getattr(getattr(design, "signature", None), "members", None)
    if members is None:
        raise ValueError(f"{type(design).__name__} is not an Amaranth component or Verilog "
                         "text")
    missing = [p for p in PORTS if p not in members]
    if missing:
        raise ValueError(f"{type(design).__name__} has no {', '.join(missing)} port(s): a "
                         "simulated board needs rx: In(stream.Signature(8)), "
                         "tx: Out(stream.Signature(8)) and busy: Out(1)")


class SimBoard:
    """A running simulated board (see the module doc). ``port`` 0 takes any free port.

    Attributes: ``port``, ``url`` (``socket://127.0.0.1:PORT``), ``pid``, ``build`` (the
    ``VerilatorBuild``) and, once stopped, ``stats`` (``BoardStats``, or None when the
    server did not report). Raises ``ValueError`` for a design without the ports,
    ``sim.verilator.VerilatorBuildError`` when the build fails and ``SimBoardError`` when
    the server does not come up (the port is taken, it crashed).
    """

    def __init__(self, design, port: int = 0, cycles_per_byte: int = 0, *,
                 toplevel: str = "top", build_args: Sequence[str] = (),
                 start_timeout: float = START_TIMEOUT_S):
        if not 0 <= port <= 65535 or cycles_per_byte < 0:
            raise ValueError(f"port must be 0..65535 and cycles_per_byte >= 0, not {port} "
                             f"and {cycles_per_byte}")
        if not isinstance(design, str):
            _check_ports(design)
        self.stats: BoardStats | None = None
        self._proc: subprocess.Popen | None = None
        self.build: VerilatorBuild = verilator_exe_build(design, BOARD_MAIN, toplevel=toplevel,
                                                         build_args=build_args)
        # stderr to a file: a pipe nobody reads could fill up and stall the server.
        self._err = tempfile.TemporaryFile()   # noqa: SIM115 (closed by stop())
        self._proc = subprocess.Popen(
            [str(self.build.executable), "--port", str(port),
             "--cycles-per-byte", str(cycles_per_byte)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._err)
        atexit.register(self.stop)
        try:
            self.port = self._wait_listening(start_timeout)
        except BaseException:
            self.stop()
            raise
        self.url = f"socket://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def _wait_listening(self, timeout: float) -> int:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, left))
            if not ready:
                raise SimBoardError(f"simulated board did not start within {timeout:.0f} s"
                                    f"{self._stderr_tail()}")
            chunk = os.read(proc.stdout.fileno(), 1)     # just the first line
            if not chunk:
                code = proc.wait()
                raise SimBoardError(f"simulated board exited at start (status {code})"
                                    f"{self._stderr_tail()}")
            line += chunk
        text = line.decode(errors="replace").strip()
        prefix = "listening on 127.0.0.1:"
        if not text.startswith(prefix):
            raise SimBoardError(f"simulated board said {text!r}, not {prefix}PORT")
        return int(text[len(prefix):])

    def _stderr_tail(self) -> str:
        self._err.seek(0)
        text = self._err.read().decode(errors="replace").strip()
        return f": {text[-2000:]}" if text else ""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> BoardStats | None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``) and return its stats.
        Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return self.stats
        atexit.unregister(self.stop)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        self._err.close()
        self.stats = _parse_stats(out.decode(errors="replace"))
        return self.stats

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None:
            self.stop()


def _parse_stats(text: str) -> BoardStats | None:
    """The server's last line: "stopped: cycles C busy_seconds S rx_bytes R tx_bytes T"."""
    for line in reversed(text.splitlines()):
        if line.startswith("stopped:"):
            words = line.split()[1:]
            values = dict(zip(words[::2], words[1::2], strict=False))
            try:
                return BoardStats(int(values["cycles"]), float(values["busy_seconds"]),
                                  int(values["rx_bytes"]), int(values["tx_bytes"]))
            except (KeyError, ValueError):
                return None
    return None

