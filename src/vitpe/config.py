"""params.yaml: loading, schema validation and scale resolution (the typed runs: vitpe.runs).

One file configures everything (Snakemake's ``configfile`` and DVC's params). The schema lives in
``workflow/schemas/params.schema.yaml``; every error names the offending key path.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from vitpe.errors import ConfigError
from vitpe.models.released import DEIT, MAE, imported_experiments

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "params.schema.yaml"


def _key_path(err: jsonschema.ValidationError, prefix: str = "") -> str:
    return ".".join([prefix] * bool(prefix) + [str(p) for p in err.absolute_path]) or "<top level>"


def _schema_message(err: jsonschema.ValidationError, prefix: str = "") -> str:
    """One schema error as one line naming the key (``prefix``: where the validated block is written)."""
    if err.validator in ("additionalProperties", "unevaluatedProperties"):
        # jsonschema says "Additional properties are not allowed ('x' was unexpected)"
        return f"unknown key {err.message.split(chr(39))[1]!r} under {_key_path(err, prefix)}"
    if err.validator == "pattern" and "description" in err.schema:
        # the regular expression alone does not say why; a bad key (propertyNames) is named under its parent
        return f"{_key_path(err, prefix)}: {err.instance!r}: expected {err.schema['description']}"
    return f"{_key_path(err, prefix)}: {err.message}"


def validate_params(params: dict, source: str = "params.yaml") -> dict:
    """Resolve inherited scales, validate against the schema and cross-references; return the result.

    Raises ConfigError naming the key.
    """
    written = params.get("scales") if isinstance(params.get("scales"), dict) else {}
    # scales.<name> and scales.<name>.<block> written as {inherit: ...}: their values are copies of a base
    inherited = {(name,) for name, scale in written.items() if isinstance(scale, dict) and "inherit" in scale}
    inherited |= {(name, key) for name, scale in written.items() if isinstance(scale, dict) and "inherit" not in scale
                  for key, block in scale.items() if isinstance(block, dict) and "inherit" in block}
    params = resolve_scales(params, source)
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)

    def order(err: jsonschema.ValidationError) -> tuple:
        path = list(err.absolute_path)
        # a bad base value shows up in every scale inheriting it: name it where it is written
        copied = path[:1] == ["scales"] and (tuple(path[1:2]) in inherited or tuple(path[1:3]) in inherited)
        # a block of allOf parts (transfer ade20k/coco) with one bad value also reports every key as
        # unevaluated: the bad value is the error
        return _unevaluated(err), len(path), copied, err.message

    errors = sorted(validator.iter_errors(params), key=order)
    if errors:
        raise ConfigError(f"{source}: {_schema_message(errors[0])}")
    _check_overrides(params, schema, source)
    _check_imported(params, source)
    imported_encoders = imported_experiments(params, "encoder")
    # experiments.<group> -> the section defining its names (transfer fine-tunes pretraining encoders,
    # trained or imported)
    for group, section in (("supervised", "supervised"), ("pretrain", "pretrain"), ("transfer", "pretrain")):
        for name in params["experiments"].get(group, []):
            if name not in params.get(section, {}) and not (group == "transfer" and name in imported_encoders):
                known = ", ".join(sorted(params.get(section, {}))) or "none"
                raise ConfigError(
                    f"{source}: experiments.{group} names unknown experiment {name!r} "
                    f"(defined under {section}: {known})"
                )
    _check_attacks(params, source)
    return params


def _unevaluated(err: jsonschema.ValidationError) -> bool:
    return err.validator == "unevaluatedProperties"


#: experiment keys that override a block of the active scale (vitpe.runs merges them key by key):
#: section -> [(key, the scale's block it overrides, the schema definition of the merged block)]
OVERRIDES = {
    "supervised": [("recipe", ("supervised",), "recipe")],
    "pretrain": [("recipe", ("pretrain", "recipe"), "pretrain_recipe"),
                 ("finetune_recipe", ("finetune",), "encoder_recipe"),
                 ("linprobe_recipe", ("linprobe",), "encoder_recipe"),
                 ("model", ("pretrain", "model"), "model")],
}


def _check_overrides(params: dict, schema: dict, source: str) -> None:
    """An experiment's ``recipe``/``model`` overrides merged into the active scale's block, validated as
    that block: a misspelt key or a bad value fails here, not when (or silently while) its job runs."""
    scale = params["scales"][params["scale"]]
    for section, keys in OVERRIDES.items():
        for name, exp in (params.get(section) or {}).items():
            for key, block_path, definition in keys:
                if not exp.get(key):
                    continue
                block = scale
                for part in block_path:
                    block = block[part]
                validator = jsonschema.Draft202012Validator({"$defs": schema["$defs"],
                                                             "$ref": f"#/$defs/{definition}"})
                errors = sorted(validator.iter_errors({**block, **exp[key]}),
                                key=lambda err: (_unevaluated(err), len(err.absolute_path), err.message))
                if errors:
                    raise ConfigError(f"{source}: {_schema_message(errors[0], f'{section}.{name}.{key}')}")


def _check_imported(params: dict, source: str) -> None:
    """Published checkpoints under names of their own, each option for the layout that has it."""
    for name, entry in imported_experiments(params).items():
        where = f"{source}: experiments.imported.{name}"
        for section in ("supervised", "pretrain"):
            if name in (params.get(section) or {}):
                raise ConfigError(f"{where}: {name!r} is also defined under {section}: (a trained model); "
                                  "give the published weights a name of their own")
        family = DEIT if entry["format"] in ("deit", "mjp") else MAE
        if entry.get("arch") not in (None, *family):
            raise ConfigError(f"{where}.arch: {entry['arch']!r} is no {entry['format']} release "
                              f"(one of: {', '.join(family)})")
        if entry.get("rpe") is not None and entry["format"] != "adpe-rel":
            raise ConfigError(f"{where}.rpe: an iRPE lookup applies to format adpe-rel only, not {entry['format']}")


def _check_attacks(params: dict, source: str) -> None:
    """Attack settings the DAG cannot carry, refused before any job starts."""
    attacks = params.get("attacks")
    if attacks is None:
        return
    encoders = list(params.get("pretrain") or {}) + list(imported_experiments(params, "encoder"))
    for name in attacks["finetuned"]:  # a defined encoder the DAG does not build is skipped, a typo is not
        if name not in encoders:
            raise ConfigError(f"{source}: attacks.finetuned names {name!r}, defined neither under pretrain: nor "
                              f"as an imported encoder (known: {', '.join(encoders) or 'none'})")
    defined = [*params["supervised"], *encoders, *imported_experiments(params, "classifier")]
    for pair in attacks["compare"]:  # a pair of models not attacked is skipped, a typo is not
        for name in pair:
            if name not in defined:
                raise ConfigError(f"{source}: attacks.compare names {name!r}, which is no experiment "
                                  "(defined under supervised: or pretrain:, or imported)")
    built = params["experiments"]["supervised"] + list(imported_experiments(params, "classifier"))
    for name in attacks["models"]:  # trained by experiments.supervised, or published classifiers
        if name not in built:
            raise ConfigError(f"{source}: attacks.models names {name!r}, which neither experiments.supervised "
                              f"trains nor experiments.imported holds as a classifier (known: {', '.join(built)})")
    for name in attacks["april_models"]:  # trained by the DAG from their supervised: definitions
        if name not in params["supervised"]:
            raise ConfigError(f"{source}: attacks.april_models names {name!r}, not defined under supervised: "
                              f"(defined: {', '.join(sorted(params['supervised']))})")
        if not params["supervised"][name].get("april"):
            raise ConfigError(f"{source}: attacks.april_models: supervised.{name} is not APRIL-compatible "
                              "(set april: true)")
    batch = attacks["threat"]["batch_size"]
    if batch > 1 and (attacks["april_models"] or attacks["closed_form"]):
        # APRIL solves one image's embeddings from the PE gradient (docs/FIDELITY.md rows 39, 43)
        raise ConfigError(f"{source}: attacks.threat.batch_size is {batch}, but APRIL's closed form needs 1: "
                          "set it to 1, or empty attacks.april_models and attacks.closed_form")
    standard = attacks.get("standard_closed_form", [])
    if batch > 1 and standard and (attacks["models"] or attacks["finetuned"]):
        # the PE-table gradient is one image's token gradient only at batch 1 (docs/FIDELITY.md row 71)
        raise ConfigError(f"{source}: attacks.threat.batch_size is {batch}, but attacks.standard_closed_form "
                          f"({', '.join(standard)}) needs 1: set it to 1, or empty attacks.standard_closed_form")


def apply_overrides(params: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply ``KEY=VALUE`` overrides: VALUE is parsed as YAML, a dict VALUE is merged into a dict.

    KEY is a top-level key (``scale=smoke``, ``scales={...}``) or a dotted path to a nested one
    (``supervised.mjp.jigsaw.ratio=0.3``), the syntax and typing of ``dvc exp run -S``. Every key but
    the last must exist; the last may be new (the schema then checks it). Snakemake passes its own
    ``--config``/``--configfile`` overrides to every job as top-level ``--set KEY=JSON``, so a job
    sees exactly the configuration the DAG was built from.
    """
    out = copy.deepcopy(params)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or "" in key.split("."):
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, KEY a params key or a dotted path to one")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: value is not valid YAML")
        node, leaf = _override_target(out, key, item)
        merge = isinstance(value, dict) and isinstance(node.get(leaf), dict)
        node[leaf] = _merge(node[leaf], value) if merge else value
    return out


