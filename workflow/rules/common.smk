# Shared helpers: config validation, paths, per-scale resources and launch commands.
import json
import os
import re
import shlex
import sys

from vitpe.config import scale_seeds, seed_dir, validate_params
from vitpe.errors import ConfigError
from vitpe.runs import dataset_paths, imported_experiments, stage_record

try:  # one clear line and a non-zero exit before any job starts; inherited scales written out in full
    config.update(validate_params(config, "params.yaml (with --config overrides)"))
except ConfigError as exc:
    sys.exit(f"error: {exc}")

# Jobs use the interpreter that runs Snakemake (the project's .venv), even when it is not activated.
# (`snakemake --lint` asks for `envvars: "PATH"`: not declared, as every shell has PATH and this only
# prepends to it; declaring it would also ship the submit host's PATH to remote jobs.)
os.environ["PATH"] = os.pathsep.join((os.path.dirname(sys.executable), os.environ.get("PATH", "")))

SCALE = config["scale"]
# Every model is trained, evaluated and attacked once per seed (scales.<scale>.seeds): the {seed}
# wildcard, each seed's outputs under <kind>/<scale>/seed<N>/, each cached on its own; the tables
# and the headline metrics aggregate over SEEDS. FIRST_SEED's runs illustrate the figures of one model.
SEEDS = scale_seeds(config)
FIRST_SEED = SEEDS[0]
# What the DAG builds: the experiments and attacks sections, validated above. The rules files build
# these; table_inputs(), figures() and run_configs() below list what results/tables/main.tex needs.
SUPERVISED = config["experiments"]["supervised"]
PRETRAIN = config["experiments"].get("pretrain", [])
TRANSFER = config["experiments"].get("transfer", [])
TRANSFER_TASKS = ["ade20k", "coco"]
# published checkpoints (experiments.imported): imported in place of training (imported.smk), then
# evaluated, attacked, fine-tuned and transferred like the trained ones (the tables' published rows)
IMPORTED = imported_experiments(config)
IMPORTED_CLASSIFIERS = list(imported_experiments(config, "classifier"))
IMPORTED_ENCODERS = list(imported_experiments(config, "encoder"))
ATTACK_CFG = config.get("attacks", {})
ATTACK_SUPERVISED = ATTACK_CFG.get("models", [])
ATTACK_APRIL = ATTACK_CFG.get("april_models", [])
# fine-tuned classifiers exist only for the encoders the DAG pretrains (pretrain.smk) or imports
ATTACK_FINETUNED = [e for e in ATTACK_CFG.get("finetuned", []) if e in PRETRAIN + IMPORTED_ENCODERS]
ATTACKED = ATTACK_SUPERVISED + ATTACK_FINETUNED + ATTACK_APRIL
# Every job gets the configuration the DAG was built from: params.yaml plus Snakemake's own
# --config/--configfile overrides (the slurm profile sets scale=paper), passed as --set KEY=JSON.
# Rule shell commands use it directly, which `snakemake --lint` flags ("uses variable PARAMS from
# outside of the rule"): as a `params:` entry it would join Snakemake's params rerun trigger, so any
# override, even one a job does not read, would rerun every job; each training rule instead takes
# its run config (results/configs/) as an input, which changes only with what that model depends on.
PARAMS = shlex.join(
    ["--params", "params.yaml"]
    + [
        arg
        for key, value in sorted(workflow.config_settings.overwrite_config.items())
        for arg in ("--set", f"{key}={json.dumps(value, separators=(',', ':'))}")
    ]
)


def one_of(names):
    """A wildcard constraint that matches exactly these names (none: nothing)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


wildcard_constraints:
    scale="tiny|smoke|paper",
    seed=r"\d+",
    exp="[A-Za-z0-9_]+",


# --- Job sizes and launch commands ----------------------------------------------------------------
import functools
import math
from dataclasses import dataclass

from vitpe.runs import encoder_run, pretrain_run, supervised_run


def _profile_defaults():
    """The profile's `default-resources` (slurm/config.yaml) as NAME=VALUE strings; none without one."""
    defaults = workflow.resource_settings.default_resources
    return defaults.args if defaults is not None else []


