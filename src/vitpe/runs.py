"""Typed, frozen descriptions of the runs the workflow trains, built once from the resolved params.

``supervised_run`` / ``encoder_run`` / ``stage_run`` give a :class:`SupervisedRun` (training from
scratch, fine-tuning, linear probing), ``pretrain_run`` a :class:`PretrainRun` (MAE, MAE+, AdPE),
``transfer_run`` a :class:`TransferRun` (ADE20K / COCO fine-tuning of a pretraining encoder).
Their parts belong to the packages that use them: the architecture (:class:`ViTSpec`,
:class:`RPEConfig`) to vitpe.models, MJP's settings to vitpe.mjp, AdPE's adversary and MAE's decoder to
vitpe.mae; the recipes, :class:`Runtime` and :class:`TransferRuntime` live here.

:func:`dependency_record` is what a run's results depend on: the run minus its :class:`Runtime` (which
may change on resume) and machine paths. It is the workflow's run-config file
(results/configs/<scale>/seed<N>/[<stage>/]<exp>.json, a rule input; :func:`stage_record`), the config
part of the resume fingerprint and the weights metadata.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from vitpe.data.paths import dataset_paths, num_classes
from vitpe.errors import ConfigError
from vitpe.mae.settings import AdversarySettings, DecoderConfig
from vitpe.mjp.settings import DALSettings, JigsawSettings, UnknownPESettings
from vitpe.models.registry import LearnablePESettings, pe_flags
from vitpe.models.released import ARCHS, imported_experiments
from vitpe.models.spec import RPE_KINDS, RPE_LOOKUPS, RPEConfig, RPEOptions, ViTSpec

__all__ = [
    "Runtime", "ClassifierRecipe", "PretrainRecipe", "Crops", "SupervisedRun", "PretrainRun", "RUNTIME_KEYS",
    "TransferRuntime", "TransferRecipe", "SegmentationRecipe", "DetectionRecipe", "TransferRun", "TRANSFER_RECIPES",
    "supervised_run", "encoder_run", "stage_run", "pretrain_run", "transfer_run", "stage_record", "imported_experiments",
    "dependency_record", "architecture_record", "with_recipe", "dataset_paths", "num_classes", "RPE_LOOKUPS",
    "RPE_KINDS", "takes_scale_gamma",
]


@dataclass(frozen=True)
class Runtime:
    """Recipe keys that change how a run executes, not what it computes: they may differ on resume
    and are not part of its dependency record (the accumulation the memory plan resolves is)."""

    num_workers: int = 0
    checkpoint_every: int = 100  # optimizer steps between state.pt writes
    eval_batch_size: int | None = None  # classifiers only
    gpu_memory_gb: float | None = None  # None: no memory plan, accum_steps used as given
    grad_checkpointing: bool | str = False  # True | False | "auto"
    # epochs between validations during training (0: none); they leave the run's RNG streams and
    # weights exactly as without them (vitpe.train.engine), so they are not part of what it computes
    validate_every: int = 1
    # torch.compile the module the training step runs: the same computation, fused kernels (results
    # agree with eager within float rounding, not bitwise)
    compile: bool = False
    # keep every decoded image, and each finished validation sample, in memory for the life of the
    # process: a small set (the tiny scale's 32-px PNGs) is decoded once, not every epoch; the same
    # pixels, so the same results (vitpe.train.data.image_folder)
    cache_images: bool = False
    # autocast of a classifier's evaluation forwards on CUDA (none | bf16 | fp16; the CPU evaluates in
    # fp32): logits round differently, the metrics stay within their seed spread (docs/FIDELITY.md row 75)
    eval_amp: str = "none"
    # AdamW through torch's fused kernel (one kernel for all parameters instead of a loop over them): the
    # same update within float rounding, not bitwise (docs/FIDELITY.md row 76)
    fused_optimizer: bool = False


RUNTIME_KEYS = tuple(f.name for f in fields(Runtime))


@dataclass(frozen=True)
class ClassifierRecipe:
    """A supervised / fine-tuning / linear-probing recipe (params ``scales.<scale>.supervised``,
    ``finetune``, ``linprobe``); the last six keys are for pretrained encoders and default to
    training from scratch."""

    epochs: int
    warmup_epochs: int
    batch_size: int  # global: micro-batch x accum_steps x processes
    accum_steps: int | str  # a number, or "auto" with gpu_memory_gb
    base_lr: float
    warmup_lr: float
    min_lr: float
    lr_batch_divisor: int
    weight_decay: float
    clip_grad: float
    drop_path: float
    smoothing: float
    mixup: float
    cutmix: float
    mixup_prob: float
    mixup_switch_prob: float
    hflip: float
    randaugment: str
    color_jitter: float
    reprob: float
    repeated_aug: int
    crop_scale: tuple[float, float]
    test_crop_ratio: float
    amp: str
    steps_per_epoch: int | None = None
    layer_decay: float | None = None
    warmup_prefix: bool = False
    head_init_std: float | None = None
    pe_resize: str = "bicubic"
    optimizer: str = "adamw"


@dataclass(frozen=True)
class PretrainRecipe:
    """A pretraining recipe (params ``scales.<scale>.pretrain.recipe``)."""

    epochs: int
    warmup_epochs: int
    batch_size: int  # global batch of images (each gives num_crops crops)
    accum_steps: int | str
    base_lr: float
    warmup_lr: float
    min_lr: float
    lr_batch_divisor: int
    weight_decay: float
    betas: tuple[float, float]
    clip_grad: float
    adv_lr: float
    mask_ratio: float
    norm_pix_loss: bool
    hflip: float
    amp: str
    steps_per_epoch: int | None = None


@dataclass(frozen=True)
class Crops:
    """The pretraining views of one image: MAE one view at the input size, MAE+ several small crops."""

    num_crops: int
    crop_size: int
    crop_scale: tuple[float, float]


@dataclass(frozen=True)
class SupervisedRun:
    """Everything a supervised training/evaluation job needs, resolved for the active scale."""

    name: str
    scale: str
    seed: int
    data: str  # the scale's datasets: embedded | mini | real
    model: ViTSpec
    recipe: ClassifierRecipe
    runtime: Runtime
    pos_embed: str
    num_classes: int
    train_dir: Path
    val_dir: Path
    jigsaw: JigsawSettings | None = None  # None: no shuffle
    dal: DALSettings | None = None  # None: no DAL head
    unk: UnknownPESettings | None = None  # pos_embed "mjp" only
    learnable: LearnablePESettings | None = None  # pos_embed "learnable" with options other than DeiT's, else None
    first_block: str = "standard"  # "april": block 0 without norm1/residual (supervised.<exp>.april)
    protocol: str = "supervised"  # supervised | finetune | linprobe
    pretrained: str | None = None  # encoder.safetensors the run starts from (a machine path)
    rpe: RPEConfig | None = None  # None: no iRPE
    global_pool: bool = False  # MAE fine-tuning: mean patch token + fc_norm instead of CLS

    @property
    def pe_options(self) -> dict[str, Any]:
        """The keyword options of its PE (vitpe.models.pos_embed.build_pos_embed)."""
        settings = self.unk if self.unk is not None else self.learnable
        return dataclasses.asdict(settings) if settings is not None else {}


@dataclass(frozen=True)
class PretrainRun:
    """One MAE / MAE+ / AdPE pretraining run, resolved for the active scale."""

    name: str
    scale: str
    seed: int
    data: str
    method: str  # mae | mae_plus
    model: ViTSpec  # the encoder at the pretraining input size (MAE+: the crop size)
    decoder: DecoderConfig
    recipe: PretrainRecipe
    runtime: Runtime
    crops: Crops
    train_dir: Path
    val_dir: Path  # held-out images: the per-epoch masked-patch loss
    rpe: str | None = None  # the params name: irpe | irpe_interp | None
    rpe_config: RPEConfig | None = None  # the pretraining blocks' iRPE
    adversary: AdversarySettings | None = None
    pos_embed: str = "sincos"  # MAE's fixed 2D table


# --- downstream transfer (vitpe.transfer) -------------------------------------------------------------

@dataclass(frozen=True)
class TransferRuntime:
    """Transfer recipe keys that change how a run executes, not what it computes (as :class:`Runtime`)."""

    num_workers: int
    checkpoint_every: int  # iterations between state/last.pth writes
    log_every: int  # iterations between log lines


@dataclass(frozen=True)
class TransferRecipe:
    """The keys both transfer recipes hold (params ``scales.<scale>.transfer.<task>``)."""

    iters: int
    batch_size: int  # global: per process = batch_size / processes
    lr: float
    weight_decay: float
    layer_decay: float
    decay_pos_embed: bool  # weight decay on the absolute PE and CLS token
    warmup_iters: int
    drop_path: float
    head_channels: int
    amp: str  # none | bf16 | fp16 (AmpOptimWrapper on CUDA; CPU runs fp32)
    # 0: evaluate once, after training. Not a runtime key: each validation during training draws its
    # loader's seed from the global torch RNG, which shifts the training stream (drop path).
    val_interval: int


@dataclass(frozen=True)
class SegmentationRecipe(TransferRecipe):
    """ADE20K, UperNet on the MAE-style backbone (``transfer.ade20k``)."""

    crop_size: int
    resize_scale: tuple[int, int]  # RandomResize (w, h) before the crop; the test Resize
    out_blocks: tuple[int, ...] | None  # None: MAE's blocks 4/6/8/12 of 12, the same depth fractions otherwise
    rel_pos_bias: bool  # BEiT relative position bias per block (mmseg MAE backbone)
    layer_scale: float | None  # layer-scale init; None: none
    aux_channels: int
    test_stride: int  # sliding-window stride


@dataclass(frozen=True)
class DetectionRecipe(TransferRecipe):
    """COCO, Mask R-CNN on the ViTDet backbone (``transfer.coco``)."""

    image_size: int  # LSJ size
    milestones: tuple[int, ...]
    window_size: int
    global_blocks: tuple[int, ...] | None  # None: ViTDet's last block of each quarter
    rel_pos: bool  # ViTDet's decomposed relative position
    fc_channels: int
    test_score_thr: float
    roi_samples: int
    rpn_proposals: int | None  # None: mmdet's 2000 (train) / 1000 (test)


TRANSFER_RECIPES: dict[str, type[TransferRecipe]] = {"ade20k": SegmentationRecipe, "coco": DetectionRecipe}


@dataclass(frozen=True)
class TransferRun:
    """The downstream fine-tuning of pretraining experiment ``name``'s encoder, resolved for the active scale.

    ``model`` and ``rpe`` are the encoder's architecture as its pretraining run defines it (what the
    results depend on); the backbone is built from the encoder file's own metadata, which that run wrote.
    """

    name: str  # the pretraining experiment
    task: str  # ade20k | coco
    scale: str
    seed: int
    data: str  # the scale's datasets: embedded | mini | real
    model: ViTSpec  # the encoder as pretrained (MAE+: at the crop size)
    rpe: RPEConfig | None  # the pretraining iRPE, kept downstream without its adversary (docs/FIDELITY.md row 34)
    recipe: SegmentationRecipe | DetectionRecipe
    runtime: TransferRuntime
    data_root: Path  # the task's dataset (a machine path)


Run = TypeVar("Run", SupervisedRun, PretrainRun, TransferRun)
MACHINE_PATHS = ("train_dir", "val_dir", "pretrained", "data_root")
# Fields added after the first records were written: recorded only when set, so those records stay valid.
RECORDED_WHEN_SET = ("learnable",)
# What weights must have been trained with to load into a run's model (tensor shapes aside).
ARCHITECTURE_KEYS = {SupervisedRun: ("model", "pos_embed", "num_classes", "protocol", "rpe", "global_pool",
                                     "first_block"),
                     PretrainRun: ("model", "method", "rpe_config", "adversary")}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples -> lists, as the files hold them


def dependency_record(run: SupervisedRun | PretrainRun | TransferRun, accum_steps: int | None = None) -> dict[str, Any]:
    """What a run's results depend on: every field but the runtime and machine paths, JSON-ready
    (``name`` recorded as ``experiment``): the run-config file, the fingerprint's config and the
    weights metadata. Training passes the ``accum_steps`` its memory plan resolved (the recipe may say
    ``auto``): the same computation then gives the same record, whichever way the split was given."""
    if accum_steps is not None:
        run = dataclasses.replace(run, recipe=dataclasses.replace(run.recipe, accum_steps=accum_steps))
    record = {f.name: getattr(run, f.name) for f in fields(run) if f.name not in ("runtime", *MACHINE_PATHS)
              and not (f.name in RECORDED_WHEN_SET and getattr(run, f.name) is None)}
    record["experiment"] = record.pop("name")
    return _jsonable({k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in record.items()})


def architecture_record(run: SupervisedRun | PretrainRun) -> dict[str, Any]:
    """The part of the record that load-time checks compare with the weights metadata."""
    record = dependency_record(run)
    return {key: record[key] for key in ARCHITECTURE_KEYS[type(run)]}


def with_recipe(run: Run, **keys: Any) -> Run:
    """``run`` with recipe keys changed; runtime keys (those of ``run.runtime``) go to ``run.runtime``."""
    runtime_keys = {f.name for f in fields(run.runtime)}
    runtime = {k: v for k, v in keys.items() if k in runtime_keys}
    recipe = {k: v for k, v in keys.items() if k not in runtime_keys}
    return dataclasses.replace(run, recipe=dataclasses.replace(run.recipe, **recipe),
                               runtime=dataclasses.replace(run.runtime, **runtime))


# --- building runs from the resolved params ---------------------------------------------------------

def _split_recipe(base: dict, override: dict, where: str, recipe_type: type,
                  runtime_type: type = Runtime) -> tuple[Any, Any]:
    """The scale's recipe with the experiment's overrides, as (recipe, runtime)."""
    unknown = set(override) - set(base)
    if unknown:
        raise ConfigError(f"params.yaml: unknown key {sorted(unknown)[0]!r} under {where}")
    merged = {**base, **override}
    runtime_keys = {f.name for f in fields(runtime_type)}
    known = {f.name for f in fields(recipe_type)} | runtime_keys
    extra = set(merged) - known
    if extra:
        raise ConfigError(f"params.yaml: {where}: key {sorted(extra)[0]!r} is not a {recipe_type.__name__} key")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in merged.items() if k not in runtime_keys}
    runtime = runtime_type(**{k: v for k, v in merged.items() if k in runtime_keys})
    return recipe_type(**values), runtime


def _common(params: dict) -> dict[str, Any]:
    return {"scale": params["scale"], "seed": params["seed"], "data": params["scales"][params["scale"]]["data"]}


def takes_scale_gamma(exp: dict) -> bool:
    """Whether a supervised experiment shuffles at its scale's ``mjp_gamma``: an mjp-mode jigsaw that
    sets no ratio of its own."""
    jigsaw = exp.get("jigsaw") or {}
    return jigsaw.get("mode") == "mjp" and "ratio" not in jigsaw


def _mjp_settings(name: str, exp: dict, warmup_epochs: int, gamma: float) -> dict[str, Any]:
    """The experiment's jigsaw/DAL blocks with defaults filled in (the scale's ``gamma`` where
    :func:`takes_scale_gamma`), checked against its PE."""
    where = f"params.yaml: supervised.{name}"
    jigsaw = dal = None
    if "jigsaw" in exp:
        jigsaw = JigsawSettings(**exp["jigsaw"], **({"ratio": gamma} if takes_scale_gamma(exp) else {}))
        if jigsaw.start_epoch is None:
            jigsaw = dataclasses.replace(jigsaw, start_epoch=warmup_epochs)
    if "dal" in exp:
        if not pe_flags(exp["pos_embed"]).learnable_table:
            raise ConfigError(f"{where}.dal: DAL regresses a learnable PE table; pos_embed is {exp['pos_embed']!r}")
        dal = DALSettings(**exp["dal"])
    return {"jigsaw": jigsaw, "dal": dal}


# The PEs that take options: pos_embed -> (the experiment's block of them = the SupervisedRun field, its
# settings). A field of RECORDED_WHEN_SET is None at the defaults (the learnable PE: DeiT's), so the runs
# trained before the option existed keep their records.
PE_SETTINGS: dict[str, tuple[str, type]] = {"mjp": ("unk", UnknownPESettings),
                                            "learnable": ("learnable", LearnablePESettings)}


def _pe_settings(name: str, exp: dict) -> dict[str, Any]:
    """The SupervisedRun fields of the experiment's PE options (``unk``, ``learnable``), checked against its PE."""
    settings: dict[str, Any] = {key: None for key, _ in PE_SETTINGS.values()}
    for kind, (key, settings_type) in PE_SETTINGS.items():
        if kind == exp["pos_embed"]:
            value = settings_type(**exp.get(key, {}))
            settings[key] = None if key in RECORDED_WHEN_SET and value == settings_type() else value
        elif key in exp:
            raise ConfigError(f"params.yaml: supervised.{name}.{key}: only for pos_embed {kind!r}, "
                              f"not {exp['pos_embed']!r}")
    return settings


