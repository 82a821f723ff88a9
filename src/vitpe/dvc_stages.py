"""dvc.yaml's stages, generated from the Snakemake DAG: one DVC stage per Snakemake job.

``python -m vitpe.dvc_stages`` (``make dvc-yaml``) rewrites the stages part of dvc.yaml for the
params.yaml in the working directory; ``--check`` only says whether it is current (a test checks the
committed file; the launcher checks it before a DVC stage runs). Snakemake stays the one place the
commands live: each stage runs ``python -m vitpe.launch snakemake`` for its job's outputs, with
``--allowed-rules`` naming the job's rule (and the data rules), so a stage never reruns another
stage's job. DVC then sees the study job by job: ``dvc dag`` draws it, ``dvc status`` names the stale
jobs, and the run cache restores a job's outputs when its dependencies return to a recorded state.

A stage depends on the code (``src/vitpe``, the Snakefile and ``workflow/``), on the outputs of the
stages upstream of it, and on the params.yaml sections its rule reads (``RULE_PARAMS``). The
generated data (``data/``), its check (``results/checks/``) and the run configurations
(``results/configs/``) are rebuilt from params.yaml and are no stage's output: the data params stand
for them. Checkpoints and attack outputs are cached (``dvc push``/``pull``); metrics, tables, plot
data and figures are not (small, and committed to git or rebuilt).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from vitpe.runs import takes_scale_gamma

BEGIN = "# ---- generated stages: `python -m vitpe.dvc_stages` (make dvc-yaml) rewrites this part ----"
END = "# ---- end of the generated stages ----"
TARGET = "results/tables/main.tex"
CODE = ("src/vitpe", "Snakefile", "workflow")
DATA_RULES = ("synth_data", "check_data")  # rebuilt from params.yaml in whichever stage needs them
NOT_OUTPUTS = ("data/", "results/checks/", "results/configs/")  # rebuilt from params.yaml: no stage's
CACHED = ("results/checkpoints/", "results/attacks/")  # large: in the DVC cache, not in git

REPORT = ("experiments", "evaluation", "attacks")
# rule -> (sections of scales.<scale> it reads, top-level sections it reads, whether it reads the
# experiment's own definition and the data). Rules not listed are refused: a new rule is added here.
RULE_PARAMS: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool]] = {
    "train_supervised": (("model", "supervised"), (), True),
    "import_classifier": (("model",), (), True),
    "eval_supervised": (("model", "supervised"), ("evaluation",), True),
    "train_pretrain": (("model", "pretrain"), (), True),
    "train_encoder_protocol": (("model", "{protocol}"), (), True),
    "import_encoder": (("model",), (), True),
    "eval_encoder": (("model", "pretrain", "finetune", "linprobe"), (), True),
    "eval_imported_encoder": (("model", "finetune", "linprobe"), (), True),
    "transfer_ade20k": (("model", "transfer"), (), True),
    "transfer_coco": (("model", "transfer"), (), True),
    "attack_model": (("model", "attacks", "mjp_gamma"), ("attacks",), True),
    "attack_job": (("model", "attacks", "mjp_gamma"), ("attacks",), True),
    "attack_merge": ((), ("attacks",), False),
    "attack_compare": ((), ("attacks",), False),
    **{rule: ((), REPORT, False) for rule in (
        "table_main", "headline_metrics", "figure_training_curves", "figure_shuffle_accuracy", "figure_pe_spectra",
        "figure_pe_similarity", "figure_mjp_illustration", "figure_pretrain_curves", "figure_adpe_delta_norms",
        "figure_adpe_accuracy", "figure_attack_grid", "figure_attack_grid_april", "figure_attack_psnr",
        "figure_attack_privacy")},
}
WILDCARD_ORDER = ("exp", "protocol", "job", "seed")


@dataclass(frozen=True)
class Job:
    """One job of the Snakemake DAG: its rule, wildcards and files."""

    rule: str
    wildcards: dict[str, str]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def snakemake_jobs(target: str = TARGET) -> list[Job]:
    """Every job Snakemake would run to build ``target`` from nothing, for ./Snakefile and ./params.yaml."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow_api = api.workflow(resource_settings=ResourceSettings(cores=1), config_settings=ConfigSettings(),
                                    snakefile=Path("Snakefile"))
        workflow_api.dag(DAGSettings(targets={target}, forceall=True))
        # Snakemake's API prints DAGs but does not return them: the workflow's own DAG, built as its
        # printdag does (snakemake==9.27.1, pinned)
        workflow = workflow_api._workflow
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True)
        workflow._build_dag()
        return [Job(job.rule.name, dict(job.wildcards_dict), tuple(map(str, job.input)), tuple(map(str, job.output)))
                for job in workflow.dag.jobs]


