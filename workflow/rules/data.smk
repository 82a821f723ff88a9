# Datasets: the generated set of the active scale and the layout check every training job waits for.

# data kind -> the `vitpe data synth --layout` that generates it: tiny's embedded set, smoke's mini set in
# the real layouts. The paper scale reads data.real and generates nothing.
SYNTH_LAYOUTS = {"embedded": "embedded", "mini": "real"}
SCALE_DATA = config["scales"][SCALE]["data"]


if SCALE_DATA in SYNTH_LAYOUTS:

    rule synth_data:
        output:
            os.path.join(config["data"][SCALE_DATA]["root"], "manifest.json"),
        log:
            f"results/logs/data/synth_{SCALE_DATA}.log",
        params:
            section=config["data"][SCALE_DATA],  # rerun when the generator's parameters change
            layout=SYNTH_LAYOUTS[SCALE_DATA],
        shell:
            "vitpe data synth {PARAMS} --layout {params.layout} > {log} 2>&1"


rule check_data:
    input:
        lambda wc: rules.synth_data.output if wc.scale == SCALE and SCALE_DATA in SYNTH_LAYOUTS else [],
    output:
        "results/checks/{scale}/data.json",
    log:
        "results/logs/data/check_{scale}.log",
    localrule: True
    shell:
        "vitpe data check {PARAMS} --out {output} > {log} 2>&1"
