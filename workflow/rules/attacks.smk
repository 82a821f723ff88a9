# Gradient-inversion attacks (issue 7; reference/ATTACKS_ROBUSTNESS.md): every trained model on the
# attack images, per-image tables, paired per-image comparisons, the reconstruction grids and the PSNR
# distributions. One job per model runs all of its attacks (start-up dominates at the tiny scale).
import json as _json

ATTACK_CFG = config.get("attacks", {})
ATTACK_SUPERVISED = ATTACK_CFG.get("models", [])
ATTACK_APRIL = ATTACK_CFG.get("april_models", [])
# fine-tuned classifiers exist only for pretraining experiments the DAG builds (pretrain.smk)
ATTACK_FINETUNED = [e for e in ATTACK_CFG.get("finetuned", []) if e in config["experiments"].get("pretrain", [])]
ATTACKED = ATTACK_SUPERVISED + ATTACK_FINETUNED + ATTACK_APRIL
for _exp in ATTACK_SUPERVISED + ATTACK_APRIL:  # one clear line before any job starts
    if _exp not in config["supervised"]:
        sys.exit(f"error: params.yaml (with --config overrides): attacks lists {_exp!r}, not defined under supervised:")
for _exp in ATTACK_APRIL:
    if not config["supervised"][_exp].get("april"):
        sys.exit(f"error: params.yaml (with --config overrides): attacks.april_models: supervised.{_exp} "
                 "is not APRIL-compatible (set april: true)")
# the APRIL variants train through rule train_supervised; it needs their run configs
RUN_CONFIGS.extend(("supervised", exp) for exp in ATTACK_APRIL if exp not in SUPERVISED)
# rerun the attacks when any attack setting changes (a plain string: Snakemake compares it)
ATTACK_SETTINGS = _json.dumps({"attacks": ATTACK_CFG, "scale": config["scales"][SCALE].get("attacks")},
                              sort_keys=True)


def attack_kind(exp):
    return "april" if exp in ATTACK_APRIL else "finetuned" if exp in ATTACK_FINETUNED else "supervised"


def attack_inputs(wc):
    if attack_kind(wc.exp) == "finetuned":
        return {"weights": ckpt("finetune", wc.exp), "data": data_ready(),
                "run_config": run_config(wc.exp, "finetune")}
    return {"weights": ckpt("supervised", wc.exp), "data": data_ready(), "run_config": run_config(wc.exp)}


def attack_table(exp):
    return f"results/attacks/{SCALE}/{exp}/images.csv"


def attack_recon(exp):
    return f"results/attacks/{SCALE}/{exp}/reconstructions.safetensors"


PAIRED = f"results/metrics/{SCALE}/attacks/paired.json"
if ATTACKED:
    TABLE_INPUTS.extend([f"results/metrics/{SCALE}/{exp}/attacks.json" for exp in ATTACKED] + [PAIRED])
    FIGURES.append("attack_psnr")
if ATTACK_SUPERVISED or ATTACK_FINETUNED:
    FIGURES.append("attack_grid")
if ATTACK_APRIL:
    FIGURES.append("attack_grid_april")


rule attack_model:
    input:
        unpack(attack_inputs),
    output:
        metrics=f"results/metrics/{SCALE}/{{exp}}/attacks.json",
        table=attack_table("{exp}"),
        recon=attack_recon("{exp}"),
    params:
        kind=lambda wc: attack_kind(wc.exp),
        settings=ATTACK_SETTINGS,
        launch=launcher("attack"),
    log:
        f"results/logs/{SCALE}/attacks/{{exp}}.log",
    threads: max(1, JOBS[SCALE]["attack"]["cpus_per_task"], JOBS[SCALE]["attack"]["cpus_per_gpu"])
    resources:
        **job_resources("attack"),
    shell:
        "{params.launch} attack run {PARAMS} --experiment {wildcards.exp} --kind {params.kind}"
        " --weights {input.weights} --out {output.metrics} --table {output.table} --recon {output.recon}"
        " --threads {threads} > {log} 2>&1"


rule attack_compare:
    input:
        [attack_table(exp) for exp in ATTACKED],
    output:
        PAIRED,
    params:
        settings=ATTACK_SETTINGS,
    log:
        f"results/logs/{SCALE}/attacks/compare.log",
    localrule: True
    shell:
        "vitpe attack compare {PARAMS} --tables {input} --out {output} > {log} 2>&1"


def attack_figure(name):
    return multiext(f"results/figures/{SCALE}/{name}", ".png", ".pdf")


rule figure_attack_grid:
    input:
        [attack_recon(exp) for exp in ATTACK_SUPERVISED + ATTACK_FINETUNED],
    output:
        attack_figure("attack_grid"),
    params:
        attacks=" ".join(ATTACK_CFG.get("optimisation", [])[:1]),
    log:
        f"results/logs/report/attack_grid_{SCALE}.log",
    localrule: True
    shell:
        "vitpe attack grid-figure --recon {input} --attacks {params.attacks} --out {output} > {log} 2>&1"


rule figure_attack_grid_april:
    input:
        [attack_recon(exp) for exp in ATTACK_APRIL],
    output:
        attack_figure("attack_grid_april"),
    params:
        attacks=" ".join(ATTACK_CFG.get("closed_form", [])),
    log:
        f"results/logs/report/attack_grid_april_{SCALE}.log",
    localrule: True
    shell:
        "vitpe attack grid-figure --recon {input} --attacks {params.attacks} --out {output} > {log} 2>&1"


rule figure_attack_psnr:
    input:
        [attack_table(exp) for exp in ATTACKED],
    output:
        attack_figure("attack_psnr"),
    log:
        f"results/logs/report/attack_psnr_{SCALE}.log",
    localrule: True
    shell:
        "vitpe attack psnr-figure --tables {input} --out {output} > {log} 2>&1"
