"""Stream FIFO: order kept under random stalls, throughput and latency as documented."""

import numpy as np
import pytest
from amaranth.back import verilog

from rtl_gen.fifo import Fifo, FifoParams
from sim.stream_sim import run_stream
from tests.stream_helpers import assert_stalled, output_cycles


@pytest.mark.parametrize("width, depth, seed", [(1, 1, 0), (8, 2, 1), (13, 3, 2), (32, 5, 3),
                                                (7, 16, 4)])
def test_order_kept_under_stalls(width, depth, seed):
    data = np.random.default_rng(seed).integers(0, 1 << width, 120).tolist()
    for stall_in, stall_out in ((0.5, 0.1), (0.1, 0.5)):   # runs empty, then runs full
        got = run_stream(Fifo(FifoParams(width, depth)), data, len(data), seed=seed,
                         stall_in=stall_in, stall_out=stall_out)
        assert got == data
        assert_stalled(got)


@pytest.mark.parametrize("depth", [1, 2, 3, 8])
def test_rate_and_latency(depth):
    p = FifoParams(8, depth, beats_per_image=10)
    data = list(range(40))
    stamps, payloads = output_cycles(Fifo(p), data, len(data))
    assert payloads == data
    assert stamps[0] == (1 if depth == 1 else 2)    # written at cycle 0
    assert p.latency == stamps[0]
    assert stamps[-1] - stamps[-1 - p.beats_per_image] == p.cycles_per_image


def test_lost_beats_are_caught():
    """Planted fault: the FIFO claims to accept beats while full, and drops them."""

    class Leaky(Fifo):
        def elaborate(self, platform):
            m = super().elaborate(platform)
            m.d.comb += self.i_stream.ready.eq(1)
            return m

    data = list(range(30))
    with pytest.raises(TimeoutError):
        run_stream(Leaky(FifoParams(8, 3)), data, len(data), stall_in=0.1, stall_out=0.6,
                   max_cycles=1000)


def test_params_are_validated():
    with pytest.raises(ValueError, match="fifo3: depth must be a positive integer, not 0"):
        FifoParams(8, 0, name="fifo3")
    with pytest.raises(ValueError, match="width must be a positive integer, not 2.0"):
        FifoParams(2.0, 4)
    assert FifoParams(16, 32).memory_bits == 512


def test_converts_to_verilog():
    assert "module fifo" in verilog.convert(Fifo(FifoParams(12, 8)), name="fifo")
