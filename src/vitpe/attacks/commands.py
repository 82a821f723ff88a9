"""``vitpe attack ...``: gradient-inversion attacks and paired comparisons. The figure commands of the
group (``grid-figure``, ``psnr-figure``, ``privacy-figure``) are the report's (vitpe.report.commands),
added by the CLI.

Heavy imports (torch, timm, scipy, matplotlib) stay inside the functions.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from vitpe.commands import add_command, add_device_argument, reports_writes, wrote
from vitpe.io import check_creatable


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "run", _run, "attack one trained model with every configured attack", params=True,
        description="Client steps (plain and MJP-shuffled) on the attack images, then attacks.closed_form "
                    "(kind april) or attacks.optimisation and attacks.standard_closed_form (kinds supervised, "
                    "finetuned); writes the "
                    "aggregated metrics JSON (<attack>_<mode>_<metric>_<stat>, threat model and settings), "
                    "the per-image CSV and the reconstructions (safetensors).")
    p.add_argument("--experiment", required=True, help="a name under supervised: (or pretrain: for finetuned)")
    p.add_argument("--kind", choices=("supervised", "april", "finetuned"), required=True,
                   help="which attacks apply: supervised models, APRIL-compatible models (closed form) "
                        "or fine-tuned pretrained encoders")
    p.add_argument("--weights", required=True, type=Path, help="model.safetensors")
    _output_arguments(p)
    p.add_argument("--images", type=int, default=None, help="override scales.<scale>.attacks.images")
    p.add_argument("--iterations", type=int, default=None, help="override every optimisation attack's iterations")
    p.add_argument("--jobs", type=int, default=None, help="override scales.<scale>.attacks.jobs")
    p.add_argument("--job", type=int, default=0, help="which job's share of the images to attack (0-based)")
    add_device_argument(p)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")

    p = add_command(
        subparsers, "merge", _merge, "merge one model's attack jobs into its metrics, table and reconstructions",
        description="Concatenates the jobs' per-image tables and reconstructions in image order, checks that "
                    "their settings agree and recomputes the aggregates: the outputs of a single run.")
    p.add_argument("--metrics", nargs="+", required=True, type=Path, help="each job's metrics JSON")
    p.add_argument("--tables", nargs="+", required=True, type=Path, help="each job's per-image CSV")
    p.add_argument("--recons", nargs="+", required=True, type=Path, help="each job's reconstructions")
    _output_arguments(p)

    p = add_command(
        subparsers, "compare", _compare, "paired per-image differences between models (attacks.compare)",
        params=True,
        description="For each pair A:B, A - B per image on the images both were attacked on: mean, median, "
                    "std, bootstrap 95% CI of the mean, Wilcoxon p; flat JSON.")
    p.add_argument("--tables", nargs="+", required=True, type=Path,
                   help="per-image CSVs written by attack merge (results/attacks/<scale>/seed<N>/<exp>/images.csv)")
    p.add_argument("--out", required=True, type=Path, help="the comparison JSON to write")


def _output_arguments(p: argparse.ArgumentParser) -> None:
    """The three outputs of one model's attacks (``run`` writes them per job, ``merge`` for all jobs)."""
    p.add_argument("--out", required=True, type=Path, help="metrics JSON")
    p.add_argument("--table", required=True, type=Path, help="per-image CSV")
    p.add_argument("--recon", required=True, type=Path, help="reconstructions (safetensors)")


def _run(args: argparse.Namespace) -> int:
    from vitpe.attacks.runner import attack_settings, run_attacks
    from vitpe.config import params_from_args

    params = params_from_args(args)
    settings = attack_settings(params, args.images, args.iterations, args.jobs)
    for path in (args.out, args.table, args.recon):  # a blocked output folder fails now, not after the attacks
        check_creatable(path.parent)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from vitpe.runs import stage_run
    from vitpe.evaluate.common import load_trained
    from vitpe.train.progress import print_stamped

    # fine-tuned MAE/MAE+/AdPE classifiers and supervised models load the same way (no DAL head there)
    run = stage_run(params, "finetune" if args.kind == "finetuned" else "supervised", args.experiment)
    model, device = load_trained(run, args.weights, args.device)
    dal_weight = run.dal.weight if run.dal else 0.0
    summary = run_attacks(model, run, args.kind, settings, device, args.out, args.table, args.recon, dal_weight,
                          log=print_stamped, job=args.job)
    print(f"{args.experiment}: {summary['num_images']} images, {summary['seconds']:.1f} s; {wrote(args.out)}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from vitpe.attacks.outputs import merge_jobs

    summary = merge_jobs(args.metrics, args.tables, args.recons, args.out, args.table, args.recon)
    print(f"{summary['experiment']}: merged {summary['attack_jobs']} jobs, {summary['num_images']} images; "
          f"{wrote(args.out)}")
    return 0


@reports_writes
def _compare(args: argparse.Namespace) -> str:
    from vitpe.attacks.metrics import paired_comparison
    from vitpe.attacks.outputs import read_attack_table
    from vitpe.config import params_from_args
    from vitpe.io import write_json

    params = params_from_args(args)
    tables = {path.parent.name: read_attack_table(path) for path in args.tables}
    cfg = params["attacks"]
    pairs = [tuple(pair) for pair in cfg["compare"]]
    out = paired_comparison(tables, pairs, metrics=("psnr", "ssim", "psnr_kept"), seed=params["seed"],
                            n_boot=cfg["metrics"]["bootstrap"])
    out.update({"pairs": ";".join(f"{a}-{b}" for a, b in pairs if a in tables and b in tables),
                "scale": params["scale"]})
    write_json(args.out, out)
    return f"{len(out)} keys"