def stage_name(job: Job) -> str:
    """``rule-exp-...-seedN``: the rule and its wildcards (DVC allows only ``_`` and ``-`` in names)."""
    values = [("seed" + job.wildcards[key] if key == "seed" else job.wildcards[key])
              for key in WILDCARD_ORDER if key in job.wildcards]
    return "-".join([job.rule, *values])


def _scale_block(params: dict) -> tuple[str, dict, str | None]:
    """(scale, its block in ``scales:``, the scale it inherits from or None)."""
    scale = params["scale"]
    block = params["scales"][scale]
    return scale, block, block.get("inherit")


def stage_params(job: Job, params: dict) -> list[str]:
    """The params.yaml keys the job's rule reads (RULE_PARAMS), as DVC params paths."""
    if job.rule not in RULE_PARAMS:
        raise KeyError(f"rule {job.rule!r} has no entry in vitpe.dvc_stages.RULE_PARAMS: add the params.yaml "
                       "sections it reads")
    sections, top, own = RULE_PARAMS[job.rule]
    sections = tuple(s.format(**job.wildcards) for s in sections) + (("data",) if own else ())
    if job.rule == "train_supervised" and takes_scale_gamma(params["supervised"].get(job.wildcards["exp"], {})):
        sections += ("mjp_gamma",)
    scale, block, inherit = _scale_block(params)
    keys = ["scale", *top]
    if inherit:  # smoke: dotted overrides of another scale's blocks
        parent = params["scales"][inherit]
        keys += [f"scales.{scale}"] + [f"scales.{inherit}.{s}" for s in sections if s in parent]
    else:
        keys += [f"scales.{scale}.{s}" for s in sections if s in block]
    if own:  # the experiment's definition and the data set the scale reads
        exp = job.wildcards["exp"]
        imported = params["experiments"].get("imported") or {}
        owner = next((key for key, names in (("experiments.imported", imported), ("supervised", params["supervised"]),
                                              ("pretrain", params["pretrain"])) if exp in names), None)
        data = block.get("data") or params["scales"][inherit]["data"]
        keys += [f"{owner}.{exp}"] * bool(owner) + [f"data.{data}"]
    return keys


def _produced_outside(path: str) -> bool:
    return path.startswith(NOT_OUTPUTS)


def stages(jobs: list[Job], params: dict) -> dict[str, dict]:
    """dvc.yaml's ``stages:`` mapping for these jobs (the data rules' jobs are no stage)."""
    producer = {out: stage_name(job) for job in jobs if job.rule not in DATA_RULES for out in job.outputs}
    data_rules = sorted({job.rule for job in jobs if job.rule in DATA_RULES})
    result = {}
    for job in sorted((j for j in jobs if j.rule not in DATA_RULES), key=stage_name):
        outputs = [out for out in job.outputs if not _produced_outside(out)]
        upstream = [path for path in job.inputs if path in producer]
        sources = [path for path in job.inputs if path not in producer and not _produced_outside(path)
                   and not path.startswith(CODE)]
        command = ["python -m vitpe.launch snakemake --cores all --config scale=${scale} --allowed-rules",
                   *sorted({job.rule, *data_rules}), "--", *outputs]
        result[stage_name(job)] = {
            "cmd": " ".join(command),
            "deps": [*CODE, *sources, *dict.fromkeys(upstream)],
            "params": stage_params(job, params),
            "outs": [out if out.startswith(CACHED) else {out: {"cache": False}} for out in outputs],
        }
    return result


