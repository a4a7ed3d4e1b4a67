"""A Python model of a bnnhw board's link, for the host tests and benches (a fixture).

``ModelBoard(graph, folds)`` is a board built for ``graph``'s design: it identifies with
the design's manifest digest and holds every target memory as words, filled at "power
up" with ``graph``'s values through the same configuration beats a host sends. It speaks
``docs/protocol.md`` the way the gateware will, byte by byte with no look-back:

- it hunts for ``SYNC``, then reads the header; a length above ``max_payload`` is refused
  at once (``NACK`` BAD_LENGTH) and the hunt resumes after the header;
- it reads the payload and CRC; a bad CRC is refused (``NACK`` BAD_CRC with the CRC field
  as received) and the hunt resumes after the frame;
- a frame that stops arriving half-way (no byte for ``frame_timeout_s``) is refused
  (``NACK`` TIMEOUT); an unknown type (responses included) is ``NACK`` UNKNOWN_TYPE; a
  payload that does not fit its type (an image count of 0 or above ``images_per_frame``,
  a length that is not ``count`` images, a target out of range, no beat or beats that
  are not whole, a ``WRITE`` on a design that takes none, a payload on
  IDENTIFY/STATUS/RESET) is ``NACK`` BAD_PAYLOAD; a beat that addresses no memory of its
  target is ignored. NACKs echo the sequence
  byte as received (0 if the header never came) and carry CRC field 0 when the frame
  never got that far;
- every good request is executed in arrival order and answered exactly once, the
  request's CRC first. ``INFER`` results come from ``bnnhw.golden.run`` on the graph
  decoded back from the memories (``bnnhw.packing.words_to_matrix``/``words_to_table``
  and the class-map fields), so a wrong upload gives wrong results. ``RESET`` clears the
  counters and counts itself. Counters: good frames (requests executed), bad frames
  (``NACK``ed, timeouts included), images done, timeouts; ``STATUS`` reports them as
  they were before it.

Served over a loopback TCP socket (``serve_tcp``) or an in-process pipe end
(``attach``), each in a thread. ``power_reset()`` resets the board from outside, as its
reset button would: the frame being received, the bytes waiting in its input and the
counters are gone (the weights stay). Planted faults for the checkers' own tests
(``fault=``): ``"duplicate"`` answers every request twice, ``"reorder"`` sends the
answers of INFER requests in swapped pairs, ``"stale"`` precedes each INFER answer with
a forged one carrying the right sequence number, a wrong request CRC and wrong results,
``"mislabel"`` echoes a wrong request CRC in every INFER answer, ``"drop_write"`` ACKs
the first WRITE without writing it.

Run as a script to serve a design from an IR file: ``python tests/model_board.py --ir
model.ir [--port 0]`` prints the board's URL and serves until killed.
"""

from __future__ import annotations

import binascii
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Self

import numpy as np

from bnnhw import golden, ir
from bnnhw.beats import CFG_BEAT
from bnnhw.folding import Fold, default_folding
from bnnhw.manifest import Manifest
from bnnhw.packing import MemSel, words_to_matrix, words_to_table
from bnnhw.protocol import PROTOCOL_VERSION, SYNC, Counters, Identity, Nack, Op

FAULTS = ("duplicate", "reorder", "stale", "mislabel", "drop_write")
REQUESTS = (Op.IDENTIFY, Op.WRITE, Op.INFER, Op.STATUS, Op.RESET)
BEAT_BYTES = 8
_MASK32 = 0xFFFFFFFF


def frame(op: int, seq: int, payload: bytes) -> bytes:
    body = struct.pack("<BBH", int(op), seq, len(payload)) + payload
    return bytes([SYNC]) + body + struct.pack("<H", binascii.crc_hqx(body, 0xFFFF))


