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


def _shuffle_curves(args: argparse.Namespace) -> int:
    from vitpe.report.mjp_figures import shuffle_curves

    shuffle_curves([Path(p) for p in args.metrics], [Path(p) for p in args.out], args.labels)
    print("wrote " + ", ".join(args.out))
    return 0


def _pe_spectra(args: argparse.Namespace) -> int:
    from vitpe.report.mjp_figures import pe_spectra

    pe_spectra([Path(p) for p in args.metrics], [Path(p) for p in args.out], args.labels)
    print("wrote " + ", ".join(args.out))
    return 0


def _position(text: str) -> tuple[int, int]:
    row, sep, col = text.partition(",")
    try:
        return int(row), int(col)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROW,COL (e.g. 0,3), got {text!r}") from None


def _pe_similarity(args: argparse.Namespace) -> int:
    from vitpe.report.mjp_figures import pe_similarity_maps

    pe_similarity_maps([Path(p) for p in args.weights], [Path(p) for p in args.out], args.labels, args.positions)
    print("wrote " + ", ".join(args.out))
    return 0


def _mjp_illustration(args: argparse.Namespace) -> int:
    from vitpe.config import params_from_args
    from vitpe.report.mjp_figures import mjp_illustration

    params = params_from_args(args)
    scale = params["scales"][params["scale"]]
    info = mjp_illustration(Path(args.image), [Path(p) for p in args.out], scale["model"]["img_size"],
                            scale["model"]["patch_size"], ratio=args.ratio,
                            seed=params["seed"] if args.seed is None else args.seed,
                            crop_ratio=scale["supervised"]["test_crop_ratio"])
    print(f"wrote {', '.join(args.out)} ({info['shuffled']} of {info['grid'] ** 2} patches shuffled)")
    return 0


def _delta_norms(args: argparse.Namespace) -> int:
    from vitpe.report.adpe_figures import delta_norms

    drawn = delta_norms([Path(p) for p in args.logs], [Path(p) for p in args.out])
    print(f"wrote {', '.join(args.out)} ({drawn} adversarial runs)")
    return 0


def _accuracy_bars(args: argparse.Namespace) -> int:
    from vitpe.report.adpe_figures import accuracy_bars

    accuracy_bars([Path(p) for p in args.finetune], [Path(p) for p in args.linprobe], [Path(p) for p in args.out])
    print("wrote " + ", ".join(args.out))
    return 0


def _attack_grid(args: argparse.Namespace) -> int:
    from vitpe.report.attack_figures import reconstruction_grid

    reconstruction_grid(args.recon, args.attacks, args.out, args.max_images)
    print("wrote " + ", ".join(map(str, args.out)))
    return 0


def _attack_psnr(args: argparse.Namespace) -> int:
    from vitpe.report.attack_figures import psnr_distributions

    psnr_distributions(args.tables, args.out)
    print("wrote " + ", ".join(map(str, args.out)))
    return 0


def register_attack_figures(commands: argparse._SubParsersAction) -> None:
    """The attack figures, run as ``vitpe attack grid-figure`` / ``psnr-figure`` (cli.py adds them to
    the attack group, whose own code never imports the report)."""
    p = commands.add_parser("grid-figure", help="reconstruction grid: ground truth, then each model")
    p.add_argument("--recon", nargs="+", required=True, type=Path, help="reconstruction files, one per model")
    p.add_argument("--attacks", nargs="+", required=True, help="which attacks' reconstructions to show")
    p.add_argument("--max-images", type=int, default=3, help="how many attacked images (columns) to show (default: 3)")
    p.add_argument("--out", nargs="+", required=True, type=Path, help=".png and/or .pdf")
    p.set_defaults(func=_attack_grid)

    p = commands.add_parser("psnr-figure", help="per-model PSNR distributions, one panel per attack")
    p.add_argument("--tables", nargs="+", required=True, type=Path,
                   help="per-image CSVs written by attack merge, one per model")
    p.add_argument("--out", nargs="+", required=True, type=Path, help=".png and/or .pdf")
    p.set_defaults(func=_attack_psnr)


