# Published checkpoints (experiments.imported; README, Published checkpoints): each file is imported
# in place of training, per seed folder, and the rules of trained models take it from there: a
# classifier (deit, mjp, mae-finetuned) through the evaluations (eval_supervised) and attacks, an
# encoder (mae, adpe-abs, adpe-rel) through fine-tuning, linear probing and transfer. An encoder has no
# pretraining model or log, so its evaluation is the two classifiers' top-1 without the pretext loss.


ruleorder: import_classifier > train_supervised
ruleorder: import_encoder > train_pretrain
ruleorder: eval_imported_encoder > eval_encoder


rule import_classifier:
    input:
        checkpoint=lambda wc: IMPORTED[wc.exp]["path"],
        data=data_ready(),  # the head keeps the rows of the dataset's class folders
        run_config=lambda wc: run_config(wc.exp, seed=wc.seed),
    output:
        ckpt("supervised", "{exp}"),
    log:
        job_log("imported/{exp}"),
    wildcard_constraints:
        exp=one_of(IMPORTED_CLASSIFIERS),
    resources:
        **job_resources("import"),
    params:
        outdir=lambda wc, output: os.path.dirname(output[0]),
    shell:
        "vitpe train import {PARAMS} --set seed={wildcards.seed} --experiment {wildcards.exp}"
        " --out {params.outdir} > {log} 2>&1"


use rule import_classifier as import_encoder with:
    input:
        checkpoint=lambda wc: IMPORTED[wc.exp]["path"],
    output:
        encoder_ckpt("{exp}"),
    wildcard_constraints:
        exp=one_of(IMPORTED_ENCODERS),


rule eval_imported_encoder:
    """Top-1 of a published encoder's fine-tuned or linear-probed classifier (the `protocol` wildcard)."""
    input:
        weights=ckpt("{protocol}", "{exp}"),
        data=data_ready(),
        run_config=lambda wc: run_config(wc.exp, wc.protocol, wc.seed),
    output:
        metrics_file("{exp}", "{protocol}"),
    log:
        job_log("{protocol}/{exp}/eval"),
    wildcard_constraints:
        exp=one_of(IMPORTED_ENCODERS),
        protocol="finetune|linprobe",
    resources:
        **job_resources("eval"),
    params:
        launch=launcher("eval"),
    shell:
        "{params.launch} eval classify {PARAMS} --set seed={wildcards.seed} --experiment {wildcards.exp}"
        " --stage {wildcards.protocol} --weights {input.weights} --out {output} > {log} 2>&1"
