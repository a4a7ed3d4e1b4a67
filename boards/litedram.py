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

- ``arty_config(cpu="vexriscv")``: a VexRiscv inside the core runs LiteX's BIOS, which
  initialises the DDR3 and calibrates the read/write leveling, then raises
  ``init_done``. Its firmware is compiled while generating, so it needs a RISC-V cross
  compiler on ``PATH`` (Debian: ``gcc-riscv64-unknown-elf``) and the ``pythondata-*``
  packages named in ``CPU_PACKAGES``.
- ``arty_config(cpu=None)``: no CPU; the core exposes a Wishbone control bus
  (``wb_ctrl_*``, its CSRs) and leaves the DDR3 initialisation and calibration to the
  user, who then writes 1 to ``ddrctrl_init_done``.
- ``SIM_CONFIG`` with ``sim=True``: the same controller and user port, with LiteDRAM's
  DFI-level DRAM model (``SDRAMPHYModel``, 256 MB of simulated memory) in place of the
  PHY and the chips, and no CPU. It has no PLL: ``user_clk`` is its ``clk`` input.
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
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bnnhw.errors import BnnhwError
from bnnhw.filelock import locked

__all__ = ["CACHE_ENV", "CPU_PACKAGES", "DRAM_PACKAGES", "SIM_CONFIG", "LiteDramCore",
           "Port", "arty_config", "cache_root", "generate"]

CACHE_ENV = "BNNHW_DRAM_CACHE"
DEFAULT_CACHE = Path("build") / "dram_cache"
# The Python packages litedram.gen imports (litex.tools.litex_sim pulls liteeth and
# litescope in even for a core without Ethernet or a logic analyser); bnnhw[dram].
DRAM_PACKAGES = ("litex", "litedram", "migen", "liteeth", "litescope")
# What the VexRiscv variant needs beyond them: the CPU's Verilog and the BIOS's libc.
CPU_PACKAGES = ("pythondata-cpu-vexriscv", "pythondata-software-picolibc",
                "pythondata-software-compiler_rt", "meson")
# Cross-compiler prefixes LiteX looks for (litex.soc.cores.cpu.CPU_GCC_TRIPLE_RISCV32).
RISCV_TRIPLES = ("riscv64-unknown-elf", "riscv32-unknown-elf", "riscv64-elf", "riscv32-elf",
                 "riscv-none-elf", "riscv-none-embed", "riscv64-linux-gnu",
                 "riscv64-none-elf", "riscv32-none-elf")
TOP = "litedram_core"
# Bump when a change here makes old cache entries unusable.
_CACHE_FORMAT = 1

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
    is the top), ``data_files`` what they read (ROM images), ``csr`` maps each CSR name to
    its byte address on the Wishbone control bus."""

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
    if not any(shutil.which(f"{t}-gcc") for t in RISCV_TRIPLES):
        raise BnnhwError(f"the DRAM controller with a {cpu} CPU compiles its firmware with a "
                         f"RISC-V cross compiler, and none is on PATH (looked for "
                         f"riscv64-unknown-elf-gcc and the other names LiteX accepts): "
                         f"install Debian's gcc-riscv64-unknown-elf, or generate the "
                         f"controller without a CPU")


def _versions(cpu: str | None) -> str:
    names = DRAM_PACKAGES + (CPU_PACKAGES if cpu is not None else ())
    return "; ".join(f"{n} {importlib.metadata.version(n)}" for n in names)


def _cpu_of(config: dict) -> str | None:
    cpu = config.get("cpu")
    return None if cpu in (None, "None") else str(cpu)


def config_key(config: dict, sim: bool) -> str:
    """The cache key: a hash of the configuration, the flag and the generator's versions."""
    text = json.dumps(config, sort_keys=True)
    parts = (str(_CACHE_FORMAT), text, str(sim), _versions(_cpu_of(config)))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


_PORT = re.compile(r"^\s*(input|output|inout)\s+wire\s*(?:\[(\d+):(\d+)\])?\s*(\w+)\s*,?\s*$")


def parse_ports(verilog: str, module: str = TOP) -> tuple[Port, ...]:
    """The ports of ``module`` in LiteX's Verilog (one ``input wire [n:0] name,`` a line)."""
    head = re.search(rf"^module\s+{module}\s*\((.*?)\);", verilog, re.DOTALL | re.MULTILINE)
    if head is None:
        raise RuntimeError(f"no module {module} in the generated Verilog")
    ports = []
    for line in head.group(1).splitlines():
        m = _PORT.match(line)
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
            if final.exists():
                shutil.rmtree(final)
            os.rename(scratch, final)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    return _load(final, config, sim, key, cached=False)


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
                              check=False)
    if done.returncode != 0 or not (where / "gateware" / f"{TOP}.v").is_file():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"litedram.gen failed (exit {done.returncode}); the end of its "
                           f"log:\n{tail}")
