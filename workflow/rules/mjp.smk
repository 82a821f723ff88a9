# The MJP figures (the evaluations they read: rule eval_supervised, supervised.smk). The shuffle curves
# span every seed (a band); figures of one model's weights show FIRST_SEED's run.


rule figure_shuffle_accuracy:
    input:
        all_seeds(lambda seed: [metrics_file(exp, "shuffle", seed) for exp in SUPERVISED]),
    output:
        figure_files("shuffle_accuracy", "MJP"),
    log:
        f"results/logs/report/shuffle_accuracy_{SCALE}.log",
    localrule: True
    shell:
        "vitpe report shuffle-curves {input} --out {output} > {log} 2>&1"


rule figure_pe_spectra:
    input:
        [metrics_file(exp, "pe_probe", FIRST_SEED) for exp in SUPERVISED],
    output:
        figure_files("pe_spectra", "MJP"),
    log:
        f"results/logs/report/pe_spectra_{SCALE}.log",
    localrule: True
    shell:
        "vitpe report pe-spectra {input} --out {output} > {log} 2>&1"


rule figure_pe_similarity:
    input:
        weights=[ckpt("supervised", exp, FIRST_SEED) for exp in SUPERVISED],
    output:
        figure_files("pe_similarity", "MJP"),
    log:
        f"results/logs/report/pe_similarity_{SCALE}.log",
    localrule: True
    shell:
        "vitpe report pe-similarity {input.weights} --out {output} > {log} 2>&1"


rule figure_mjp_illustration:
    input:
        data_ready(),
    output:
        figure_files("mjp_illustration", "MJP"),
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
