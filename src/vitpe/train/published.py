"""Published checkpoints as the workflow's experiments (``experiments.imported``): the released file
imported for the run the active scale makes of its name (vitpe.runs), checked against that run."""
from __future__ import annotations

from pathlib import Path

from vitpe.errors import ConfigError
from vitpe.evaluate.common import training_classes
from vitpe.models.importers import FORMATS, ImportReport, import_checkpoint
from vitpe.runs import imported_experiments, pretrain_run, supervised_run


def import_experiment(params: dict, name: str, out_dir: str | Path) -> ImportReport:
    """``experiments.imported.<name>`` as the workflow uses it: its file imported for the active scale's
    run of that name, the architecture checked against the run's model and a classifier's head cut to
    the dataset's class folders (vitpe.runs: published classifiers and encoders)."""
    published = imported_experiments(params)
    if name not in published:
        raise ConfigError(f"params.yaml: experiments.imported has no {name!r} (it holds: "
                          f"{', '.join(published) or 'nothing'})")
    entry = published[name]
    if FORMATS[entry["format"]].encoder:
        model, classes = pretrain_run(params, name).model, None
    else:
        run = supervised_run(params, name)
        model, classes = run.model, training_classes(run)
    # the run's heads: the tensors do not tell them apart (a width's release says, as the run does)
    return import_checkpoint(entry["format"], entry["path"], out_dir, arch=entry.get("arch"),
                             num_heads=model.num_heads, rpe=entry.get("rpe"), model=model, classes=classes)
