"""The host driver: identify a board, load a model's weights, run images, read counters.

``Accelerator(transport)`` speaks ``docs/protocol.md`` over a ``host.transport.Transport``:

- ``identify()``: the board's ``Identity`` (design digest, clock, baud, limits, name);
- ``check(manifest)``: refuses a board whose design digest is not ``manifest``'s, naming
  both designs and what differs where the identity tells;
- ``load(model, folds=None)``: a ``bnnhw.ir.Graph``, an IR file or a ``.pt`` checkpoint;
  computes its ``Manifest`` for the identified board, checks it, and writes every
  target's configuration beats in ``WRITE`` frames of at most ``max_payload`` bytes;
- ``infer(images)``: ``(scores int64 [N, classes], classes int64 [N])`` of 8-bit images
  ``[N, C, H, W]``, sent in ``INFER`` frames of up to ``images_per_frame`` images;
- ``status()`` (the board's ``Counters``) and ``reset()``.

Delivery (``_deliver``): up to ``window`` requests are in flight, so the link stays busy.
Each answer is matched to its request by sequence number *and* the request CRC it
echoes; the first good answer of a request is taken, later ones are dropped (counted as
duplicates, or as stale when they match no request the host sent under that number).
A ``NACK`` is answered at once by resending the request it names (found by the CRC field
it echoes, else by its sequence number) with the same sequence number and bytes. The
board executes requests in order, so an answer to a request sent after another that is
still unanswered means the earlier one (or its answer) was lost: it is resent at once.
When nothing has been answered for ``timeout_s`` (plus the frames' time on the wire at
the board's baud rate), the oldest unanswered request is resent, then the others.
Results are placed by image index, so they come back in request order whatever order
the answers took. After ``max_retries`` resends of one request the driver raises
``AcceleratorError`` saying what to check. On a noisy link, an ``INFER`` frame that
failed ``split_after`` times is replaced by two of half the images (new sequence numbers;
a late answer to the old one is dropped), and new frames carry fewer images until
answers come back first time again (``adapt``).

Torch-free and amaranth-free: a ``.pt`` checkpoint is compiled by ``bnnhw.frontend``,
imported only when one is given.
"""

from __future__ import annotations

import binascii
import os
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np

from bnnhw import ir
from bnnhw.folding import Fold, default_folding, load_folding, matrix_layers
from bnnhw.manifest import Manifest
from bnnhw.protocol import (
    CRC_BYTES,
    MAX_LENGTH,
    PROTOCOL_VERSION,
    SYNC,
    Counters,
    Frame,
    FrameDecoder,
    Identity,
    Nack,
    Op,
    frame_overhead,
)

from .errors import AcceleratorError
from .transport import Transport

__all__ = ["Accelerator", "LinkStats", "build_frame"]

ANSWER = {Op.IDENTIFY: Op.IDENTITY, Op.WRITE: Op.ACK, Op.INFER: Op.RESULTS,
          Op.STATUS: Op.COUNTERS, Op.RESET: Op.ACK}
BEAT_BYTES = 8
READ_CHUNK = 1 << 16
IDENTITY_MAX = 2 + Identity._FIXED.size + 1 + 255  # an IDENTITY payload, longest name
IDENTIFY_RETRIES = 3
GROW_AFTER = 8  # answers that came first time before frames grow by half
_NACK_WHY = {Nack.BAD_CRC: "bad CRC", Nack.BAD_LENGTH: "length above max_payload",
             Nack.UNKNOWN_TYPE: "unknown type", Nack.BAD_PAYLOAD: "payload that does not fit",
             Nack.TIMEOUT: "frame stopped half-way"}


def build_frame(op: int, seq: int, payload: bytes = b"") -> tuple[bytes, int]:
    """``(frame bytes, CRC)``: the bytes of ``bnnhw.protocol.encode_frame`` (the same
    CRC-16/CCITT-FALSE, computed by ``binascii.crc_hqx``)."""
    body = struct.pack("<BBH", int(op), seq, len(payload)) + bytes(payload)
    crc = binascii.crc_hqx(body, 0xFFFF)
    return bytes([SYNC]) + body + struct.pack("<H", crc), crc


def _nack_why(reason: int) -> str:
    try:
        return _NACK_WHY[Nack(reason)]
    except ValueError:
        return f"reason {reason}"


