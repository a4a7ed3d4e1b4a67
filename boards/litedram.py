"""The LiteDRAM controller of the Arty A7's DDR3, generated at build time from the installed
``litedram`` package (the ``bnnhw[dram]`` extra), never kept in the repository.

``generate(config, sim=...)`` runs LiteDRAM's standalone generator (``litedram.gen``,
the ``litedram_gen`` command) in a subprocess and returns a ``LiteDramCore``: the Verilog
files of the core (module ``litedram_core``), its ports, its CSR map and the figures of
its native user port. Cores are cached in a folder keyed by a hash of the configuration,
the ``sim`` flag and the versions of the generator's packages: ``build/dram_cache/`` of
the working directory unless ``BNNHW_DRAM_CACHE`` names another. Concurrent generations
are serialised by a lock file, and a core only becomes visible once complete (generated
in a scratch folder and renamed), so a killed run never leaves half a core in the cache.

Two configurations, both the Arty's DDR3 (one MT41K128M16: 16 bits, 8 banks, 256 MB)
behind an ``A7DDRPHY`` at a 100 MHz system clock (1:4, DDR3-800) with a 200 MHz IODELAY
reference and one native user port of 128-bit words (24 address bits):

- ``arty_config(cpu="vexriscv")``: a VexRiscv inside the core runs LiteX's BIOS from a
  48 KB ROM, which initialises the DDR3, calibrates the read/write leveling, tests the
  first 2 MB, then raises ``init_done`` (and ``init_error`` with it if the test failed;
  the user port stays blocked then). Its firmware is compiled while generating, so it
  needs a RISC-V cross compiler on ``PATH`` (Debian: ``gcc-riscv64-unknown-elf``; the
  prefix LiteX uses is the one ``riscv_triple()`` finds, and the compiler's version is
  part of the cache key), ninja, and the packages named in ``CPU_PACKAGES`` (in
  ``bnnhw[dram]``). The CPU's Verilog (``VexRiscv.v``) is copied into the core's folder
  and the BIOS's build tree pruned to its headers and binary: a cached core is about
  2 MB and holds every file it needs (``LiteDramCore.files``).
- ``arty_config(cpu=None)``: no CPU; the core exposes a Wishbone control bus
  (``wb_ctrl_*``, its CSRs) and leaves the DDR3 initialisation and calibration to the
  user, who then writes 1 to ``ddrctrl_init_done``.
- ``SIM_CONFIG`` with ``sim=True``: the same controller and user port, with LiteDRAM's
  DFI-level DRAM model (``SDRAMPHYModel``, 256 MB of simulated memory) in place of the
  PHY and the chips, and no CPU. It has no PLL: ``user_clk`` is its ``clk`` input.

Clocks of the two hardware cores: ``clk`` is the 100 MHz reference (``input_clk_freq``:
the Arty's board clock) into one ``PLLE2_ADV`` (VCO 1600 MHz), which makes the 100 MHz
system clock (``user_clk``, the clock of the user port and of the CPU), 400 MHz and
400 MHz at 90 degrees for the PHY's serialisers (``sys4x``, ``sys4x_dqs``) and the 200 MHz
reference of the ``IDELAYCTRL``, each through a ``BUFG`` of the core's own. ``rst`` is
active high and resets the PLL; ``user_rst`` is the system reset, high until the PLL has
locked (``pll_locked``) and for a CPU core also while the CPU's soft reset is written.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bnnhw.errors import BnnhwError
from bnnhw.filelock import locked

__all__ = ["CACHE_ENV", "CPU_PACKAGES", "DRAM_PACKAGES", "SIM_CONFIG", "TRIPLE_ENV",
           "LiteDramCore", "Port", "arty_config", "cache_root", "generate", "riscv_triple"]

CACHE_ENV = "BNNHW_DRAM_CACHE"
DEFAULT_CACHE = Path("build") / "dram_cache"
# The Python packages litedram.gen imports (litex.tools.litex_sim pulls liteeth and
# litescope in even for a core without Ethernet or a logic analyser); bnnhw[dram].
DRAM_PACKAGES = ("litex", "litedram", "migen", "liteeth", "litescope")
# What the VexRiscv variant needs beyond them: the CPU's Verilog and the BIOS's libc.
CPU_PACKAGES = ("pythondata-cpu-vexriscv", "pythondata-software-picolibc",
                "pythondata-software-compiler_rt", "meson")
# LiteX's override of the cross compiler's prefix; generate() sets it to the one it found.
TRIPLE_ENV = "LITEX_ENV_CC_TRIPLE"
TOP = "litedram_core"
# Bump when a change here makes old cache entries unusable (2: the CPU's Verilog is copied
# into the core's gateware folder and the BIOS's build tree is pruned).
_CACHE_FORMAT = 2

_ARTY_BASE = {
    "speedgrade": -1,
    "memtype": "DDR3",
    "uart": "rs232",
    "sdram_module": "MT41K128M16",
    "sdram_module_nb": 2,           # two 8-bit byte lanes: the one x16 chip
    "sdram_rank_nb": 1,
    "sdram_phy": "A7DDRPHY",
    "rtt_nom": "60ohm",
    "rtt_wr": "60ohm",
    "ron": "34ohm",
    "input_clk_freq": 100_000_000,
    "sys_clk_freq": 100_000_000,
    "iodelay_clk_freq": 200_000_000,
    "cmd_latency": 0,
    "user_ports": {"0": {"type": "native"}},
}

SIM_CONFIG = {**_ARTY_BASE, "cpu": "None"}


def arty_config(cpu: str | None = "vexriscv") -> dict:
    """The Arty A7's configuration, with a VexRiscv doing the initialisation or none."""
    if cpu not in ("vexriscv", None):
        raise ValueError(f"cpu must be 'vexriscv' or None, not {cpu!r}")
    return {**_ARTY_BASE, "cpu": "None" if cpu is None else cpu}


