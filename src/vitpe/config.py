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
    """Resolve inherited scales, validate against the schema and cross-references; return the result.

    Raises ConfigError naming the key.
    """
    written = params.get("scales") if isinstance(params.get("scales"), dict) else {}
    inherited = {name for name, scale in written.items() if isinstance(scale, dict) and "inherit" in scale}
    params = resolve_scales(params, source)
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)

    def order(err: jsonschema.ValidationError) -> tuple:
        path = list(err.absolute_path)
        # a bad base value shows up in every scale inheriting it: name it where it is written
        copied = len(path) > 1 and path[0] == "scales" and path[1] in inherited
        return len(path), copied, err.message

    errors = sorted(validator.iter_errors(params), key=order)
    if errors:
        err = errors[0]
        if err.validator == "additionalProperties":
            # jsonschema says "Additional properties are not allowed ('x' was unexpected)"
            msg = f"unknown key {err.message.split(chr(39))[1]!r} under {_key_path(err)}"
        elif err.validator == "pattern" and "description" in err.schema:
            # the regular expression alone does not say why; a bad key (propertyNames) is named under its parent
            msg = f"{_key_path(err)}: {err.instance!r}: expected {err.schema['description']}"
        else:
            msg = f"{_key_path(err)}: {err.message}"
        raise ConfigError(f"{source}: {msg}")
    # experiments.<group> -> the section defining its names (transfer fine-tunes pretraining encoders)
    for group, section in (("supervised", "supervised"), ("pretrain", "pretrain"), ("transfer", "pretrain")):
        for name in params["experiments"].get(group, []):
            if name not in params.get(section, {}):
                known = ", ".join(sorted(params.get(section, {}))) or "none"
                raise ConfigError(
                    f"{source}: experiments.{group} names unknown experiment {name!r} "
                    f"(defined under {section}: {known})"
                )
    _check_attacks(params, source)
    return params


def _check_attacks(params: dict, source: str) -> None:
    """Attack settings the DAG cannot carry, refused before any job starts."""
    attacks = params.get("attacks")
    if attacks is None:
        return
    built = params["experiments"]["supervised"]
    for name in attacks["models"]:  # their checkpoints and run configs come from experiments.supervised
        if name not in built:
            raise ConfigError(f"{source}: attacks.models names {name!r}, which experiments.supervised does not "
                              f"train (it lists: {', '.join(built)})")
    batch = attacks["threat"]["batch_size"]
    if batch > 1 and (attacks["april_models"] or attacks["closed_form"]):
        # APRIL solves one image's embeddings from the PE gradient (docs/FIDELITY.md rows 39, 43)
        raise ConfigError(f"{source}: attacks.threat.batch_size is {batch}, but APRIL's closed form needs 1: "
                          "set it to 1, or empty attacks.april_models and attacks.closed_form")


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
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__}: {str(exc).splitlines()[0]})")
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    source = str(path) + (" (with overrides)" if overrides else "")
    return validate_params(apply_overrides(params, overrides), source)


def resolve_scales(params: dict, source: str = "params.yaml") -> dict:
    """Expand every scale written as ``inherit: <base>`` plus dotted overrides into a full scale.

    ``scales.smoke: {inherit: paper, supervised.epochs: 1}`` is ``scales.paper`` with one recipe key
    changed. An override must name a key the base scale has, so a misspelt key fails here instead of
    silently adding an unused setting. A dict value replaces only the keys it names.
    """
    scales = params.get("scales")
    if not isinstance(scales, dict) or not any(isinstance(s, dict) and "inherit" in s for s in scales.values()):
        return params
    out = copy.deepcopy(params)
    for name, scale in scales.items():
        if not isinstance(scale, dict) or "inherit" not in scale:
            continue
        base_name = scale["inherit"]
        base = scales.get(base_name)
        if not isinstance(base, dict) or "inherit" in base:
            known = ", ".join(k for k, v in scales.items() if isinstance(v, dict) and "inherit" not in v)
            raise ConfigError(f"{source}: scales.{name}.inherit: {base_name!r} is not a scale written in full "
                              f"(one of: {known})")
        resolved = copy.deepcopy(base)
        for dotted, value in scale.items():
            if dotted != "inherit":
                _set_dotted(resolved, dotted, value, f"{source}: scales.{name}", base_name)
        out["scales"][name] = resolved
    return out