@dataclass
class LinkStats:
    """What the link carried and what it took (``Accelerator.stats``)."""

    requests: int = 0        # distinct requests issued
    frames_sent: int = 0     # request frames written, resends included
    bytes_written: int = 0
    bytes_read: int = 0
    images: int = 0          # images inferred
    image_bytes: int = 0     # their bytes on the wire, each image counted once
    retries: int = 0         # resends, all reasons
    nacks: int = 0           # NACK frames received
    timeouts: int = 0        # times nothing was answered for the timeout
    gap_resends: int = 0     # resends because a later request was answered first
    duplicates: int = 0      # answers to requests already answered (or replaced), dropped
    stale: int = 0           # answers matching no request in flight, dropped
    malformed: int = 0       # answers of the right request that did not fit it
    splits: int = 0          # INFER frames replaced by two smaller ones
    seconds: float = 0.0     # time spent in infer

    @property
    def link_efficiency(self) -> float:
        """Image bytes / bytes written (frame overhead, writes and resends included)."""
        return self.image_bytes / self.bytes_written if self.bytes_written else 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return (f"{self.images} images in {self.seconds:.3f} s ({self.images_per_s:.0f}/s), "
                f"{self.bytes_written} bytes written, {self.bytes_read} read, link "
                f"efficiency {100 * self.link_efficiency:.1f}%, {self.retries} retries "
                f"({self.nacks} NACKs, {self.timeouts} timeouts, {self.gap_resends} gaps), "
                f"{self.duplicates} duplicates and {self.stale} stale answers dropped, "
                f"{self.malformed} malformed, {self.splits} splits")


@dataclass(eq=False)
class _Request:
    op: Op
    payload: bytes
    start: int = 0            # INFER: first image and image count
    count: int = 0
    seq: int = -1
    crc: int = 0
    frame: bytes = b""
    sends: int = 0
    first_tx: int = -1        # transmission numbers (one counter for the whole link)
    last_tx: int = -1
    last_sent: float = 0.0
    failure: str = ""         # why the last attempt failed
    nack: int = 0             # the last NACK reason, if any
    echo_mismatches: int = 0  # answers with its sequence number but another CRC


