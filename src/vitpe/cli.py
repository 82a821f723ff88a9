"""The one command-line interface: ``vitpe <group> <command> ...``; every Snakemake rule calls it.

Each group lives next to its code in a ``commands`` module exposing ``register(subparsers)``; its
commands keep heavy imports (torch, mm*) inside their functions so ``vitpe --help`` stays fast.
Errors that are the user's (VitpeError) or the environment's (an OSError: a path that cannot be read or
written) print one line and exit non-zero; bugs keep their traceback.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys

from vitpe.errors import Preempted, VitpeError
from vitpe.train.signals import mark_preempted

DESCRIPTION = (
    "Reproduce the MJP (masked jigsaw puzzle) and AdPE (adversarial position embedding) studies of "
    "position embeddings in vision transformers: generate and check data, train and fine-tune models, "
    "run gradient-inversion attacks, evaluate robustness and transfer, and write the tables and "
    "figures. The Snakemake workflow runs these commands for you; run one yourself to redo or inspect "
    "a single step. Every command that reads params.yaml takes --set KEY=VALUE overrides."
)

GROUPS = {
    "data": ("vitpe.data.commands", "generate and check datasets"),
    "train": ("vitpe.train.commands", "train models"),
    "eval": ("vitpe.evaluate.commands", "evaluate trained models"),
    "transfer": ("vitpe.transfer.commands", "fine-tune pretrained encoders on ADE20K and COCO"),
    "report": ("vitpe.report.commands", "tables and figures"),
    "attack": ("vitpe.attacks.commands", "gradient-inversion attacks and privacy metrics"),
}

#: commands another layer adds to a group: the attack figures are the report's code (stages never
#: import the report), run as ``vitpe attack grid-figure`` / ``psnr-figure``
ADDED = {"attack": ("vitpe.report.commands", "register_attack_figures")}


def _version() -> str:
    try:
        return importlib.metadata.version("vitpe")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree (PYTHONPATH=src), not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitpe", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"vitpe {_version()}",
                        help="print the installed vitpe version and exit")
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")
    for name, (module, help_text) in GROUPS.items():
        sub = groups.add_parser(name, help=help_text)
        commands = sub.add_subparsers(dest="command", required=True, metavar="COMMAND")
        importlib.import_module(module).register(commands)
        if name in ADDED:
            added_module, function = ADDED[name]
            getattr(importlib.import_module(added_module), function)(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VitpeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the file system's answer, not a bug: name the file it was about
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return VitpeError.exit_code
    except Preempted as exc:
        print(f"preempted: {exc}", file=sys.stderr)
        mark_preempted()  # the state is saved: a launcher wrapper above torchrun exits 124 too
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