def _set_dotted(target: dict, dotted: str, value: Any, where: str, base_name: str) -> None:
    keys = dotted.split(".")
    node = target
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(f"{where}: override {dotted!r}: scales.{base_name} has no key "
                              f"{'.'.join(keys[: i + 1])!r}")
        if i < len(keys) - 1:
            node = node[key]
    current = node[keys[-1]]
    node[keys[-1]] = _merge(current, value) if isinstance(value, dict) and isinstance(current, dict) else value


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
    first_block: str = "standard"  # "april": block 0 without norm1/residual (supervised.<exp>.april)
    # fine-tuning / linear probing of a pretrained encoder (vitpe.mae.finetune)
    protocol: str = "supervised"  # supervised | finetune | linprobe
    pretrained: str | None = None  # encoder.safetensors the run starts from
    rpe: dict[str, Any] | None = None  # vitpe.models.irpe.RPEConfig fields, None: no iRPE
    global_pool: bool = False  # MAE fine-tuning: mean patch token + fc_norm instead of CLS

    @property
    def pe_options(self) -> dict[str, Any]:
        return dict(self.unk or {})


# Faithful defaults of the official MJP code (docs/FIDELITY.md rows 9, 13-16).
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


# Generated sets (tiny: embedded, smoke: mini) put each dataset in a folder of this name under their root.
GENERATED_FOLDERS = {"imagenet": "imagenet", "imagenet_c": "imagenet-c", "imagenet_a": "imagenet-a",
                     "imagenet_o": "imagenet-o", "ade20k": "ade20k", "coco": "coco"}


def dataset_paths(params: dict) -> dict[str, Path]:
    """Roots of every dataset for the active scale (the generated sets mirror the real layouts).

    ``embedded`` (tiny) adds its own attack photographs; ``mini`` (smoke) attacks ImageNet validation
    images, as the paper scale does.
    """
    kind = params["scales"][params["scale"]]["data"]
    if kind == "real":
        real = params["data"]["real"]
        return {k: Path(real[k]) for k in GENERATED_FOLDERS}
    root = Path(params["data"][kind]["root"])
    paths = {key: root / folder for key, folder in GENERATED_FOLDERS.items()}
    if kind == "embedded":
        paths["attack"] = root / "attack"
    return paths


def num_classes(params: dict) -> int:
    return params["data"][params["scales"][params["scale"]]["data"]]["num_classes"]


def supervised_run(params: dict, name: str) -> SupervisedRun:
    if name not in params["supervised"]:
        raise ConfigError(f"params.yaml: unknown supervised experiment {name!r} (known: {', '.join(sorted(params['supervised']))})")
    exp = params["supervised"][name]
    scale = params["scales"][params["scale"]]
    recipe = _recipe(scale["supervised"], exp.get("recipe", {}), f"supervised.{name}.recipe")
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
        first_block="april" if exp.get("april") else "standard",
    )


# --- pretraining (MAE, MAE+, AdPE) and the runs built on its encoders -------------------------------

# Faithful defaults (docs/FIDELITY.md rows 54, 56-58): the whole-tensor L2 ball of radius 1.0, the RPE
# embedding δ shared by all buckets (a no-op), the official interpolation, unscaled-q RPE at fine-tuning.
ADVERSARY_DEFAULTS = {"norm": "l2", "eps": 1.0, "per_bucket": False}
RPE_DEFAULTS = {"interp_variant": "faithful", "finetune_scale_rpe_query": False}
# params / weights-metadata name of an RPE -> its lookup (vitpe.models.irpe.RPEConfig.lookup)
RPE_LOOKUPS = {"irpe": "discrete", "irpe_interp": "interp"}
RPE_KINDS = {lookup: kind for kind, lookup in RPE_LOOKUPS.items()}


@dataclass(frozen=True)
class PretrainRun:
    """One MAE / MAE+ / AdPE pretraining run, resolved for the active scale."""

    name: str
    scale: str
    seed: int
    method: str  # mae | mae_plus
    model: dict[str, Any]  # the encoder at the pretraining input size (MAE+: the crop size)
    decoder: dict[str, Any]
    recipe: dict[str, Any]
    crops: dict[str, Any]  # num_crops, crop_size, crop_scale
    train_dir: Path
    rpe: dict[str, Any] | None = None  # RPEConfig fields used in pretraining
    adversary: dict[str, Any] | None = None  # {target: absolute|relative, mode, norm, eps, per_bucket}


def _pretrain_exp(params: dict, name: str) -> dict:
    if name not in params.get("pretrain", {}):
        known = ", ".join(sorted(params.get("pretrain", {}))) or "none"
        raise ConfigError(f"params.yaml: unknown pretraining experiment {name!r} (known: {known})")
    return params["pretrain"][name]


