# amaranth: UnusedElaboratable=no
"""The simulated board (sim.board.SimBoard): a design's byte stream on a loopback socket.

One small design, built once: ``Echo`` puts every byte it receives through a FIFO and
sends it back plus its index in everything it has received since reset, so the answer
depends on state kept across connections. Bytes go over real sockets (and pyserial's
``socket://`` URL) through several connections; the server stops on SIGTERM and when
the process that started it dies; an idle server costs no CPU; pacing slows the link;
a port in use and a design without the ports are refused clearly.
"""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import serial
from amaranth import Module, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from sim.board import SimBoard, SimBoardError

REPO = Path(__file__).resolve().parents[2]


class Echo(wiring.Component):
    """rx -> FIFO -> tx, each byte sent back as (byte + its index since reset) mod 256;
    ``busy`` while the FIFO holds bytes."""

    rx: In(stream.Signature(8))
    tx: Out(stream.Signature(8))
    busy: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = q = fifo.SyncFIFOBuffered(width=8, depth=16)
        count = Signal(8)
        m.d.comb += [q.w_data.eq(self.rx.payload + count), q.w_en.eq(self.rx.valid),
                     self.rx.ready.eq(q.w_rdy),
                     self.tx.payload.eq(q.r_data), self.tx.valid.eq(q.r_rdy),
                     q.r_en.eq(self.tx.ready), self.busy.eq(q.r_level != 0)]
        with m.If(self.rx.valid & self.rx.ready):
            m.d.sync += count.eq(count + 1)
        return m


def expected(data: bytes, start: int) -> bytes:
    return bytes((b + start + i) % 256 for i, b in enumerate(data))


def round_trip(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data`` while reading the answer (so neither side's buffers fill up)."""
    sock.setblocking(False)
    got, sent = bytearray(), 0
    deadline = time.monotonic() + 30
    while len(got) < len(data):
        assert time.monotonic() < deadline, f"{len(got)} of {len(data)} bytes came back"
        if sent < len(data):
            try:
                sent += sock.send(data[sent:sent + 65536])
            except BlockingIOError:
                pass
        try:
            chunk = sock.recv(65536)
            assert chunk, "the board closed the connection"
            got += chunk
        except BlockingIOError:
            time.sleep(0.0005)
    return bytes(got)


def gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether process ``pid`` ends (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in "ZX":
            return True
        time.sleep(0.05)
    return False


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def board():
    with SimBoard(Echo()) as b:
        yield b


def test_bytes_come_back_transformed_through_several_connections(board):
    import random

    rng = random.Random(0)
    start = 0
    assert board.url == f"socket://127.0.0.1:{board.port}"
    for size in (1, 300, 20_000):
        data = bytes(rng.getrandbits(8) for _ in range(size))
        with socket.create_connection(("127.0.0.1", board.port), timeout=10) as sock:
            assert round_trip(sock, data) == expected(data, start)
        start += size
    # pyserial, as a host driver would open it; the design's count goes on.
    with serial.serial_for_url(board.url, timeout=10) as port:
        port.write(b"hello")
        assert port.read(5) == expected(b"hello", start)


def test_idle_board_costs_no_cpu(board):
    with socket.create_connection(("127.0.0.1", board.port), timeout=10) as sock:
        round_trip(sock, b"x" * 100)
        before = cpu_seconds(board.pid)
        time.sleep(1.0)                       # connected and idle
        assert cpu_seconds(board.pid) - before < 0.1


def test_sigterm_stops_it_and_it_reports():
    b = SimBoard(Echo())
    with socket.create_connection(("127.0.0.1", b.port), timeout=10) as sock:
        assert round_trip(sock, bytes(1000)) == expected(bytes(1000), 0)
    os.kill(b.pid, signal.SIGTERM)
    assert gone(b.pid)
    stats = b.stop()
    assert stats is not None and (stats.rx_bytes, stats.tx_bytes) == (1000, 1000)
    assert stats.cycles >= 1000 and stats.cycles_per_second > 0


def test_pacing_spaces_the_bytes():
    with SimBoard(Echo(), cycles_per_byte=100) as b, \
            socket.create_connection(("127.0.0.1", b.port), timeout=10) as sock:
        assert round_trip(sock, bytes(range(200))) == expected(bytes(range(200)), 0)
    assert b.stats is not None and b.stats.cycles >= 100 * 199


def test_parent_death_stops_it():
    """A Python process starts a board and is killed (no chance to clean up): the board
    goes with it."""
    code = textwrap.dedent("""
        import time
        from sim.board import SimBoard
        from tests.sim.test_board import Echo
        board = SimBoard(Echo())
        print(board.pid, flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env,
                              cwd=os.getcwd(), text=True)
    try:
        pid = int(parent.stdout.readline())
    finally:
        parent.kill()
        parent.wait()
    assert gone(pid), "the board outlived the process that started it"


def test_port_in_use_and_bad_design_are_refused(board):
    with pytest.raises(SimBoardError, match=rf"cannot listen on 127.0.0.1:{board.port}"):
        SimBoard(Echo(), port=board.port)
    with pytest.raises(ValueError, match="Lamp has no rx, tx, busy port"):
        SimBoard(Lamp())
    with pytest.raises(ValueError, match="not an Amaranth component"):
        SimBoard(Module())


class Lamp(wiring.Component):
    light: Out(1)

    def elaborate(self, platform):
        return Module()
