"""Comments, docstrings and messages cite only what a reader of the repository can open.

A specification's section signs, its numbered design decisions and tracker issue numbers are dead
links to anyone holding only the repository; the choices they stand for are rows of
docs/FIDELITY.md, a paper (by name and section, "MAE paper, Sec. 4") or an upstream file.
"""
from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT

SCANNED = ("src", "workflow", "benchmarks", "scripts", "tests", "slurm", "docs",
           "params.yaml", "Snakefile", "dvc.yaml", "Makefile", "README.md")
TEXT_SUFFIXES = {".py", ".smk", ".yaml", ".yml", ".sh", ".md", ".txt", ".toml", ""}
DEAD_CITATION = re.compile(
    r"reference/|shared/reference|\b(?:MJP|ADPE|ECOSYSTEM|ATTACKS_ROBUSTNESS|PAPER_NUMBERS)\.md"
    r"|\b[Dd]ecisions? D?\d|\bD\d{1,2}\b|\b[Ii]ssues? \d|§"
)


def dead_citations(root: Path) -> list[str]:
    """``path:line: text`` of every line under ``root``'s scanned files that cites an unopenable document."""
    files = []
    for name in SCANNED:
        path = root / name
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            files.append(path)
    found = []
    for path in files:
        generated = any(part == "__pycache__" or part.endswith(".egg-info") for part in path.parts)
        if generated or path.suffix not in TEXT_SUFFIXES or path.name == Path(__file__).name:
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            continue
        found += [f"{path.relative_to(root)}:{i}: {line.strip()}"
                  for i, line in enumerate(lines, 1) if DEAD_CITATION.search(line)]
    return found


def test_the_pattern_flags_dead_citations_and_spares_real_ones():
    for dead in ("(reference/MJP.md §1.1)", "ADPE.md D13", "decision 15", "(D5)", "issue 7", "§4.2",
                 "copied from shared/reference/PAPER_NUMBERS.md"):
        assert DEAD_CITATION.search(dead), dead
    for fine in ("docs/FIDELITY.md row 35", "MAE paper, Sec. 4", "mmengine#1655", "the reference position",
                 "MAE FINETUNE.md", "2D sin-cos", "timm/models/vision_transformer.py"):
        assert not DEAD_CITATION.search(fine), fine


def test_code_workflow_and_tests_cite_only_openable_sources():
    assert dead_citations(ROOT) == []
