# The main table and the supervised training curves: cheap, run on the submit host (localrule), inputs
# are metrics JSON and logs. What the table reads and the figures it waits for: common.smk.


rule table_main:
    input:
        metrics=table_inputs(),
        paper="workflow/resources/paper_numbers.yaml",
        # main.tex is the main target (`make run`, DVC, SLURM): asking for it builds every figure too
        figures=figures(),
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
        figure_files("training_curves", csv=True, caption="../report/training_curves.rst", category="Training"),
    log:
        f"results/logs/report/training_curves_{SCALE}.log",
    localrule: True
    shell:
        "vitpe report curves {input} --out {output.png} {output.pdf} {output.csv} > {log} 2>&1"
