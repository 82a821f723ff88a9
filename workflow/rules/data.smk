# Datasets: the embedded generator (tiny scale) and the layout check every training job waits for.


rule synth_data:
    output:
        config["data"]["embedded"]["root"] + "/manifest.json",
    params:
        section=config["data"]["embedded"],  # rerun when the generator's parameters change
    log:
        "results/logs/data/synth.log",
    shell:
        "vitpe data synth {PARAMS} > {log} 2>&1"


rule check_data:
    input:
        lambda wc: rules.synth_data.output if wc.scale == "tiny" else [],
    output:
        "results/checks/{scale}/data.json",
    log:
        "results/logs/data/check_{scale}.log",
    localrule: True
    shell:
        "vitpe data check {PARAMS} --out {output} > {log} 2>&1"
