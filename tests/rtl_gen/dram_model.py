"""Behavioural model of a DRAM read port (``rtl_gen.tiled_mvtu.dram_read_signature``) for
the Amaranth simulator.

``DramModel(words, base, ...)`` holds ``words`` at word addresses ``base ..``; its
``testbench`` answers the reader's ``cmd`` stream and drives ``rdata``:

- ``cmd.ready``: commands at least ``1 / words_per_cycle`` cycles apart on average (the
  next one is due ``1 / words_per_cycle`` after the previous one was due, or accepted if
  later; ``rtl_gen.tiled_mvtu.port_rate`` makes the rate exact), and low at random with
  probability ``stall_cmd``;
- each accepted command's word is offered on ``rdata`` from ``latency`` cycles after the
  edge that accepted it (in order), held back at random with probability ``stall_rdata``
  before it is first offered; once offered it stays valid until taken (the stream rule).

A command outside the stored words raises ``IndexError`` (naming the address).
``addresses`` records every accepted command; ``max_outstanding`` the most words asked
for and not yet taken.
"""

from __future__ import annotations

import random
from collections import deque

from rtl_gen.tiled_mvtu import port_rate


class DramModel:
    def __init__(self, words, base=0, *, latency=8, words_per_cycle=1.0, stall_cmd=0.0,
                 stall_rdata=0.0, seed=0):
        self.words, self.base = list(words), base
        self.latency, self.spacing = latency, 1 / port_rate(words_per_cycle)
        self.stall_cmd, self.stall_rdata = stall_cmd, stall_rdata
        self.rng = random.Random(seed)
        self.addresses: list[int] = []
        self.max_outstanding = 0
        self.cmd_stalls = self.rdata_stalls = 0

    def read(self, addr):
        i = addr - self.base
        if not 0 <= i < len(self.words):
            raise IndexError(f"DRAM read at word {addr}, outside {self.base}.."
                             f"{self.base + len(self.words) - 1}")
        return self.words[i]

    def testbench(self, port):
        async def run(ctx):
            pending = deque()    # (first cycle it may be offered, word)
            cycle, due, offered = 0, 0, False
            while True:
                ready = cycle >= due
                if ready and self.stall_cmd and self.rng.random() < self.stall_cmd:
                    ready = False
                    self.cmd_stalls += 1
                ctx.set(port.cmd.ready, ready)
                if not offered and pending and pending[0][0] <= cycle:
                    if self.stall_rdata and self.rng.random() < self.stall_rdata:
                        self.rdata_stalls += 1
                    else:
                        offered = True
                ctx.set(port.rdata.valid, offered)
                ctx.set(port.rdata.payload, pending[0][1] if offered else 0)
                _, _, cv, ca, rr = await ctx.tick().sample(port.cmd.valid, port.cmd.payload,
                                                           port.rdata.ready)
                if cv and ready:
                    self.addresses.append(ca)
                    pending.append((cycle + self.latency, self.read(ca)))
                    due = max(due, cycle) + self.spacing
                    self.max_outstanding = max(self.max_outstanding, len(pending))
                if offered and rr:
                    pending.popleft()
                    offered = False
                cycle += 1

        return run
