# Supervised training of every experiments.supervised model (DeiT-S baseline, naive shuffle, MJP), once
# per seed, and its evaluations (clean accuracy and the MJP evaluations, in one process); the MJP
# figures are in mjp.smk.


rule train_supervised:
    input:
        data=data_ready(),
        run_config=lambda wc: run_config(wc.exp, seed=wc.seed),
    output:
        weights=ckpt("supervised", "{exp}"),
        # the per-step log, published next to the weights when training completes (DVC plots, figures)
        curve=train_log("supervised", "{exp}"),
    log:
        job_log("supervised/{exp}/train"),
    benchmark:
        job_benchmark("supervised")
    resources:
        **job_resources("train_supervised", "supervised"),
    params:
        launch=launcher("train_supervised"),
        outdir=lambda wc, output: os.path.dirname(output.weights),
    shell:
        "{params.launch} train supervised {PARAMS} --set seed={wildcards.seed} --experiment {wildcards.exp}"
        " --out {params.outdir} > {log} 2>&1"


# Clean top-1, accuracy and consistency under MJP-shuffled input (evaluation.*), ImageNet-C/-A/-O and
# the PE probe of one model: one process loads the model once (start-up is most of a tiny evaluation).
rule eval_supervised:
    input:
        weights=ckpt("supervised", "{exp}"),
        data=data_ready(),
        run_config=lambda wc: run_config(wc.exp, seed=wc.seed),
    output:
        [metrics_file("{exp}", kind) for kind in SUPERVISED_EVALS],
    log:
        job_log("supervised/{exp}/eval"),
    resources:
        **job_resources("eval"),
    params:
        launch=launcher("eval"),
        outdir=lambda wc, output: os.path.dirname(output[0]),
    shell:
        "{params.launch} eval suite {PARAMS} --set seed={wildcards.seed} --experiment {wildcards.exp} --weights {input.weights}"
        " --out-dir {params.outdir} > {log} 2>&1"