def _unset_profile_variables():
    """Default resources naming an environment variable that is not set."""
    for arg in _profile_defaults():
        name, _, raw = arg.partition("=")
        unset = re.search(r"\$\{?(\w+)", os.path.expandvars(raw))
        if unset:
            yield name, unset.group(1)


# Stop before anything is submitted: SLURM would otherwise receive a literal "$VITPE_SLURM_ACCOUNT".
for _resource, _variable in _unset_profile_variables():
    sys.exit(
        f"error: default resource {_resource} (slurm/config.yaml) reads ${_variable}, which is not set: "
        f"export {_variable}=<value> before `snakemake --profile slurm`"
    )

# Per-scale job sizes, in the SLURM plugin's vocabulary. Runtime settings live here and in the
# profiles, not in params.yaml. Every rule states gpu, nodes, cpus_per_gpu, cpus_per_task, mem_mb,
# runtime and tasks_per_gpu (the plugin otherwise falls back to --mem 1000 and --ntasks-per-gpu=<tasks>).
# - nodes: always passed on (sbatch --nodes): torchrun starts every process of a one-node job on the
#   node it runs on, so the job's GPUs must not be spread over several; > 1: a multi-node launch
#   (GPUs per node as gres, one srun task per node).
# - procs: processes per node on CPU (gpu 0), started by torchrun with gloo when > 1; with GPUs one
#   process per GPU. The launch command reads both from the job's resources at run time, so
#   `--set-resources train_supervised:gpu=4` changes the processes with the request.
# - runtime None: the job's GPUs, memory and runtime follow its experiment's own recipe (job_size).
_CPU = dict(gpu=0, nodes=1, procs=1, cpus_per_gpu=0, cpus_per_task=2, mem_mb=4000, runtime=30, tasks_per_gpu=0)
_GPU = dict(gpu=8, nodes=1, procs=1, cpus_per_gpu=8, cpus_per_task=0, mem_mb=256000, runtime=None, tasks_per_gpu=0)
JOBS = {
    "tiny": {
        "train": _CPU,
        "train_supervised": _CPU,
        "eval": {**_CPU, "runtime": 15},
        # downstream transfer (workflow/rules/transfer.smk): one CPU each, so two run side by side
        "transfer_ade20k": {**_CPU, "cpus_per_task": 1, "runtime": 15},
        "transfer_coco": {**_CPU, "cpus_per_task": 1, "runtime": 15},
        # gradient-inversion attacks of one model (workflow/rules/attacks.smk): one CPU, two side by side
        "attack": {**_CPU, "cpus_per_task": 1, "mem_mb": 2000, "runtime": 15},
        # a published checkpoint read and written again (imported.smk)
        "import": _CPU,
    },
    # the paper's models and input sizes for a few steps on CPU: more memory and time than tiny; the
    # supervised training runs as 2 processes (torchrun, gloo) to cover the multi-process path
    "smoke": {
        "train": {**_CPU, "mem_mb": 8000, "runtime": 60},
        "train_supervised": {**_CPU, "procs": 2, "mem_mb": 8000, "runtime": 60},
        "eval": {**_CPU, "mem_mb": 8000, "runtime": 60},
        # measured peaks on CPU: UperNet at 512 px 9.5 GB, ViTDet Mask R-CNN at 1024 px 12.8 GB
        "transfer_ade20k": {**_CPU, "cpus_per_task": 1, "mem_mb": 10000, "runtime": 60},
        "transfer_coco": {**_CPU, "cpus_per_task": 1, "mem_mb": 14000, "runtime": 60},
        "attack": {**_CPU, "cpus_per_task": 1, "mem_mb": 4000, "runtime": 60},
        "import": _CPU,
    },
    "paper": {
        # at most 8 GPUs of one node, 32 GB of host memory per GPU
        "train": _GPU,
        "train_supervised": _GPU,
        "eval": {**_GPU, "gpu": 1, "mem_mb": 64000, "runtime": 240},
        "transfer_ade20k": _GPU,
        "transfer_coco": {**_GPU, "mem_mb": 384000},
        # 100 images x 2 client modes x (24k IG + 120k GradViT iterations) of ViT-S/16, double backward
        "attack": {**_GPU, "gpu": 1, "mem_mb": 64000, "runtime": 4320},
        "import": {**_CPU, "mem_mb": 16000},  # ViT-H: a 2.5 GB file, held twice while converted
    },
}