@dataclass(frozen=True)
class Port:
    """One port of the generated module: its name, direction and width in bits."""

    name: str
    direction: str      # "input" or "output"
    width: int


@dataclass(frozen=True)
class LiteDramCore:
    """A generated controller: ``verilog`` lists the files to compile (module ``litedram_core``
    is the top, then the CPU's own Verilog, ``VexRiscv.v``, for a CPU core), ``data_files``
    what they read by ``$readmemh`` (a CPU core's ROM holding the BIOS and its SRAM's
    initial image), ``csr`` maps each CSR name to its byte address on the Wishbone bus.

    ``files`` is both: what a Vivado project or a Yosys run needs, all in ``gateware/`` of
    the core's folder. The ``$readmemh`` names are bare file names, read from the tool's
    working directory: add every file under its own name to the build (Amaranth's
    ``platform.add_file(path.name, path.read_bytes())`` does that)."""

    directory: Path
    verilog: tuple[Path, ...]
    data_files: tuple[Path, ...]
    ports: tuple[Port, ...]
    csr: dict[str, int]
    sim: bool
    cpu: str | None
    key: str
    cached: bool

    def port(self, name: str) -> Port:
        for p in self.ports:
            if p.name == name:
                return p
        raise KeyError(f"the generated LiteDRAM core has no port {name!r}")

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file the core needs in a build: its Verilog, then its ROM images."""
        return self.verilog + self.data_files

    @property
    def constraints(self) -> str:
        """The timing exceptions of LiteX's clock-domain synchronisers (registers marked
        ``mr_ff``/``ars_ff1``/``ars_ff2`` in its Verilog) from the core's ``.xdc``, for the
        design's own Vivado constraints; the rest of that file places the core's ports on
        pins (``LOC X``), which a design holding the core must not use. Empty without one."""
        xdc = self.directory / "gateware" / f"{TOP}.xdc"
        if not xdc.is_file():
            return ""
        text = xdc.read_text().split("# Design constraints", 1)[-1]
        return "".join(f"{line}\n" for line in text.splitlines()
                       if line.strip() and not line.startswith("#"))

    @property
    def data_width(self) -> int:
        """Bits per word of the native user port (128 for the Arty's 1:4 x16 DDR3)."""
        return self.port("user_port_0_wdata_data").width

    @property
    def address_width(self) -> int:
        """Address bits of the native user port, in words of ``data_width`` bits."""
        return self.port("user_port_0_cmd_addr").width


def cache_root() -> Path:
    """The core cache folder: ``$BNNHW_DRAM_CACHE`` or ``./build/dram_cache``, absolute."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).resolve()


def _missing(packages) -> list[str]:
    missing = []
    for name in packages:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def _check_installed(cpu: str | None) -> None:
    missing = _missing(DRAM_PACKAGES)
    if missing:
        raise BnnhwError(f"install bnnhw[dram]: the DRAM controller is generated by LiteDRAM, "
                         f"and {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                         f"not installed (pip install 'bnnhw[dram]')")
    if cpu is None:
        return
    missing = _missing(CPU_PACKAGES)
    if missing:
        raise BnnhwError(f"the DRAM controller with a {cpu} CPU also needs "
                         f"{', '.join(missing)}: pip install {' '.join(missing)}, or generate "
                         f"it without a CPU (initialisation then left to the design)")
    if riscv_triple() is None:
        raise BnnhwError(f"the DRAM controller with a {cpu} CPU compiles its firmware with a "
                         f"RISC-V cross compiler, and none is on PATH (looked for "
                         f"riscv64-unknown-elf-gcc and the other names LiteX accepts): "
                         f"install Debian's gcc-riscv64-unknown-elf, or generate the "
                         f"controller without a CPU")
    if not any(_which(n) for n in ("ninja", "ninja-build", "samu")):
        raise BnnhwError(f"the DRAM controller with a {cpu} CPU builds its firmware's libc "
                         f"with meson and ninja, and ninja is not on PATH: install Debian's "
                         f"ninja-build (or pip install ninja)")


def _which(name: str) -> str | None:
    """``name`` on the generator's ``PATH`` (this Python's scripts folder first)."""
    return shutil.which(name, path=_generator_env(None)["PATH"])


def riscv_triple() -> str | None:
    """The prefix of the RISC-V cross compiler the BIOS is built with (``riscv64-unknown-elf``
    for Debian's ``gcc-riscv64-unknown-elf``): ``$LITEX_ENV_CC_TRIPLE`` if its ``-gcc`` is
    on ``PATH``, else the first of LiteX's own list for 32-bit RISC-V CPUs that is; None
    when there is none. (Debian's 64-bit compiler builds the VexRiscv's RV32IM code: it
    carries the ``-march=rv32i2p0_m -mabi=ilp32`` multilib, and the BIOS brings its own
    libc, picolibc, and compiler-rt.)"""
    from litex.soc.cores.cpu import CPU_GCC_TRIPLE_RISCV32

    wanted = os.environ.get(TRIPLE_ENV)
    for triple in ((wanted,) if wanted else ()) + tuple(CPU_GCC_TRIPLE_RISCV32):
        if shutil.which(f"{triple}-gcc"):
            return triple
    return None


def _compiler_version(triple: str) -> str:
    done = subprocess.run([f"{triple}-gcc", "--version"], capture_output=True, text=True,
                          check=False)
    return f"{triple}-gcc {(done.stdout.splitlines() or ['?'])[0]}"


def _versions(cpu: str | None) -> str:
    names = DRAM_PACKAGES + (CPU_PACKAGES if cpu is not None else ())
    parts = [f"{n} {importlib.metadata.version(n)}" for n in names]
    if cpu is not None:
        triple = riscv_triple()
        parts.append(_compiler_version(triple) if triple else "no RISC-V compiler")
    return "; ".join(parts)


def _cpu_of(config: dict) -> str | None:
    cpu = config.get("cpu")
    return None if cpu in (None, "None") else str(cpu)


def config_key(config: dict, sim: bool) -> str:
    """The cache key: a hash of the configuration, the flag and the generator's versions."""
    text = json.dumps(config, sort_keys=True)
    parts = (str(_CACHE_FORMAT), text, str(sim), _versions(_cpu_of(config)))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


_PORT = re.compile(r"^\s*(input|output|inout)\s+(?:wire|reg)?\s*(?:\[(\d+):(\d+)\])?\s*(\w+)"
                   r"\s*,?\s*$")


def parse_ports(verilog: str, module: str = TOP) -> tuple[Port, ...]:
    """The ports of ``module`` in LiteX's Verilog (one ``input wire [n:0] name,`` a line;
    ``output reg`` for a registered output such as the CPU's ``uart_tx``)."""
    head = re.search(rf"^module\s+{module}\s*\((.*?)\);", verilog, re.DOTALL | re.MULTILINE)
    if head is None:
        raise RuntimeError(f"no module {module} in the generated Verilog")
    ports = []
    for line in head.group(1).splitlines():
        m = _PORT.match(line)
        if m is None and re.match(r"^\s*(input|output|inout)\b", line):
            raise RuntimeError(f"cannot read the port declaration {line.strip()!r} of "
                               f"{module}: LiteX's Verilog has changed, so update parse_ports")
        if m:
            hi, lo = m.group(2), m.group(3)
            width = int(hi) - int(lo) + 1 if hi is not None else 1
            ports.append(Port(m.group(4), m.group(1), width))
    return tuple(ports)


def _load(directory: Path, config: dict, sim: bool, key: str, cached: bool) -> LiteDramCore:
    gateware = directory / "gateware"
    top = gateware / f"{TOP}.v"
    others = sorted(p for p in gateware.glob("*.v") if p != top)
    csr = json.loads((directory / "csr.json").read_text())
    return LiteDramCore(
        directory=directory, verilog=(top, *others),
        data_files=tuple(sorted(gateware.glob("*.init"))),
        ports=parse_ports(top.read_text()),
        csr={name: int(reg["addr"]) for name, reg in csr["csr_registers"].items()},
        sim=sim, cpu=_cpu_of(config), key=key, cached=cached)


def generate(config: dict, *, sim: bool = False, cache: Path | str | None = None
             ) -> LiteDramCore:
    """Generate (or reuse) the controller of ``config`` (``arty_config()``, ``SIM_CONFIG``).

    ``sim=True`` replaces the PHY by LiteDRAM's DRAM model. Raises ``BnnhwError`` when the
    ``bnnhw[dram]`` extra (or, for a CPU, its compiler and packages) is missing, and
    ``RuntimeError`` with the generator's log tail when the generator fails.
    """
    cpu = _cpu_of(config)
    if sim and cpu is not None:
        raise ValueError("the simulation core has no CPU (the DRAM model needs no "
                         "calibration): give cpu 'None'")
    _check_installed(cpu)
    key = config_key(config, sim)
    root = Path(cache).resolve() if cache is not None else cache_root()
    final = root / f"{'sim' if sim else 'arty'}-{key}"
    if (final / "csr.json").is_file():
        return _load(final, config, sim, key, cached=True)
    root.mkdir(parents=True, exist_ok=True)
    with locked(root / f"{final.name}.lock"):
        if (final / "csr.json").is_file():
            return _load(final, config, sim, key, cached=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
        try:
            _run_generator(config, sim, cpu, scratch)
            _gather_sources(scratch)
            _prune_software(scratch)
            if final.exists():
                shutil.rmtree(final)
            os.rename(scratch, final)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    return _load(final, config, sim, key, cached=False)


def _generator_env(cpu: str | None) -> dict[str, str]:
    """The environment of the generator: ours, with this Python's scripts folder (the venv's
    ``bin``, where pip put ``meson``) first on ``PATH``, since LiteX's BIOS build runs
    ``meson`` by name and a venv's Python may be run without its ``bin`` on ``PATH``; for
    a CPU, ``$LITEX_ENV_CC_TRIPLE`` names the compiler that was checked and hashed."""
    env = dict(os.environ)
    scripts = sysconfig.get_path("scripts")
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", os.defpath)])
    if cpu is not None:
        env[TRIPLE_ENV] = riscv_triple() or ""
    return env


_READ_VERILOG = re.compile(r"^read_verilog\s+\{(.+)\}\s*$", re.MULTILINE)


def _gather_sources(where: Path) -> None:
    """Copy the Verilog the core's Vivado script reads from outside the core (the CPU's,
    ``VexRiscv.v`` from ``pythondata-cpu-vexriscv``) into its ``gateware/`` folder, so that
    a cached core holds every file it needs and outlives the package's install place."""
    gateware = where / "gateware"
    script = gateware / f"{TOP}.tcl"
    if not script.is_file():                     # the simulation core has no Vivado script
        return
    text = script.read_text()
    for name in _READ_VERILOG.findall(text):
        source = Path(name)
        if source.name != f"{TOP}.v":
            if not source.is_file():
                raise RuntimeError(f"the generated core reads {source}, which does not "
                                   f"exist: reinstall {CPU_PACKAGES[0]}")
            shutil.copyfile(source, gateware / source.name)
        # the script then reads the copies, from gateware/ (where LiteX runs Vivado)
        text = text.replace(f"read_verilog {{{name}}}", f"read_verilog {{{source.name}}}")
    script.write_text(text)


# What is kept of the BIOS's build tree (about 450 MB, most of it picolibc's objects): the
# headers of the core's CSRs and memory map, and the BIOS itself (already in the ROM image).
_KEEP_SOFTWARE = ("include", "bios/bios.elf", "bios/bios.bin")


def _prune_software(where: Path) -> None:
    software = where / "software"
    if not software.is_dir():
        return
    kept = where / "software.kept"
    for name in _KEEP_SOFTWARE:
        if (software / name).exists():
            (kept / name).parent.mkdir(parents=True, exist_ok=True)
            os.rename(software / name, kept / name)
    shutil.rmtree(software)
    if kept.exists():
        os.rename(kept, software)


def _run_generator(config: dict, sim: bool, cpu: str | None, where: Path) -> None:
    # JSON is YAML, which litedram.gen reads; numbers stay numbers.
    (where / "config.yml").write_text(json.dumps(config, indent=1) + "\n")
    cmd = [sys.executable, "-m", "litedram.gen", "config.yml", "--output-dir", "."]
    if sim:
        cmd.append("--sim")
    if cpu is None:
        cmd.append("--no-compile-software")
    log = where / "generate.log"
    # Run inside the scratch folder (not a git checkout): LiteX stamps the Verilog with
    # the git revision of its working directory.
    with open(log, "w") as f:
        done = subprocess.run(cmd, cwd=where, stdout=f, stderr=subprocess.STDOUT,
                              env=_generator_env(cpu), check=False)
    if done.returncode != 0 or not (where / "gateware" / f"{TOP}.v").is_file():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"litedram.gen failed (exit {done.returncode}); the end of its "
                           f"log:\n{tail}")