def _override_target(params: dict, dotted: str, item: str) -> tuple[dict, str]:
    """The dict that holds the last key of ``dotted``, and that key. A key that itself contains dots
    (an inherited scale's overrides: ``scales.smoke.supervised.epochs``) is matched whole."""
    node, keys = params, dotted.split(".")
    for i, key in enumerate(keys[:-1]):
        rest = ".".join(keys[i:])
        if rest in node:
            return node, rest
        if not isinstance(node.get(key), dict):
            found = f"holds {node[key]!r}, not a mapping" if key in node else "does not exist"
            raise ConfigError(f"override {item!r}: params key {'.'.join(keys[: i + 1])!r} {found}")
        node = node[key]
    return node, keys[-1]


def load_params(path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Read a params file, apply overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        params = yaml.safe_load(path.read_text())
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file ({exc.reason} at byte {exc.start}); expected YAML") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__}: {str(exc).splitlines()[0]})")
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    source = str(path) + (" (with overrides)" if overrides else "")
    return validate_params(apply_overrides(params, overrides), source)


def resolve_scales(params: dict, source: str = "params.yaml") -> dict:
    """Expand what params.yaml writes as a base plus one line per difference, with one mechanism.

    ``inherit: <base>`` plus overrides, at two levels:

    - a block of a scale written in full names a sibling block:
      ``scales.tiny.finetune: {inherit: supervised, epochs: 10}`` is ``scales.tiny.supervised`` with
      ``epochs`` changed;
    - a scale names a scale written in full, its blocks resolved first:
      ``scales.smoke: {inherit: paper, supervised.epochs: 1}`` is ``scales.paper`` with one key changed.

    Override keys may be dotted paths and must name a key the base has, so a misspelt key fails here
    instead of silently adding an unused setting. A dict value replaces only the keys it names.
    """
    scales = params.get("scales")
    if not isinstance(scales, dict):
        return params
    out = copy.deepcopy(params)
    written_in_full = [name for name, scale in scales.items() if isinstance(scale, dict) and "inherit" not in scale]
    for name in written_in_full:
        out["scales"][name] = _resolve_blocks(scales[name], f"{source}: scales.{name}", f"scales.{name}")
    for name, scale in scales.items():
        if not isinstance(scale, dict) or "inherit" not in scale:
            continue
        base_name = scale["inherit"]
        if base_name not in written_in_full:
            raise ConfigError(f"{source}: scales.{name}.inherit: {base_name!r} is not a scale written in full "
                              f"(one of: {', '.join(written_in_full)})")
        out["scales"][name] = _inherit(out["scales"][base_name], scale, f"{source}: scales.{name}",
                                       f"scales.{base_name}")
    return out


