"""Per-step training log (``log.jsonl``), its scalars in dvclive, and human progress output.

Every optimizer step appends one JSON object (step, epoch, loss, lr, grad_norm, imgs_per_s) and
flushes it: the run's record, which the figures and the study's plot data read. The same scalars go
to a dvclive folder (``dvclive/plots/metrics/{train,val}/<name>.tsv`` by optimizer step, and
``dvclive/metrics.json``), so ``dvc plots show``/``dvc plots diff`` and DVC Studio read one run's
training and per-epoch validation curves with no converter. People get a tqdm bar when stderr is a
terminal and a plain line every few steps otherwise (SLURM/Snakemake log files); every human line
starts with the UTC time (``stamp``), the JSON records stay as they are.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tqdm import tqdm

from vitpe.errors import DataError
from vitpe.io import make_dirs, write_text

if TYPE_CHECKING:
    from dvclive import Live

LIVE_DIR = "dvclive"  # dvclive's folder name, beside log.jsonl


def stamp(text: str) -> str:
    """``text`` behind the current UTC time as ``YYYY-MM-DD HH:MM:SS``: UTC so that the logs of jobs
    on nodes in different time zones, and of a run resumed elsewhere, read in order."""
    return f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} {text}"


def print_stamped(text: str, file: TextIO | None = None) -> None:
    """Print one timestamped progress line, flushed so a log file shows it at once (stdout by default)."""
    print(stamp(text), file=file or sys.stdout, flush=True)


def read_log(path: Path, validation: bool = False) -> list[dict]:
    """The per-step records of a finished ``log.jsonl`` (``validation``: its per-epoch validation records
    instead); DataError if it is missing, has no step records or is not JSON lines."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: training log not found")
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise DataError(f"{path}:{lineno}: not a JSON line")
    if not any("validation" not in r for r in records):
        raise DataError(f"{path}: training log is empty")
    return [r for r in records if ("validation" in r) == validation]


def truncate_log(path: Path, last_step: int) -> None:
    """Drop records after ``last_step``: steps past the checkpoint a resumed run restarts from."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if record.get("step", 0) <= last_step:
            kept.append(line)
    write_text(path, "".join(line + "\n" for line in kept))


def truncate_live(path: Path, last_step: int) -> None:
    """Drop the dvclive rows after ``last_step`` (as truncate_log; a last line cut short by a kill goes too) and
    rewrite ``metrics.json`` from the rows kept: a killed run may have left it empty or holding later
    steps, and dvclive reads it back on resume."""
    path = Path(path)
    summary: dict[str, Any] = {}
    for tsv in sorted(path.glob("plots/metrics/**/*.tsv")):
        lines = [line.split("\t") for line in tsv.read_text(encoding="utf-8").split("\n")[:-1]]
        if not lines:  # killed before its header was whole: dvclive writes a new one
            tsv.unlink()
            continue
        header, *rows = lines
        kept = [row for row in rows if len(row) == len(header) and int(row[header.index("step")]) <= last_step]
        write_text(tsv, "".join("\t".join(row) + "\n" for row in [header, *kept]))
        if kept:  # dvclive's summary: the latest value of each scalar, nested by its path ("train/loss")
            *groups, name = tsv.relative_to(path / "plots" / "metrics").with_suffix("").parts
            node = summary
            for group in groups:
                node = node.setdefault(group, {})
            node[name] = float(kept[-1][header.index(name)])
    if path.is_dir():
        write_text(path / "metrics.json", json.dumps({**summary, "step": last_step}, indent=4))


def open_live(path: Path, resume_step: int | None) -> Live:
    """dvclive's logger on ``path``: empty for a new run; for a run resumed at ``resume_step`` the rows
    up to that step are kept and the later ones (logged after the checkpoint by a killed run) dropped.

    No dvc.yaml, report or DVC experiment of its own: the workflow's dvc.yaml and ``dvc exp run`` own
    those; every row is written at the optimizer step the caller sets."""
    from dvclive import Live

    class FilesOnly(Live):
        def _init_dvc(self) -> None:
            """Skipped: it opens the git/DVC repository only to name and save a DVC experiment, which the
            workflow does not let dvclive make, and it fails in a git repository with no commit."""

    if resume_step is not None:
        truncate_live(path, resume_step)
    return FilesOnly(dir=str(path), resume=resume_step is not None, report=None, save_dvc_exp=False, dvcyaml=None)


class StepLogger:
    """The training loop's one logger: ``log.jsonl`` records, dvclive scalars and progress lines.

    ``resume_step`` is the checkpoint's step when a run resumes (None for a new run); ``live_dir`` the
    dvclive folder (None: no dvclive)."""

    def __init__(self, path: Path, total_steps: int, resume_step: int | None, enabled: bool = True,
                 print_every: int | None = None, live_dir: Path | None = None) -> None:
        self.enabled = enabled
        self.total_steps = total_steps
        self.print_every = print_every or max(1, min(50, total_steps // 20))
        self._file = None
        self._bar = None
        self._live = None
        if not enabled:
            return
        make_dirs(path.parent)
        self._file = path.open("a", encoding="utf-8")
        if live_dir is not None:
            self._live = open_live(live_dir, resume_step)
        if sys.stderr.isatty():
            self._bar = tqdm(total=total_steps, initial=resume_step or 0, unit="step", dynamic_ncols=True)

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def _scalars(self, step: int, prefix: str, values: dict[str, Any]) -> None:
        if self._live is None:
            return
        self._live.step = step
        for name, value in values.items():
            self._live.log_metric(f"{prefix}/{name}", value)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._write(record)
        self._scalars(record["step"], "train", {k: v for k, v in record.items() if k not in ("step", "epoch")})
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
        elif record["step"] % self.print_every == 0 or record["step"] == self.total_steps:
            print_stamped(f"step {record['step']}/{self.total_steps} epoch {record['epoch']} "
                          f"loss {record['loss']:.4f} lr {record['lr']:.3e} grad_norm {record['grad_norm']:.3f} "
                          f"{record['imgs_per_s']:.1f} img/s", file=sys.stderr)

    def validation(self, record: dict[str, Any]) -> None:
        """A validation record ({"step", "epoch", "validation": {name: score}}) in the same log."""
        if not self.enabled:
            return
        self._write(record)
        self._scalars(record["step"], "val", record["validation"])
        scores = " ".join(f"{name} {value:.4g}" for name, value in record["validation"].items())
        self.message(f"epoch {record['epoch']} validation: {scores}")

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(stamp(text), file=sys.stderr)
        else:
            print_stamped(text, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._file is not None:
            self._file.close()
        if self._live is not None:
            self._live.make_summary()  # dvclive/metrics.json: each scalar's latest value and the step
