# Gradient-inversion attacks (docs/FIDELITY.md rows 38-49): every trained model (every seed) on the attack images,
# per-image tables, paired per-image comparisons, the reconstruction grids and the PSNR distributions.
# One job per model runs all of its attacks at the tiny scale (start-up dominates there).
# The attacked models (ATTACK_SUPERVISED, ATTACK_FINETUNED, ATTACK_APRIL, ATTACKED) are listed in common.smk.
# `snakemake --lint` flags "mixed rules and functions" here: the helpers below read the attack settings
# this file derives (ATTACK_*), so they stay next to the only rules that use them.
import json as _json

# rerun the attacks when any attack setting changes (a plain string: Snakemake compares it)
ATTACK_SETTINGS = _json.dumps(
    {
        "attacks": ATTACK_CFG,
        "scale": config["scales"][SCALE].get("attacks"),
        "mjp_gamma": config["scales"][SCALE]["mjp_gamma"],
    },
    sort_keys=True,
)


def attack_kind(exp):
    return "april" if exp in ATTACK_APRIL else "finetuned" if exp in ATTACK_FINETUNED else "supervised"


def attack_inputs(wc):
    stage = "finetune" if attack_kind(wc.exp) == "finetuned" else "supervised"
    return {
        "weights": ckpt(stage, wc.exp, wc.seed),
        "data": data_ready(),
        "run_config": run_config(wc.exp, stage, wc.seed),
    }


def attack_table(exp, seed="{seed}"):
    return f"{seeded('attacks', seed)}/{exp}/images.csv"


def attack_recon(exp, seed="{seed}"):
    return f"{seeded('attacks', seed)}/{exp}/reconstructions.safetensors"


# Each job attacks one share of a model's images (scales.<scale>.attacks.jobs, at most one per client
# batch; whole client batches, vitpe.attacks.budget.job_ranges) on one device; a model split into
# several jobs gets attack_merge, which joins the shares into the model's outputs (equal to one job's).
# Closed-form-only models (the APRIL variants) always run as one job; the standard models' closed forms
# (attacks.standard_closed_form, seconds per image) run in each job on its share. A job's runtime
# follows its budget, not a fixed limit:
#   objective iterations = client modes x ceil(client batches in the job / chunk)
#                          x (IG restarts x IG iterations + GradViT iterations)
#   seconds per objective iteration = ops x op time + images per objective x FLOPs per image / FLOP rate
#     (ops and FLOPs from the model's depth and size; op time and FLOP rate of the device kind:
#     measured on CPU, assumed for a GPU; vitpe.attacks.budget.DEVICE_COSTS)
#   runtime = 2 x iterations x seconds + 10 min (start-up, clean top-1, metrics); the factor 2 because
#     the GPU figures are assumptions and a job killed at its runtime starts over
# e.g. paper, ViT-S/16: 10 jobs, each 2 x 1 x (24k + 120k) = 288k iterations of 10 images x ~0.21 s
# = ~17 h -> 2002 min; fine-tuned ViT-B/16: ~0.39 s, ~32 h -> 3794 min (README: the whole arithmetic).
# The DAG stops here if a job would exceed the scale's job limit (JOBS' attack runtime, 72 h on the cluster).

from vitpe.attacks.budget import attack_job_estimate, jobs_for, jobs_needed

ATTACK_DEVICE = "gpu" if JOBS[SCALE]["attack"]["gpu"] else "cpu"
ATTACK_LIMIT = JOBS[SCALE]["attack"]["runtime"]
_ATTACK_SCALE = config["scales"][SCALE].get("attacks", {})
ATTACK_JOBS = {
    exp: jobs_for(
        attack_kind(exp),
        _ATTACK_SCALE.get("jobs", 1),
        _ATTACK_SCALE.get("images", 1),
        ATTACK_CFG.get("threat", {}).get("batch_size", 1),
    )
    for exp in ATTACKED
}
ATTACK_MINUTES = {}
for _exp in ATTACKED:
    _minutes = attack_job_estimate(config, _exp, attack_kind(_exp), ATTACK_DEVICE).minutes
    if _minutes > ATTACK_LIMIT:
        _need = jobs_needed(config, _exp, attack_kind(_exp), ATTACK_DEVICE, ATTACK_LIMIT)
        sys.exit(
            f"error: params.yaml (with --config overrides): scales.{SCALE}.attacks: one attack job of {_exp} "
            f"needs about {_minutes} min, over the {ATTACK_LIMIT}-min job limit; "
            + (
                f"set scales.{SCALE}.attacks.jobs to {_need} or more"
                if _need
                else "reduce the images or iterations (even one client batch per job is over the limit)"
            )
        )
    ATTACK_MINUTES[_exp] = _minutes