def _resolve_blocks(scale: dict, where: str, path: str) -> dict:
    """A scale whose ``{inherit: <sibling>, ...}`` blocks are expanded from the sibling (itself written in full)."""
    out = dict(scale)
    for key, block in scale.items():
        if not isinstance(block, dict) or "inherit" not in block:
            continue
        base_key = block["inherit"]
        base = scale.get(base_key) if isinstance(base_key, str) else None
        if not isinstance(base, dict) or "inherit" in base:
            known = ", ".join(k for k, v in scale.items() if isinstance(v, dict) and "inherit" not in v)
            raise ConfigError(f"{where}.{key}.inherit: {base_key!r} is not a block of {path} written in full "
                              f"(one of: {known})")
        out[key] = _inherit(base, block, f"{where}.{key}", f"{path}.{base_key}")
    return out


def _inherit(base: dict, written: dict, where: str, base_path: str) -> dict:
    """``base`` with the (dotted) overrides of ``written`` applied, its ``inherit`` key left out."""
    resolved = copy.deepcopy(base)
    for dotted, value in written.items():
        if dotted != "inherit":
            _set_dotted(resolved, dotted, value, where, base_path)
    return resolved


def _set_dotted(target: dict, dotted: str, value: Any, where: str, base_path: str) -> None:
    keys = dotted.split(".")
    node = target
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(f"{where}: override {dotted!r}: {base_path} has no key {'.'.join(keys[: i + 1])!r}")
        if i < len(keys) - 1:
            node = node[key]
    current = node[keys[-1]]
    node[keys[-1]] = _merge(current, value) if isinstance(value, dict) and isinstance(current, dict) else value


def scale_seeds(params: dict) -> list[int]:
    """The training seeds of the active scale (``scales.<scale>.seeds``): the DAG's ``{seed}`` wildcard."""
    return list(params["scales"][params["scale"]]["seeds"])


def seed_dir(seed: int) -> str:
    """The path segment of one seed's outputs (results/<kind>/<scale>/seed<N>/...)."""
    return f"seed{seed}"


def add_params_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--params``/``--set`` pair every command that reads the configuration takes."""
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a params key, top-level or dotted (supervised.mjp.jigsaw.ratio=0.3); "
             "VALUE is YAML; repeatable",
    )


def params_from_args(args: argparse.Namespace) -> dict:
    return load_params(args.params, args.set)


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out