def supervised_run(params: dict, name: str) -> SupervisedRun:
    published = imported_experiments(params, "classifier")
    if name in published:
        return _published_classifier_run(params, name, published[name]["format"], published[name].get("arch"))
    if name not in params["supervised"]:
        raise ConfigError(f"params.yaml: unknown supervised experiment {name!r} "
                          f"(known: {', '.join(sorted(params['supervised']))})")
    exp = params["supervised"][name]
    scale = params["scales"][params["scale"]]
    recipe, runtime = _split_recipe(scale["supervised"], exp.get("recipe", {}), f"supervised.{name}.recipe",
                                    ClassifierRecipe)
    paths = dataset_paths(params)
    return SupervisedRun(
        name=name, **_common(params), model=ViTSpec.of(scale["model"]), recipe=recipe, runtime=runtime,
        pos_embed=exp["pos_embed"], num_classes=num_classes(params),
        train_dir=paths["imagenet"] / "train", val_dir=paths["imagenet"] / "val",
        **_mjp_settings(name, exp, recipe.warmup_epochs, scale["mjp_gamma"]), **_pe_settings(name, exp),
        first_block="april" if exp.get("april") else "standard",
    )


# --- pretraining (MAE, MAE+, AdPE) and the runs built on its encoders -------------------------------

