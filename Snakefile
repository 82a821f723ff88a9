# vitpe workflow: params.yaml -> data -> checkpoints -> metrics JSON -> tables and figures.
# Rules only wire files together; every command is the package CLI (`vitpe ...`).
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


# `snakemake --lint` asks for a conda environment or container on each rule: every rule runs the
# project's virtual environment (`make setup`: mmcv is compiled there against the installed torch,
# which no conda package or public image matches), put first on PATH by workflow/rules/common.smk.


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/supervised.smk"
include: "workflow/rules/mjp.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/imported.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/attacks.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "results/tables/main.tex",
