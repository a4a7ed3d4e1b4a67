"""Pipelined popcount and multi-operand adder built as a compressor tree.

A popcount of ``n`` bits is reduced with LUT6-sized counters (a 6:3 counter turns six bits
of one weight into a 3-bit count, one LUT6 per output bit), carry-save style: every level
compresses each bit column independently, so no carry ripples until the very end. Levels
compress greedily while a column holds more than three bits; one last level then brings
every column to at most two bits, compressing each only as far as the carry it receives
from the column below requires (Dadda's rule). One carry-propagate adder (a carry chain on
FPGAs) gives the binary result. ``bench/popcount_cost.py`` measures the cost. The same
tree sums ``count`` unsigned operands of ``width`` bits (:class:`OperandSum`): column
``k`` then starts with bit ``k`` of every operand.

Pipeline interface (no backpressure of its own; the user stalls it):

- ``en`` is a clock enable: while it is 0 every pipeline register holds its value;
- ``i_data`` is sampled on each enabled cycle; ``o_data`` is its sum ``latency`` enabled
  cycles later; ``i_valid`` rides along and comes out as ``o_valid`` at the same time.

``i_data`` is *not* registered on entry: logic that drives it combinationally (the XNOR of
an MVTU lane, the weight gating of a uint8 lane) folds into the first compressor level. With
``fanin=3`` the first level uses 3:2 counters, so a counter output depends on three such
2-input functions (six inputs) and still fits one LUT6.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from bnnhw.compressor import counter_groups, final_heights, tree_latency, tree_plan
from bnnhw.validate import ParameterError, choice, integer

__all__ = ["OperandSum", "Popcount", "counter_groups", "final_heights", "tree_latency",
           "tree_plan"]


def _counter(bits: list[Value]) -> list[Value]:
    """Count of ``bits`` (2..6 of them) as a truth-table lookup per output bit.

    Written as pure logic (not ``+``) so synthesis maps each output to one LUT instead of
    inferring a carry chain.
    """
    n = len(bits)
    index = Cat(*bits)
    outs = []
    for j in range(n.bit_length()):
        table = sum(((v.bit_count() >> j) & 1) << v for v in range(1 << n))
        outs.append(Const(table, 1 << n).bit_select(index, 1))
    return outs


class _CompressorTree(wiring.Component):
    """Sum of ``count`` unsigned ``width``-bit operands packed in ``i_data`` (operand ``j``
    at bits ``[j * width, (j + 1) * width)``), pipelined; see the module docstring."""

    def __init__(self, count: int, width: int, *, levels_per_stage: int = 2, fanin: int = 6,
                 kind: str = "operand sum"):
        try:
            for what, v in (("count", count), ("width", width),
                            ("levels_per_stage", levels_per_stage)):
                integer(kind, what, v, 1)
            choice(kind, "fanin", fanin, (3, 6))
        except ParameterError:
            self._MustUse__used = True  # no "created but never used" warning on top
            raise
        self._count = count
        self._width = width
        self._levels_per_stage = levels_per_stage
        self._fanin = fanin
        self._plan = tree_plan([count] * width, fanin)
        self._final = final_heights([count] * width, self._plan)
        super().__init__({
            "en": In(1, init=1),
            "i_data": In(count * width),
            "i_valid": In(1),
            "o_data": Out(self.out_width),
            "o_valid": Out(1),
        })

    @property
    def out_width(self) -> int:
        """Width of ``o_data``: enough for ``count * (2**width - 1)``."""
        return (self._count * ((1 << self._width) - 1)).bit_length()

    @property
    def compressor_levels(self) -> int:
        """Counter levels before the final carry-propagate adder."""
        return len(self._plan)

    @property
    def has_final_adder(self) -> bool:
        """Whether some column still holds two bits after the counters (needs an adder)."""
        return max(self._final, default=0) == 2

    @property
    def levels(self) -> int:
        """Logic levels: compressor levels plus the final adder, if any."""
        return self.compressor_levels + int(self.has_final_adder)

    @property
    def latency(self) -> int:
        """Enabled cycles from ``i_data`` to ``o_data`` (the output is always registered)."""
        return tree_latency(self._count, self._width, self._levels_per_stage, self._fanin)

    def elaborate(self, platform):
        m = Module()
        cols: list[list[Value]] = [
            [self.i_data[j * self._width + k] for j in range(self._count)]
            for k in range(self._width)
        ]
        valid: Value = self.i_valid
        since_reg = 0
        stage = 0

        def register() -> None:
            nonlocal cols, valid, since_reg, stage
            new_cols = []
            for k, col in enumerate(cols):
                if not col:
                    new_cols.append([])
                    continue
                r = Signal(len(col), name=f"s{stage}_c{k}")
                with m.If(self.en):
                    m.d.sync += r.eq(Cat(*col))
                new_cols.append([r[i] for i in range(len(col))])
            v = Signal(name=f"s{stage}_valid")
            with m.If(self.en):
                m.d.sync += v.eq(valid)
            cols, valid, since_reg = new_cols, v, 0
            stage += 1

        for level, groups in enumerate(self._plan):
            nxt: list[list[Value]] = [[] for _ in range(len(groups) + 3)]
            for k, gs in enumerate(groups):
                col = cols[k] if k < len(cols) else []
                pos = 0
                for g in gs:
                    group = col[pos:pos + g]
                    pos += g
                    if g == 1:
                        nxt[k].extend(group)
                    else:
                        for j, bit in enumerate(_counter(group)):
                            nxt[k + j].append(bit)
                assert pos == len(col)
            while nxt and not nxt[-1]:
                nxt.pop()
            cols = nxt
            since_reg += 1
            if since_reg == self._levels_per_stage and level + 1 < self.levels:
                register()
        assert [len(c) for c in cols] == self._final

        rows = [Cat(*(col[i] if i < len(col) else Const(0, 1) for col in cols))
                for i in range(2)]
        total = Signal(self.out_width, name="total")
        if self.has_final_adder:
            m.d.comb += total.eq(rows[0] + rows[1])
        else:
            m.d.comb += total.eq(rows[0])
        out = Signal(self.out_width, name="sum")
        out_valid = Signal(name="sum_valid")
        with m.If(self.en):
            m.d.sync += [out.eq(total), out_valid.eq(valid)]
        m.d.comb += [self.o_data.eq(out), self.o_valid.eq(out_valid)]
        assert stage + 1 == self.latency
        return m


class Popcount(_CompressorTree):
    """Pipelined popcount of ``n`` bits: ``o_data = sum(i_data[i])``, ``latency`` enabled
    cycles after ``i_data``.

    ``levels_per_stage`` compressor levels (the final adder counts as one) sit between two
    pipeline registers; ``fanin`` is 6 for plain bits and 3 when each input bit is a 2-input
    function computed in the same LUT (see the module docstring).

    Ports: ``en`` (clock enable, default 1), ``i_data`` (``n`` bits), ``i_valid``,
    ``o_data`` (``out_width`` bits), ``o_valid``.
    """

    def __init__(self, n: int, *, levels_per_stage: int = 2, fanin: int = 6):
        super().__init__(n, 1, levels_per_stage=levels_per_stage, fanin=fanin,
                         kind="popcount")


class OperandSum(_CompressorTree):
    """Pipelined sum of ``count`` unsigned ``width``-bit operands (operand ``j`` at bits
    ``[j * width, (j + 1) * width)`` of ``i_data``), built on the popcount's compressor tree.

    Same ports, pipeline and parameters as :class:`Popcount`.
    """

    def __init__(self, count: int, width: int, *, levels_per_stage: int = 2, fanin: int = 6):
        super().__init__(count, width, levels_per_stage=levels_per_stage, fanin=fanin,
                         kind="operand sum")
