"""``vitpe data ...`` commands: generate the embedded or mini sets, check any dataset's layout."""
from __future__ import annotations

import argparse
from pathlib import Path

from vitpe.commands import add_command

DATASETS = ("imagenet", "imagenet_c", "imagenet_a", "imagenet_o", "ade20k", "coco", "attack")
KINDS = ("imagenet", "imagefolder", "imagenet_c", "imagenet_a", "imagenet_o", "ade20k", "coco", "attack")
# --layout -> the params section it generates (its root, seed and sizes)
LAYOUT_SECTIONS = {"embedded": "embedded", "real": "mini"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "synth", _synth, params=True,
        help="generate the embedded (tiny scale) or mini (smoke scale, real layouts) datasets",
        description="Generate every dataset of a layout deterministically from its seed into its root "
                    "(cleared first); manifest.json is written last. --layout embedded (default): the "
                    "embedded sets, data.embedded; --layout real: the mini sets in the real layouts and "
                    "sizes with real class ids, data.mini.",
    )
    p.add_argument("--layout", choices=tuple(LAYOUT_SECTIONS), default="embedded",
                   help="embedded (data.embedded, default) or real (data.mini)")

    p = add_command(
        subparsers, "check", _check, params=True,
        help="check dataset layouts (the active scale's, or one --kind/--path)",
        description="Check the active scale's datasets (or those named by --dataset), or one dataset given "
                    "by --kind and --path. Decodes a sample of the images unless --deep (or data.deep_check), which decodes every "
                    "image on all usable cores (damage only decoding finds: a truncated JPEG, a corrupt PNG "
                    "chunk), logging progress. Prints one 'check:' line per dataset; --out writes the JSON "
                    "report, only when every check passed.",
    )
    p.add_argument("--out", type=Path, default=None, help="JSON report to write")
    p.add_argument("--deep", "--full", dest="deep", action="store_true",
                   help="decode every image (in parallel, with progress), not a sample")
    p.add_argument("--dataset", nargs="+", choices=DATASETS, default=None, metavar="NAME",
                   help=f"only these datasets of the active scale ({', '.join(DATASETS)})")
    p.add_argument("--kind", choices=KINDS, default=None, help="check one dataset of this kind at --path")
    p.add_argument("--path", type=Path, default=None, help="the dataset's root (with --kind)")
    p.add_argument("--num-classes", type=int, default=None, metavar="N",
                   help="expected class folders (ade20k: largest label id, default 150) (with --kind)")
    p.add_argument("--train-classes", type=Path, default=None, metavar="DIR",
                   help="training ImageFolder: subset folders must be its classes (with --kind)")


def _synth(args: argparse.Namespace) -> int:
    from vitpe.config import params_from_args
    from vitpe.data.synth import synthesize
    from vitpe.data.synth_real import synthesize_real
    from vitpe.train.progress import print_stamped

    params = params_from_args(args)
    generate = synthesize if args.layout == "embedded" else synthesize_real
    root = Path(params["data"][LAYOUT_SECTIONS[args.layout]]["root"])
    generate(params, root, log=print_stamped)
    return 0


def _check(args: argparse.Namespace) -> int:
    from vitpe.data.check import check_all, check_dataset
    from vitpe.errors import ConfigError
    from vitpe.io import write_json
    from vitpe.train.progress import print_stamped

    if args.kind is None and (args.path or args.num_classes is not None or args.train_classes):
        raise ConfigError("--path, --num-classes and --train-classes need --kind")
    if args.kind is not None:
        if args.path is None:
            raise ConfigError("--kind needs --path")
        result = check_dataset(args.kind, args.path, num_classes=args.num_classes, deep=args.deep,
                               train_classes=args.train_classes, log=print_stamped)
        print_stamped(f"check: {args.kind} ({args.path}): ok, {result['images']} images, {result['checked']} decoded")
        report = {"deep": args.deep, "datasets": {args.kind: result}}
    else:
        from vitpe.config import params_from_args

        params = params_from_args(args)
        report = check_all(params, args.dataset, log=print_stamped, deep=args.deep or params["data"]["deep_check"])
    if args.out is not None:
        write_json(args.out, report)
    return 0
