"""What the ``vitpe <group> <command>`` modules share: declaring a command, the argument groups several
commands take, and the one line a command prints about what it wrote. Torch-free, like the command
modules' top level, so ``vitpe --help`` stays fast."""
from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Iterable
from pathlib import Path

from vitpe.config import add_params_arguments

Command = Callable[[argparse.Namespace], int]
FIGURE_HELP = "figure files (.png, .pdf)"


def add_command(commands: argparse._SubParsersAction, name: str, run: Command, help: str,
                description: str | None = None, params: bool = False) -> argparse.ArgumentParser:
    """The parser of ``vitpe <group> name``, which calls ``run(args)``; ``params``: it reads params.yaml
    (``--params``/``--set``)."""
    parser = commands.add_parser(name, help=help, description=description)
    if params:
        add_params_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")


def add_weights_arguments(parser: argparse.ArgumentParser, weights_help: str, out_help: str,
                          device: bool = True) -> None:
    """``--weights`` (the trained model a command reads), ``--out`` (what it writes) and ``--device``."""
    parser.add_argument("--weights", required=True, type=Path, help=weights_help)
    parser.add_argument("--out", required=True, type=Path, help=out_help)
    if device:
        add_device_argument(parser)


def add_figure_outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", nargs="+", required=True, type=Path, help=FIGURE_HELP)


def wrote(paths: str | Path | Iterable[str | Path], detail: str = "") -> str:
    """``wrote a, b (detail)``: the line a command prints once its outputs are written."""
    names = [str(paths)] if isinstance(paths, (str, Path)) else [str(p) for p in paths]
    return f"wrote {', '.join(names)}" + (f" ({detail})" if detail else "")


def reports_writes(write: Callable[[argparse.Namespace], str | None]) -> Command:
    """A command from a function that writes ``args.out`` and returns a detail for the report line
    (or None): it prints ``wrote <args.out> (detail)`` and exits 0."""

    @functools.wraps(write)
    def command(args: argparse.Namespace) -> int:
        print(wrote(args.out, write(args) or ""))
        return 0

    return command
