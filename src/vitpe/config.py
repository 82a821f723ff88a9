"""params.yaml: loading, schema validation and the resolved view each stage needs.

One file configures everything (Snakemake's ``configfile`` and DVC's params). The schema lives in
``workflow/schemas/params.schema.yaml``; every error names the offending key path.
"""
from __future__ import annotations

import argparse
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


def apply_overrides(params: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply ``KEY=VALUE`` overrides (VALUE parsed as YAML, dicts merged) like Snakemake's ``--config``.

    Snakemake passes its own ``--config``/``--configfile`` overrides to every job this way, so a job
    sees exactly the configuration the DAG was built from.
    """
    out = copy.deepcopy(params)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: value is not valid YAML")
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_params(path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Read a params file, apply overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__}: {str(exc).splitlines()[0]})")
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    source = str(path) + (" (with overrides)" if overrides else "")
    return validate_params(apply_overrides(params, overrides), source)


def add_params_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--params``/``--set`` pair every command that reads the configuration takes."""
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a top-level params key (YAML value); repeatable",
    )


def params_from_args(args: argparse.Namespace) -> dict:
    return load_params(args.params, args.set)


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
    jigsaw: dict[str, Any] | None = None  # resolved MJP / naive-shuffle settings, None: no shuffle
    dal: dict[str, Any] | None = None  # resolved DAL settings, None: no DAL head
    unk: dict[str, Any] | None = None  # MJP PE options (pos_embed "mjp" only)

    @property
    def pe_options(self) -> dict[str, Any]:
        return dict(self.unk or {})


# Faithful defaults of the official MJP code (reference/MJP.md §1-2, docs/FIDELITY.md).
JIGSAW_DEFAULTS = {"ratio": 0.1, "apply_prob": 0.5, "start_epoch": None, "per_sample": False}
DAL_DEFAULTS = {"head": "nonlinear", "weight": 0.01, "final_ratio": 0.5}
UNK_DEFAULTS = {"init": "normal", "weight_decay": True}


def _method_settings(name: str, exp: dict, warmup_epochs: int) -> dict[str, Any]:
    """The experiment's jigsaw/DAL/unk blocks with defaults filled in, checked against its PE."""
    where = f"params.yaml: supervised.{name}"
    jigsaw = dal = unk = None
    if "jigsaw" in exp:
        jigsaw = {**JIGSAW_DEFAULTS, **exp["jigsaw"]}
        if jigsaw["start_epoch"] is None:
            jigsaw["start_epoch"] = warmup_epochs
    if "dal" in exp:
        if exp["pos_embed"] not in ("learnable", "mjp"):
            raise ConfigError(f"{where}.dal: DAL regresses a learnable PE table; pos_embed is {exp['pos_embed']!r}")
        dal = {**DAL_DEFAULTS, **exp["dal"]}
    if exp["pos_embed"] == "mjp":
        unk = {**UNK_DEFAULTS, **exp.get("unk", {})}
    elif "unk" in exp:
        raise ConfigError(f"{where}.unk: only for pos_embed 'mjp', not {exp['pos_embed']!r}")
    return {"jigsaw": jigsaw, "dal": dal, "unk": unk}


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
        **_method_settings(name, exp, recipe["warmup_epochs"]),
    )