ATTACK_WHOLE = [exp for exp in ATTACKED if ATTACK_JOBS[exp] == 1]
ATTACK_SPLIT = [exp for exp in ATTACKED if ATTACK_JOBS[exp] > 1]


def attack_resources():
    return {**job_resources("attack"), "runtime": lambda wc: ATTACK_MINUTES[wc.exp]}


def attack_job_file(exp, job, name):
    return f"{seeded('attacks')}/{exp}/job_{job}/{name}"


def attack_job_files(name):
    return lambda wc: [attack_job_file(wc.exp, k, name) for k in range(ATTACK_JOBS[wc.exp])]


# The two rules below append to ATTACK_RUN, a shell command, not a path: the lint on path composition
# with a plus sign flags them only because its pattern runs on to the next quoted path.
ATTACK_RUN = (
    "{params.launch} attack run {PARAMS} --set seed={wildcards.seed} --experiment {wildcards.exp} --kind {params.kind}"
    " --weights {input.weights} --threads {threads}"
    " --out {output.metrics} --table {output.table} --recon {output.recon}"
)

if ATTACK_WHOLE:

    rule attack_model:
        input:
            unpack(attack_inputs),
        output:
            metrics=metrics_file("{exp}", "attacks"),
            table=attack_table("{exp}"),
            recon=attack_recon("{exp}"),
        log:
            job_log("attacks/{exp}"),
        wildcard_constraints:
            exp=one_of(ATTACK_WHOLE),
        threads: max(1, JOBS[SCALE]["attack"]["cpus_per_task"], JOBS[SCALE]["attack"]["cpus_per_gpu"])
        resources:
            **attack_resources(),
        params:
            kind=lambda wc: attack_kind(wc.exp),
            settings=ATTACK_SETTINGS,
            launch=launcher("attack"),
        shell:
            ATTACK_RUN + " > {log} 2>&1"


if ATTACK_SPLIT:

    rule attack_job:
        input:
            unpack(attack_inputs),
        output:
            metrics=attack_job_file("{exp}", "{job}", "attacks.json"),
            table=attack_job_file("{exp}", "{job}", "images.csv"),
            recon=attack_job_file("{exp}", "{job}", "reconstructions.safetensors"),
        log:
            job_log("attacks/{exp}_job_{job}"),
        wildcard_constraints:
            exp=one_of(ATTACK_SPLIT),
            job=r"\d+",
        threads: max(1, JOBS[SCALE]["attack"]["cpus_per_task"], JOBS[SCALE]["attack"]["cpus_per_gpu"])
        resources:
            **attack_resources(),
        params:
            kind=lambda wc: attack_kind(wc.exp),
            settings=ATTACK_SETTINGS,
            launch=launcher("attack"),
        shell:
            ATTACK_RUN + " --job {wildcards.job} > {log} 2>&1"

    rule attack_merge:
        input:
            metrics=attack_job_files("attacks.json"),
            tables=attack_job_files("images.csv"),
            recons=attack_job_files("reconstructions.safetensors"),
        output:
            metrics=metrics_file("{exp}", "attacks"),
            table=attack_table("{exp}"),
            recon=attack_recon("{exp}"),
        log:
            job_log("attacks/{exp}_merge"),
        wildcard_constraints:
            exp=one_of(ATTACK_SPLIT),
        localrule: True
        shell:
            "vitpe attack merge --metrics {input.metrics} --tables {input.tables} --recons {input.recons}"
            " --out {output.metrics} --table {output.table} --recon {output.recon} > {log} 2>&1"