def _slurm_profile():
    """True under the slurm profile (its default resources name the account), in dry runs too."""
    return any(arg.startswith("slurm_account=") for arg in _profile_defaults())


# On the cluster the smoke scale checks the GPU path before a real run: CUDA, bf16 autocast, NCCL and the
# torchrun launch. The supervised training runs on 2 GPUs (the smoke batch of 8 gives 4 per GPU, even,
# as Mixup needs), every other job on one, within an hour.
if _slurm_profile():
    _SMOKE_GPU = {**_GPU, "gpu": 1, "mem_mb": 64000, "runtime": 60}
    JOBS["smoke"] = {**{kind: _SMOKE_GPU for kind in JOBS["smoke"]}, "train_supervised": {**_SMOKE_GPU, "gpu": 2}}

# --- Runtime of a GPU job from its own recipe ---------------------------------------------------------
#   runtime = START_MIN + SAFETY x images / (images/s per GPU x GPUs) / 60 min, at least FLOOR_MIN and
#   at most MAX_RUNTIME_MIN: a longer run is stopped by the profile's early SIGTERM, saves its state,
#   exits 124 and continues in the next attempt (the profile's `retries`, 3 attempts in all).
#   images = epochs x IMAGENET_TRAIN_IMAGES (training, pretraining) or iters x batch_size (transfer).
#   GPUs: the JOBS count, halved while the job still finishes within SHORT_JOB_MIN (fewer GPUs are
#   scheduled sooner; the memory plan, vitpe.train.memory, accumulates what one GPU cannot hold);
#   host memory follows the GPUs (JOBS mem_mb per 8).
# Worked through (8 GPUs unless stated):
#   deit_s, mjp (300 epochs):        15 + 1.5 x 300 x 1,281,167 / (1000 x 8) / 60 = 1217 min (20 h)
#   deit_s_april, mjp_april (2 ep.): 1 GPU: 15 + 1.5 x 2 x 1,281,167 / 1000 / 60  =   80 min
#   mae (1600 epochs):               15 + 1.5 x 1600 x 1,281,167 / (1200 x 8) / 60 = 5353 min -> 4320, 2 attempts
#   mae_plus, adpe_* (1600 epochs):  15 + 1.5 x 1600 x 1,281,167 / (500 x 8) / 60 = 12827 min -> 4320, 3 attempts
#   finetune (100 epochs):           15 + 1.5 x  100 x 1,281,167 / (600 x 8) / 60 =  683 min
#   linprobe (90 epochs):            15 + 1.5 x   90 x 1,281,167 / (1500 x 8) / 60 =  256 min (4 GPUs: 496)
#   ADE20K (160k iters x 16):        15 + 1.5 x 160,000 x 16 / (8 x 8) / 60       = 1015 min
#   COCO (184,375 iters x 64):       15 + 1.5 x 184,375 x 64 / (3.2 x 8) / 60     = 11539 min -> 4320, 3 attempts
START_MIN = 15  # start-up, data check, loader warm-up, the final save
SAFETY = 1.5  # slower nodes, per-epoch evaluation, shared file systems
FLOOR_MIN = 30
MAX_RUNTIME_MIN = 3 * 24 * 60  # a common partition limit
SHORT_JOB_MIN = 120  # a job this short gets fewer GPUs rather than waiting for a whole node
IMAGENET_TRAIN_IMAGES = 1_281_167  # ILSVRC-2012 training set


@dataclass(frozen=True)
class Workload:
    """Assumed training throughput of one paper model on one A100-class GPU (bf16/fp16 AMP)."""

    images_per_s: float  # per GPU: forward + backward + optimizer step (linear probing: forward only)
    embed_dim: int  # the model the rate is for; another width or depth scales it by depth x width^2
    depth: int = 12