def render(stage_map: dict[str, dict]) -> str:
    """The generated part of dvc.yaml (between BEGIN and END, inclusive)."""
    body = yaml.safe_dump({"stages": stage_map}, sort_keys=False, width=120, default_flow_style=False)
    return f"{BEGIN}\n{body}{END}\n"


def with_stages(dvc_yaml: str, generated: str) -> str:
    """``dvc_yaml`` with its generated part replaced by ``generated``."""
    head, begin, rest = dvc_yaml.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not (begin and end):
        raise ValueError(f"dvc.yaml: no generated part (the lines {BEGIN!r} ... {END!r})")
    return head + generated + tail.removeprefix("\n")


def generated_dvc_yaml(path: Path = Path("dvc.yaml")) -> str:
    """dvc.yaml as it should be for ./params.yaml and the Snakemake DAG."""
    params = yaml.safe_load(Path("params.yaml").read_text())
    return with_stages(path.read_text(), render(stages(snakemake_jobs(), params)))


STALE = ("dvc.yaml's stages are not those of params.yaml and the workflow (experiments, seeds or the scale "
         "changed?): run `python -m vitpe.dvc_stages` (make dvc-yaml), then rerun")
CHECKED = Path(".snakemake") / "vitpe-dvc-yaml.sha256"  # the inputs of the last successful check


def _inputs_digest() -> str:
    files = [Path("params.yaml"), Path("dvc.yaml"), Path("Snakefile"), *sorted(Path("workflow").rglob("*.smk"))]
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def stale_message() -> str | None:
    """None when dvc.yaml is current, else the one line that says what to do. Each DVC stage asks
    (vitpe.launch): the answer is kept until params.yaml, dvc.yaml or the rules change."""
    digest = _inputs_digest()
    if CHECKED.is_file() and CHECKED.read_text() == digest:
        return None
    if Path("dvc.yaml").read_text() != generated_dvc_yaml():
        return STALE
    CHECKED.parent.mkdir(exist_ok=True)
    CHECKED.write_text(digest)
    return None


def record_lock() -> tuple[list[str], list[str], list[str]]:
    """Record dvc.lock for this tree (`dvc commit` stage by stage): (recorded, refreshed, waiting).

    A stage whose files are all here is recorded. One that reads an output only in the DVC cache
    (checkpoints, attack outputs) or a git-ignored one (the figures) keeps the record of the files that
    are not here and records those that are: this tree's code and params, and its committed outputs as
    they are (a table rebuilt from the committed metrics by the stage's own command, say); one that was
    never recorded waits for a run (or `dvc pull` and `dvc commit`)."""
    from dvc.repo import Repo

    repo = Repo()
    recorded, refreshed, waiting = [], [], []
    for stage in repo.index.stages:
        if all(Path(entry.def_path).exists() for entry in (*stage.deps, *stage.outs)):
            repo.commit(stage.addressing, force=True)
            recorded.append(stage.addressing)
        elif stage.deps[0].hash_info:  # recorded before: keep the record of what is not here
            for dep in stage.deps:
                if Path(dep.def_path).exists():
                    dep.save()
            for out in stage.outs:
                if Path(out.def_path).exists():
                    out.save()
                    if out.use_cache:
                        out.commit()
            stage.dump(update_pipeline=False)
            refreshed.append(stage.addressing)
        else:
            waiting.append(stage.addressing)
    return recorded, refreshed, waiting


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitpe.dvc_stages", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="only say whether dvc.yaml is current (exit 1 if not)")
    action.add_argument("--lock", action="store_true",
                        help="write dvc.lock anew for the stages whose dependencies are present (make dvc-lock)")
    args = parser.parse_args(argv)
    path = Path("dvc.yaml")
    if args.lock:
        recorded, refreshed, waiting = record_lock()
        print(f"wrote dvc.lock: {len(recorded)} stages recorded, {len(refreshed)} with files not in this "
              f"workspace kept and the others recorded, {len(waiting)} never recorded (a run records them)")
        return 0
    expected = generated_dvc_yaml(path)
    if args.check:
        if path.read_text() != expected:
            print(f"error: {STALE}", file=sys.stderr)
            return 1
        return 0
    if path.read_text() != expected:
        path.write_text(expected)
        print(f"wrote {path} ({len(yaml.safe_load(expected)['stages'])} stages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
