"""Shared by the test_data_* modules: one embedded dataset per session, synthesized at micro sizes.

(Fixtures imported into several modules are registered once per module; the cache keeps it one run.)
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import micro_params

_CACHE: dict[str, Path] = {}


def synth_micro(factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """(params, root) of the session's micro embedded dataset; generated on first use."""
    from vitpe.data.synth import synthesize

    params = micro_params()
    if "micro" not in _CACHE:
        _CACHE["micro"] = synthesize(params, factory.mktemp("embedded"), log=lambda msg: None)
    params["data"]["embedded"]["root"] = str(_CACHE["micro"])
    return params, _CACHE["micro"]


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    return synth_micro(tmp_path_factory)
