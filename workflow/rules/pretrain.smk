# MAE / MAE+ / AdPE pretraining, then fine-tuning and linear probing of every pretrained encoder
# (docs/FIDELITY.md rows 50-66), once per seed (a seed's encoder is fine-tuned with the same seed),
# their evaluations and the AdPE figures (FIRST_SEED's runs).


rule train_pretrain:
    input:
        data=data_ready(),
        run_config=lambda wc: run_config(wc.exp, "pretrain", wc.seed),
    output:
        weights=ckpt("pretrain", "{exp}"),
        encoder=encoder_ckpt("{exp}"),
        curve=train_log("pretrain", "{exp}"),
    log:
        job_log("pretrain/{exp}/train"),
    benchmark:
        job_benchmark("pretrain")
    resources:
        **job_resources("train", "pretrain"),
    params:
        launch=launcher("train"),
        outdir=lambda wc, output: os.path.dirname(output.weights),
    shell:
        "{params.launch} train pretrain {PARAMS} --set seed={wildcards.seed} --experiment {wildcards.exp} --out {params.outdir} > {log} 2>&1"


rule train_encoder_protocol:
    """Fine-tuning or linear probing (the `protocol` wildcard) of one pretrained encoder."""
    input:
        encoder=encoder_ckpt("{exp}"),
        data=data_ready(),
        run_config=lambda wc: run_config(wc.exp, wc.protocol, wc.seed),
    output:
        weights=ckpt("{protocol}", "{exp}"),
        curve=train_log("{protocol}", "{exp}"),
    log:
        job_log("{protocol}/{exp}/train"),
    benchmark:
        job_benchmark("{protocol}")
    wildcard_constraints:
        protocol="finetune|linprobe",
    resources:
        **job_resources("train", lambda wc: wc.protocol),
    params:
        launch=launcher("train"),
        outdir=lambda wc, output: os.path.dirname(output.weights),
    shell:
        "{params.launch} train {wildcards.protocol} {PARAMS} --set seed={wildcards.seed} --experiment {wildcards.exp}"
        " --pretrained {input.encoder} --out {params.outdir} > {log} 2>&1"


# The pretext loss and the fine-tune and linear-probe top-1 of one encoder: one process (start-up is
# most of a tiny evaluation).
rule eval_encoder:
    input:
        pretrained=ckpt("pretrain", "{exp}"),
        curve=train_log("pretrain", "{exp}"),
        finetune=ckpt("finetune", "{exp}"),
        linprobe=ckpt("linprobe", "{exp}"),
        data=data_ready(),
    output:
        [metrics_file("{exp}", kind) for kind in ENCODER_EVALS],
    log:
        job_log("pretrain/{exp}/eval"),
    resources:
        **job_resources("eval"),
    params:
        launch=launcher("eval"),
        outdir=lambda wc, output: os.path.dirname(output[0]),
    shell:
        "{params.launch} eval encoder {PARAMS} --set seed={wildcards.seed} --experiment {wildcards.exp}"
        " --pretrained {input.pretrained} --log {input.curve} --finetune {input.finetune} --linprobe {input.linprobe}"
        " --out-dir {params.outdir} > {log} 2>&1"


rule figure_pretrain_curves:
    input:
        [train_log("pretrain", exp, FIRST_SEED) for exp in PRETRAIN],
    output:
        figure=figure_files("pretrain_curves", "AdPE"),
        csv=plot_data("pretrain_curves"),
    log:
        f"results/logs/report/pretrain_curves_{SCALE}.log",
    localrule: True
    shell:
        "vitpe report curves {input} --out {output.figure} {output.csv} > {log} 2>&1"


rule figure_adpe_delta_norms:
    input:
        [train_log("pretrain", exp, FIRST_SEED) for exp in PRETRAIN],
    output:
        figure_files("adpe_delta_norms", "AdPE"),
    log:
        f"results/logs/report/adpe_delta_norms_{SCALE}.log",
    localrule: True
    shell:
        "vitpe report delta-norms {input} --out {output} > {log} 2>&1"


rule figure_adpe_accuracy:
    input:
        finetune=[metrics_file(exp, "finetune", seed) for exp in PRETRAIN for seed in SEEDS],
        linprobe=[metrics_file(exp, "linprobe", seed) for exp in PRETRAIN for seed in SEEDS],
    output:
        figure_files("adpe_accuracy", "AdPE"),
    log:
        f"results/logs/report/adpe_accuracy_{SCALE}.log",
    localrule: True
    shell:
        "vitpe report accuracy-bars --finetune {input.finetune} --linprobe {input.linprobe}"
        " --out {output} > {log} 2>&1"