def _rpe_settings(name: str, exp: dict) -> tuple[dict | None, dict]:
    """(pretraining RPEConfig fields or None, the RPE options incl. the fine-tune ones)."""
    options = {**RPE_DEFAULTS, **exp.get("rpe_options", {})}
    kind = exp.get("rpe")
    if kind is None:
        if "rpe_options" in exp:
            raise ConfigError(f"params.yaml: pretrain.{name}.rpe_options given without rpe")
        return None, options
    return {"lookup": RPE_LOOKUPS[kind], "adversary": None, "interp_variant": options["interp_variant"],
            "scale_rpe_query": True}, options


def _recipe(base: dict, override: dict, where: str) -> dict:
    unknown = set(override) - set(base)
    if unknown:
        raise ConfigError(f"params.yaml: unknown key {sorted(unknown)[0]!r} under {where}")
    return _merge(base, override)


def pretrain_run(params: dict, name: str) -> PretrainRun:
    exp = _pretrain_exp(params, name)
    scale = params["scales"][params["scale"]]["pretrain"]
    recipe = _recipe(scale["recipe"], exp.get("recipe", {}), f"pretrain.{name}.recipe")
    method = exp["method"]
    model = {**scale["model"], **exp.get("model", {})}
    crops = dict(scale[method])
    if method == "mae_plus":
        model["img_size"] = crops["crop_size"]  # MAE+ encodes the low-resolution crops
    else:
        crops = {"num_crops": 1, "crop_size": model["img_size"], **crops}
    rpe, _ = _rpe_settings(name, exp)
    adversary = None
    if "adversary" in exp:
        where = f"params.yaml: pretrain.{name}"
        if method != "mae_plus":
            raise ConfigError(f"{where}.adversary: AdPE extends MAE+ (method mae_plus), not {method!r}")
        adversary = {**ADVERSARY_DEFAULTS, **exp["adversary"], "target": "relative" if rpe else "absolute"}
        if rpe is not None:
            if adversary["mode"] == "coordinate" and rpe["lookup"] != "interp":
                raise ConfigError(f"{where}: the RPE coordinate adversary needs rpe: irpe_interp")
            if adversary["mode"] == "embedding" and rpe["lookup"] != "discrete":
                raise ConfigError(f"{where}: the RPE embedding adversary needs rpe: irpe")
            per_bucket = adversary["mode"] == "embedding" and adversary["per_bucket"]
            rpe = {**rpe, "adversary": "embedding_per_bucket" if per_bucket else adversary["mode"]}
    return PretrainRun(
        name=name, scale=params["scale"], seed=params["seed"], method=method, model=model,
        decoder=dict(scale["decoder"]), recipe=recipe, crops=crops,
        train_dir=dataset_paths(params)["imagenet"] / "train", rpe=rpe, adversary=adversary,
    )


def encoder_run(params: dict, name: str, protocol: str, pretrained: str | None = None) -> SupervisedRun:
    """Fine-tuning (``finetune``) or linear probing (``linprobe``) of pretraining experiment ``name``.

    A supervised run on the scale's ``finetune`` / ``linprobe`` recipe with the pretraining
    encoder's architecture at the full input size, its PE learnable (MAE: pos_embed is loaded and
    stays learnable), the matching iRPE (docs/FIDELITY.md row 57) and, for fine-tuning, global pooling.
    """
    if protocol not in ("finetune", "linprobe"):
        raise ConfigError(f"unknown protocol {protocol!r} (finetune or linprobe)")
    exp = _pretrain_exp(params, name)
    scale = params["scales"][params["scale"]]
    recipe = _recipe(scale[protocol], exp.get(f"{protocol}_recipe", {}), f"pretrain.{name}.{protocol}_recipe")
    rpe, options = _rpe_settings(name, exp)
    if rpe is not None:
        # docs/FIDELITY.md row 58: the official fine-tune attention adds the RPE term with unscaled q;
        # linear probing has no official code and keeps the pretraining attention.
        rpe = {**rpe, "scale_rpe_query": options["finetune_scale_rpe_query"] if protocol == "finetune" else True}
    paths = dataset_paths(params)
    return SupervisedRun(
        name=name, scale=params["scale"], seed=params["seed"],
        model={**scale["pretrain"]["model"], **exp.get("model", {})}, recipe=recipe,
        pos_embed="learnable", num_classes=num_classes(params),
        train_dir=paths["imagenet"] / "train", val_dir=paths["imagenet"] / "val",
        protocol=protocol, pretrained=pretrained, rpe=rpe, global_pool=protocol == "finetune",
    )


def stage_run(params: dict, stage: str, name: str) -> SupervisedRun:
    """The classifier a workflow stage trains: ``supervised``, ``finetune`` or ``linprobe``."""
    return supervised_run(params, name) if stage == "supervised" else encoder_run(params, name, stage)