def _pretrain_exp(params: dict, name: str) -> dict:
    published = imported_experiments(params, "encoder")
    if name in published:
        return _published_encoder_definition(published[name])
    if name not in params.get("pretrain", {}):
        known = ", ".join(sorted(params.get("pretrain", {}))) or "none"
        raise ConfigError(f"params.yaml: unknown pretraining experiment {name!r} (known: {known})")
    return params["pretrain"][name]


def _rpe_settings(name: str, exp: dict) -> tuple[RPEConfig | None, RPEOptions]:
    """(the pretraining iRPE or None, the RPE options incl. the fine-tune ones)."""
    options = RPEOptions(**exp.get("rpe_options", {}))
    kind = exp.get("rpe")
    if kind is None:
        if "rpe_options" in exp:
            raise ConfigError(f"params.yaml: pretrain.{name}.rpe_options given without rpe")
        return None, options
    return RPEConfig(lookup=RPE_LOOKUPS[kind], interp_variant=options.interp_variant, scale_rpe_query=True), options


def pretrain_run(params: dict, name: str) -> PretrainRun:
    exp = _pretrain_exp(params, name)
    scale = params["scales"][params["scale"]]["pretrain"]
    recipe, runtime = _split_recipe(scale["recipe"], exp.get("recipe", {}), f"pretrain.{name}.recipe",
                                    PretrainRecipe)
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
        adversary = AdversarySettings(**exp["adversary"], target="relative" if rpe else "absolute")
        if rpe is not None:
            if adversary.mode == "coordinate" and rpe.lookup != "interp":
                raise ConfigError(f"{where}: the RPE coordinate adversary needs rpe: irpe_interp")
            if adversary.mode == "embedding" and rpe.lookup != "discrete":
                raise ConfigError(f"{where}: the RPE embedding adversary needs rpe: irpe")
            per_bucket = adversary.mode == "embedding" and adversary.per_bucket
            rpe = dataclasses.replace(rpe, adversary="embedding_per_bucket" if per_bucket else adversary.mode)
    return PretrainRun(
        name=name, **_common(params), method=method, model=ViTSpec.of(model),
        decoder=DecoderConfig(**scale["decoder"]), recipe=recipe, runtime=runtime,
        crops=Crops(crops["num_crops"], crops["crop_size"], tuple(crops["crop_scale"])),
        train_dir=dataset_paths(params)["imagenet"] / "train", val_dir=dataset_paths(params)["imagenet"] / "val",
        rpe=exp.get("rpe"), rpe_config=rpe, adversary=adversary,
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
    recipe, runtime = _split_recipe(scale[protocol], exp.get(f"{protocol}_recipe", {}),
                                    f"pretrain.{name}.{protocol}_recipe", ClassifierRecipe)
    rpe, options = _rpe_settings(name, exp)
    if rpe is not None:
        # docs/FIDELITY.md row 58: the official fine-tune attention adds the RPE term with unscaled q;
        # linear probing has no official code and keeps the pretraining attention.
        scaled = options.finetune_scale_rpe_query if protocol == "finetune" else True
        rpe = dataclasses.replace(rpe, scale_rpe_query=scaled)
    paths = dataset_paths(params)
    return SupervisedRun(
        name=name, **_common(params), model=ViTSpec.of({**scale["pretrain"]["model"], **exp.get("model", {})}),
        recipe=recipe, runtime=runtime, pos_embed="learnable", num_classes=num_classes(params),
        train_dir=paths["imagenet"] / "train", val_dir=paths["imagenet"] / "val",
        protocol=protocol, pretrained=pretrained, rpe=rpe, global_pool=protocol == "finetune",
    )


# --- published checkpoints (experiments.imported, imported by vitpe.models.importers) ---------------

def _with_arch(model: dict, arch: str | None) -> dict:
    """A scale's model block at the widths of a released architecture (None: the block as it is)."""
    if arch is None:
        return model
    dim, depth, heads = ARCHS[arch]
    return {**model, "embed_dim": dim, "depth": depth, "num_heads": heads, "mlp_ratio": 4.0}


def _published_classifier_run(params: dict, name: str, fmt: str, arch: str | None) -> SupervisedRun:
    """A released classifier as the active scale evaluates and attacks it: the scale's model (DeiT and
    MJP: the supervised one; MAE's fine-tuned ViT: the pretraining one at full size) at ``arch``, with
    its layout's PE, DAL head and pooling. MJP's jigsaw and DAL settings are its release's (train.sh);
    the recipe supplies the evaluation keys (test crop, batch size)."""
    scale = params["scales"][params["scale"]]
    finetuned, mjp = fmt == "mae-finetuned", fmt == "mjp"
    recipe, runtime = _split_recipe(scale["finetune" if finetuned else "supervised"], {},
                                    f"experiments.imported.{name}", ClassifierRecipe)
    paths = dataset_paths(params)
    return SupervisedRun(
        name=name, **_common(params), model=ViTSpec.of(_with_arch(scale["pretrain"]["model"] if finetuned
                                                                  else scale["model"], arch)),
        recipe=recipe, runtime=runtime, pos_embed="mjp" if mjp else "learnable", num_classes=num_classes(params),
        train_dir=paths["imagenet"] / "train", val_dir=paths["imagenet"] / "val",
        jigsaw=JigsawSettings(mode="mjp", start_epoch=recipe.warmup_epochs) if mjp else None,
        dal=DALSettings() if mjp else None, unk=UnknownPESettings() if mjp else None,
        protocol="finetune" if finetuned else "supervised", global_pool=finetuned,
    )


def _published_encoder_definition(entry: dict) -> dict:
    """A released encoder as a ``pretrain:`` definition: its method and iRPE (the AdPE adversary is
    pretraining-only, not part of the encoder) at its architecture; fine-tuning, linear probing and
    transfer build their runs from it as from a trained encoder's."""
    fmt = entry["format"]
    definition: dict[str, Any] = {"method": "mae" if fmt == "mae" else "mae_plus"}
    if fmt == "adpe-rel":
        definition["rpe"] = entry.get("rpe") or "irpe"
    if entry.get("arch") is not None:
        definition["model"] = _with_arch({}, entry["arch"])
    return definition


def stage_run(params: dict, stage: str, name: str) -> SupervisedRun:
    """The classifier a workflow stage trains: ``supervised``, ``finetune`` or ``linprobe``."""
    return supervised_run(params, name) if stage == "supervised" else encoder_run(params, name, stage)


def transfer_run(params: dict, task: str, name: str) -> TransferRun:
    """The ``transfer_<task>`` stage of pretraining experiment ``name``: the scale's ``transfer.<task>``
    recipe on the encoder of ``pretrain_run(params, name)``."""
    if task not in TRANSFER_RECIPES:
        raise ConfigError(f"unknown transfer task {task!r} (known: {', '.join(TRANSFER_RECIPES)})")
    pretrain = pretrain_run(params, name)
    where = f"scales.{params['scale']}.transfer.{task}"
    recipes = params["scales"][params["scale"]].get("transfer", {})
    if task not in recipes:
        raise ConfigError(f"params.yaml: {where} is not defined")
    recipe, runtime = _split_recipe(recipes[task], {}, where, TRANSFER_RECIPES[task], TransferRuntime)
    if task == "ade20k" and recipe.iters <= recipe.warmup_iters:
        raise ConfigError(f"params.yaml: {where}: iters ({recipe.iters}) must exceed warmup_iters "
                          f"({recipe.warmup_iters}): the poly decay follows the warm-up")
    rpe = None if pretrain.rpe_config is None else dataclasses.replace(pretrain.rpe_config, adversary=None)
    return TransferRun(name=name, task=task, **_common(params), model=pretrain.model, rpe=rpe, recipe=recipe,
                       runtime=runtime, data_root=dataset_paths(params)[task])


def stage_record(params: dict, stage: str, name: str) -> dict[str, Any]:
    """The run-config file of ``stage`` (supervised, pretrain, finetune, linprobe, transfer_<task>)."""
    if stage.startswith("transfer_"):
        return dependency_record(transfer_run(params, stage[len("transfer_"):], name))
    if stage == "pretrain":
        return dependency_record(pretrain_run(params, name))
    return dependency_record(stage_run(params, stage, name))