def register(commands: argparse._SubParsersAction) -> None:
    table = commands.add_parser("table", help="write results/tables/main.tex")
    add_params_arguments(table)
    table.add_argument("--metrics", default="results/metrics", help="root of the metrics JSON tree")
    table.add_argument("--paper", default="workflow/resources/paper_numbers.yaml",
                       help="the numbers the papers report, set beside ours (default: %(default)s)")
    table.add_argument("--out", default="results/tables/main.tex",
                       help="the LaTeX file to write (default: %(default)s)")
    table.set_defaults(func=_table)

    curves = commands.add_parser("curves", help="training curves (loss, lr) from log.jsonl files")
    curves.add_argument("logs", nargs="+", help="log.jsonl files written by the training engine")
    curves.add_argument("--out", nargs="+", required=True, help="figure files (.png, .pdf)")
    curves.set_defaults(func=_curves)

    fig = commands.add_parser("shuffle-curves", help="top-1 vs MJP shuffle ratio, one line per model")
    fig.add_argument("metrics", nargs="+", help="JSON files written by `vitpe eval shuffle`")
    fig.add_argument("--labels", nargs="+", help="legend names (default: each file's folder name)")
    fig.add_argument("--out", nargs="+", required=True, help="figure files (.png, .pdf)")
    fig.set_defaults(func=_shuffle_curves)

    fig = commands.add_parser("pe-spectra", help="singular-value spectra of the PE tables")
    fig.add_argument("metrics", nargs="+", help="JSON files written by `vitpe eval pe-probe`")
    fig.add_argument("--labels", nargs="+", help="legend names (default: each file's folder name)")
    fig.add_argument("--out", nargs="+", required=True, help="figure files (.png, .pdf)")
    fig.set_defaults(func=_pe_spectra)

    fig = commands.add_parser("pe-similarity", help="PE cosine-similarity maps on the patch grid")
    fig.add_argument("weights", nargs="+", help="model.safetensors files (timm keys)")
    fig.add_argument("--labels", nargs="+", help="row names (default: each file's folder name)")
    fig.add_argument("--positions", nargs="+", type=_position, metavar="ROW,COL",
                     help="reference grid positions (default: corner, edge, centre, off-centre)")
    fig.add_argument("--out", nargs="+", required=True, help="figure files (.png, .pdf)")
    fig.set_defaults(func=_pe_similarity)

    fig = commands.add_parser("mjp-illustration", help="the method figure from a real image")
    add_params_arguments(fig)
    fig.add_argument("--image", required=True, help="an image, or a folder whose first image (sorted) is used")
    fig.add_argument("--ratio", type=float, default=0.4, help="MJP shuffle ratio (paper's figure: 0.4)")
    fig.add_argument("--seed", type=int, default=None, help="default: the params seed")
    fig.add_argument("--out", nargs="+", required=True, help="figure files (.png, .pdf)")
    fig.set_defaults(func=_mjp_illustration)

    fig = commands.add_parser("delta-norms", help="AdPE: |delta| over pretraining, one line per adversarial run")
    fig.add_argument("logs", nargs="+", help="pretraining log.jsonl files (runs without a delta are skipped)")
    fig.add_argument("--out", nargs="+", required=True, help="figure files (.png, .pdf)")
    fig.set_defaults(func=_delta_norms)

    fig = commands.add_parser("accuracy-bars", help="fine-tune and linear-probe top-1 per pretraining variant")
    fig.add_argument("--finetune", nargs="+", required=True, help="classification JSONs of the fine-tuned models")
    fig.add_argument("--linprobe", nargs="+", required=True, help="the same experiments, linear-probed")
    fig.add_argument("--out", nargs="+", required=True, help="figure files (.png, .pdf)")
    fig.set_defaults(func=_accuracy_bars)
