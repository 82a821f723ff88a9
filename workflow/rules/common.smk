# Shared helpers: config validation, paths, per-scale resources and launch commands.
import json
import os
import shlex
import sys

from vitpe.config import dataset_paths, validate_params
from vitpe.errors import ConfigError

try:  # one clear line and a non-zero exit before any job starts
    validate_params(config, "params.yaml (with --config overrides)")
except ConfigError as exc:
    sys.exit(f"error: {exc}")

# Jobs use the interpreter that runs Snakemake (the project's .venv), even when it is not activated.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

SCALE = config["scale"]
SUPERVISED = config["experiments"]["supervised"]
# Every job gets the configuration the DAG was built from: params.yaml plus Snakemake's own
# --config/--configfile overrides (the slurm profile sets scale=paper), passed as --set KEY=JSON.
PARAMS = " ".join(
    ["--params params.yaml"]
    + [
        "--set " + shlex.quote(f"{key}={json.dumps(value, separators=(',', ':'))}")
        for key, value in sorted(workflow.config_settings.overwrite_config.items())
    ]
)

wildcard_constraints:
    scale="tiny|paper",
    exp="[A-Za-z0-9_]+",

# Per-scale job sizes. Runtime settings live here and in the profiles, not in params.yaml.
# Every GPU rule states gpu, cpus_per_gpu, mem_mb, runtime and tasks_per_gpu explicitly (the SLURM
# plugin otherwise falls back to --mem 1000 and --ntasks-per-gpu=<tasks>); `nodes` > 1 switches a rule
# to a multi-node torchrun launch (gres per node, one srun task per node).
JOBS = {
    "tiny": {
        "train": dict(gpu=0, nodes=1, cpus_per_gpu=0, cpus_per_task=2, mem_mb=4000, runtime=30, tasks_per_gpu=0),
        "eval": dict(gpu=0, nodes=1, cpus_per_gpu=0, cpus_per_task=2, mem_mb=4000, runtime=15, tasks_per_gpu=0),
        # downstream transfer (workflow/rules/transfer.smk): one CPU each, so two run side by side
        "transfer_ade20k": dict(gpu=0, nodes=1, cpus_per_gpu=0, cpus_per_task=1, mem_mb=4000, runtime=15, tasks_per_gpu=0),
        "transfer_coco": dict(gpu=0, nodes=1, cpus_per_gpu=0, cpus_per_task=1, mem_mb=4000, runtime=15, tasks_per_gpu=0),
        # gradient-inversion attacks of one model (workflow/rules/attacks.smk): one CPU, two side by side
        "attack": dict(gpu=0, nodes=1, cpus_per_gpu=0, cpus_per_task=1, mem_mb=2000, runtime=15, tasks_per_gpu=0),
    },
    "paper": {
        "train": dict(gpu=8, nodes=1, cpus_per_gpu=8, cpus_per_task=0, mem_mb=256000, runtime=4320, tasks_per_gpu=0),
        "eval": dict(gpu=1, nodes=1, cpus_per_gpu=8, cpus_per_task=0, mem_mb=64000, runtime=240, tasks_per_gpu=0),
        # UperNet 160k iters x 16 images, Mask R-CNN 184k iters x 64 images at 1024 px (8 GPUs, torchrun)
        "transfer_ade20k": dict(gpu=8, nodes=1, cpus_per_gpu=8, cpus_per_task=0, mem_mb=256000, runtime=2880, tasks_per_gpu=0),
        "transfer_coco": dict(gpu=8, nodes=1, cpus_per_gpu=8, cpus_per_task=0, mem_mb=384000, runtime=5760, tasks_per_gpu=0),
        # 100 images x 2 client modes x (24k IG + 120k GradViT iterations) of ViT-S/16, double backward
        "attack": dict(gpu=1, nodes=1, cpus_per_gpu=8, cpus_per_task=0, mem_mb=64000, runtime=4320, tasks_per_gpu=0),
    },
}


