"""Snakemake conventions: `snakemake --lint` leaves only the warnings the rule files justify, every
training rule records a benchmark file, and the rule files are snakefmt-formatted."""
from __future__ import annotations

import re

from conftest import ROOT, run

# lint title (pattern) -> the rule file whose comment justifies it ("" when it applies to every rule)
JUSTIFIED = {
    r"Specify a conda environment or container for each rule\.": "",
    r"Shell command directly uses variable PARAMS from outside of the rule": "",
    r"Environment variable PATH used but not asserted with envvars directive in line \d+\.": "common.smk",
    r"Mixed rules and functions in same snakefile\.": "attacks.smk",
    r"Path composition with '\+' in line \d+": "attacks.smk",
}
# where each justification is written, next to what the lint flags
COMMENTS = {
    "Snakefile": "asks for a conda environment or container on each rule",
    "workflow/rules/common.smk": "uses variable PARAMS from",
    "workflow/rules/attacks.smk": "flags \"mixed rules and functions\" here",
}
TRAINING = {"train_supervised": "supervised/deit_s", "train_pretrain": "pretrain/mae",
            "train_encoder_protocol": "finetune/mae", "transfer_ade20k": "transfer_ade20k/mae",
            "transfer_coco": "transfer_coco/mae"}


def _lints(text: str) -> list[tuple[str, str]]:
    """(where, title) for each lint of `snakemake --lint`: where is the rule file or 'rule NAME'."""
    found, where = [], ""
    for line in text.splitlines():
        header = re.match(r"Lints for (?:snakefile \S*/(\S+):|rule (\S+) \()", line)
        if header:
            where = header.group(1) or f"rule {header.group(2)}"
        item = re.match(r"    \* (.*?):?$", line)
        if item:
            found.append((where, item.group(1)))
    return found


def test_lint_leaves_only_justified_warnings(workflow_copy):
    proc = run(["snakemake", "--lint"], workflow_copy, check=False)
    lints = _lints(proc.stdout + proc.stderr)
    assert len(lints) > 20  # the parser read the report (every rule gets the conda lint)
    unexpected = [(where, title) for where, title in lints
                  if not any(re.fullmatch(pattern, title) and where.endswith(file)
                             for pattern, file in JUSTIFIED.items())]
    assert unexpected == []
    for path, comment in COMMENTS.items():
        assert comment in " ".join((ROOT / path).read_text().split()), path


def test_training_rules_write_benchmarks(workflow_copy):
    dry = run(["snakemake", "-n", "--cores", "1", "--forceall", "results/tables/main.tex"], workflow_copy).stdout
    scale = re.search(r"results/checkpoints/(\w+/seed\d+)/", dry).group(1)
    for rule, stage_exp in TRAINING.items():
        blocks = re.findall(rf"rule {rule}:\n(.*?)(?:\n\n|\Z)", dry, re.S)
        assert blocks, f"no {rule} job in the dry run"
        wanted = f"benchmark: results/benchmarks/{scale}/{stage_exp}.tsv"
        assert any(wanted in block for block in blocks), (rule, blocks[0])
    assert "results/benchmarks/\n" in (ROOT / ".gitignore").read_text()


def test_rule_files_are_snakefmt_formatted():
    """Every rule file parses and is formatted (pyproject.toml [tool.snakefmt]: the code's 120 columns)."""
    proc = run(["snakefmt", "--check", "workflow", "Snakefile"], ROOT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "would be left unchanged" in proc.stderr + proc.stdout


def test_rule_files_compute_their_targets_without_shared_lists():
    """What main.tex needs is computed (common.smk: table_inputs, figures, run_configs), not appended to
    module-level lists by each rules file, so no rules file depends on the include order; every figure
    path comes from the one helper, figure_files."""
    appended = re.compile(r"^\s*[A-Z][A-Z0-9_]*\.(?:append|extend)\(", re.M)
    rule_files = sorted((ROOT / "workflow" / "rules").glob("*.smk"))
    assert [p.name for p in rule_files if appended.search(p.read_text())] == []
    paths = [p.name for p in rule_files if "results/figures/" in p.read_text()]
    assert paths == ["common.smk"]
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert all(f"def {name}(" in common for name in ("table_inputs", "figures", "run_configs"))


def test_the_console_logger_cuts_file_lists_short_and_the_log_file_keeps_them(workflow_copy):
    """`--logger vitpe` (make run, dvc repro, the slurm profile): the table job's input, every metrics
    file of the study, is printed as its first 3 files and a count; Snakemake's log file has them all."""
    from snakemake_logger_plugin_vitpe import shorten_reason

    args = ["snakemake", "-n", "--cores", "1", "--forceall", "results/tables/main.tex"]
    full = run(args, workflow_copy)
    short = run([*args, "--logger=vitpe"], workflow_copy)
    inputs = re.search(r"rule table_main:\n    input: (.*)", full.stdout + full.stderr).group(1).split(", ")
    assert len(inputs) > 20
    block = re.search(r"rule table_main:\n(.*?)(?:\n\n|\Z)", short.stdout + short.stderr, re.S).group(1)
    assert f"    input: {', '.join(inputs[:3])}, ... ({len(inputs) - 3} more)\n" in block + "\n"
    assert "    output: results/tables/main.tex, results/tables/main.html" in block  # short lists stay whole
    assert "resources: " in block and "jobid: 0" in block
    assert shorten_reason("Missing output files: a; Updated: 1, 2, 3, 4, 5") == (
        "Missing output files: a; Updated: 1, 2, 3, ... (2 more)")


def test_the_launcher_adds_the_console_logger_unless_one_is_chosen():
    from vitpe.launch import _console_logger

    assert _console_logger(["--cores", "all", "results/tables/main.tex"]) == ["--logger=vitpe"]
    assert _console_logger(["--logger", "other", "--cores", "1"]) == []
    assert _console_logger(["--logger=other"]) == []
