# Downstream transfer of pretrained encoders (docs/FIDELITY.md rows 24-37): ADE20K semantic segmentation
# (UperNet, mmseg) and COCO instance segmentation (Mask R-CNN with a ViTDet backbone, mmdet).
# Every experiments.transfer encoder on both TRANSFER_TASKS (common.smk); a run's config holds the recipe
# it depends on (a new encoder reruns it through the encoder input).


rule transfer_ade20k:
    input:
        encoder=encoder_ckpt("{exp}"),
        data=data_ready(),
        run_config=lambda wc: run_config(wc.exp, "transfer_ade20k", wc.seed),
    output:
        metrics=metrics_file("{exp}", "ade20k"),
        weights=f"{seeded('checkpoints')}/transfer/{{exp}}/ade20k/model.safetensors",
    log:
        job_log("transfer/{exp}/ade20k"),
    benchmark:
        job_benchmark("transfer_ade20k")
    resources:
        **job_resources("transfer_ade20k"),
    params:
        launch=launcher("transfer_ade20k"),
        work_dir=lambda wc, output: os.path.dirname(output.weights),
    shell:
        "{params.launch} transfer ade20k {PARAMS} --set seed={wildcards.seed} --experiment {wildcards.exp} --encoder {input.encoder}"
        " --work-dir {params.work_dir} --weights-out {output.weights} --threads {resources.cpus_per_task}"
        " --out {output.metrics} > {log} 2>&1"


rule transfer_coco:
    input:
        encoder=encoder_ckpt("{exp}"),
        data=data_ready(),
        run_config=lambda wc: run_config(wc.exp, "transfer_coco", wc.seed),
    output:
        metrics=metrics_file("{exp}", "coco"),
        weights=f"{seeded('checkpoints')}/transfer/{{exp}}/coco/model.safetensors",
    log:
        job_log("transfer/{exp}/coco"),
    benchmark:
        job_benchmark("transfer_coco")
    resources:
        **job_resources("transfer_coco"),
    params:
        launch=launcher("transfer_coco"),
        work_dir=lambda wc, output: os.path.dirname(output.weights),
    shell:
        "{params.launch} transfer coco {PARAMS} --set seed={wildcards.seed} --experiment {wildcards.exp} --encoder {input.encoder}"
        " --work-dir {params.work_dir} --weights-out {output.weights} --threads {resources.cpus_per_task}"
        " --out {output.metrics} > {log} 2>&1"
