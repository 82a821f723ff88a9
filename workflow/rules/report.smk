# The main table, the headline metrics and the supervised training curves: cheap, run on the submit
# host (localrule), inputs are metrics JSON and logs. What the table reads and the figures it waits
# for: common.smk.


rule table_main:
    input:
        metrics=all_seeds(table_inputs),
        paper="workflow/resources/paper_numbers.yaml",
        # main.tex is the main target (`make run`, DVC, SLURM): asking for it builds every figure too
        figures=figures(),
        # and the metrics and plot data DVC tracks (dvc.yaml), so asking for main.tex makes them too
        headline=HEADLINE,
        plots=plots(),
    output:
        tex="results/tables/main.tex",
        # the same tables as HTML: the report's "Tables" section
        html=report("results/tables/main.html", caption="../report/tables.rst", category="Tables"),
    log:
        "results/logs/report/table_main.log",
    localrule: True
    shell:
        "vitpe report table {PARAMS} --paper {input.paper} --out {output.tex} --html {output.html} > {log} 2>&1"


# The per-model numbers of main.tex, curated for `dvc metrics show/diff` (vitpe.report.headline)
rule headline_metrics:
    input:
        all_seeds(table_inputs),
    output:
        HEADLINE,
    log:
        f"results/logs/report/headline_{SCALE}.log",
    localrule: True
    shell:
        "vitpe report headline {PARAMS} --metrics results/metrics --out {output} > {log} 2>&1"


rule figure_training_curves:
    input:
        [train_log("supervised", exp, FIRST_SEED) for exp in SUPERVISED],
    output:
        figure=figure_files("training_curves", "MJP"),
        csv=plot_data("training_curves"),
    log:
        f"results/logs/report/training_curves_{SCALE}.log",
    localrule: True
    shell:
        "vitpe report curves {input} --out {output.figure} {output.csv} > {log} 2>&1"
