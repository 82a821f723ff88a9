"""`vitpe report ...`: the results table and figures."""
from __future__ import annotations

import argparse
from pathlib import Path

from vitpe.commands import Command, add_command, add_figure_outputs, reports_writes


@reports_writes
def _table(args: argparse.Namespace) -> None:
    from vitpe.config import params_from_args
    from vitpe.io import write_text
    from vitpe.report.tables import build_main_html, build_main_tex

    params = params_from_args(args)
    write_text(args.out, build_main_tex(params, args.metrics, args.paper))
    if args.html:
        write_text(args.html, build_main_html(params, args.metrics, args.paper))


@reports_writes
def _headline(args: argparse.Namespace) -> str:
    from vitpe.config import params_from_args
    from vitpe.io import write_json
    from vitpe.report.headline import count_values, headline_metrics

    headline = headline_metrics(params_from_args(args), args.metrics)
    write_json(args.out, headline)
    return f"{count_values(headline)} values"


@reports_writes
def _curves(args: argparse.Namespace) -> None:
    from vitpe.report.figures import training_curves

    training_curves(args.logs, args.out)


@reports_writes
def _shuffle_curves(args: argparse.Namespace) -> None:
    from vitpe.report.mjp_figures import shuffle_curves

    shuffle_curves(args.metrics, args.out, args.labels)


@reports_writes
def _pe_spectra(args: argparse.Namespace) -> None:
    from vitpe.report.mjp_figures import pe_spectra

    pe_spectra(args.metrics, args.out, args.labels)


def _position(text: str) -> tuple[int, int]:
    row, sep, col = text.partition(",")
    try:
        return int(row), int(col)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROW,COL (e.g. 0,3), got {text!r}") from None


@reports_writes
def _pe_similarity(args: argparse.Namespace) -> None:
    from vitpe.report.mjp_figures import pe_similarity_maps

    pe_similarity_maps(args.weights, args.out, args.labels, args.positions)


@reports_writes
def _mjp_illustration(args: argparse.Namespace) -> str:
    from vitpe.config import params_from_args
    from vitpe.report.mjp_figures import mjp_illustration

    params = params_from_args(args)
    scale = params["scales"][params["scale"]]
    info = mjp_illustration(args.image, args.out, scale["model"]["img_size"],
                            scale["model"]["patch_size"], ratio=args.ratio,
                            seed=params["seed"] if args.seed is None else args.seed,
                            crop_ratio=scale["supervised"]["test_crop_ratio"])
    return f"{info['shuffled']} of {info['grid'] ** 2} patches shuffled"


@reports_writes
def _delta_norms(args: argparse.Namespace) -> str:
    from vitpe.report.adpe_figures import delta_norms

    return f"{delta_norms(args.logs, args.out)} adversarial runs"


@reports_writes
def _accuracy_bars(args: argparse.Namespace) -> None:
    from vitpe.report.adpe_figures import accuracy_bars

    accuracy_bars(args.finetune, args.linprobe, args.out)


@reports_writes
def _attack_grid(args: argparse.Namespace) -> None:
    from vitpe.report.attack_figures import reconstruction_grid

    reconstruction_grid(args.recon, args.tables, args.attacks, args.out, args.max_images)


@reports_writes
def _attack_psnr(args: argparse.Namespace) -> None:
    from vitpe.report.attack_figures import psnr_distributions

    psnr_distributions(args.tables, args.out)


@reports_writes
def _attack_privacy(args: argparse.Namespace) -> str:
    from vitpe.report.attack_figures import privacy_accuracy

    left_out = privacy_accuracy(args.attacks_metrics, args.accuracy, args.metric, args.out)
    return "; ".join(f"{metric}: left out {', '.join(exps)} (no such key)"
                     for metric, exps in left_out.items() if exps)


def register_attack_figures(commands: argparse._SubParsersAction) -> None:
    """The attack figures, run as ``vitpe attack grid-figure`` / ``psnr-figure`` / ``privacy-figure``
    (cli.py adds them to the attack group, whose own code never imports the report)."""
    p = add_command(commands, "grid-figure", _attack_grid, "reconstruction grid: ground truth, then each model",
                    description="Rows: image x client mode; columns: the fed image, then model x attack, each "
                                "panel with its PSNR vs the original image, each column with the attack budget.")
    p.add_argument("--recon", nargs="+", required=True, type=Path, help="reconstruction files, one per model")
    p.add_argument("--tables", nargs="+", required=True, type=Path,
                   help="the per-image CSV of each --recon file, in the same order (the panels' PSNRs)")
    p.add_argument("--attacks", nargs="+", required=True, help="which attacks' reconstructions to show")
    p.add_argument("--max-images", type=int, default=3, help="how many attacked images (rows) to show (default: 3)")
    add_figure_outputs(p)

    p = add_command(commands, "psnr-figure", _attack_psnr, "per-model per-image PSNRs, one panel per attack",
                    description="Each image's PSNR as a jittered point and the mean as a bar, per model and "
                                "client mode; tables of one model given twice (seeds) are pooled.")
    p.add_argument("--tables", nargs="+", required=True, type=Path,
                   help="per-image CSVs written by attack merge, one per model (.../<exp>/images.csv)")
    add_figure_outputs(p)

    p = add_command(commands, "privacy-figure", _attack_privacy, "privacy-accuracy trade-off over seeds",
                    description="One point per model: clean top-1 against an attack metric, mean over seeds "
                                "with +/- std bars (ddof=1; none with one seed); one panel per --metric.")
    p.add_argument("--attacks-metrics", nargs="+", required=True, type=Path,
                   help="attacks.json files, .../seed<N>/<exp>/attacks.json (grouped by <exp>, paired by seed<N>)")
    p.add_argument("--accuracy", nargs="+", required=True, type=Path,
                   help="each model's classify.json or finetune.json (top1) for the same seeds")
    p.add_argument("--metric", nargs="+", default=["pe_gradient_adaptive_shuffled_psnr_kept_mean"],
                   help="attack metric keys, one panel each (default: pe_gradient_adaptive_shuffled_psnr_kept_mean)")
    add_figure_outputs(p)


