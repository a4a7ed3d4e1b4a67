"""The latency model against the Amaranth simulator.

Every block's ``beat_times`` (``rtl_gen.block``) must predict, edge for edge, when an
always-ready consumer takes each output beat of one image, given when the block took its
input beats; the network's ``latency`` (first pixel in to result out) must match the
measured one within 5% (it is exact on these). A block whose pipeline is one register
longer than modelled is caught.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.hdl import Value
from amaranth.lib import wiring
from amaranth.sim import Simulator

from bnnhw.check import random_images
from bnnhw.folding import Fold, matrix_layers
from bnnhw.frontend import compile_model
from rtl_gen.classify import Classify, ClassifyParams
from rtl_gen.fifo import Fifo, FifoParams
from rtl_gen.input_encoder import InputEncoder, InputEncoderParams
from rtl_gen.maxpool import MaxPool, MaxPoolParams
from rtl_gen.mvtu import MVTU, MVTUParams
from rtl_gen.network import Network, NetworkParams
from rtl_gen.sliding_window import SlidingWindow, SlidingWindowParams
from rtl_gen.width_converter import WidthConverter, WidthConverterParams
from tests.bnn_cases import spec_model
from tests.stream_helpers import clocked


def timed_run(dut, inputs, n_out, max_cycles=50_000):
    """``(input edges, output edges)``: inputs offered back to back from edge 0, output
    always ready; an edge is numbered from 0 and a beat crosses on the edge it is taken."""
    inputs = list(inputs)
    in_edges, out_edges = [], []
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def bench(ctx):
        ctx.set(dut.o_stream.ready, 1)
        for edge in range(max_cycles):
            i = len(in_edges)
            if i < len(inputs):
                ctx.set(Value.cast(dut.i_stream.payload), inputs[i])
            ctx.set(dut.i_stream.valid, int(i < len(inputs)))
            *_, iv, ir, ov = await ctx.tick().sample(dut.i_stream.valid, dut.i_stream.ready,
                                                     dut.o_stream.valid)
            if iv and ir:
                in_edges.append(edge)
            if ov:
                out_edges.append(edge)
                if len(out_edges) == n_out:
                    return
        raise TimeoutError(f"{len(out_edges)} of {n_out} outputs in {max_cycles} cycles")

    sim.add_testbench(bench)
    sim.run()
    return np.array(in_edges), np.array(out_edges)


def random_beats(rng, count, width):
    return [int(v) for v in rng.integers(0, 1 << min(width, 62), count)]


def check_block(block, in_beats, out_beats, rng, comb=False):
    dut = clocked(block) if comb else block
    beats = random_beats(rng, in_beats, block.params.i_width)
    t_in, t_out = timed_run(dut, beats, out_beats)
    assert len(t_in) == in_beats
    model = block.params.beat_times(t_in)
    assert np.array_equal(model, t_out), (model[:12], t_out[:12])


class _OneLate(wiring.Component):
    """A planted fault: the block's output behind one more register than modelled."""

    def __init__(self, block):
        self._block = block
        self.params = block.params
        super().__init__({"i_stream": block.signature.members["i_stream"],
                          "o_stream": block.signature.members["o_stream"]})

    def elaborate(self, platform):
        m = Module()
        m.submodules.block = b = self._block
        wiring.connect(m, wiring.flipped(self.i_stream), b.i_stream)
        full, data = Signal(), Signal.like(Value.cast(b.o_stream.payload))
        m.d.comb += [b.o_stream.ready.eq(~full | self.o_stream.ready),
                     self.o_stream.valid.eq(full),
                     Value.cast(self.o_stream.payload).eq(data)]
        with m.If(b.o_stream.valid & b.o_stream.ready):
            m.d.sync += [full.eq(1), data.eq(Value.cast(b.o_stream.payload))]
        with m.Elif(self.o_stream.ready):
            m.d.sync += full.eq(0)
        return m


WINDOWS = [  # height, width, channels, kernel, stride, padding, simd
    (6, 6, 4, 3, 1, 0, 2), (5, 7, 3, 3, 2, 1, 3), (6, 5, 2, 2, 1, 2, 1), (4, 4, 8, 1, 1, 0, 8),
]


@pytest.mark.parametrize("shape", WINDOWS)
def test_sliding_window_beat_times(shape):
    h, w, c, k, s, p, simd = shape
    params = SlidingWindowParams(h, w, c, k, s, p, simd)
    check_block(SlidingWindow(params), params.in_beats, params.out_beats,
                np.random.default_rng(h * w))


@pytest.mark.parametrize("shape", [(6, 6, 4, 2, None, 2), (7, 7, 3, 3, 2, 3), (6, 6, 2, 3, 1, 1)])
def test_maxpool_beat_times(shape):
    h, w, c, k, s, simd = shape
    params = MaxPoolParams(h, w, c, k, s, simd)
    check_block(MaxPool(params), params.in_beats, params.out_beats, np.random.default_rng(k))


