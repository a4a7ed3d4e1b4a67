"""The ``bnnhw`` command line: one subcommand per module in ``bnnhw.commands``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. User errors (``BnnhwError``, ``SpecError``) print one sentence
and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import BnnhwError
from .nn.spec import SpecError

COMMANDS = ("train", "compile", "check", "verify")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bnnhw", description="Binary neural networks to FPGA dataflow accelerators.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"bnnhw.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"bnnhw.commands.{name}":
                raise
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (BnnhwError, SpecError) as e:
        print(f"bnnhw {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bnnhw {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
