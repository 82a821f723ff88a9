# Tables and figures: cheap, run on the submit host (localrule), inputs are metrics JSON and logs.
# Included last: every rules file has added its run configs, table inputs and figures by now.

_write_run_configs()


rule table_main:
    input:
        metrics=TABLE_INPUTS,
        paper="workflow/resources/paper_numbers.yaml",
        # main.tex is the main target (`make run`, DVC, SLURM): asking for it builds every figure too
        figures=[f"results/figures/{SCALE}/{name}.png" for name in FIGURES],
    output:
        "results/tables/main.tex",
    log:
        "results/logs/report/table_main.log",
    localrule: True
    shell:
        "vitpe report table {PARAMS} --paper {input.paper} --out {output} > {log} 2>&1"


rule figure_training_curves:
    input:
        expand(f"results/checkpoints/{SCALE}/supervised/{{exp}}/log.jsonl", exp=SUPERVISED),
    output:
        png=report(
            "results/figures/{scale}/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
        ),
        pdf="results/figures/{scale}/training_curves.pdf",
        csv="results/figures/{scale}/training_curves.csv",  # for `dvc plots`
    log:
        "results/logs/report/training_curves_{scale}.log",
    localrule: True
    shell:
        "vitpe report curves {input} --out {output.png} {output.pdf} {output.csv} > {log} 2>&1"
