"""Layers import only downward (docs/architecture.md, "Layers").

The shared bottom (numerics, validators, beat formats), the IR, the folding, the
packing, the resource model and the optimiser, and every ``rtl_gen`` module import neither torch nor ``bnnhw.nn``; the host side
imports neither torch nor amaranth; only the flows (``bnnhw.flows``) reach the hardware
and host packages from ``bnnhw``. Checked twice: by importing in a fresh interpreter and
by reading every module's imports, nested ones included.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOTTOM = ("bnnhw.numerics", "bnnhw.validate", "bnnhw.beats", "bnnhw.errors", "bnnhw.ir",
          "bnnhw.folding", "bnnhw.packing", "bnnhw.protocol", "bnnhw.manifest",
          "bnnhw.resources", "bnnhw.optimiser")
TORCH_SIDE = ("torch", "bnnhw.nn", "bnnhw.frontend", "bnnhw.golden", "bnnhw.reference",
              "bnnhw.check", "bnnhw.train", "bnnhw.data", "bnnhw.checkpoint",
              "bnnhw.onnx_graph", "bnnhw.onnx_frontend", "bnnhw.onnx_check",
              "bnnhw.model_file", "bnnhw.gate_density")
HARDWARE = ("rtl_gen", "sim", "boards", "host")


def loaded_after(modules: list[str]) -> set[str]:
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            f"print('\\n'.join(sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return set(out.split())


def rtl_modules() -> list[str]:
    return [f"rtl_gen.{p.stem}" for p in sorted((ROOT / "rtl_gen").glob("*.py"))
            if p.stem != "__init__"]


def host_modules() -> list[str]:
    return [f"host.{p.stem}" for p in sorted((ROOT / "host").glob("*.py"))
            if p.stem != "__init__"]


def test_ir_folding_packing_and_rtl_gen_load_no_torch():
    loaded = loaded_after([*BOTTOM, "rtl_gen.network", *rtl_modules()])
    assert "torch" not in loaded
    assert not [m for m in loaded if m.startswith("bnnhw.nn")]


def test_host_side_loads_neither_torch_nor_amaranth():
    loaded = loaded_after(["bnnhw.beats", "bnnhw.numerics", "bnnhw.ir", "bnnhw.protocol",
                           "bnnhw.manifest", "host", *host_modules()])
    assert "torch" not in loaded and "amaranth" not in loaded


def imports_of(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports, top-level or nested, relative imports resolved."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found |= {f"{name}.{a.name}" for a in node.names}
    return found


def sources():
    for top in ("bnnhw", "rtl_gen", "sim", "host", "boards"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            module = ".".join(rel.parts)
            package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
            yield module.removesuffix(".__init__"), imports_of(path, package)


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations() -> list[str]:
    bad = []
    for module, imports in sources():
        def refuse(prefixes, why, module=module, imports=imports):
            bad.extend(f"{module} imports {i} ({why})" for i in sorted(imports)
                       if under(i, prefixes))
        if under(module, BOTTOM):
            refuse(("torch", "amaranth", "rtl_gen", *TORCH_SIDE[1:], *HARDWARE), "bottom layer")
        if under(module, ("rtl_gen", "boards")):
            refuse((*TORCH_SIDE, "sim", "host", "bnnhw.flows", "bnnhw.commands", "bnnhw.cli"),
                   "hardware generators")
        if under(module, ("host",)):
            refuse(("torch", "amaranth", "rtl_gen", "sim", "boards", *TORCH_SIDE[1:]), "host")
        if module.startswith("bnnhw") and not under(module, ("bnnhw.flows",)):
            refuse(HARDWARE, "only flows reach the hardware and host")
    return bad


def test_every_module_imports_only_downward():
    assert violations() == []


def test_the_import_check_sees_a_planted_violation(tmp_path, monkeypatch):
    """The checker can fail: a torch import nested inside a function of the IR."""
    path = ROOT / "bnnhw" / "ir.py"
    text = path.read_text() + "\n\ndef _planted():\n    import torch  # noqa: F401\n"
    original = imports_of

    def planted(p, package):
        if p == path:
            copy = tmp_path / "ir.py"
            copy.write_text(text)
            return original(copy, package)
        return original(p, package)

    monkeypatch.setitem(globals(), "imports_of", planted)
    assert violations() == ["bnnhw.ir imports torch (bottom layer)"]
