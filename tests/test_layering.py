"""Dependencies point one way: components <- methods <- runs <- stages <- report <- CLI.

Every ``vitpe`` import of every module (function-level ones included) is read with ``ast`` and
checked against the layer of the importing module: a module may import its own layer and the ones
below; the foundations (errors, io, data) import only foundations.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

SRC = ROOT / "src" / "vitpe"

# rank of each top-level part of the package (a package's `commands` modules are CLI)
LAYERS = {
    "errors": 0, "io": 0, "data": 0,  # foundations
    "models": 1,  # components: ViT, PEs, iRPE, weight I/O
    "mjp": 2, "mae": 2,  # methods
    "config": 3, "runs": 3,  # params.yaml and the typed runs built from it
    "train": 4, "evaluate": 4, "transfer": 4, "attacks": 4,  # stages
    "report": 5,
    "cli": 6, "commands": 6, "launch": 6, "dvc_stages": 6, "__main__": 6, "__init__": 6,
}
CLI = 6
FOUNDATION = 0


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    parts = module.split(".")
    if parts[-1] == "commands":  # `vitpe <group> ...` subcommands
        return CLI
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def vitpe_imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of a vitpe module in ``path``, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return [(line, name) for line, name in found if name == "vitpe" or name.startswith("vitpe.")]


def violations(root: Path = SRC) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        importer = module_name(path, root)
        rank = layer(importer)
        for line, imported in vitpe_imports(path, root):
            if imported == "vitpe":
                continue
            target = layer(imported)
            wrong = target > rank or (rank == FOUNDATION and target != FOUNDATION)
            if wrong:
                problems.append(f"{path.relative_to(root.parent)}:{line}: {importer} (layer {rank}) imports "
                                f"{imported} (layer {target})")
    return problems


def test_every_import_points_down_the_layers():
    problems = violations()
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


def test_every_part_of_the_package_has_a_layer():
    parts = {p.name if p.is_dir() else p.stem for p in SRC.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    assert parts <= set(LAYERS), sorted(parts - set(LAYERS))


@pytest.mark.parametrize("importer, source, expected", [
    ("models/vit.py", "from vitpe.mjp.jigsaw import Jigsaw\n", "vitpe.models.vit (layer 1) imports vitpe.mjp.jigsaw"),
    ("mae/model.py", "from ..train import engine\n", "vitpe.mae.model (layer 2) imports vitpe.train"),
    ("io.py", "def f():\n    from vitpe.runs import dataset_paths\n", "vitpe.io (layer 0) imports vitpe.runs"),
])
def test_a_wrong_way_import_is_named(tmp_path, importer, source, expected):
    path = tmp_path / "vitpe" / importer
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    problems = violations(tmp_path / "vitpe")
    assert len(problems) == 1 and expected in problems[0], problems


def _identifiers(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    names |= {arg.arg for node in ast.walk(tree) if isinstance(node, ast.arguments)
              for arg in node.args + node.kwonlyargs}
    return {name.lower() for name in names}


@pytest.mark.parametrize("path", ["models/vit.py", "models/pos_embed.py", "train/supervised.py", "train/engine.py"])
def test_the_backbone_and_the_trainer_name_no_mjp_piece(path):
    """MJP is vitpe.mjp: the ViT offers generic pieces, the trainer asks an objective for the loss."""
    names = _identifiers(SRC / path)
    assert not {n for n in names if "jigsaw" in n or n.startswith("dal") or n in ("unk", "with_dal")}, path
