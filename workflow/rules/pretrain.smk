# MAE / MAE+ / AdPE pretraining, then fine-tuning and linear probing of every pretrained encoder
# (docs/FIDELITY.md rows 50-66), their evaluations and the AdPE figures.


rule train_pretrain:
    input:
        data=data_ready(),
        run_config=lambda wc: run_config(wc.exp, "pretrain"),
    output:
        weights=ckpt("pretrain", "{exp}"),
        encoder=encoder_ckpt("{exp}"),
        curve=f"results/checkpoints/{SCALE}/pretrain/{{exp}}/log.jsonl",
    log:
        f"results/logs/{SCALE}/pretrain/{{exp}}/train.log",
    benchmark:
        f"results/benchmarks/{SCALE}/pretrain/{{exp}}.tsv"
    resources:
        **job_resources("train", "pretrain"),
    params:
        launch=launcher("train"),
        outdir=lambda wc, output: os.path.dirname(output.weights),
    shell:
        "{params.launch} train pretrain {PARAMS} --experiment {wildcards.exp}" " --out {params.outdir} > {log} 2>&1"


rule train_encoder_protocol:
    """Fine-tuning or linear probing (the `protocol` wildcard) of one pretrained encoder."""
    input:
        encoder=encoder_ckpt("{exp}"),
        data=data_ready(),
        run_config=lambda wc: run_config(wc.exp, wc.protocol),
    output:
        weights=f"results/checkpoints/{SCALE}/{{protocol}}/{{exp}}/model.safetensors",
        curve=f"results/checkpoints/{SCALE}/{{protocol}}/{{exp}}/log.jsonl",
    log:
        f"results/logs/{SCALE}/{{protocol}}/{{exp}}/train.log",
    benchmark:
        f"results/benchmarks/{SCALE}/{{protocol}}/{{exp}}.tsv"
    wildcard_constraints:
        protocol="finetune|linprobe",
    resources:
        **job_resources("train", lambda wc: wc.protocol),
    params:
        launch=launcher("train"),
        outdir=lambda wc, output: os.path.dirname(output.weights),
    shell:
        "{params.launch} train {wildcards.protocol} {PARAMS} --experiment {wildcards.exp}"
        " --pretrained {input.encoder} --out {params.outdir} > {log} 2>&1"


rule eval_encoder_protocol:
    input:
        weights=f"results/checkpoints/{SCALE}/{{protocol}}/{{exp}}/model.safetensors",
        data=data_ready(),
    output:
        metrics_file("{exp}", "{protocol}"),
    log:
        f"results/logs/{SCALE}/{{protocol}}/{{exp}}/eval_classify.log",
    wildcard_constraints:
        protocol="finetune|linprobe",
    resources:
        **job_resources("eval"),
    params:
        launch=launcher("eval"),
    shell:
        "{params.launch} eval classify {PARAMS} --stage {wildcards.protocol} --experiment {wildcards.exp}"
        " --weights {input.weights} --out {output} > {log} 2>&1"


rule eval_pretext:
    input:
        weights=ckpt("pretrain", "{exp}"),
        curve=f"results/checkpoints/{SCALE}/pretrain/{{exp}}/log.jsonl",
        data=data_ready(),
    output:
        metrics_file("{exp}", "pretext"),
    log:
        f"results/logs/{SCALE}/pretrain/{{exp}}/eval_pretext.log",
    resources:
        **job_resources("eval"),
    params:
        launch=launcher("eval"),
    shell:
        "{params.launch} eval pretext {PARAMS} --experiment {wildcards.exp} --weights {input.weights}"
        " --log {input.curve} --out {output} > {log} 2>&1"


rule figure_pretrain_curves:
    input:
        expand(f"results/checkpoints/{SCALE}/pretrain/{{exp}}/log.jsonl", exp=PRETRAIN),
    output:
        figure=figure_files("pretrain_curves"),
        csv=plot_data("pretrain_curves"),
    log:
        f"results/logs/report/pretrain_curves_{SCALE}.log",
    localrule: True
    shell:
        "vitpe report curves {input} --out {output.figure} {output.csv} > {log} 2>&1"


rule figure_adpe_delta_norms:
    input:
        expand(f"results/checkpoints/{SCALE}/pretrain/{{exp}}/log.jsonl", exp=PRETRAIN),
    output:
        figure_files("adpe_delta_norms"),
    log:
        f"results/logs/report/adpe_delta_norms_{SCALE}.log",
    localrule: True
    shell:
        "vitpe report delta-norms {input} --out {output} > {log} 2>&1"


rule figure_adpe_accuracy:
    input:
        finetune=[metrics_file(exp, "finetune") for exp in PRETRAIN],
        linprobe=[metrics_file(exp, "linprobe") for exp in PRETRAIN],
    output:
        figure_files("adpe_accuracy"),
    log:
        f"results/logs/report/adpe_accuracy_{SCALE}.log",
    localrule: True
    shell:
        "vitpe report accuracy-bars --finetune {input.finetune} --linprobe {input.linprobe}"
        " --out {output} > {log} 2>&1"