rule attack_compare:
    """One seed's paired per-image comparisons (attacks.compare) of its models' attack tables."""
    input:
        lambda wc: [attack_table(exp, wc.seed) for exp in ATTACKED],
    output:
        paired_attacks(),
    log:
        job_log("attacks/compare"),
    localrule: True
    params:
        settings=ATTACK_SETTINGS,
    shell:
        "vitpe attack compare {PARAMS} --set seed={wildcards.seed} --tables {input} --out {output} > {log} 2>&1"


rule figure_attack_grid:
    input:
        recon=[attack_recon(exp, FIRST_SEED) for exp in ATTACK_SUPERVISED + ATTACK_FINETUNED],
        tables=[attack_table(exp, FIRST_SEED) for exp in ATTACK_SUPERVISED + ATTACK_FINETUNED],
    output:
        figure_files("attack_grid", "Privacy"),
    log:
        f"results/logs/report/attack_grid_{SCALE}.log",
    localrule: True
    params:
        # the first optimisation attack and the first closed form on the standard block, side by side
        attacks=" ".join(ATTACK_CFG.get("optimisation", [])[:1] + ATTACK_CFG.get("standard_closed_form", [])[:1]),
    shell:
        "vitpe attack grid-figure --recon {input.recon} --tables {input.tables} --attacks {params.attacks}"
        " --out {output} > {log} 2>&1"


rule figure_attack_grid_april:
    input:
        recon=[attack_recon(exp, FIRST_SEED) for exp in ATTACK_APRIL],
        tables=[attack_table(exp, FIRST_SEED) for exp in ATTACK_APRIL],
    output:
        figure_files("attack_grid_april", "Privacy"),
    log:
        f"results/logs/report/attack_grid_april_{SCALE}.log",
    localrule: True
    params:
        attacks=" ".join(ATTACK_CFG.get("closed_form", [])),
    shell:
        "vitpe attack grid-figure --recon {input.recon} --tables {input.tables} --attacks {params.attacks}"
        " --out {output} > {log} 2>&1"


rule figure_attack_psnr:
    input:
        [attack_table(exp, FIRST_SEED) for exp in ATTACKED],
    output:
        figure_files("attack_psnr", "Privacy"),
    log:
        f"results/logs/report/attack_psnr_{SCALE}.log",
    localrule: True
    shell:
        "vitpe attack psnr-figure --tables {input} --out {output} > {log} 2>&1"


# The privacy-accuracy trade-off over seeds: one point per attacked classifier (clean top-1 of the
# supervised or fine-tuned model against the attack's PSNR), mean ± std over SEEDS.
PRIVACY_MODELS = ATTACK_SUPERVISED + ATTACK_FINETUNED
PRIVACY_METRICS = [
    f"{attack}_{metric}"
    for attack, metric in (
        (ATTACK_CFG.get("optimisation", [None])[0], "plain_psnr_mean"),
        (ATTACK_CFG.get("standard_closed_form", [None])[-1], "shuffled_psnr_kept_mean"),
    )
    if attack
]


rule figure_attack_privacy:
    input:
        attacks=all_seeds(lambda seed: [metrics_file(exp, "attacks", seed) for exp in PRIVACY_MODELS]),
        accuracy=all_seeds(
            lambda seed: [
                metrics_file(exp, "finetune" if exp in ATTACK_FINETUNED else "classify", seed)
                for exp in PRIVACY_MODELS
            ]
        ),
    output:
        figure_files("attack_privacy", "Privacy"),
    log:
        f"results/logs/report/attack_privacy_{SCALE}.log",
    localrule: True
    params:
        metrics=" ".join(PRIVACY_METRICS),
    shell:
        "vitpe attack privacy-figure --attacks-metrics {input.attacks} --accuracy {input.accuracy}"
        " --metric {params.metrics} --out {output} > {log} 2>&1"
