"""`vitpe report ...`: the results table and figures."""
from __future__ import annotations

import argparse
from pathlib import Path

from vitpe.config import add_params_arguments


def _table(args: argparse.Namespace) -> int:
    from vitpe.config import params_from_args
    from vitpe.io import write_text
    from vitpe.report.tables import build_main_tex

    params = params_from_args(args)
    write_text(args.out, build_main_tex(params, Path(args.metrics), Path(args.paper)))
    print(f"wrote {args.out}")
    return 0


def _curves(args: argparse.Namespace) -> int:
    from vitpe.report.figures import training_curves

    training_curves([Path(p) for p in args.logs], [Path(p) for p in args.out])
    print("wrote " + ", ".join(args.out))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    table = commands.add_parser("table", help="write results/tables/main.tex")
    add_params_arguments(table)
    table.add_argument("--metrics", default="results/metrics", help="root of the metrics JSON tree")
    table.add_argument("--paper", default="workflow/resources/paper_numbers.yaml")
    table.add_argument("--out", default="results/tables/main.tex")
    table.set_defaults(func=_table)

    curves = commands.add_parser("curves", help="training curves (loss, lr) from log.jsonl files")
    curves.add_argument("logs", nargs="+", help="log.jsonl files written by the training engine")
    curves.add_argument("--out", nargs="+", required=True, help="figure files (.png, .pdf)")
    curves.set_defaults(func=_curves)
