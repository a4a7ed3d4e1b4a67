"""Stream co-simulation under Verilator: beats in, beats out, cycle stamps.

``run_stream_cosim(design, in_beats, n_out)`` is the Verilator counterpart of
``sim.stream_sim.run_stream``: it converts the design to Verilog, builds it (cached, see
``sim.verilator``), runs the generic cocotb testbench ``sim.stream_tb`` with seeded
random stalls on both sides and returns the output beats with the cycle at which each
crossed. It is meant for long runs (whole networks, images back to back, millions of
cycles): the testbench acts once per transfer, not once per cycle.

The design is an Amaranth ``wiring.Component`` with ``i_stream``/``o_stream`` stream
ports (converted with its ``clk``/``rst`` domain ports), or Verilog text whose top module
has the same flattened ports: ``clk``, ``rst`` (synchronous, active high),
``i_stream__payload``/``__valid``/``__ready``, ``o_stream__payload``/``__valid``/``__ready``
(other stream names through ``i_port``/``o_port``). Payloads are plain unsigned integers
of any width. Any other input port stays 0.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sim.verilator import (
    CocotbError,
    VerilatorBuild,
    WaveFormat,
    cache_root,
    run_cocotb,
    verilator_build,
)

__all__ = [
    "CosimError", "CosimMismatch", "CosimResult", "CosimTimeout", "assert_beats_equal",
    "run_stream_cosim",
]

TESTBENCH = "sim.stream_tb"
CONF_ENV = "BNNHW_COSIM_CONF"     # the name sim.stream_tb reads; it is not imported here


class CosimError(RuntimeError):
    """The co-simulation did not complete: the testbench failed or the simulator died."""

    def __init__(self, message: str, run_dir: Path | None = None):
        super().__init__(message)
        self.run_dir = run_dir


class CosimTimeout(TimeoutError):
    """Too few output beats arrived in time. ``partial`` holds what did arrive; the run
    folder (simulator log, input file, waves if asked for) is kept as ``run_dir``."""

    def __init__(self, message: str, partial: CosimResult, run_dir: Path):
        super().__init__(message)
        self.partial = partial
        self.run_dir = run_dir


class CosimMismatch(AssertionError):
    """Output beats differ from the reference. ``indices`` lists every differing beat."""

    def __init__(self, message: str, indices: list[int]):
        super().__init__(message)
        self.indices = indices


@dataclass(frozen=True)
class CosimResult:
    """Outcome of one stream co-simulation.

    Cycles count rising clock edges after reset; a beat "at cycle c" crossed on edge c.
    ``cycles`` runs from reset to the last collected beat (plus any lingering).
    ``sim_seconds`` is the wall time of the simulated run itself (``sim_cpu_seconds`` its
    CPU time, the steadier figure on a shared machine); ``run_seconds`` adds the
    simulator's start-up (Python interpreter, cocotb, reading the files).
    What the random stalls did: ``idle_in_cycles`` idle cycles the source inserted with a
    beat pending, ``held_out_beats`` output beats the sink held while the design offered
    them, ``held_out_cycles`` the cycles they waited in all.
    """

    out_beats: list[int]
    out_cycles: list[int]
    in_cycles: list[int]
    cycles: int
    sim_seconds: float
    run_seconds: float
    build: VerilatorBuild
    sim_cpu_seconds: float = 0.0
    extra_beats: list[int] = field(default_factory=list)
    waves: Path | None = None
    idle_in_cycles: int = 0
    held_out_beats: int = 0
    held_out_cycles: int = 0
    ports: dict[str, int] = field(default_factory=dict)  # ``read_ports``' final values

    @property
    def cycles_per_second(self) -> float:
        return self.cycles / self.sim_seconds if self.sim_seconds > 0 else float("inf")

    @property
    def cycles_per_cpu_second(self) -> float:
        return self.cycles / self.sim_cpu_seconds if self.sim_cpu_seconds > 0 else float("inf")

    @property
    def build_cached(self) -> bool:
        """True when the Verilator build was reused and nothing was compiled."""
        return self.build.cached


def _payload_width(design, port: str) -> int:
    from amaranth.hdl import Value

    stream = getattr(design, port, None)
    if stream is None or not hasattr(stream, "payload"):
        raise ValueError(f"{type(design).__name__} has no stream port {port!r} "
                         "(a stream.Signature member with payload/valid/ready)")
    return len(Value.cast(stream.payload))


def _wave_format(waves: bool | str | Path) -> WaveFormat | None:
    if waves is False or waves is None:
        return None
    return "fst" if waves is not True and Path(waves).suffix == ".fst" else "vcd"


INTERRUPT_GRACE_S = 10.0  # how long Ctrl-C waits for the simulator to stop


def _with_progress(simulate: Callable[[], None], path: Path,
                   progress: Callable[[int, int], None]) -> None:
    """Run ``simulate`` in a thread, passing what the testbench writes to ``path`` on.

    On Ctrl-C (``KeyboardInterrupt`` in this, the main thread) it waits up to
    ``INTERRUPT_GRACE_S`` for the simulation to end (the simulator gets the terminal's
    interrupt too) before passing the interrupt on, so that its run folder can go.
    """
    worker = threading.Thread(target=simulate, name="cosim", daemon=True)
    worker.start()
    seen = None
    try:
        while worker.is_alive():
            worker.join(0.25)
            try:
                text = path.read_text()
            except OSError:
                continue
            if text != seen and text.strip():
                seen = text
                beats, cycle = map(int, text.split())
                progress(beats, cycle)
    except KeyboardInterrupt:
        worker.join(INTERRUPT_GRACE_S)
        raise


def run_stream_cosim(design, in_beats: Iterable[int], n_out: int, *, seed: int = 0,
                     stall_in: float = 0.3, stall_out: float = 0.3,
                     timeout_cycles: int = 1_000_000, linger_cycles: int = 0,
                     waves: bool | str | Path = False, toplevel: str = "top",
                     build_args: Sequence[str] = (), reset_cycles: int = 4,
                     keep: bool = False, i_port: str = "i_stream", o_port: str = "o_stream",
                     progress: Callable[[int, int], None] | None = None,
                     read_ports: Sequence[str] = ()) -> CosimResult:
    """Run ``in_beats`` through ``design`` under Verilator and collect ``n_out`` beats.

    ``seed`` fixes the stall patterns: before each beat the source idles one more cycle
    with probability ``stall_in`` (again and again, so idle runs are geometric), and the
    sink holds output beats the design offers, for a count drawn the same way with
    ``stall_out`` of beat times (``sim.stream_tb``). ``timeout_cycles`` bounds the
    run from reset; when fewer than ``n_out`` beats have arrived by then ``CosimTimeout``
    is raised, naming how many did (``.partial`` holds them). ``linger_cycles`` keeps
    ``ready`` high that much longer after the last expected beat and returns anything
    more that comes out in ``extra_beats``. ``waves=True`` records a VCD in the run
    folder (kept; its path is ``result.waves``); a path records there, FST when it ends
    in ``.fst``. The run folder (under the cache root, ``runs/``) is removed after a
    successful run unless ``keep`` or waves in it; on failure it is kept and named.
    An interrupted run (Ctrl-C) removes its run folder before passing the interrupt on.
    ``i_port``/``o_port`` name the two streams. ``progress(beats, cycle)``, if given,
    is called about twice a second during the run with the output beats collected so
    far and the cycle of the last (e.g. to move a tqdm bar), and once at the end.
    ``read_ports`` names output ports whose values are read when the run ends (after
    lingering): ``result.ports`` maps each to its integer value.

    Raises ``ValueError`` for a beat that does not fit the input payload or bad
    settings, ``sim.verilator.VerilatorBuildError`` when the build fails, ``CosimError``
    when the testbench fails, the simulator dies or the design breaks the stream rule on
    its output (drops ``valid`` or changes the payload of a beat the sink holds).
    """
    beats = [int(b) for b in in_beats]
    for name, p in (("stall_in", stall_in), ("stall_out", stall_out)):
        if not 0 <= p < 1:
            raise ValueError(f"{name} must be a probability in [0, 1), not {p!r}")
    if n_out < 0 or timeout_cycles < 1 or linger_cycles < 0 or reset_cycles < 1:
        raise ValueError(f"n_out={n_out}, timeout_cycles={timeout_cycles}, "
                         f"linger_cycles={linger_cycles} and reset_cycles={reset_cycles} "
                         "must be >= 0, >= 1, >= 0 and >= 1")
    if not isinstance(design, str):
        width = _payload_width(design, i_port)
        _payload_width(design, o_port)
        for i, b in enumerate(beats):
            if not 0 <= b < (1 << width):
                raise ValueError(f"input beat {i} = {b:#x} does not fit the {width}-bit "
                                 f"{i_port} payload")

    build = verilator_build(design, toplevel=toplevel, waves=_wave_format(waves),
                            build_args=build_args)
    runs = cache_root() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{toplevel}-", dir=runs))
    try:
        return _run_in(run_dir, build, beats, n_out, seed=seed, stall_in=stall_in,
                       stall_out=stall_out, timeout_cycles=timeout_cycles,
                       linger_cycles=linger_cycles, waves=waves, toplevel=toplevel,
                       reset_cycles=reset_cycles, keep=keep, i_port=i_port, o_port=o_port,
                       progress=progress, read_ports=tuple(read_ports))
    except KeyboardInterrupt:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _run_in(run_dir: Path, build: VerilatorBuild, beats: list[int], n_out: int, *,
            seed: int, stall_in: float, stall_out: float, timeout_cycles: int,
            linger_cycles: int, waves: bool | str | Path, toplevel: str, reset_cycles: int,
            keep: bool, i_port: str, o_port: str,
            progress: Callable[[int, int], None] | None,
            read_ports: tuple[str, ...] = ()) -> CosimResult:
    """The part of ``run_stream_cosim`` that runs in the run folder ``run_dir``."""
    wave_path = None if build.waves is None else \
        run_dir / "dump.vcd" if waves is True else Path(waves).resolve()

    in_file, out_file = run_dir / "in.hex", run_dir / "out.json"
    in_file.write_text("".join(f"{b:x}\n" for b in beats))
    conf = {
        "in_file": str(in_file), "out_file": str(out_file), "n_out": n_out, "seed": seed,
        "stall_in": stall_in, "stall_out": stall_out, "timeout_cycles": timeout_cycles,
        "linger_cycles": linger_cycles, "reset_cycles": reset_cycles,
        "i_port": i_port, "o_port": o_port, "read_ports": list(read_ports),
    }
    if progress is not None:
        conf["progress_file"] = str(run_dir / "progress")
    start = time.perf_counter()
    failure: CocotbError | None = None

    def simulate() -> None:
        nonlocal failure
        try:
            run_cocotb(build, TESTBENCH, run_dir=run_dir, env={CONF_ENV: json.dumps(conf)},
                       waves_file=wave_path, seed=seed)
        except CocotbError as exc:
            failure = exc

    if progress is None:
        simulate()
    else:
        _with_progress(simulate, run_dir / "progress", progress)
    run_seconds = time.perf_counter() - start

    if not out_file.is_file():
        raise CosimError(f"stream co-simulation of {toplevel!r} wrote no result; "
                         f"{failure or 'no error reported'}", run_dir)
    raw = json.loads(out_file.read_text())
    result = result_of(raw, build, run_seconds, wave_path)
    if progress is not None and result.out_cycles:
        progress(len(result.out_beats), result.out_cycles[-1])
    if raw["status"] == "stream_rule":
        raise CosimError(f"stream co-simulation of {toplevel!r}: {raw['rule_error']}; "
                         f"run folder {run_dir}", run_dir)
    if raw["status"] == "timeout":
        raise CosimTimeout(
            f"stream co-simulation of {toplevel!r}: {len(result.out_beats)} of {n_out} "
            f"output beats arrived within {timeout_cycles} cycles "
            f"({len(result.in_cycles)} of {len(beats)} input beats accepted); "
            f"run folder {run_dir}", result, run_dir)
    if failure is not None:
        raise CosimError(str(failure), run_dir)
    if not keep and not (wave_path is not None and wave_path.is_relative_to(run_dir)):
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def result_of(raw: dict, build: VerilatorBuild, run_seconds: float,
              wave_path: Path | None) -> CosimResult:
    """The ``CosimResult`` of a bench's JSON result (``sim.stream_tb`` and the C++ stream
    harness write the same one)."""
    return CosimResult(
        out_beats=[int(b, 16) for b in raw["out"]], out_cycles=raw["out_cycles"],
        in_cycles=raw["in_cycles"], cycles=raw["cycles"], sim_seconds=raw["sim_seconds"],
        run_seconds=run_seconds, build=build, sim_cpu_seconds=raw["sim_cpu_seconds"],
        extra_beats=[int(b, 16) for b in raw["extra"]], waves=wave_path,
        idle_in_cycles=raw["idle_in_cycles"], held_out_beats=raw["held_out_beats"],
        held_out_cycles=raw["held_out_cycles"],
        ports={k: int(v, 16) for k, v in raw.get("ports", {}).items()})


def assert_beats_equal(expected: Sequence[int], result: CosimResult, *, show: int = 4) -> None:
    """Check ``result.out_beats`` against ``expected``, exactly, beat for beat.

    Raises ``CosimMismatch`` naming the count of differing beats and the first ``show``
    of them (index, cycle, expected and actual value in hex), or the length difference.
    """
    got, want = result.out_beats, [int(b) for b in expected]
    bad = [i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w]
    if len(got) != len(want):
        bad.append(min(len(got), len(want)))
    if not bad:
        return
    lines = [f"{len(bad)} of {len(want)} output beats differ from the reference"
             + (f" ({len(got)} beats came out)" if len(got) != len(want) else "")]
    for i in bad[:show]:
        g = f"{got[i]:#x} at cycle {result.out_cycles[i]}" if i < len(got) else "nothing"
        w = f"{want[i]:#x}" if i < len(want) else "nothing"
        lines.append(f"  beat {i}: expected {w}, got {g}")
    raise CosimMismatch("\n".join(lines), bad)
