"""The transfer runs' scalars through dvclive, as the training engine's (vitpe.train.progress.open_live).

mmengine's ``DVCLiveVisBackend`` is used with the workflow's settings: no DVC experiment, dvc.yaml or
artifact copies of its own (the workflow's dvc.yaml and ``dvc exp run`` own those), and never the
``dvc init -f --no-scm`` it runs in the working directory when git has no user signature. A resumed
run keeps the rows up to its checkpoint's iteration and drops the later ones a killed run logged, so
its curves are the uninterrupted run's.
"""
from __future__ import annotations

from pathlib import Path

from mmengine.registry import VISBACKENDS
from mmengine.visualization.vis_backend import DVCLiveVisBackend

from vitpe.train.progress import open_live


@VISBACKENDS.register_module(name="VitpeLiveBackend")
class LiveBackend(DVCLiveVisBackend):
    """``save_dir``: the dvclive folder; ``resume_step``: the iteration the run resumes from (None: new run)."""

    def __init__(self, save_dir: str, resume_step: int | None = None) -> None:
        super().__init__(save_dir)
        self._resume_step = resume_step

    def _init_env(self) -> None:
        self._dvclive = open_live(Path(self._save_dir), self._resume_step)

    def close(self) -> None:
        if hasattr(self, "_dvclive"):
            self._dvclive.make_summary()
