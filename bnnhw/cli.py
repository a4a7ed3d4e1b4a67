"""The ``bnnhw`` command line: one subcommand per module in ``bnnhw.commands``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. User errors (``BnnhwError``, ``SpecError``) print one sentence
and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from .errors import BnnhwError
from .nn.spec import SpecError

COMMANDS = ("train", "compile", "check", "verify")


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line on stderr and exit status 2, like every user error."""

    command = False  # a subcommand's parser reports unknown options itself

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and self.command:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bnnhw", description="Binary neural networks to FPGA dataflow accelerators.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"bnnhw.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"bnnhw.commands.{name}":
                raise
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        p.command = True
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