class Accelerator:
    """A bnnhw board behind ``transport`` (see the module docstring).

    ``window``: requests in flight (1..128). ``timeout_s``: silence after which the
    unanswered requests are resent. ``max_retries``: resends of one request before
    giving up. ``batch``: most images per ``INFER`` frame (default: as many as fit).
    ``adapt``: fewer images per frame while frames get lost, ``split_after``: attempts
    of a multi-image frame before it is split.
    """

    def __init__(self, transport: Transport, window: int = 16, timeout_s: float = 0.5,
                 max_retries: int = 16, batch: int | None = None, adapt: bool = True,
                 split_after: int = 2):
        if not 1 <= window <= 128:
            raise ValueError(f"window must lie in 1..128, not {window}")
        if max_retries < 0 or timeout_s <= 0:
            raise ValueError("max_retries must be >= 0 and timeout_s > 0")
        if batch is not None and not 1 <= batch <= 255:
            raise ValueError(f"batch must lie in 1..255, not {batch}")
        self.transport = transport
        self.window = window
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.batch = batch
        self.adapt = adapt
        self.split_after = max(2, int(split_after))
        self.identity: Identity | None = None
        self.manifest: Manifest | None = None
        self.graph: ir.Graph | None = None
        self.stats = LinkStats()
        self._decoder = FrameDecoder(MAX_LENGTH)
        self._seq = 0
        self._tx = 0
        self._frames_seen = 0
        self._last_progress = 0.0
        self._answered: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._outbox: list[_Request] = []
        self._size: dict[Op, int] = {}   # images (INFER) or beats (WRITE) per new frame
        self._streak = 0

    @classmethod
    def open(cls, url: str, baud: int = 3_000_000, **kwargs: Any) -> Accelerator:
        """An accelerator on a new ``Transport(url, baud)``."""
        return cls(Transport(url, baud), **kwargs)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset_stats(self) -> None:
        self.stats = LinkStats()

    # -- requests ---------------------------------------------------------------------------

    def identify(self) -> Identity:
        """Ask the board what it is (``AcceleratorError`` if it never answers)."""
        got: list[Identity] = []

        def accept(req: _Request, frame: Frame) -> str | None:
            try:
                got.append(Identity.unpack(frame.payload[CRC_BYTES:]))
            except ValueError as e:
                return str(e)
            return None

        self._deliver(_one(_Request(Op.IDENTIFY, b"")), accept,
                      retries=min(self.max_retries, IDENTIFY_RETRIES))
        ident = got[0]
        if ident.version != PROTOCOL_VERSION:
            raise AcceleratorError(f"board {ident.board!r} at {self.transport.url} speaks "
                                   f"link protocol version {ident.version} and this host "
                                   f"version {PROTOCOL_VERSION}: update bnnhw or rebuild the "
                                   f"bitstream so they match")
        self.identity = ident
        self._decoder.max_length = max(ident.max_payload, IDENTITY_MAX)
        return ident

    def check(self, manifest: Manifest) -> None:
        """Refuse (``AcceleratorError``) unless the board runs ``manifest``'s design; on
        success, ``infer`` uses ``manifest``'s image and result formats."""
        self._check(manifest)
        self.manifest = manifest

    def _check(self, manifest: Manifest) -> Identity:
        ident = self.identity or self.identify()
        if manifest.digest == ident.manifest_hash:
            return ident
        doc = manifest.doc
        seen = [("board", "board name", ident.board, doc["board"]),
                ("clock_hz", "clock (Hz)", ident.clock_hz, doc["clock_hz"]),
                ("baud", "baud", ident.baud, doc["baud"]),
                ("max_payload", "max_payload", ident.max_payload, doc["max_payload"]),
                ("writable", "writable", ident.writable, doc["writable"]),
                ("image", "image bytes", ident.image_bytes, manifest.image_bytes),
                ("classes", "classes", ident.classes, manifest.classes),
                ("score_width", "result bytes", ident.result_bytes, manifest.result_bytes)]
        diffs = [f"{label} {theirs} on the board, {ours} for the model ('{key}')"
                 for key, label, theirs, ours in seen if theirs != ours]
        where = ("they differ in " + "; ".join(diffs)) if diffs else (
            "the board states the same name, clock, link and formats, so they differ in "
            "topology, folding or weight layout")
        raise AcceleratorError(
            f"board {ident.board!r} at {self.transport.url} runs design "
            f"{ident.manifest_hash.hex()} but the model's design is {manifest.digest.hex()} "
            f"({_describe(doc)}): {where}; load a model of the board's topology and folding, "
            f"or build and load a bitstream for this one")

    def load(self, model: ir.Graph | str | os.PathLike[str],
             folds: Mapping[str, Fold] | str | os.PathLike[str] | None = None,
             progress: Callable[[int, int], None] | None = None) -> Manifest:
        """Write ``model``'s weights, thresholds and class map into the board; return its
        manifest. ``model``: a lowered ``Graph``, an IR file or a ``.pt`` checkpoint;
        ``folds``: the design's folding (a mapping or a folding file; default
        ``default_folding``). ``progress(beats written, beats)`` after each write. A
        design with weights in DRAM gets them as its last target, then a ``RESET``; when its
        on-chip weights are built in, only that target is written."""
        graph = self._graph_of(model)
        try:
            graph.check_lowered()
        except ValueError as e:
            raise AcceleratorError(f"the model is not a hardware graph ({e})") from None
        if isinstance(folds, (str, os.PathLike)):
            folds = load_folding(folds, matrix_layers(graph))
        folds = dict(folds) if folds is not None else default_folding(graph)
        ident = self.identity or self.identify()
        manifest = Manifest.of(graph, folds, board=ident.board, clock_hz=ident.clock_hz,
                               baud=ident.baud, writable=ident.writable,
                               max_payload=ident.max_payload)
        self._check(manifest)
        in_dram = "dram" in manifest.doc
        if not ident.writable and not in_dram:
            raise AcceleratorError(f"board {ident.board!r} runs this design with its weights "
                                   f"built in (it takes no WRITE frames): use check(manifest) "
                                   f"and infer with them, or build a writable bitstream")
        per_frame = (ident.max_payload - 1) // BEAT_BYTES
        if per_frame < 1:
            raise AcceleratorError(f"board {ident.board!r} takes payloads of at most "
                                   f"{ident.max_payload} bytes, too few for one "
                                   f"configuration beat")
        data = []
        for index in range(len(manifest.targets)):
            if not ident.writable and manifest.targets[index].kind != "dram":
                data.append(b"")   # built in: only the DRAM layers' weights are written
                continue
            try:
                beats = manifest.target_beats(graph, index)
            except ValueError as e:
                raise AcceleratorError(f"the model's values do not fit the design: {e}") from None
            data.append(b"".join(int(b).to_bytes(BEAT_BYTES, "little") for b in beats))
        total = sum(len(d) for d in data) // BEAT_BYTES
        self.manifest = None  # the board's weights are in between until every write is in
        self.graph = None
        state = {"target": 0, "next": 0, "done": 0}
        top = per_frame
        if not self._size.get(Op.WRITE) or self._size[Op.WRITE] > top:
            self._size[Op.WRITE] = top

        def make(target: int, start: int, count: int) -> _Request:
            chunk = data[target][start * BEAT_BYTES:(start + count) * BEAT_BYTES]
            return _Request(Op.WRITE, bytes([target]) + chunk, start, count)

        def source() -> _Request | None:
            while state["target"] < len(data):
                target, start = state["target"], state["next"]
                left = len(data[target]) // BEAT_BYTES - start
                if left > 0:
                    count = min(self._size[Op.WRITE] if self.adapt else top, left)
                    state["next"] += count
                    return make(target, start, count)
                state["target"], state["next"] = target + 1, 0
            return None

        def split(req: _Request) -> list[_Request] | None:
            return [make(req.payload[0], req.start + i, k)
                    for i, k in self._pieces(req)] or None

        def accept(req: _Request, frame: Frame) -> str | None:
            if len(frame.payload) != CRC_BYTES:
                return f"an ACK of {len(frame.payload)} payload bytes, not {CRC_BYTES}"
            if self.adapt:
                self._adapt(req, top)
            state["done"] += req.count
            if progress:
                progress(state["done"], total)
            return None

        self._deliver(source, accept, split=split if self.adapt else None)
        if "dram" in manifest.doc:
            # the tiled units fetch their weights again after a reset (rtl_gen.dram_network)
            self.reset()
        self.manifest, self.graph = manifest, graph
        return manifest

    def infer(self, images: Any, progress: Callable[[int, int], None] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores int64 [N, classes], classes int64 [N])`` of ``images`` (8-bit
        ``[N, C, H, W]``). ``progress(images done, N)`` after each answer."""
        m = self.manifest
        if m is None:
            raise AcceleratorError("no design to run: call load(model) to write a model's "
                                   "weights, or check(manifest) for the board's own")
        encoded = self._encode(m, images)
        n = len(encoded)
        scores = np.zeros((n, m.classes), np.int64)
        classes = np.zeros(n, np.int64)
        filled = np.zeros(n, bool)
        limit = m.images_per_frame
        if limit < 1:
            raise AcceleratorError(f"an image of {m.image_bytes} bytes (or its result) does "
                                   f"not fit the board's max_payload of "
                                   f"{m.doc['max_payload']} bytes")
        top = min(limit, self.batch or limit)
        if not self._size.get(Op.INFER) or self._size[Op.INFER] > top:
            self._size[Op.INFER] = top
        rb = m.result_bytes
        state = {"next": 0, "done": 0}

        def make(start: int, count: int) -> _Request:
            payload = bytes([count]) + b"".join(encoded[start:start + count])
            return _Request(Op.INFER, payload, start, count)

        def source() -> _Request | None:
            start = state["next"]
            if start >= n:
                return None
            count = min(self._size[Op.INFER] if self.adapt else top, n - start)
            state["next"] = start + count
            return make(start, count)

        def split(req: _Request) -> list[_Request] | None:
            return [make(req.start + i, k) for i, k in self._pieces(req)] or None

        def accept(req: _Request, frame: Frame) -> str | None:
            p = frame.payload
            if len(p) < 3 or p[2] != req.count or len(p) != 3 + req.count * rb:
                got = p[2] if len(p) >= 3 else "no"
                return (f"RESULTS of {len(p)} bytes saying {got} results, not "
                        f"{3 + req.count * rb} bytes with {req.count} of {rb} bytes")
            s, c = m.decode_results(p[3:])
            if len(c) and (int(c.min()) < 0 or int(c.max()) >= m.classes):
                return f"a class {int(c.max())} beyond the design's {m.classes}"
            where = slice(req.start, req.start + req.count)
            if filled[where].any():  # cannot happen: each image is in one live request
                raise AssertionError(f"images {req.start}.. answered twice")
            scores[where], classes[where], filled[where] = s, c, True
            if self.adapt:
                self._adapt(req, top)
            state["done"] += req.count
            if progress:
                progress(state["done"], n)
            return None

        t0 = time.perf_counter()
        if n:
            self._deliver(source, accept, split=split if self.adapt else None)
        self.stats.seconds += time.perf_counter() - t0
        if not filled.all():  # cannot happen: _deliver returns when every request is in
            raise AssertionError("some images got no result")
        self.stats.images += n
        self.stats.image_bytes += n * m.image_bytes
        return scores, classes

    def status(self) -> Counters:
        """The board's counters (good frames, bad frames, images done, timeouts)."""
        got: list[Counters] = []

        def accept(req: _Request, frame: Frame) -> str | None:
            try:
                got.append(Counters.unpack(frame.payload[CRC_BYTES:]))
            except ValueError as e:
                return str(e)
            return None

        self._deliver(_one(_Request(Op.STATUS, b"")), accept)
        return got[0]

    def reset(self) -> None:
        """Reset the board: it flushes its pipeline and clears its counters."""
        def accept(req: _Request, frame: Frame) -> str | None:
            return None if len(frame.payload) == CRC_BYTES else "an ACK of the wrong size"

        self._deliver(_one(_Request(Op.RESET, b"")), accept)

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _graph_of(model: ir.Graph | str | os.PathLike[str]) -> ir.Graph:
        if isinstance(model, ir.Graph):
            return model
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError(f"load takes a bnnhw.ir.Graph or a path, not "
                            f"{type(model).__name__}")
        path = Path(model)
        if path.suffix == ".pt":
            # lowering a checkpoint needs torch, which the host side never loads
            # (docs/architecture.md, "Layers"); bnnhw infer does it before calling load
            raise AcceleratorError(f"{path} is a checkpoint: lower it first (bnnhw compile "
                                   f"--model {path}) and load the .ir file, or run bnnhw "
                                   f"infer --model {path}")
        return ir.load_graph(path)

    @staticmethod
    def _encode(m: Manifest, images: Any) -> list[bytes]:
        x = np.asarray(images)
        if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer)
                                   or np.issubdtype(x.dtype, np.floating)):
            raise AcceleratorError(f"images must be 8-bit pixel values, not {x.dtype}")
        if x.size and (np.issubdtype(x.dtype, np.floating) and not np.array_equal(x, np.round(x))
                       or x.min() < 0 or x.max() > 255):
            raise AcceleratorError("images must hold integer pixel values 0..255")
        try:
            if x.ndim == 4 and len(x) == 0:  # Manifest.encode_images cannot reshape none
                m.encode_images(np.zeros((1, *x.shape[1:]), np.int64))
                return []
            return m.encode_images(x.astype(np.int64))
        except ValueError as e:
            raise AcceleratorError(str(e)) from None

    def _pieces(self, req: _Request) -> list[tuple[int, int]]:
        """``(offset, count)`` of the frames replacing ``req`` (none if it is one unit):
        at most the current frame size, and at most half of ``req``."""
        if req.count < 2:
            return []
        size = max(1, min(self._size.get(req.op, req.count), req.count // 2))
        return [(i, min(size, req.count - i)) for i in range(0, req.count, size)]

    def _adapt(self, req: _Request, top: int) -> None:
        """Double the images (beats) per frame after a run of answers that came first
        time."""
        if req.sends == 1:
            self._streak += 1
            size = self._size[req.op]
            if self._streak >= GROW_AFTER and size < top:
                self._size[req.op] = min(top, size + max(1, size // 2))
                self._streak = 0

    def _patience(self, req: _Request) -> float:
        """How long the oldest request may go unanswered: the timeout plus its frame and a
        large answer on the wire (10 bits a byte at the board's baud rate)."""
        baud = self.identity.baud if self.identity else self.transport.baud
        answer = (self.manifest.result_bytes * req.count + 3 + frame_overhead()
                  if self.manifest and req.op == Op.INFER else IDENTITY_MAX)
        return self.timeout_s + 10 * (len(req.frame) + answer) / max(1, baud)

    # -- delivery -----------------------------------------------------------------------------

    def _matches(self, req: _Request, frame: Frame) -> bool:
        """Whether ``frame`` (with ``req``'s sequence number) answers ``req``: it echoes
        ``req``'s CRC."""
        return frame.request_crc == req.crc

    def _deliver(self, source: Callable[[], _Request | None],
                 accept: Callable[[_Request, Frame], str | None],
                 split: Callable[[_Request], list[_Request] | None] | None = None,
                 retries: int | None = None) -> None:
        """Send every request ``source`` gives (until None), at most ``window`` in flight,
        and hand each request's first fitting answer to ``accept`` (which returns None, or
        why the answer does not fit). Returns when all are answered; raises
        ``AcceleratorError`` after ``retries`` (default ``max_retries``) resends of one."""
        retries = self.max_retries if retries is None else retries
        self._outbox.clear()
        pending: dict[int, _Request] = {}
        front: deque[_Request] = deque()
        exhausted = False
        self._last_progress = time.monotonic()
        while True:
            while len(pending) < self.window:
                req = front.popleft() if front else (None if exhausted else source())
                if req is None:
                    exhausted = True
                    break
                self._issue(req, pending)
            self._flush()
            if not pending:
                return
            now = time.monotonic()
            oldest = next(iter(pending.values()))
            deadline = max(oldest.last_sent, self._last_progress) + self._patience(oldest)
            if now >= deadline:
                self.stats.timeouts += 1
                for r in list(pending.values()):
                    if pending.get(r.seq) is r:
                        self._retry(r, pending, front, split, retries,
                                    f"no answer within {self._patience(r):.3g} s")
                self._flush()
                continue
            data = self.transport.read(READ_CHUNK, deadline - now)
            if not data:
                continue
            self.stats.bytes_read += len(data)
            for frame in self._decoder.feed(data):
                self._frames_seen += 1
                self._on_frame(frame, pending, front, accept, split, retries)

    def _issue(self, req: _Request, pending: dict[int, _Request]) -> None:
        for _ in range(256):
            seq, self._seq = self._seq, (self._seq + 1) & 0xFF
            if seq not in pending:
                break
        req.seq = seq
        req.frame, req.crc = build_frame(req.op, seq, req.payload)
        pending[seq] = req
        self.stats.requests += 1
        self._transmit(req)

    def _transmit(self, req: _Request) -> None:
        """Queue a copy of ``req`` for the next ``_flush``."""
        self._tx += 1
        if req.first_tx < 0:
            req.first_tx = self._tx
        req.last_tx = self._tx
        req.sends += 1
        self._outbox.append(req)

    def _flush(self) -> None:
        """Write the queued frames in one go."""
        if not self._outbox:
            return
        data = b"".join(r.frame for r in self._outbox)
        self.transport.write(data)
        now = time.monotonic()
        for r in self._outbox:
            r.last_sent = now
        self.stats.frames_sent += len(self._outbox)
        self.stats.bytes_written += len(data)
        self._outbox.clear()

    def _retry(self, req: _Request, pending: dict[int, _Request], front: deque[_Request],
               split: Callable[[_Request], list[_Request] | None] | None, retries: int,
               why: str) -> None:
        req.failure = why
        if req.op in self._size and self.adapt:  # frames get lost: make new ones smaller
            self._streak = 0
            self._size[req.op] = max(1, min(self._size[req.op], req.count) // 2)
        if split is not None and req.sends >= self.split_after:
            parts = split(req)
            if parts:
                del pending[req.seq]
                self._remember(req)
                front.extendleft(reversed(parts))
                self.stats.splits += 1
                return
        if req.sends > retries:
            raise self._gave_up(req)
        self.stats.retries += 1
        self._transmit(req)

    def _remember(self, req: _Request) -> None:
        self._answered[(req.seq, req.crc)] = None
        while len(self._answered) > 1024:
            self._answered.popitem(last=False)

    def _on_frame(self, frame: Frame, pending: dict[int, _Request], front: deque[_Request],
                  accept: Callable[[_Request, Frame], str | None],
                  split: Callable[[_Request], list[_Request] | None] | None,
                  retries: int) -> None:
        if frame.op == Op.NACK:
            self.stats.nacks += 1
            if len(frame.payload) != 3:
                self.stats.malformed += 1
                return
            reason = frame.payload[0]
            crc = struct.unpack_from("<H", frame.payload, 1)[0]
            if reason == Nack.TIMEOUT:
                # the board waited for bytes that never came, so it has taken all that
                # arrived: whatever is unanswered is lost; resend it all, oldest first
                for r in list(pending.values()):
                    if pending.get(r.seq) is r:
                        r.nack = reason
                        self._retry(r, pending, front, split, retries,
                                    "the board timed out on a frame cut short")
                return
            req = next((r for r in pending.values() if r.crc == crc), None) \
                or pending.get(frame.seq)
            if req is not None:
                req.nack = reason
                self._retry(req, pending, front, split, retries,
                            f"the board refused it: {_nack_why(reason)}")
                self._gaps(req, pending, front, split, retries)
            return
        if frame.op < 0x80 or len(frame.payload) < CRC_BYTES:
            self.stats.stale += 1
            return
        req = pending.get(frame.seq)
        if req is None or not self._matches(req, frame):
            if (frame.seq, frame.request_crc) in self._answered:
                self.stats.duplicates += 1
            else:
                self.stats.stale += 1
                if req is not None:
                    req.echo_mismatches += 1
            return
        want = ANSWER[req.op]
        problem = (f"a frame of type 0x{frame.op:02x} instead of {want.name}"
                   if frame.op != want else accept(req, frame))
        if problem:
            self.stats.malformed += 1
            req.failure = f"its answer did not fit: {problem}"
            req.nack = 0
            return
        del pending[req.seq]
        self._remember(req)
        self._last_progress = time.monotonic()
        self._gaps(req, pending, front, split, retries)

    def _gaps(self, req: _Request, pending: dict[int, _Request], front: deque[_Request],
              split: Callable[[_Request], list[_Request] | None] | None, retries: int) -> None:
        """The board has reached ``req`` (answered or refused it): it executes in order, so
        every request whose last copy went out before ``req``'s first was lost, or its
        answer was; resend those."""
        for r in [r for r in pending.values() if r.last_tx < req.first_tx]:
            if pending.get(r.seq) is r:
                self.stats.gap_resends += 1
                self._retry(r, pending, front, split, retries,
                            "a request sent after it was answered first")

    def _gave_up(self, req: _Request) -> AcceleratorError:
        t = self.transport
        attempts = f"{req.sends} attempt{'s' * (req.sends != 1)}"
        if t.bytes_read == 0 and self.stats.bytes_read == 0:
            return AcceleratorError(
                f"no answer from {t.url} to {req.op.name} in {attempts}: check that it is "
                f"the board's port, that the board runs at {t.baud} baud, and that a bnnhw "
                f"bitstream is loaded and out of reset")
        if self._frames_seen == 0:
            return AcceleratorError(
                f"{self.stats.bytes_read} bytes came from {t.url} but not one bnnhw frame: "
                f"check that the baud rate ({t.baud}) is the board's and that a bnnhw "
                f"bitstream is loaded")
        if req.nack in (Nack.UNKNOWN_TYPE, Nack.BAD_PAYLOAD, Nack.BAD_LENGTH):
            return AcceleratorError(
                f"the board at {t.url} refused a {req.op.name} request {req.sends} times "
                f"({_nack_why(req.nack)}): it does not run the design the host expects; "
                f"check the board's design against the model with check(manifest)")
        if req.echo_mismatches:
            return AcceleratorError(
                f"the board at {t.url} answered a {req.op.name} request (sequence {req.seq}) "
                f"{req.echo_mismatches} times in {attempts} with another request's CRC and "
                f"never with its own: its answers cannot be trusted; check that the board "
                f"runs a bnnhw bitstream of this protocol version")
        return AcceleratorError(
            f"a {req.op.name} request (sequence {req.seq}) to {t.url} got no good answer in "
            f"{attempts} (last: {req.failure}): check the link (cable, baud rate "
            f"{t.baud}) and that the board still runs its bnnhw bitstream, or allow more "
            f"retries")


def _one(req: _Request) -> Callable[[], _Request | None]:
    items = [req]
    return lambda: items.pop() if items else None


def _describe(doc: dict[str, Any]) -> str:
    """A design in a few words: board, input and layers."""
    h, w, c = doc["image"]["shape"]
    layers = []
    for node in doc["nodes"][1:]:
        if node["op"] == "conv":
            layers.append(f"conv{node['kernel']}x{node['rows']}")
        elif node["op"] == "dense":
            layers.append(f"dense{node['rows']}")
        else:
            layers.append(node["op"])
    return (f"board {doc['board']!r}, {h}x{w}x{c} {doc['image']['encoding']} input, "
            f"{'-'.join(layers)}")
