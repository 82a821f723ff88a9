"""params.yaml: loading, schema validation and the resolved view each stage needs.

One file configures everything (Snakemake's ``configfile`` and DVC's params). The schema lives in
``workflow/schemas/params.schema.yaml``; every error names the offending key path.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from vitpe.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "params.schema.yaml"


def _key_path(err: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in err.absolute_path) or "<top level>"


def validate_params(params: dict, source: str = "params.yaml") -> dict:
    """Validate ``params`` against the schema and cross-references; raise ConfigError naming the key."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: (len(list(e.absolute_path)), e.message))
    if errors:
        err = errors[0]
        if err.validator == "additionalProperties":
            # jsonschema says "Additional properties are not allowed ('x' was unexpected)"
            msg = f"unknown key {err.message.split(chr(39))[1]!r} under {_key_path(err)}"
        else:
            msg = f"{_key_path(err)}: {err.message}"
        raise ConfigError(f"{source}: {msg}")
    for name in params["experiments"]["supervised"]:
        if name not in params["supervised"]:
            known = ", ".join(sorted(params["supervised"])) or "none"
            raise ConfigError(
                f"{source}: experiments.supervised names unknown experiment {name!r} "
                f"(defined under supervised: {known})"
            )
    return params


def load_params(path: str | Path = "params.yaml") -> dict:
    """Read and validate a params file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__}: {str(exc).splitlines()[0]})")
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return validate_params(params, str(path))


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@dataclass(frozen=True)
class SupervisedRun:
    """Everything a supervised training/evaluation job needs, resolved for the active scale."""

    name: str
    scale: str
    seed: int
    model: dict[str, Any]
    recipe: dict[str, Any]
    pos_embed: str
    num_classes: int
    train_dir: Path
    val_dir: Path


def dataset_paths(params: dict) -> dict[str, Path]:
    """Roots of every dataset for the active scale (embedded layout mirrors the real one)."""
    scale = params["scales"][params["scale"]]
    if scale["data"] == "embedded":
        root = Path(params["data"]["embedded"]["root"])
        return {
            "imagenet": root / "imagenet",
            "imagenet_c": root / "imagenet-c",
            "imagenet_a": root / "imagenet-a",
            "imagenet_o": root / "imagenet-o",
            "ade20k": root / "ade20k",
            "coco": root / "coco",
            "attack": root / "attack",
        }
    real = params["data"]["real"]
    return {k: Path(real[k]) for k in ("imagenet", "imagenet_c", "imagenet_a", "imagenet_o", "ade20k", "coco")}


def num_classes(params: dict) -> int:
    scale = params["scales"][params["scale"]]
    if scale["data"] == "embedded":
        return params["data"]["embedded"]["num_classes"]
    return params["data"]["real"]["num_classes"]


def supervised_run(params: dict, name: str) -> SupervisedRun:
    if name not in params["supervised"]:
        raise ConfigError(f"params.yaml: unknown supervised experiment {name!r} (known: {', '.join(sorted(params['supervised']))})")
    exp = params["supervised"][name]
    scale = params["scales"][params["scale"]]
    recipe = _merge(scale["supervised"], exp.get("recipe", {}))
    unknown = set(exp.get("recipe", {})) - set(scale["supervised"])
    if unknown:
        raise ConfigError(f"params.yaml: unknown key {sorted(unknown)[0]!r} under supervised.{name}.recipe")
    paths = dataset_paths(params)
    return SupervisedRun(
        name=name,
        scale=params["scale"],
        seed=params["seed"],
        model=dict(scale["model"]),
        recipe=recipe,
        pos_embed=exp["pos_embed"],
        num_classes=num_classes(params),
        train_dir=paths["imagenet"] / "train",
        val_dir=paths["imagenet"] / "val",
    )
