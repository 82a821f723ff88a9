"""Snakemake's console output with long file lists cut short: ``snakemake --logger vitpe``.

Snakemake prints every job's whole input list and the files behind its reason; the table job alone
names every metrics file of the study. This handler prints Snakemake's usual lines (its own
formatter, filter and colours) with each list cut to its first files and a count; the log file
under ``.snakemake/log/`` keeps the full text. ``make run`` and ``dvc repro`` use it (vitpe.launch),
as does the slurm profile.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

from snakemake.logging import ColorizingTextHandler, DefaultFormatter
from snakemake_interface_logger_plugins.base import LogHandlerBase

SHOWN = 3  # files printed of a longer list


def shorten(files: list[str]) -> list[str]:
    """The first SHOWN files and the count of the rest."""
    if len(files) <= SHOWN + 1:
        return list(files)
    return [*files[:SHOWN], f"... ({len(files) - SHOWN} more)"]


def shorten_reason(reason: str) -> str:
    """Each "label: file, file, ..." part of a job's reason with its files shortened."""
    parts = []
    for part in reason.split("; "):
        label, sep, files = part.partition(": ")
        parts.append(label + sep + ", ".join(shorten(files.split(", "))) if sep else part)
    return "; ".join(parts)


class ShortListFormatter(DefaultFormatter):
    """Snakemake's formatter, each job's input/output/log list and reason cut short."""

    def _format_job_info(self, msg: dict[str, Any]) -> list[str]:
        short = {key: shorten(msg[key]) for key in ("input", "output", "log") if msg.get(key)}
        if msg.get("reason"):
            short["reason"] = shorten_reason(str(msg["reason"]))
        return super()._format_job_info({**msg, **short})


class LogHandler(LogHandlerBase):
    """Snakemake's console handler with ShortListFormatter."""

    def __post_init__(self) -> None:
        settings = self.common_settings
        self._console = ColorizingTextHandler(
            nocolor=settings.nocolor, stream=sys.stdout if settings.stdout else sys.stderr,
            formatter=ShortListFormatter(settings.quiet, settings.show_failed_logs))

    def emit(self, record: logging.LogRecord) -> None:
        self._console.emit(record)

    @property
    def writes_to_stream(self) -> bool:
        return True  # in place of Snakemake's own console handler

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return False  # Snakemake's (quiet, verbose, dry-run, printshellcmds)

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False
