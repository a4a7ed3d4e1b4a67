"""Stream simulation under Verilator with a C++ testbench: ``run_stream_fast``.

``run_stream_fast`` has the signature, the semantics and the result of
``sim.cosim.run_stream_cosim`` (beats in, ``n_out`` beats out, seeded random stalls on
both sides, a cycle stamp for every transfer, the stream rule checked on the output while
the sink holds a beat, lingering for extra beats, ``CosimTimeout`` / ``CosimError``), but
the bench is ``sim/harness/stream_main.cpp``, compiled with the design into one plain
Verilator executable (``sim.verilator.verilator_exe_build``, cached by design hash): it
clocks the model itself, so a run costs the model's evaluation and little else, millions
of cycles per second instead of the cocotb bench's hundred thousand.

The cycle numbering is the cocotb bench's (edge 0 is the first after reset), so with no
stalls both give the same stamps. The stall semantics are the same too, drawn from the
harness's own seeded generator: a seed gives the same stalls run after run, not the
stalls the cocotb bench draws for it.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from sim.cosim import (
    CosimError,
    CosimResult,
    CosimTimeout,
    _payload_width,
    _wave_format,
    result_of,
)
from sim.verilator import (
    HARNESS_DIR,
    VerilatorBuild,
    _tail,
    cache_root,
    cxx_name,
    port_widths,
    verilator_exe_build,
)

__all__ = ["STREAM_MAIN", "python_pauses", "run_stream_fast", "stream_build"]

STREAM_MAIN = HARNESS_DIR / "stream_main.cpp"
POLL_S = 0.25            # how often a run with a progress callback looks at the harness


def stream_build(design, *, toplevel: str = "top", waves: bool | str | Path = False,
                 build_args: Sequence[str] = (), i_port: str = "i_stream",
                 o_port: str = "o_stream", read_port: str | None = None) -> VerilatorBuild:
    """The stream harness built with ``design`` (cached): the executable of a fast run;
    ``read_port`` names an output port the harness reports when the run ends."""
    for port in (i_port, o_port) + ((read_port,) if read_port else ()):
        if not port.isidentifier():
            raise ValueError(f"stream port name {port!r} is not an identifier")
    defines = {"BNNHW_I_PORT": cxx_name(i_port + "__"), "BNNHW_I_NAME": i_port,
               "BNNHW_O_PORT": cxx_name(o_port + "__"), "BNNHW_O_NAME": o_port}
    if read_port:
        defines.update(BNNHW_READ_PORT=cxx_name(read_port), BNNHW_READ_NAME=read_port)
    return verilator_exe_build(design, STREAM_MAIN, toplevel=toplevel,
                               waves=_wave_format(waves), build_args=build_args,
                               defines=defines)


def run_stream_fast(design, in_beats: Iterable[int], n_out: int, *, seed: int = 0,
                    stall_in: float = 0.3, stall_out: float = 0.3,
                    timeout_cycles: int = 1_000_000, linger_cycles: int = 0,
                    waves: bool | str | Path = False, toplevel: str = "top",
                    build_args: Sequence[str] = (), reset_cycles: int = 4,
                    keep: bool = False, i_port: str = "i_stream", o_port: str = "o_stream",
                    progress: Callable[[int, int], None] | None = None,
                    python_stalls: bool = False,
                    read_ports: Sequence[str] = ()) -> CosimResult:
    """Run ``in_beats`` through ``design`` under Verilator and collect ``n_out`` beats.

    Arguments, result and errors as ``sim.cosim.run_stream_cosim``: ``seed`` fixes the
    stalls (geometric input idles with ``stall_in``, output holds of a geometric count of
    beat times with ``stall_out``); ``timeout_cycles`` bounds the run (``CosimTimeout``
    with ``.partial``); ``linger_cycles`` collects ``extra_beats``; ``waves`` records a
    VCD (FST for a ``.fst`` path) from a trace build (a separate cache entry); the run
    folder (``runs/`` under the cache root) goes after a successful run unless ``keep``;
    ``progress(beats, cycle)`` is called about every half second and at the end.
    ``run_seconds`` is the harness process's wall time, start-up included. ``read_ports``
    (at most one here) is read when the run ends, as in ``run_stream_cosim``.

    The harness draws the stall counts from its own generator seeded with ``seed``.
    ``python_stalls=True`` draws them in Python instead, exactly as the cocotb bench does
    (``random.Random(seed)`` for the source, ``seed + 1`` for the sink), so that both
    benches see the same stalls and give the same stamps (about a microsecond of Python per
    beat).

    Raises ``ValueError`` for a beat that does not fit the input payload (for Verilog text,
    the harness refuses it: ``CosimError``) or bad settings, ``VerilatorBuildError`` when the
    build fails, ``CosimError`` when the harness fails or the design breaks the stream rule.
    """
    beats = [int(b) for b in in_beats]
    for name, p in (("stall_in", stall_in), ("stall_out", stall_out)):
        if not 0 <= p < 1:
            raise ValueError(f"{name} must be a probability in [0, 1), not {p!r}")
    if n_out < 0 or timeout_cycles < 1 or linger_cycles < 0 or reset_cycles < 1:
        raise ValueError(f"n_out={n_out}, timeout_cycles={timeout_cycles}, "
                         f"linger_cycles={linger_cycles} and reset_cycles={reset_cycles} "
                         "must be >= 0, >= 1, >= 0 and >= 1")
    width = None
    if not isinstance(design, str):
        width = _payload_width(design, i_port)
        _payload_width(design, o_port)
        for i, b in enumerate(beats):
            if not 0 <= b < (1 << width):
                raise ValueError(f"input beat {i} = {b:#x} does not fit the {width}-bit "
                                 f"{i_port} payload")
    elif any(b < 0 for b in beats):
        raise ValueError("input beats must be >= 0")

    if len(read_ports) > 1:
        raise ValueError(f"the fast harness reads one port at the end, not {len(read_ports)}")
    build = stream_build(design, toplevel=toplevel, waves=waves, build_args=build_args,
                         i_port=i_port, o_port=o_port,
                         read_port=read_ports[0] if read_ports else None)
    if width is None:       # Verilog text: the width Verilator gave the port
        width = port_widths(build).get(cxx_name(f"{i_port}__payload"))
    runs = cache_root() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{toplevel}-fast-", dir=runs))
    wave_path = None if build.waves is None else \
        run_dir / "dump.vcd" if waves is True else Path(waves).resolve()

    in_file, out_file, log = run_dir / "in.hex", run_dir / "out.json", run_dir / "sim.log"
    in_file.write_text("".join(f"{b:x}\n" for b in beats))
    cmd = [str(build.executable), "--in", str(in_file), "--out", str(out_file),
           "--n-out", str(n_out), "--seed", str(seed), "--stall-in", repr(float(stall_in)),
           "--stall-out", repr(float(stall_out)), "--timeout", str(timeout_cycles),
           "--linger", str(linger_cycles), "--reset", str(reset_cycles)]
    if width is not None:
        cmd += ["--in-width", str(width)]
    if wave_path is not None:
        wave_path.parent.mkdir(parents=True, exist_ok=True)
        cmd += ["--waves", str(wave_path)]
    if python_stalls and (stall_in or stall_out):
        pauses = run_dir / "pauses"
        pauses.write_text(" ".join(map(str, python_pauses(seed, stall_in, len(beats))))
                          + "\n" + " ".join(map(str, python_pauses(seed + 1, stall_out, n_out)))
                          + "\n")
        cmd += ["--pauses", str(pauses)]
    progress_file = run_dir / "progress"
    if progress is not None:
        cmd += ["--progress", str(progress_file)]

    start = time.perf_counter()
    try:
        code = _run(cmd, log, progress_file if progress else None, progress)
    except BaseException:           # Ctrl-C: the harness is gone (see _run), so is the folder
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    run_seconds = time.perf_counter() - start

    what = f"stream simulation of {toplevel!r} (fast harness)"
    if code != 0 or not out_file.is_file():
        how = f"exit status {code}" if code >= 0 else f"killed by signal {-code}"
        raise CosimError(f"{what} failed ({how}); log {log}:\n{_tail(log)}", run_dir)
    raw = json.loads(out_file.read_text())
    result = result_of(raw, build, run_seconds, wave_path)
    if progress is not None and result.out_cycles:
        progress(len(result.out_beats), result.out_cycles[-1])
    if raw["status"] == "stream_rule":
        raise CosimError(f"{what}: {raw['rule_error']}; run folder {run_dir}", run_dir)
    if raw["status"] == "timeout":
        raise CosimTimeout(
            f"{what}: {len(result.out_beats)} of {n_out} output beats arrived within "
            f"{timeout_cycles} cycles ({len(result.in_cycles)} of {len(beats)} input beats "
            f"accepted); run folder {run_dir}", result, run_dir)
    if not keep and not (wave_path is not None and wave_path.is_relative_to(run_dir)):
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def python_pauses(seed: int, stall: float, n: int) -> list[int]:
    """The ``n`` pause counts ``sim.stream_tb`` draws for one side: one per beat, each one
    more with probability ``stall``, again and again, from ``random.Random(seed)``."""
    rng, out = random.Random(seed), []
    for _ in range(n):
        k = 0
        while stall and rng.random() < stall:
            k += 1
        out.append(k)
    return out


def _run(cmd: list[str], log: Path, progress_file: Path | None,
         progress: Callable[[int, int], None] | None) -> int:
    """Run the harness with its output in ``log``; its exit status (negative: a signal).

    With ``progress`` the harness's progress file is passed on while it runs. Whatever
    ends this call early (Ctrl-C) kills the harness first, so no run outlives its caller.
    """
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            seen = None
            while True:
                try:
                    return proc.wait(POLL_S if progress else None)
                except subprocess.TimeoutExpired:
                    pass
                try:
                    text = progress_file.read_text()      # type: ignore[union-attr]
                except OSError:
                    continue
                if text != seen and text.strip():
                    seen = text
                    beats, cycle = map(int, text.split())
                    progress(beats, cycle)                # type: ignore[misc]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

