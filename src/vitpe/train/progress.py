"""Per-step training log (``log.jsonl``) and human progress output.

Every optimizer step appends one JSON object (step, epoch, loss, lr, grad_norm, imgs_per_s) and
flushes it, so DVC plots and figures can read a run while it trains. People get a tqdm bar when
stderr is a terminal and a plain line every few steps otherwise (SLURM/Snakemake log files); every
human line starts with the UTC time (``stamp``), the JSON records stay as they are.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from vitpe.errors import DataError
from vitpe.io import make_dirs, write_text


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


class StepLogger:
    def __init__(self, path: Path, total_steps: int, start_step: int, enabled: bool = True,
                 print_every: int | None = None) -> None:
        self.enabled = enabled
        self.total_steps = total_steps
        self.print_every = print_every or max(1, min(50, total_steps // 20))
        self._file = None
        self._bar = None
        if not enabled:
            return
        make_dirs(path.parent)
        self._file = path.open("a", encoding="utf-8")
        if sys.stderr.isatty():
            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._write(record)
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
