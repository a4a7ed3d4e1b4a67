"""The ``bnnhw`` command line: one subcommand per module in ``bnnhw.commands``.

``COMMANDS`` names every command with its one-line help, so that ``bnnhw --help`` needs no
command module at all. Only the module of the command being run is imported
(``bnnhw.commands.<name>``, which defines ``add_arguments(parser)`` and ``run(args) ->
int``); command modules import nothing heavy at their top, so ``bnnhw COMMAND --help``
does not import torch either.

User errors (``BnnhwError``, ``SpecError``, bad arguments) print one line,
``bnnhw COMMAND: error: ...`` (``bnnhw: error: ...`` before a command is known), and
exit with status 2, never a traceback; Ctrl-C exits with status 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

from .errors import BnnhwError

COMMANDS = {
    "train": ("Train a binary network (zoo model or spec JSON) with quantisation-aware "
              "training and write its checkpoint and training curve."),
    "compile": ("Lower a trained checkpoint or a QONNX graph (.onnx) to the integer IR "
                "(JSON graph + .npz arrays)."),
    "check": ("Compare the model (the QAT model, or QONNX's execute_onnx for an ONNX graph) "
              "with the golden model of its IR: classes and every activation bit."),
    "predict": ("Run the golden model on images and write its integer scores and classes "
                "with the model's own outputs to an .npz file."),
    "infer": ("Classify images on a board, or on the simulated board (--sim), over the "
              "host link, and check every result against the golden model."),
    "sim-board": ("Serve a model's simulated board (Verilator) on a loopback TCP port "
                  "until stopped."),
    "build": ("Build a model for a board: the folding that fills it, RTL, constraints, "
              "project, bitstream where a toolchain here makes one, and the build report."),
    "boards": "List the boards bnnhw builds for: devices, resource budgets, clocks, flows.",
    "explore": ("Sweep a model's design space on a board (designs, memory styles, clocks, "
                "seeds) on Dask: every point built, a Pareto table and plots in one page."),
    "prune-report": ("Accuracy against size (filters, memory bits, LUTs) of a pruned "
                     "training's epoch checkpoints, with the Pareto points."),
    "verify": ("Co-simulate the generated accelerator (Verilator + cocotb) on images and "
               "compare every score with the golden model."),
}


def version() -> str:
    """The installed package's version (``importlib.metadata``)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("bnnhw")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree, not installed
        return "unknown (not installed)"


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line on stderr and exit status 2, like every user error."""

    command = False  # a subcommand's parser reports unknown options itself

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())  # argparse may wrap long messages
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and self.command:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print bnnhw's version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"bnnhw {version()}")
        parser.exit(0)


def _command_name(argv: list[str]) -> str | None:
    """The command ``argv`` asks for: its first word that is not an option."""
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg
    return None


def _parser(selected: str | None) -> argparse.ArgumentParser:
    """The parser, with the options of command ``selected`` only (its module imported)."""
    parser = _Parser(
        prog="bnnhw", description="Binary neural networks to FPGA dataflow accelerators.")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.command = True
        if name == selected:
            module = importlib.import_module(f"bnnhw.commands.{name.replace('-', '_')}")
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def _is_spec_error(error: BaseException) -> bool:
    """Whether ``error`` is a ``bnnhw.nn.spec.SpecError`` (without importing torch: if
    the spec module was never imported, nothing can have raised one)."""
    spec = sys.modules.get("bnnhw.nn.spec")
    return spec is not None and isinstance(error, spec.SpecError)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser(_command_name(argv))
    args = parser.parse_args(argv)
    prefix = f"bnnhw {args.command}"
    try:
        return int(args._run(args) or 0)
    except BnnhwError as e:
        print(f"{prefix}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except ValueError as e:
        if not _is_spec_error(e):
            raise
        print(f"{prefix}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{prefix}: error: out of memory; use a smaller model or fewer images",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:        # the reader went away (``bnnhw ... | head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
