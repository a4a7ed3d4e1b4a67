"""Weight and threshold memories of the compute blocks, optionally rewritable at run time.

A :class:`FoldedMemory` holds the words of a folded weight matrix (``bnnhw.packing.
matrix_words``: address ``nf * SF + sf``) or of a folded threshold table
(``bnnhw.packing.table_words``: address ``cls * NF + nf``) in one ``amaranth.lib.memory``
initialised with ``init=``. Its read port is synchronous (data one cycle after the address,
held while ``en`` is 0), which maps onto block RAM.

Run-time configuration stream ``cfg`` (present when the memory is writable). Each beat is
one plain 64-bit payload, always accepted (``ready`` is 1), one beat per cycle:

======  ==========  ==============================================================
bits    field       meaning
======  ==========  ==============================================================
0..31   ``data``    32 bits of a memory word
32..41  ``chunk``   which 32 bits: word bits ``[chunk * 32, chunk * 32 + 32)``
42..61  ``addr``    word address in the selected memory
62..63  ``sel``     which memory of the block (:class:`MemSel`: 0 weights, 1 thresholds,
                    2 the class map, 3 the gates of a precision-gated unit)
======  ==========  ==============================================================

A word of ``width`` bits takes ``ceil(width / 32)`` beats (any order; bits past ``width``
are ignored); each beat writes its chunk straight into the memory (chunk-wide write
enables), so no staging register is needed. Beats for another ``sel``, an address past the
memory's depth or a chunk past its word are ignored. :func:`cfg_beats` builds the beats of
a whole table; a host link sends each beat as 8 bytes, least significant first. Writes take
effect at once: write while the block is idle, or images in flight see a mix of old and
new contents.

Memory style (``FoldedMemoryParams.style``, :data:`STYLES`): where synthesis puts the words.
The memory carries the Yosys attributes ``ram_style`` and ``rom_style`` (which Vivado reads
too), so the choice survives any flow:

- ``auto``: no attribute; the synthesis tool decides by its own cost model (Yosys maps a
  ROM to LUT logic unless block RAM is much cheaper, so wide shallow weight memories become
  LUT mux trees);
- ``block``: block RAM (RAMB18/RAMB36 on xc7, DP16KD on ECP5, EBR on iCE40);
- ``lutram``: distributed RAM in LUTs (``"distributed"``); only for a run-time writable
  memory: Yosys maps no read-only memory to LUT RAM (its libraries prune ROMs) and a
  ROM in LUTs is ``logic``;
- ``logic``: a ROM of LUTs (``"logic"``) with its read register in flip-flops; only for a
  memory that is not run-time writable.

:func:`check_style` says which styles a memory can take, naming it when it cannot.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, ReadPort
from amaranth.lib.wiring import In, Out

from bnnhw.beats import CFG_BEAT
from bnnhw.packing import (
    CFG_ADDR_BITS,
    CFG_CHUNK_BITS,
    CFG_DATA_BITS,
    MemSel,
    cfg_beats,
    cfg_word,
    matrix_words,
    table_words,
)
from bnnhw.validate import ParameterError, integer

from .block import struct_layout

__all__ = ["CFG_ADDR_BITS", "CFG_CHUNK_BITS", "CFG_DATA_BITS", "CFG_LAYOUT", "CFG_WIDTH",
           "STYLES", "FoldedMemory", "FoldedMemoryParams", "MemSel", "cfg_beats",
           "cfg_signature", "cfg_word", "check_style", "style_attrs"]

STYLES = ("auto", "block", "lutram", "logic")
"""Memory styles (see the module docstring)."""
_ATTR = {"block": "block", "lutram": "distributed", "logic": "logic"}

CFG_LAYOUT = struct_layout(CFG_BEAT)
CFG_WIDTH = CFG_LAYOUT.size  # 64


def check_style(name: str, style: str, writable: bool) -> str:
    """``style`` if memory ``name`` (run-time ``writable`` or not) can take it, else a
    ``ParameterError`` naming the memory, the style and why."""
    if style not in STYLES:
        raise ParameterError(f"{name}: memory style must be one of {', '.join(STYLES)}, "
                             f"not {style!r}")
    if style == "logic" and writable:
        raise ParameterError(f"{name}: a run-time writable memory cannot be a ROM of LUTs "
                             f"(style 'logic'); use block, lutram or auto")
    if style == "lutram" and not writable:
        raise ParameterError(f"{name}: a read-only memory cannot be LUT RAM (Yosys maps no "
                             f"ROM to distributed RAM); a ROM in LUTs is style 'logic'")
    return style


def style_attrs(style: str) -> dict[str, str]:
    """The synthesis attributes of a memory style (none for ``auto``)."""
    if style == "auto":
        return {}
    return {"ram_style": _ATTR[style], "rom_style": _ATTR[style]}


def cfg_signature() -> stream.Signature:
    """Signature of the ``cfg`` stream (plain 64-bit payload, see the module docstring)."""
    return stream.Signature(CFG_WIDTH)


@dataclass(frozen=True)
class FoldedMemoryParams:
    """One folded memory: ``init`` words of ``width`` bits; writable through ``cfg`` beats
    whose ``sel`` field equals ``sel`` when ``writable``; ``style`` where synthesis puts it
    (:data:`STYLES`, checked by :func:`check_style`)."""

    width: int
    init: tuple[int, ...]
    sel: MemSel = MemSel.WEIGHTS
    writable: bool = False
    name: str = "memory"
    style: str = "auto"

    def __post_init__(self):
        n = self.name
        integer(n, "memory width", self.width, 1)
        object.__setattr__(self, "init", tuple(int(w) for w in self.init))
        if not self.init:
            raise ValueError(f"{n}: memory needs at least one word")
        bad = [w for w in self.init if not 0 <= w < 1 << self.width]
        if bad:
            raise ValueError(f"{n}: memory word {bad[0]} does not fit {self.width} bits")
        if self.sel not in list(MemSel):
            raise ValueError(f"{n}: sel must be one of {[int(s) for s in MemSel]}, "
                             f"not {self.sel!r}")
        object.__setattr__(self, "sel", MemSel(self.sel))
        check_style(n, self.style, self.writable)
        if self.writable and self.depth > 1 << CFG_ADDR_BITS:
            raise ValueError(f"{n}: {self.depth} words exceed the {1 << CFG_ADDR_BITS} "
                             f"addresses of the cfg stream; use a larger pe or simd")
        if self.writable and self.chunks > 1 << CFG_CHUNK_BITS:
            raise ValueError(f"{n}: {self.width}-bit words exceed the "
                             f"{(1 << CFG_CHUNK_BITS) * CFG_DATA_BITS} bits the cfg stream can "
                             f"address; use a smaller pe or simd")

    @classmethod
    def for_weights(cls, name: str, w, pe: int, simd: int, writable: bool = False,
                    style: str = "auto") -> FoldedMemoryParams:
        """Memory of a binary ``w[R, C]`` folded onto ``pe x simd`` (``matrix_words``)."""
        return cls(width=pe * simd, init=tuple(matrix_words(w, pe, simd)),
                   sel=MemSel.WEIGHTS, writable=writable, name=name, style=style)

    @classmethod
    def for_thresholds(cls, name: str, t, pe: int, width: int, writable: bool = False,
                       style: str = "auto") -> FoldedMemoryParams:
        """Memory of a table ``t[..., R]`` of ``width``-bit entries on ``pe`` (``table_words``)."""
        return cls(width=pe * width, init=tuple(table_words(t, pe, width)),
                   sel=MemSel.THRESHOLDS, writable=writable, name=name, style=style)

    @property
    def depth(self) -> int:
        return len(self.init)

    @property
    def chunks(self) -> int:
        """``cfg`` beats per word."""
        return -(-self.width // CFG_DATA_BITS)

    @property
    def bits(self) -> int:
        """Memory bits (without the padding of a writable memory of several chunks to
        whole chunks)."""
        return self.depth * self.width


class FoldedMemory(wiring.Component):
    """A folded weight or threshold memory (see the module docstring).

    Ports: ``rd`` (``addr``, ``en`` in; ``data`` out: ``width`` bits, one cycle after
    ``addr``, held while ``en`` is 0) and, when writable, ``cfg`` (``In``, 64-bit beats).
    """

    def __init__(self, params: FoldedMemoryParams):
        self.params = params
        self._addr_width = (params.depth - 1).bit_length()
        members = {"rd": Out(ReadPort.Signature(addr_width=self._addr_width,
                                                shape=params.width))}
        if params.writable:
            members["cfg"] = In(cfg_signature())
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self.params
        # A writable word of several chunks is stored padded to whole chunks (the write
        # port's granularity); a word of one chunk at its own width.
        stored = p.chunks * CFG_DATA_BITS if p.writable and p.chunks > 1 else p.width
        m.submodules.mem = mem = Memory(shape=stored, depth=p.depth, init=p.init,
                                        attrs=style_attrs(p.style))
        if p.style == "logic" and p.depth > 1:
            # The read register holds the address, not the word: the same timing, but the
            # ROM's inputs are then plain register outputs (see the module docstring).
            rd = mem.read_port(domain="comb")
            addr = Signal.like(self.rd.addr, name="addr_q")
            with m.If(self.rd.en):
                m.d.sync += addr.eq(self.rd.addr)
            m.d.comb += [rd.addr.eq(addr), self.rd.data.eq(rd.data[:p.width])]
        else:
            rd = mem.read_port()
            m.d.comb += [rd.addr.eq(self.rd.addr), rd.en.eq(self.rd.en),
                         self.rd.data.eq(rd.data[:p.width])]
        if p.writable:
            beat = data.View(CFG_LAYOUT, self.cfg.payload)
            hit = self.cfg.valid & (beat.sel == p.sel) & (beat.addr < p.depth)
            m.d.comb += [self.cfg.ready.eq(1)]
            if p.chunks > 1:
                wr = mem.write_port(granularity=CFG_DATA_BITS)
                m.d.comb += [
                    wr.data.eq(Cat(*[beat.data] * p.chunks)),
                    wr.en.eq(Cat(*(hit & (beat.chunk == c) for c in range(p.chunks)))),
                ]
            else:
                wr = mem.write_port()
                m.d.comb += [wr.data.eq(beat.data[:p.width]),
                             wr.en.eq(hit & (beat.chunk == 0))]
            m.d.comb += wr.addr.eq(beat.addr)
        return m
