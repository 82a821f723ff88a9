"""User-facing errors: one line naming the file, key or value and what was expected."""


class VitpeError(Exception):
    """A problem with the user's input or environment (not a bug).

    The CLI prints ``error: <message>`` on one line and exits with ``exit_code``.
    """

    exit_code = 2


class ConfigError(VitpeError):
    """params.yaml (or an override) is malformed."""


class DataError(VitpeError):
    """A dataset is missing or does not have the expected layout/content."""


class CheckpointError(VitpeError):
    """A checkpoint is missing, unreadable or of the wrong architecture."""


class TrainingDiverged(VitpeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 3


class OutputError(VitpeError):
    """An output cannot be written (a file where a folder should be, no permission, a full disk); the
    earlier file at the path, if any, is kept."""


class InUse(VitpeError):
    """An output folder or the workflow is held by another live process; nothing was changed."""

    exit_code = 1


class EvaluationError(VitpeError):
    """An evaluation ran but cannot produce its metric (no detections, a NaN score); nothing is written."""


class Preempted(Exception):
    """Raised inside training after SIGTERM/SIGUSR1 once a checkpoint is written.

    The CLI exits with ``exit_code`` so SLURM (``--requeue``) or a wrapper can resubmit the job.
    """

    exit_code = 124
