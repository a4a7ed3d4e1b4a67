"""What every stream block of ``rtl_gen`` shares: its ports and its output register.

A block is built from one frozen, validated parameter object (``StreamBlock.Params``)
that states ``i_width``/``o_width`` (bits per beat, or a ``data.Layout`` for a struct
payload), ``cycles_per_image`` and, where the block has one, ``latency``. The block's
signature is ``i_stream: In(stream.Signature(i_width))``, ``o_stream:
Out(stream.Signature(o_width))`` plus whatever ``extra_members`` adds (the ``cfg``
stream of a block with run-time writable memories).

Latency model. Each ``Params`` also has ``beat_times(t_in)``: given the clock edges at which
the block accepts the input beats of one image (it starts idle), the edges at which an
always-ready consumer takes each output beat, ignoring backpressure (downstream buffers are
assumed deep enough). ``paced`` is their common step: a beat leaves once it is available
and at most one beat leaves per cycle. ``rtl_gen.network`` composes them into the
network's latency (first pixel in to result out).

``output_register`` is the ready/valid skeleton of a block whose output beat sits in a
register: ``o_stream.valid`` is that register's full flag, set when a beat is loaded and
cleared when the beat is taken and nothing new is loaded; a block may load only while the
register is ``free`` (empty, or being emptied this cycle). So ``valid`` never drops and
the payload never changes while a beat waits (the stream rule), and a beat can leave and
another enter in the same cycle.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from amaranth import Mux, Signal, signed, unsigned
from amaranth.hdl import Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bnnhw.beats import BeatLayout
from bnnhw.numerics import range_bits

__all__ = ["StreamBlock", "forward", "output_register", "paced", "range_shape",
           "struct_layout"]


def forward(m, outer: wiring.Component, inner: wiring.Component, name: str) -> None:
    """Join member ``name`` of a wrapper ``outer`` to the same member of the ``inner``
    component it wraps: a port (``wiring.connect``) or a plain signal, either direction."""
    member = outer.signature.members[name]
    if member.is_port:
        if member.flow == wiring.Out:
            m.d.comb += getattr(outer, name).eq(getattr(inner, name))
        else:
            m.d.comb += getattr(inner, name).eq(getattr(outer, name))
    else:
        wiring.connect(m, wiring.flipped(getattr(outer, name)), getattr(inner, name))


def paced(available: np.ndarray) -> np.ndarray:
    """Edges ``s`` with ``s[j] = max(available[j], s[j - 1] + 1)``: beats that leave as soon
    as they are available, one per cycle, in order."""
    a = np.asarray(available, dtype=np.int64)
    idx = np.arange(len(a), dtype=np.int64)
    return idx + np.maximum.accumulate(a - idx) if len(a) else a


def range_shape(lo: int, hi: int):
    """The Amaranth shape of ``bnnhw.numerics.range_bits(lo, hi)``."""
    width, is_signed = range_bits(lo, hi)
    return signed(width) if is_signed else unsigned(width)


def struct_layout(layout: BeatLayout) -> data.StructLayout:
    """The Amaranth layout of a ``bnnhw.beats.BeatLayout``: the same fields in the same
    order (an array field becomes an ``ArrayLayout``), so ports and host agree."""
    members = {}
    for f in layout.fields:
        shape = signed(f.width) if f.signed else unsigned(f.width)
        members[f.name] = shape if f.count == 1 else data.ArrayLayout(shape, f.count)
    return data.StructLayout(members)


class StreamBlock(wiring.Component):
    """A stream block built from its ``Params`` (see the module docstring)."""

    Params: ClassVar[type]

    def __init__(self, params: Any):
        if not isinstance(params, self.Params):
            raise TypeError(f"{type(self).__name__} takes {self.Params.__name__}, not "
                            f"{params!r}")
        self.params = params
        super().__init__({"i_stream": In(stream.Signature(params.i_width)),
                          "o_stream": Out(stream.Signature(params.o_width)),
                          **self.extra_members(params)})

    @classmethod
    def extra_members(cls, params: Any) -> dict[str, Any]:
        """Signature members beyond the two streams: the ``cfg`` stream of a block whose
        memories are ``runtime_writable`` (``rtl_gen.weight_memory``)."""
        if getattr(params, "runtime_writable", False):
            from .weight_memory import cfg_signature

            return {"cfg": In(cfg_signature())}
        return {}

    @property
    def cycles_per_image(self) -> int:
        return self.params.cycles_per_image

    @property
    def latency(self) -> int:
        return self.params.latency


def output_register(m, o_stream, load) -> Value:
    """Drive ``o_stream.valid`` as an output register loaded when ``load`` is high (the
    caller assigns the payload in the same cycle); return ``free``, true when a beat may
    be loaded this cycle. ``load`` must imply ``free``."""
    free = Value.cast(~o_stream.valid | o_stream.ready)
    with m.If(load):
        m.d.sync += o_stream.valid.eq(1)
    with m.Elif(o_stream.ready):
        m.d.sync += o_stream.valid.eq(0)
    return free


def skid_buffer(m, i_stream, o_stream, name: str = "skid") -> None:
    """Join ``i_stream`` to ``o_stream`` through a one-beat skid buffer: ``i_stream.ready``
    comes from a register (no combinational path from ``o_stream.ready`` back upstream),
    while a beat passes straight through when the buffer is empty (no added latency, one
    beat per cycle). A beat offered while ``o_stream`` stalls is held and leaves first."""
    held = Signal(Value.cast(i_stream.payload).shape(), name=f"{name}_data")
    full = Signal(name=f"{name}_full")
    m.d.comb += [i_stream.ready.eq(~full),
                 o_stream.valid.eq(i_stream.valid | full),
                 Value.cast(o_stream.payload).eq(Mux(full, held,
                                                     Value.cast(i_stream.payload)))]
    with m.If(full & o_stream.ready):
        m.d.sync += full.eq(0)
    with m.Elif(~full & i_stream.valid & ~o_stream.ready):
        m.d.sync += [full.eq(1), held.eq(i_stream.payload)]
