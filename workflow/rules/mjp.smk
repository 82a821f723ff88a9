# MJP evaluations of every supervised model (clean accuracy is eval_classify in supervised.smk) and
# the MJP figures. Each evaluation writes one flat metrics JSON (DVC metrics, table input).


rule eval_shuffle:
    input:
        unpack(eval_rule_inputs),
    output:
        metrics_file("{exp}", "shuffle"),
    log:
        f"results/logs/{SCALE}/supervised/{{exp}}/eval_shuffle.log",
    resources:
        **job_resources("eval"),
    params:
        ratios=" ".join(str(r) for r in config["evaluation"]["shuffle_ratios"]),
        consistency=config["evaluation"]["consistency_ratio"],
        launch=launcher("eval"),
    shell:
        "{params.launch} eval shuffle {PARAMS} --experiment {wildcards.exp} --weights {input.weights}"
        " --ratios {params.ratios} --consistency-ratio {params.consistency} --out {output} > {log} 2>&1"


rule eval_robustness:
    input:
        unpack(eval_rule_inputs),
    output:
        metrics_file("{exp}", "robustness"),
    log:
        f"results/logs/{SCALE}/supervised/{{exp}}/eval_robustness.log",
    resources:
        **job_resources("eval"),
    params:
        launch=launcher("eval"),
    shell:
        "{params.launch} eval robustness {PARAMS} --experiment {wildcards.exp} --weights {input.weights}"
        " --out {output} > {log} 2>&1"


rule eval_pe_probe:
    input:
        unpack(eval_rule_inputs),
    output:
        metrics_file("{exp}", "pe_probe"),
    log:
        f"results/logs/{SCALE}/supervised/{{exp}}/eval_pe_probe.log",
    localrule: True  # a least-squares fit on a 197-row table: seconds on the submit host
    shell:
        "vitpe eval pe-probe {PARAMS} --experiment {wildcards.exp} --weights {input.weights}"
        " --out {output} > {log} 2>&1"


rule figure_shuffle_accuracy:
    input:
        [metrics_file(exp, "shuffle") for exp in SUPERVISED],
    output:
        figure_files("shuffle_accuracy"),
    log:
        f"results/logs/report/shuffle_accuracy_{SCALE}.log",
    localrule: True
    shell:
        "vitpe report shuffle-curves {input} --out {output} > {log} 2>&1"


rule figure_pe_spectra:
    input:
        [metrics_file(exp, "pe_probe") for exp in SUPERVISED],
    output:
        figure_files("pe_spectra"),
    log:
        f"results/logs/report/pe_spectra_{SCALE}.log",
    localrule: True
    shell:
        "vitpe report pe-spectra {input} --out {output} > {log} 2>&1"


rule figure_pe_similarity:
    input:
        weights=[ckpt("supervised", exp) for exp in SUPERVISED],
    output:
        figure_files("pe_similarity"),
    log:
        f"results/logs/report/pe_similarity_{SCALE}.log",
    localrule: True
    shell:
        "vitpe report pe-similarity {input.weights} --out {output} > {log} 2>&1"


rule figure_mjp_illustration:
    input:
        data_ready(),
    output:
        figure_files("mjp_illustration"),
    log:
        f"results/logs/report/mjp_illustration_{SCALE}.log",
    localrule: True
    params:
        # a photograph at the tiny scale (the embedded attack set), the first validation image otherwise
        images=lambda wc: dataset_image_dir(),
        ratio=config["evaluation"]["illustration_ratio"],
    shell:
        "vitpe report mjp-illustration {PARAMS} --image {params.images} --ratio {params.ratio}"
        " --out {output} > {log} 2>&1"