def _per_model_figure(commands: argparse._SubParsersAction, name: str, run: Command, help_text: str, inputs: str,
                      inputs_help: str, legend: str = "legend names") -> argparse.ArgumentParser:
    """A figure with a line (or row) per model: the models' files and their legend names."""
    fig = add_command(commands, name, run, help_text)
    fig.add_argument(inputs, nargs="+", type=Path, help=inputs_help)
    fig.add_argument("--labels", nargs="+", help=f"{legend} (default: each file's folder name)")
    add_figure_outputs(fig)
    return fig


def register(commands: argparse._SubParsersAction) -> None:
    table = add_command(commands, "table", _table, "write results/tables/main.tex", params=True)
    table.add_argument("--metrics", default="results/metrics", type=Path,
                       help="root of the metrics tree: <root>/<scale>/seed<N>/<exp>/*.json, seeds from params")
    table.add_argument("--paper", default="workflow/resources/paper_numbers.yaml", type=Path,
                       help="the numbers the papers report, set beside ours (default: %(default)s)")
    table.add_argument("--out", default="results/tables/main.tex", type=Path,
                       help="the LaTeX file to write (default: %(default)s)")
    table.add_argument("--html", type=Path, help="also write the same tables as an HTML page (the report's copy)")

    headline = add_command(commands, "headline", _headline,
                           "write results/metrics/<scale>/headline.json, the metrics DVC tracks", params=True)
    headline.add_argument("--metrics", default="results/metrics", type=Path,
                          help="root of the metrics tree: <root>/<scale>/seed<N>/<exp>/*.json, seeds from params")
    headline.add_argument("--out", required=True, type=Path, help="the JSON file to write")

    curves = add_command(commands, "curves", _curves, "training curves (loss, lr) from log.jsonl files")
    curves.add_argument("logs", nargs="+", type=Path, help="log.jsonl files written by the training engine")
    add_figure_outputs(curves)

    _per_model_figure(commands, "shuffle-curves", _shuffle_curves, "top-1 vs MJP shuffle ratio, one line per model",
                      "metrics", "JSON files written by `vitpe eval shuffle`")
    _per_model_figure(commands, "pe-spectra", _pe_spectra, "singular-value spectra of the PE tables",
                      "metrics", "JSON files written by `vitpe eval pe-probe`")
    fig = _per_model_figure(commands, "pe-similarity", _pe_similarity, "PE cosine-similarity maps on the patch grid",
                            "weights", "model.safetensors files (timm keys)", legend="row names")
    fig.add_argument("--positions", nargs="+", type=_position, metavar="ROW,COL",
                     help="reference grid positions (default: corner, edge, centre, off-centre)")

    fig = add_command(commands, "mjp-illustration", _mjp_illustration, "the method figure from a real image",
                      params=True)
    fig.add_argument("--image", required=True, type=Path,
                     help="an image, or a folder whose first image (sorted) is used")
    fig.add_argument("--ratio", type=float, default=0.4, help="MJP shuffle ratio (paper's figure: 0.4)")
    fig.add_argument("--seed", type=int, default=None, help="default: the params seed")
    add_figure_outputs(fig)

    fig = add_command(commands, "delta-norms", _delta_norms,
                      "AdPE: |delta| over pretraining, one line per adversarial run")
    fig.add_argument("logs", nargs="+", type=Path,
                     help="pretraining log.jsonl files (runs without a delta are skipped)")
    add_figure_outputs(fig)

    fig = add_command(commands, "accuracy-bars", _accuracy_bars,
                      "fine-tune and linear-probe top-1 per pretraining variant, mean ± std over the seeds given")
    fig.add_argument("--finetune", nargs="+", required=True, type=Path,
                     help="classification JSONs of the fine-tuned models (results/metrics/<scale>/seed<N>/<exp>/"
                          "finetune.json), every seed of each experiment")
    fig.add_argument("--linprobe", nargs="+", required=True, type=Path, help="the same experiments, linear-probed")
    add_figure_outputs(fig)
