"""``bnnhw prune-report``: accuracy against size of a pruned training's epoch checkpoints
(``bnnhw.prune_report``), as a table with the Pareto points marked, and a plot."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import BnnhwError, check_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="M.pt",
                        help="checkpoint written by bnnhw train --prune-lambda (its epoch "
                             "checkpoints M.epochNN.pt beside it are read too)")
    parser.add_argument("--parent", metavar="P.pt", default=None,
                        help="the unpruned model to compare with (sets the common target II)")
    parser.add_argument("--board", default="arty",
                        help="board whose FPGA family the resource model costs for "
                             "(default: arty)")
    parser.add_argument("--plot", metavar="PNG", default=None,
                        help="also draw accuracy against LUTs and memory bits")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..errors import write_together
    from ..flows import boards
    from ..prune_report import epoch_checkpoints, format_table, render_plot, report

    model = Path(args.model)
    if not model.is_file():
        raise BnnhwError(f"checkpoint {model} does not exist; give the checkpoint bnnhw train "
                         f"--prune-lambda wrote")
    paths = epoch_checkpoints(model) or [model]
    plot = None
    if args.plot is not None:
        plot = check_output(args.plot, "--plot", [(p, "a checkpoint") for p in paths],
                            advice="give another --plot")
    board = boards.get(args.board)
    points = report(paths, board.budget.family, Path(args.parent) if args.parent else None)
    if plot is not None:
        write_together([(plot, lambda f: render_plot(points, f, f"{model.stem} on "
                                                      f"{board.name}"))])
    if args.json:
        print(json.dumps({"board": board.name, "points": [p.to_dict() for p in points]},
                         indent=1))
    else:
        print(format_table(points, board.budget.family))
        if plot is not None:
            print(f"plot: {plot}")
    return 0