class ModelBoard:
    """A board built for ``graph`` at ``folds`` (module docstring)."""

    def __init__(self, graph: ir.Graph, folds: Mapping[str, Fold] | None = None, *,
                 board: str = "model", clock_hz: int = 100_000_000, baud: int = 3_000_000,
                 writable: bool = True, max_payload: int = 4096, frame_timeout_s: float = 0.02,
                 fault: str | None = None, version: int = PROTOCOL_VERSION):
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, not {fault!r}")
        self.design = graph
        self.folds = dict(folds) if folds is not None else default_folding(graph)
        self.manifest = Manifest.of(graph, self.folds, board=board, clock_hz=clock_hz,
                                    baud=baud, writable=writable, max_payload=max_payload)
        m = self.manifest
        self.identity = Identity(version, writable, m.digest, clock_hz, baud, max_payload,
                                 m.image_bytes, m.result_bytes, m.classes, board)
        self.max_payload = max_payload
        self.frame_timeout_s = frame_timeout_s
        self.fault = fault
        self.lock = threading.RLock()
        self._memories = [{mem.sel: [0] * mem.depth for mem in t.memories}
                          for t in m.targets]
        self._generation = 0
        for index in range(len(m.targets)):  # power up with the build's values
            self._write(index, m.target_beats(graph, index))
        self._graph: ir.Graph | None = None
        self._graph_generation = -1
        self._cache: OrderedDict[tuple[int, bytes], bytes] = OrderedDict()
        self._rx = bytearray()
        self._in_frame = False
        self._last_rx = 0.0
        self._held: tuple[bytes, float] | None = None
        self._flush_input = False
        self._dropped_write = False
        self.good = self.bad = self.images = self.timeouts = 0
        self.requests: list[tuple[int, int, int]] = []  # (op, seq, crc) of each one executed
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: socket.socket | None = None

    # -- memories -------------------------------------------------------------------------

    def _write(self, index: int, beats: list[int]) -> None:
        target = self.manifest.targets[index]
        widths = {mem.sel: mem.width for mem in target.memories}
        mems = self._memories[index]
        mem_of = {mem.sel: mem for mem in target.memories}
        for beat in beats:
            f = CFG_BEAT.from_bits(beat)
            mem = mem_of.get(f["sel"])
            if mem is None or f["addr"] >= mem.depth or f["chunk"] * 32 >= mem.width:
                continue  # as in the gateware: a beat that addresses no memory is ignored
            words, shift = mems[f["sel"]], 32 * f["chunk"]
            word = words[f["addr"]] & ~(_MASK32 << shift)
            words[f["addr"]] = (word | (f["data"] << shift)) & ((1 << widths[f["sel"]]) - 1)
        self._generation += 1

    def graph(self) -> ir.Graph:
        """The graph the memories hold now (the design's topology, its values decoded
        from the memory words)."""
        if self._graph is not None and self._graph_generation == self._generation:
            return self._graph
        folds = self.manifest.doc["folding"]
        nodes = list(self.design.nodes)
        for index, target in enumerate(self.manifest.targets):
            mems = self._memories[index]
            if target.kind == "classes":
                last: ir.Dense = nodes[-1]  # type: ignore[assignment]
                sb, ob = self.manifest.doc["class_map"]
                words = mems[int(MemSel.CLASSES)]
                scale = np.array([w & ((1 << sb) - 1) for w in words], np.int64)
                off = np.array([(w >> sb) & ((1 << ob) - 1) for w in words], np.int64)
                off = np.where(off >> (ob - 1), off - (1 << ob), off)
                nodes[-1] = last.replace(class_scale=scale, class_offset=off)
                continue
            i = next(k for k, n in enumerate(nodes) if n.name == target.name)
            node: ir.Conv | ir.Dense = nodes[i]  # type: ignore[assignment]
            pe, simd = folds[target.name]["pe"], folds[target.name]["simd"]
            changes = {"weights": words_to_matrix(mems[int(MemSel.WEIGHTS)], node.rows,
                                                  node.cols, pe, simd).astype(np.uint8)}
            if node.thresholded:
                t = words_to_table(mems[int(MemSel.THRESHOLDS)], node.thresholds.shape, pe,
                                   node.threshold_bits, signed=node.threshold_min < 0)
                # the hardware compares acc >= T: a T beyond the reachable range acts as
                # the range's end, which is what the IR stores
                changes["thresholds"] = np.clip(t, node.threshold_min, node.threshold_max)
            nodes[i] = node.replace(**changes)
        self._graph = ir.Graph(tuple(nodes), self.design.meta)
        self._graph_generation = self._generation
        return self._graph

    # -- the protocol -----------------------------------------------------------------------

    def counters(self) -> Counters:
        return Counters(self.good & _MASK32, self.bad & _MASK32, self.images & _MASK32,
                        self.timeouts & _MASK32)

    def receive(self, data: bytes, now: float | None = None) -> bytes:
        """Take ``data`` off the wire; the bytes the board sends back."""
        now = time.monotonic() if now is None else now
        with self.lock:
            out = self.tick(now)
            if data:
                self._rx += data
                self._last_rx = now
            return out + self._parse()

    def tick(self, now: float | None = None) -> bytes:
        """Time passing: a stalled half-frame times out, a held answer leaves."""
        now = time.monotonic() if now is None else now
        out = b""
        with self.lock:
            if self._in_frame and now - self._last_rx > self.frame_timeout_s:
                seq = self._rx[1] if len(self._rx) >= 2 else 0
                self._rx.clear()
                self._in_frame = False
                self.timeouts += 1
                self.bad += 1
                out += self._nack(Nack.TIMEOUT, seq, 0)
            if self._held is not None and now - self._held[1] > 2 * self.frame_timeout_s:
                out += self._held[0]
                self._held = None
        return out

    def _parse(self) -> bytes:
        out = []
        rx = self._rx
        while True:
            if not self._in_frame:
                start = rx.find(SYNC)
                if start < 0:
                    rx.clear()
                    break
                del rx[:start + 1]
                self._in_frame = True
            if len(rx) < 4:
                break
            op, seq, length = struct.unpack_from("<BBH", rx)
            if length > self.max_payload:
                del rx[:4]
                self._in_frame = False
                self.bad += 1
                out.append(self._nack(Nack.BAD_LENGTH, seq, 0))
                continue
            if len(rx) < 4 + length + 2:
                break
            body = bytes(rx[:4 + length])
            crc = struct.unpack_from("<H", rx, 4 + length)[0]
            del rx[:4 + length + 2]
            self._in_frame = False
            if binascii.crc_hqx(body, 0xFFFF) != crc:
                self.bad += 1
                out.append(self._nack(Nack.BAD_CRC, seq, crc))
                continue
            out.append(self._execute(op, seq, body[4:], crc))
        return b"".join(out)

    def _nack(self, reason: Nack, seq: int, crc: int) -> bytes:
        return frame(Op.NACK, seq, bytes([reason]) + struct.pack("<H", crc))

    def _refuse(self, reason: Nack, seq: int, crc: int) -> bytes:
        self.bad += 1
        return self._nack(reason, seq, crc)

    def _execute(self, op: int, seq: int, payload: bytes, crc: int) -> bytes:
        echo = struct.pack("<H", crc)
        m = self.manifest
        if op not in REQUESTS:
            return self._refuse(Nack.UNKNOWN_TYPE, seq, crc)
        if op in (Op.IDENTIFY, Op.STATUS, Op.RESET) and payload:
            return self._refuse(Nack.BAD_PAYLOAD, seq, crc)
        if op == Op.WRITE:
            if (not self.identity.writable or len(payload) <= BEAT_BYTES
                    or payload[0] >= len(m.targets) or (len(payload) - 1) % BEAT_BYTES):
                return self._refuse(Nack.BAD_PAYLOAD, seq, crc)
            beats = [int.from_bytes(payload[i:i + BEAT_BYTES], "little")
                     for i in range(1, len(payload), BEAT_BYTES)]
            self._count(op, seq, crc)
            if self.fault == "drop_write" and not self._dropped_write and beats:
                self._dropped_write = True
            else:
                self._write(payload[0], beats)
            return self._answer(Op.ACK, seq, echo, crc)
        if op == Op.INFER:
            count = payload[0] if payload else 0
            if not 1 <= count <= m.images_per_frame or len(payload) != 1 + count * m.image_bytes:
                return self._refuse(Nack.BAD_PAYLOAD, seq, crc)
            self._count(op, seq, crc)
            self.images += count
            results = self._infer(payload[1:], count)
            return self._answer(Op.RESULTS, seq, echo + bytes([count]) + results, crc)
        if op == Op.STATUS:  # the snapshot is taken before the STATUS itself counts
            snapshot = self.counters().pack()
            self._count(op, seq, crc)
            return self._answer(Op.COUNTERS, seq, echo + snapshot, crc)
        if op == Op.IDENTIFY:
            self._count(op, seq, crc)
            return self._answer(Op.IDENTITY, seq, echo + self.identity.pack(), crc)
        self.good = self.bad = self.images = self.timeouts = 0  # RESET counts itself
        self._count(op, seq, crc)
        return self._answer(Op.ACK, seq, echo, crc)

    def _count(self, op: int, seq: int, crc: int) -> None:
        self.good += 1
        self.requests.append((op, seq, crc))

    def _infer(self, data: bytes, count: int) -> bytes:
        key = (self._generation, data)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        m = self.manifest
        h, w, c = m.doc["image"]["shape"]
        raw = np.frombuffer(data, np.uint8).reshape(count, -1)
        if m.binary_image:  # one bit per pixel channel: 255 is above, 0 below any threshold
            bits = np.unpackbits(raw, axis=1, bitorder="little")[:, :m.image_values]
            pixels = bits.astype(np.int64) * 255
        else:
            pixels = raw.astype(np.int64)
        images = np.moveaxis(pixels.reshape(count, h, w, c), -1, 1)
        res = golden.run(self.graph(), images)
        scores, classes = res.scores.numpy(), res.classes.numpy()
        out = b"".join(m.encode_result(s, k) for s, k in zip(scores, classes))
        self._cache[key] = out
        if len(self._cache) > 4096:
            self._cache.popitem(last=False)
        return out

    def _answer(self, op: Op, seq: int, payload: bytes, crc: int) -> bytes:
        good = frame(op, seq, payload)
        infer = op == Op.RESULTS
        if self.fault == "duplicate":
            return good + good
        if self.fault == "mislabel" and infer:
            return frame(op, seq, struct.pack("<H", crc ^ 0x0101) + payload[2:])
        if self.fault == "stale" and infer:
            m = self.manifest
            rb, n = m.result_bytes, payload[2]
            wrong = b"".join(m.encode_result([0] * m.classes, (i + 1) % m.classes)
                             for i in range(n))
            assert len(wrong) == n * rb
            forged = frame(op, seq, struct.pack("<H", crc ^ 0x5A5A) + payload[2:3] + wrong)
            return forged + good
        if self.fault == "reorder" and infer:
            if self._held is None:
                self._held = (good, time.monotonic())
                return b""
            held, self._held = self._held[0], None
            return good + held
        return good

    def power_reset(self) -> None:
        """Reset from outside (module docstring)."""
        with self.lock:
            self._rx.clear()
            self._in_frame = False
            self._held = None
            self._flush_input = True
            self.good = self.bad = self.images = self.timeouts = 0

    # -- serving ----------------------------------------------------------------------------

    def _serve(self, recv: Callable[[float], bytes | None], send: Callable[[bytes], None],
               poll: float) -> None:
        while not self._stop.is_set():
            data = recv(poll)
            if data is None:
                return
            if self._flush_input:
                while data:  # the input FIFO is gone with the reset
                    data = recv(0)
                self._flush_input = False
                continue
            out = self.receive(data) if data else self.tick()
            if out:
                try:
                    send(out)
                except OSError:
                    return

    def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on a loopback TCP port (one connection at a time); return its URL."""
        self._server = socket.create_server((host, port))
        self._server.settimeout(0.05)
        poll = min(0.005, self.frame_timeout_s / 4)

        def accept_loop() -> None:
            while not self._stop.is_set():
                try:
                    conn, _ = self._server.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # like a UART
                with self.lock:
                    self._rx.clear()
                    self._in_frame = False

                def recv(timeout: float, conn: socket.socket = conn) -> bytes | None:
                    conn.settimeout(timeout if timeout > 0 else 0.0)
                    try:
                        data = conn.recv(1 << 16)
                    except (TimeoutError, BlockingIOError):
                        return b""
                    except OSError:
                        return None
                    return data or None

                self._serve(recv, conn.sendall, poll)
                conn.close()

        self._start(accept_loop)
        h, p = self._server.getsockname()[:2]
        return f"socket://{h}:{p}"

    def attach(self, end) -> None:
        """Serve on an in-process pipe end (``host.faults.pipe_pair``)."""
        poll = min(0.005, self.frame_timeout_s / 4)

        def recv(timeout: float) -> bytes | None:
            if end.closed:
                return None
            end.timeout = timeout
            data = end.read(1)
            if data:
                end.timeout = 0
                data += end.read(max(0, end.in_waiting))
            return data

        self._start(lambda: self._serve(recv, end.write, poll))

    def _start(self, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name="model-board", daemon=True)
        self._threads.append(t)
        t.start()

    def close(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()
        for t in self._threads:
            t.join(timeout=2.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def random_images(graph: ir.Graph, count: int, seed: int = 0) -> np.ndarray:
    """``count`` uniformly random 8-bit images ``[count, C, H, W]`` for ``graph``."""
    h, w, c = graph.input.shape
    return np.random.default_rng(seed).integers(0, 256, (count, c, h, w), dtype=np.uint8)


def expected(graph: ir.Graph, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, classes)`` of the golden model."""
    res = golden.run(graph, images)
    return res.scores.numpy(), res.classes.numpy()


def silent_server() -> tuple[str, Callable[[], None]]:
    """A TCP server that takes connections and bytes and never answers: ``(url, stop)``."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.settimeout(0.05)
                conns.append(conn)
            except TimeoutError:
                pass
            except OSError:
                return
            for c in conns:
                try:
                    c.recv(1 << 16)
                except OSError:
                    pass

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def close() -> None:
        stop.set()
        t.join(timeout=2.0)
        server.close()
        for c in conns:
            c.close()

    return f"socket://127.0.0.1:{server.getsockname()[1]}", close


def main() -> None:
    import argparse
    import sys

    import torch

    parser = argparse.ArgumentParser(description="Serve a model board over TCP.")
    parser.add_argument("--ir", required=True, help="the design's IR file")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-payload", type=int, default=4096)
    parser.add_argument("--board", default="model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    board = ModelBoard(ir.load_graph(args.ir), board=args.board, max_payload=args.max_payload)
    print(board.serve_tcp(port=args.port), flush=True)
    try:
        sys.stdin.read()  # until the parent closes our stdin (or kills us)
    finally:
        board.close()


if __name__ == "__main__":
    main()