# timm's AMP training benchmark (results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv) measures
# vit_small_patch16_224 at 1053 and vit_base_patch16_224 at 391 images/s on an RTX 3090; an A100
# is taken as 1.5x that (ViT-S: ~1600, ViT-B: ~600), and 8 loader CPUs per GPU with RandAugment cap
# ViT-S at ~1000. MAE's encoder sees 25 % of the tokens and its 8-block, 512-wide decoder costs 0.30
# of ViT-B (8/12 x (512/768)^2): 0.55 of a ViT-B step, ~1200 images/s. MAE+ encodes all 4 x 49 tokens
# plus the decoder: 1.3 ViT-B steps, ~500. Linear probing runs the frozen encoder forward only (~1/3
# of a training step), ~1500. ViTDet Mask R-CNN ViT-B at 1024 px trains at 0.314 s per image on an
# A100 (detectron2 projects/ViTDet model zoo): 3.2 images/s; UperNet ViT-B at 512 px has a quarter
# of its tokens but a 768-channel head: ~8.
WORKLOADS = {
    "supervised": Workload(1000, embed_dim=384),  # DeiT-S: ViT-S/16 at 224
    "finetune": Workload(600, embed_dim=768),
    "linprobe": Workload(1500, embed_dim=768),
    "mae": Workload(1200, embed_dim=768),
    "mae_plus": Workload(500, embed_dim=768),  # images of 4 crops
    "transfer_ade20k": Workload(8, embed_dim=768),
    "transfer_coco": Workload(3.2, embed_dim=768),
}


def training_images(stage, exp):
    """(images seen, model dims, workload name) of one run at the active scale."""
    if stage.startswith("transfer_"):
        recipe = config["scales"][SCALE]["transfer"][stage[len("transfer_") :]]
        return recipe["iters"] * recipe["batch_size"], encoder_run(config, exp, "finetune").model, stage
    if stage == "pretrain":
        run = pretrain_run(config, exp)
        workload = run.method
    else:
        run = supervised_run(config, exp) if stage == "supervised" else encoder_run(config, exp, stage)
        workload = stage
    recipe = run.recipe
    per_epoch = IMAGENET_TRAIN_IMAGES
    if recipe.steps_per_epoch:  # epochs cut to a number of steps
        per_epoch = min(per_epoch, recipe.steps_per_epoch * recipe.batch_size)
    return recipe.epochs * per_epoch, run.model, workload


