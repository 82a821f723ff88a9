# Supervised training of every experiments.supervised model (DeiT-S baseline, naive shuffle, MJP) and its
# clean classification; the MJP evaluations are in mjp.smk.


rule train_supervised:
    input:
        data=data_ready(),
        run_config=lambda wc: run_config(wc.exp),
    output:
        weights=ckpt("supervised", "{exp}"),
        # the per-step log, published next to the weights when training completes (DVC plots, figures)
        curve=f"results/checkpoints/{SCALE}/supervised/{{exp}}/log.jsonl",
    log:
        f"results/logs/{SCALE}/supervised/{{exp}}/train.log",
    benchmark:
        f"results/benchmarks/{SCALE}/supervised/{{exp}}.tsv"
    resources:
        **job_resources("train_supervised", "supervised"),
    params:
        launch=launcher("train_supervised"),
        outdir=lambda wc, output: os.path.dirname(output.weights),
    shell:
        "{params.launch} train supervised {PARAMS} --experiment {wildcards.exp}" " --out {params.outdir} > {log} 2>&1"


rule eval_classify:
    input:
        weights=ckpt("supervised", "{exp}"),
    output:
        metrics_file("{exp}", "classify"),
    log:
        f"results/logs/{SCALE}/supervised/{{exp}}/eval_classify.log",
    resources:
        **job_resources("eval"),
    params:
        launch=launcher("eval"),
    shell:
        "{params.launch} eval classify {PARAMS} --experiment {wildcards.exp}"
        " --weights {input.weights} --out {output} > {log} 2>&1"