@pytest.mark.parametrize("shape", [(6, 6, 4, 2, None, 2), (7, 7, 3, 3, 2, 3)],
                         ids=["apart", "overlap"])
def test_two_bit_maxpool_beat_times(shape):
    h, w, c, k, s, simd = shape
    params = MaxPoolParams(h, w, c, k, s, simd, elem_width=2)
    check_block(MaxPool(params), params.in_beats, params.out_beats, np.random.default_rng(k))


@pytest.mark.parametrize("widths", [(8, 8, 64), (6, 4, 30), (4, 12, 36), (16, 64, 64), (3, 7, 10)])
def test_width_converter_beat_times(widths):
    win, wout, frame = widths
    params = WidthConverterParams(win, wout, frame)
    block = WidthConverter(params)
    check_block(block, params.in_beats, params.out_beats, np.random.default_rng(frame),
                comb=params.is_wire)


def test_fifo_and_encoder_beat_times():
    rng = np.random.default_rng(0)
    check_block(Fifo(FifoParams(5, 4, 9)), 9, 9, rng)
    enc = InputEncoderParams(3, 3, 2, "thermometer", simd=2, levels=3)
    check_block(InputEncoder(enc), 9, 9, rng, comb=True)


MVTUS = {  # rows, cols, pe, simd, input kind, pixels, thresholded
    "nf1_binary": (4, 12, 4, 4, "binary", 3, True),
    "nf3_binary": (6, 16, 2, 8, "binary", 2, True),
    "nf2_uint8": (4, 9, 2, 3, "uint8", 2, True),
    "scores_nf5": (10, 8, 2, 8, "binary", 1, False),
}


def mvtu_params(name):
    rows, cols, pe, simd, kind, pixels, thr = MVTUS[name]
    rng = np.random.default_rng(len(name))
    extra = {"thresholds": rng.integers(0, cols, (1, 1, rows))} if thr else {}
    return MVTUParams(name=name, rows=rows, cols=cols, pe=pe, simd=simd,
                      weights=rng.integers(0, 2, (rows, cols)), input_kind=kind,
                      pixels=pixels, **extra)


@pytest.mark.parametrize("name", list(MVTUS))
def test_mvtu_beat_times(name):
    p = mvtu_params(name)
    check_block(MVTU(p), p.pixels * p.sf, p.pixels * p.nf, np.random.default_rng(1))


@pytest.mark.parametrize("name", ["nf1_binary", "nf3_binary", "nf2_uint8"])
def test_two_bit_output_mvtu_beat_times(name):
    """Three thresholds per channel: the same beat times as one."""
    p = mvtu_params(name)
    rng = np.random.default_rng(3)
    t = np.sort(rng.integers(0, p.cols, (1, 1, p.rows, 3)), axis=-1)
    frac = MVTUParams(name=name, rows=p.rows, cols=p.cols, pe=p.pe, simd=p.simd,
                      weights=p.weights, input_kind=p.input_kind, pixels=p.pixels,
                      thresholds=t)
    assert frac.o_width == 2 * p.pe and frac.latency == p.latency
    check_block(MVTU(frac), p.pixels * p.sf, p.pixels * p.nf, np.random.default_rng(1))


def test_classify_beat_times():
    p = ClassifyParams(5, 6, 20, (3, 1, 4, 1, 5), (-9, 2, 6, 5, 3))
    check_block(Classify(p), 1, 1, np.random.default_rng(2))


def test_a_longer_pipeline_is_caught():
    p = mvtu_params("nf3_binary")
    with pytest.raises(AssertionError, match=r"^\(array"):
        check_block(_OneLate(MVTU(p)), p.pixels * p.sf, p.pixels * p.nf,
                    np.random.default_rng(1))


NETS = {
    "fc": ([{"type": "dense", "out": 16}, {"type": "dense", "out": 10}], "binary", (1, 8, 8),
           [Fold(4, 8), Fold(2, 4)]),
    "cnv": ([{"type": "conv", "out": 8, "kernel": 3, "padding": 1},
             {"type": "maxpool", "kernel": 2, "before_bn": True},
             {"type": "conv", "out": 8, "kernel": 3}, {"type": "dense", "out": 4}],
            "uint8", (3, 8, 8), [Fold(4, 3), Fold(2, 4), Fold(2, 8)]),
}


@pytest.mark.parametrize("name", list(NETS))
def test_network_latency_meets_the_model(name):
    layers, encoding, shape, folds = NETS[name]
    graph = compile_model(spec_model(layers, encoding, shape, seed=2))
    params = NetworkParams(graph, dict(zip([m.name for m in matrix_layers(graph)], folds,
                                           strict=True)))
    beats = params.format.image_beats(random_images(shape, 1, 0))
    t_in, t_out = timed_run(Network(params), beats, 1)
    measured = int(t_out[0] - t_in[0])
    assert abs(measured - params.latency) <= 0.05 * params.latency, (measured, params.latency)