@functools.cache
def job_size(kind, stage, exp):
    """GPUs, memory and runtime of the `kind` job that runs `stage` of experiment `exp`."""
    base = JOBS[SCALE][kind]
    images, model, name = training_images(stage, exp)
    work = WORKLOADS[name]
    rate = work.images_per_s * work.depth * work.embed_dim**2 / (model.depth * model.embed_dim**2)

    def minutes(gpus):
        return START_MIN + SAFETY * images / (rate * gpus * base["nodes"]) / 60

    gpus = base["gpu"]
    while base["nodes"] == 1 and gpus > 1 and minutes(gpus // 2) <= SHORT_JOB_MIN:
        gpus //= 2
    runtime = min(MAX_RUNTIME_MIN, max(FLOOR_MIN, math.ceil(minutes(gpus))))
    return {"gpu": gpus, "mem_mb": base["mem_mb"] * gpus // base["gpu"], "runtime": runtime}


def _sized(kind, stage, key):
    def value(wildcards):
        return job_size(kind, stage(wildcards) if callable(stage) else stage, wildcards.exp)[key]

    return value


def job_resources(kind, stage=None):
    """Resources for a rule of `kind` at the active scale, in the SLURM plugin's vocabulary.

    `stage`: what the rule trains for its {exp} wildcard (supervised, pretrain, finetune, linprobe,
    transfer_ade20k, transfer_coco; a function of the wildcards when a wildcard says; default: `kind`);
    a JOBS entry without a runtime is sized from that run (job_size).
    """
    stage = stage or kind
    res = dict(JOBS[SCALE][kind])
    if res["runtime"] is None:
        res.update({key: _sized(kind, stage, key) for key in ("gpu", "mem_mb", "runtime")})
    if res["nodes"] > 1:  # multi-node: per-node GPUs as gres, one launcher task per node, we call srun
        gpu = res.pop("gpu")
        res.update(
            tasks=res["nodes"],
            mpi="srun",
            gres=(lambda wildcards: f"gpu:{gpu(wildcards)}") if callable(gpu) else f"gpu:{gpu}",
        )
    return res


def _processes_per_node(resources):
    gres = re.fullmatch(r"gpu(?::\w+)?:(\d+)", str(resources.get("gres", "")))
    gpus = int(gres.group(1)) if gres else resources.get("gpu", 0)
    return gpus if gpus > 0 else resources.get("procs", 1)


def launch_command(resources):
    """`exec vitpe`, or torchrun (srun + torchrun on several nodes) under `python -m vitpe.launch`.

    `exec`: no shell sits between Snakemake and the trainer, so a SIGTERM to the job step reaches the
    trainer and not a shell that would die of it. vitpe.launch makes torchrun's exit 124 on pre-emption.
    """
    procs, nodes = _processes_per_node(resources), resources.get("nodes", 1)
    if procs <= 1 and nodes == 1:
        return "exec vitpe"
    if nodes == 1:
        return f"exec python -m vitpe.launch torchrun --standalone --nproc-per-node={procs} -m vitpe"
    return (
        f"exec srun --ntasks-per-node=1 python -m vitpe.launch torchrun --nnodes={nodes} --nproc-per-node={procs} "
        "--rdzv-backend=c10d --rdzv-endpoint=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -1):29500 -m vitpe"
    )


def launcher(kind):
    """The `params: launch=` of a rule: its launch command, from the job's own resources at run time.

    `kind`'s JOBS entry stands in for a resource the job does not have.
    """

    def launch(wildcards, resources):
        return launch_command({**JOBS[SCALE][kind], **dict(resources.items())})

    return launch


def data_ready():
    """The file that proves the active scale's datasets exist and pass `vitpe data check`."""
    return f"results/checks/{SCALE}/data.json"


def seeded(kind, seed="{seed}"):
    """results/<kind>/<scale>/seed<N>: the folder of one seed's outputs of `kind` (checkpoints, metrics,
    logs, ...); the default keeps the {seed} wildcard for rule patterns."""
    return f"results/{kind}/{SCALE}/{seed_dir(seed)}"


# Seeded rules' shell lines pass `{PARAMS} --set seed={wildcards.seed}`: the job's run seed after the
# shared parameters.


def ckpt(stage, exp, seed="{seed}"):
    return f"{seeded('checkpoints', seed)}/{stage}/{exp}/model.safetensors"


def train_log(stage, exp, seed="{seed}"):
    """The per-step training log, published next to the weights when training completes."""
    return f"{seeded('checkpoints', seed)}/{stage}/{exp}/log.jsonl"


def encoder_ckpt(exp, seed="{seed}"):
    """The pretrained encoder alone (timm keys): input of fine-tuning, linear probing and transfer."""
    return f"{seeded('checkpoints', seed)}/pretrain/{exp}/encoder.safetensors"


def job_log(name):
    """results/logs/<scale>/seed{seed}/<name>.log: one seeded job's log."""
    return f"{seeded('logs')}/{name}.log"


def job_benchmark(stage):
    return f"{seeded('benchmarks')}/{stage}/{{exp}}.tsv"


def metrics_file(exp, kind, seed="{seed}"):
    """results/metrics/<scale>/seed<N>/<exp>/<kind>.json: one evaluation's flat metrics (table input)."""
    return f"{seeded('metrics', seed)}/{exp}/{kind}.json"


def paired_attacks(seed="{seed}"):
    """One seed's paired per-image attack comparisons (attack_compare)."""
    return metrics_file("attacks", "paired", seed)


# the curated per-model numbers DVC tracks as its only metrics file (dvc.yaml, rule headline_metrics)
HEADLINE = f"results/metrics/{SCALE}/headline.json"


FIGURES_DIR = f"results/figures/{SCALE}"


def figure_files(name, category):
    """A figure's outputs in FIGURES_DIR, named png and pdf; the .png goes into `snakemake --report`
    under ``category`` (the study), captioned by workflow/report/<name>.rst."""
    files = multiext(f"{FIGURES_DIR}/{name}", png=".png", pdf=".pdf")
    files[0] = report(files[0], caption=f"../report/{name}.rst", category=category)
    return files


def plot_data(name):
    """results/plots/<scale>/<name>.csv: a curve's data in long format (step, model, value) for `dvc plots`
    (dvc.yaml); committed to git, unlike the figures, so `dvc plots diff <rev>` has every revision's."""
    return f"results/plots/{SCALE}/{name}.csv"


def dataset_image_dir():
    """Where figures take a real image from: the embedded photographs, or the ImageNet validation set."""
    paths = dataset_paths(config)
    return str(paths.get("attack", paths["imagenet"] / "val"))


def run_config(exp, stage="supervised", seed="{seed}"):
    """results/configs/<scale>/[<stage>/]<exp>.json: everything a checkpoint of `stage` depends on.

    The training rule takes it as an input (Snakemake ignores callable params when deciding reruns),
    so changing the experiment, recipe or seed retrains that model only, and a DVC checkout, which
    rewrites checkpoint mtimes, retrains nothing (it may re-run the cheap evaluations). The files are
    written when the workflow is parsed and only when their content changes.
    """
    folder = "" if stage == "supervised" else f"{stage}/"
    return f"{seeded('configs', seed)}/{folder}{exp}.json"


def run_configs():
    """(stage, experiment) of every checkpoint the DAG trains, whose run config the workflow writes."""
    # the APRIL variants train through rule train_supervised too (attacks.smk attacks them)
    supervised = SUPERVISED + [exp for exp in ATTACK_APRIL if exp not in SUPERVISED]
    return (
        [("supervised", exp) for exp in supervised + IMPORTED_CLASSIFIERS]
        + [(stage, exp) for exp in PRETRAIN for stage in ("pretrain", "finetune", "linprobe")]
        + [(stage, exp) for exp in IMPORTED_ENCODERS for stage in ("finetune", "linprobe")]
        + [(f"transfer_{task}", exp) for task in TRANSFER_TASKS for exp in TRANSFER]
    )


SUPERVISED_EVALS = ("classify", "shuffle", "robustness", "pe_probe")  # rule eval_supervised, one process
ENCODER_EVALS = ("pretext", "finetune", "linprobe")  # rule eval_encoder, one process


def table_inputs(seed="{seed}"):
    """Every metrics JSON of one seed results/tables/main.tex reads, study by study."""
    return (
        [metrics_file(exp, kind, seed) for exp in SUPERVISED + IMPORTED_CLASSIFIERS for kind in SUPERVISED_EVALS]
        + [metrics_file(exp, kind, seed) for exp in PRETRAIN for kind in ENCODER_EVALS]
        + [metrics_file(exp, kind, seed) for exp in IMPORTED_ENCODERS for kind in ("finetune", "linprobe")]
        + [metrics_file(exp, task, seed) for exp in TRANSFER for task in TRANSFER_TASKS]
        + ([metrics_file(exp, "attacks", seed) for exp in ATTACKED] + [paired_attacks(seed)] if ATTACKED else [])
    )


def all_seeds(files):
    """`files(seed)` for every seed of the scale, in one list (the aggregating rules' inputs)."""
    return [path for seed in SEEDS for path in files(seed)]


def figures():
    """The .png of every figure the studies switched on make (their rules: report.smk, mjp.smk, pretrain.smk,
    attacks.smk); main.tex waits for them, so asking for it builds every figure."""
    names = ["training_curves", "shuffle_accuracy", "pe_spectra", "pe_similarity", "mjp_illustration"]
    if PRETRAIN:
        names += ["pretrain_curves", "adpe_delta_norms", "adpe_accuracy"]
    if ATTACKED:
        names.append("attack_psnr")
    if ATTACK_SUPERVISED or ATTACK_FINETUNED:
        names += ["attack_grid", "attack_privacy"]
    if ATTACK_APRIL:
        names.append("attack_grid_april")
    return [f"{FIGURES_DIR}/{name}.png" for name in names]


def plots():
    """The curve data `dvc plots` reads (dvc.yaml), made with their figures; main.tex waits for them too."""
    return [plot_data("training_curves")] + ([plot_data("pretrain_curves")] if PRETRAIN else [])


def _write_run_configs():
    for seed, (stage, exp) in ((seed, run) for seed in SEEDS for run in run_configs()):
        path = run_config(exp, stage, seed)
        # the run's dependency record (vitpe.runs): also its resume fingerprint and weights metadata
        text = json.dumps(stage_record({**config, "seed": seed}, stage, exp), sort_keys=True, indent=1) + "\n"
        if not os.path.exists(path) or open(path).read() != text:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "w") as f:
                f.write(text)
            os.replace(path + ".tmp", path)


_write_run_configs()