def job_resources(kind):
    """Resources for a rule of `kind` at the active scale, in the SLURM plugin's vocabulary."""
    res = dict(JOBS[SCALE][kind])
    nodes = res.pop("nodes")
    if nodes > 1:  # multi-node: per-node GPUs as gres, one launcher task per node, we call srun
        res.update(nodes=nodes, tasks=nodes, mpi="srun", gres=f"gpu:{res.pop('gpu')}")
    return res


def launcher(kind):
    """The command that starts `vitpe` for a rule: plain python, torchrun, or srun + torchrun."""
    res = JOBS[SCALE][kind]
    if res["gpu"] <= 1 and res["nodes"] == 1:
        return "vitpe"
    if res["nodes"] == 1:
        return f"torchrun --standalone --nproc-per-node={res['gpu']} -m vitpe"
    return (
        f"srun --ntasks-per-node=1 torchrun --nnodes={res['nodes']} --nproc-per-node={res['gpu']} "
        "--rdzv-backend=c10d --rdzv-endpoint=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -1):29500 -m vitpe"
    )


# What results/tables/main.tex needs, gathered from every rules file: each study appends its metrics
# JSON and the figures it makes (main.tex is the main target, so asking for it builds everything).
TABLE_INPUTS = []
FIGURES = []


def data_ready():
    """The file that proves the active scale's datasets exist and pass `vitpe data check`."""
    return f"results/checks/{SCALE}/data.json"


def ckpt(stage, exp):
    return f"results/checkpoints/{SCALE}/{stage}/{exp}/model.safetensors"


def dataset_image_dir():
    """Where figures take a real image from: the embedded photographs, or the ImageNet validation set."""
    paths = dataset_paths(config)
    return str(paths.get("attack", paths["imagenet"] / "val"))


def trained_with(exp, stage="supervised"):
    """What a checkpoint of `stage` depends on: the experiment, the recipe it runs, the seed, the data.

    Only the scale keys the stage reads, so adding or changing another stage retrains nothing here.
    """
    scale = config["scales"][SCALE]
    if stage == "supervised":
        settings = {"experiment": config["supervised"][exp], "model": scale["model"],
                    "recipe": scale["supervised"]}
    elif stage == "pretrain":
        settings = {"experiment": config["pretrain"][exp], "pretrain": scale["pretrain"]}
    elif stage.startswith("transfer_"):  # transfer_<task>: the encoder itself is a rule input
        settings = {"recipe": scale.get("transfer", {}).get(stage[len("transfer_"):])}
    else:  # finetune / linprobe of a pretraining experiment
        settings = {"experiment": config["pretrain"][exp], "model": scale["pretrain"]["model"],
                    "recipe": scale[stage]}
    return {**settings, "seed": config["seed"], "data": scale["data"]}


def run_config(exp, stage="supervised"):
    """results/configs/<scale>/[<stage>/]<exp>.json: everything a checkpoint of `stage` depends on.

    The training rule takes it as an input (Snakemake ignores callable params when deciding reruns),
    so changing the experiment, recipe or seed retrains that model only, and a DVC checkout, which
    rewrites checkpoint mtimes, retrains nothing (it may re-run the cheap evaluations). The files are
    written when the workflow is parsed and only when their content changes.
    """
    folder = "" if stage == "supervised" else f"{stage}/"
    return f"results/configs/{SCALE}/{folder}{exp}.json"


# (stage, experiment) pairs whose run configs the workflow writes; rules files add theirs
RUN_CONFIGS = [("supervised", exp) for exp in SUPERVISED]


def _write_run_configs():
    for stage, exp in RUN_CONFIGS:
        path = run_config(exp, stage)
        text = json.dumps(trained_with(exp, stage), sort_keys=True, indent=1) + "\n"
        if not os.path.exists(path) or open(path).read() != text:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "w") as f:
                f.write(text)
            os.replace(path + ".tmp", path)


