# Downstream transfer of pretrained encoders (docs/FIDELITY.md rows 24-37): ADE20K semantic segmentation
# (UperNet, mmseg) and COCO instance segmentation (Mask R-CNN with a ViTDet backbone, mmdet).

TRANSFER = config["experiments"].get("transfer", [])
TRANSFER_TASKS = ["ade20k", "coco"]
TABLE_INPUTS.extend(expand(f"results/metrics/{SCALE}/{{exp}}/{{task}}.json", exp=TRANSFER, task=TRANSFER_TASKS))


# the recipe a transfer run depends on (a new encoder reruns it through the encoder input)
RUN_CONFIGS.extend((f"transfer_{task}", exp) for task in TRANSFER_TASKS for exp in TRANSFER)


rule transfer_ade20k:
    input:
        encoder=f"results/checkpoints/{SCALE}/pretrain/{{exp}}/encoder.safetensors",
        data=data_ready(),
        run_config=lambda wc: run_config(wc.exp, "transfer_ade20k"),
    output:
        metrics=f"results/metrics/{SCALE}/{{exp}}/ade20k.json",
        weights=f"results/checkpoints/{SCALE}/transfer/{{exp}}/ade20k/model.safetensors",
    log:
        f"results/logs/{SCALE}/transfer/{{exp}}/ade20k.log",
    benchmark:
        f"results/benchmarks/{SCALE}/transfer_ade20k/{{exp}}.tsv"
    resources:
        **job_resources("transfer_ade20k"),
    params:
        launch=launcher("transfer_ade20k"),
        work_dir=lambda wc, output: os.path.dirname(output.weights),
    shell:
        "{params.launch} transfer ade20k {PARAMS} --experiment {wildcards.exp} --encoder {input.encoder}"
        " --work-dir {params.work_dir} --weights-out {output.weights} --threads {resources.cpus_per_task}"
        " --out {output.metrics} > {log} 2>&1"


rule transfer_coco:
    input:
        encoder=f"results/checkpoints/{SCALE}/pretrain/{{exp}}/encoder.safetensors",
        data=data_ready(),
        run_config=lambda wc: run_config(wc.exp, "transfer_coco"),
    output:
        metrics=f"results/metrics/{SCALE}/{{exp}}/coco.json",
        weights=f"results/checkpoints/{SCALE}/transfer/{{exp}}/coco/model.safetensors",
    log:
        f"results/logs/{SCALE}/transfer/{{exp}}/coco.log",
    benchmark:
        f"results/benchmarks/{SCALE}/transfer_coco/{{exp}}.tsv"
    resources:
        **job_resources("transfer_coco"),
    params:
        launch=launcher("transfer_coco"),
        work_dir=lambda wc, output: os.path.dirname(output.weights),
    shell:
        "{params.launch} transfer coco {PARAMS} --experiment {wildcards.exp} --encoder {input.encoder}"
        " --work-dir {params.work_dir} --weights-out {output.weights} --threads {resources.cpus_per_task}"
        " --out {output.metrics} > {log} 2>&1"
