"""A transfer run (vitpe.runs.TransferRun) + its encoder checkpoint -> an mmengine config -> fine-tune,
evaluate, write metrics.

The config files under ``configs/`` inherit the upstream mmseg/mmdet configs and carry the paper-scale
structure; this module sets what depends on the run: its recipe (``scales.<scale>.transfer.<task>``),
the optimizer and checkpoint hook both tasks share, the encoder's architecture, dataset paths and
classes, the device (AMP on CUDA only), the number of processes (SyncBN and the per-GPU batch under
torchrun) and the work directory.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vitpe.errors import CheckpointError, ConfigError, DataError, EvaluationError
from vitpe.io import read_json
from vitpe.runs import DetectionRecipe, SegmentationRecipe, TransferRun, dependency_record
from vitpe.train.progress import LIVE_DIR
from vitpe.transfer.convert import Encoder, check_transferable, read_encoder

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
CONFIGS = {"ade20k": "ade20k_upernet.py", "coco": "coco_mask_rcnn_vitdet.py"}
# evaluator key -> metrics JSON key (values exactly as the evaluator returned them)
METRIC_KEYS = {
    "ade20k": {"mIoU": "ade20k_miou", "aAcc": "ade20k_aacc", "mAcc": "ade20k_macc"},
    "coco": {f"coco/{kind}_mAP{suffix}": f"coco_ap{name}_{short}"
             for kind, short in (("bbox", "box"), ("segm", "mask"))
             for suffix, name in (("", ""), ("_50", "50"), ("_75", "75"), ("_s", "s"), ("_m", "m"), ("_l", "l"))},
}
AMP_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}
FULL_CLASSES = {"ade20k": 150, "coco": 80}  # the real datasets' classes


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _replace_types(node: Any, old: str, new: str) -> None:
    """Recursively rename config ``type`` values (SyncBN -> BN outside a process group)."""
    if isinstance(node, Mapping):
        if node.get("type") == old:
            node["type"] = new
        for value in node.values():
            _replace_types(value, old, new)
    elif isinstance(node, list):
        for value in node:
            _replace_types(value, old, new)


def _transform(pipeline: list, kind: str) -> dict:
    for step in pipeline:
        if step["type"] == kind:
            return step
    raise KeyError(f"no {kind} in the upstream pipeline (mm config changed?)")


def _embedded_classes(root: Path, task: str) -> tuple[str, ...] | None:
    """Classes of the embedded sets (a subset of ADE20K-150 / shapes); None for the real datasets."""
    if task == "ade20k":
        path = root / "classes.json"
        return tuple(read_json(path, "embedded ADE20K class list")["classes"]) if path.is_file() else None
    path = root / "annotations" / "instances_train2017.json"
    doc = read_json(path, "COCO instances annotation file", require_object=True)
    return tuple(c["name"] for c in sorted(doc["categories"], key=lambda c: c["id"]))


def _classes(run: TransferRun) -> tuple[tuple[str, ...] | None, int]:
    """(the embedded set's class names, or None for the full dataset; the number of classes)."""
    classes = _embedded_classes(run.data_root, run.task) if run.data == "embedded" else None
    return classes, len(classes) if classes else FULL_CLASSES[run.task]


def _point_datasets(cfg, data_root: str, classes: tuple[str, ...] | None) -> list[list]:
    """Point every loader's dataset at ``data_root`` (with the embedded set's classes); returns the
    evaluation loaders' pipelines, for the task to size."""
    pipelines = []
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if cfg.get(loader) is None:
            continue
        cfg[loader].dataset.data_root = data_root
        if classes:
            cfg[loader].dataset.metainfo = dict(classes=classes)
        if loader != "train_dataloader":
            pipelines.append(cfg[loader].dataset.pipeline)
    return pipelines


def _blocks(indices: tuple[int, ...] | None) -> list[int] | None:
    return None if indices is None else list(indices)


def _set_common(cfg, run: TransferRun, work_dir: Path, cuda: bool, world: int) -> None:
    recipe, runtime = run.recipe, run.runtime
    if recipe.batch_size % world:
        raise ConfigError(f"transfer batch_size {recipe.batch_size} is not divisible by {world} processes")
    cfg.work_dir = str(work_dir)
    cfg.launcher = "pytorch" if world > 1 else "none"
    cfg.randomness = dict(seed=run.seed, deterministic=False)
    cfg.env_cfg.dist_cfg = dict(backend="nccl" if cuda else "gloo")
    # AdamW with layer-wise lr decay (optim.py) for both tasks; betas as mmseg's
    # configs/mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py and detectron2's configs/common/optim.py
    optim_wrapper = dict(type="OptimWrapper", constructor="VitpeLayerDecayConstructor",
                         optimizer=dict(type="AdamW", betas=(0.9, 0.999), lr=recipe.lr,
                                        weight_decay=recipe.weight_decay),
                         paramwise_cfg=dict(layer_decay_rate=recipe.layer_decay,
                                            decay_pos_embed=recipe.decay_pos_embed))
    if cuda and recipe.amp != "none":  # real AMP (mmengine ignores the legacy fp16= key)
        optim_wrapper.update(type="AmpOptimWrapper", dtype=AMP_DTYPES[recipe.amp], loss_scale="dynamic")
    cfg.optim_wrapper = optim_wrapper
    cfg.train_dataloader.batch_size = recipe.batch_size // world
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[loader].num_workers = runtime.num_workers
        cfg[loader].persistent_workers = runtime.num_workers > 0
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=recipe.iters,
                         val_interval=recipe.val_interval or recipe.iters + 1)
    if not recipe.val_interval:  # evaluation once, after training (runner.test)
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    # mmengine's CheckpointHook writes objects torch.load(weights_only=True) refuses (hooks.py): ours instead
    cfg.default_hooks.checkpoint = None
    cfg.custom_hooks = [dict(type="VitpeCheckpointHook", interval=runtime.checkpoint_every)]
    cfg.default_hooks.logger.interval = runtime.log_every
    cfg.log_processor = dict(by_epoch=False)
    # the scalars in dvclive (transfer/live.py), beside the weights, as the training engine logs them
    cfg.visualizer.vis_backends = [dict(type="VitpeLiveBackend", save_dir=str(work_dir / LIVE_DIR))]


def _ade20k(cfg, run: TransferRun, encoder: Encoder, world: int) -> None:
    recipe: SegmentationRecipe = run.recipe
    arch = {k: v for k, v in encoder.model.items() if k != "img_size"}
    crop = (recipe.crop_size, recipe.crop_size)
    classes, num_classes = _classes(run)
    model = cfg.model
    model.data_preprocessor.size = crop
    # mmseg's MAE backbone: BEiT relative position bias and layer scale (an iRPE encoder keeps its own RPE)
    model.backbone.update(img_size=crop[0], **arch, out_indices=_blocks(recipe.out_blocks), drop_path=recipe.drop_path,
                          rel_pos_bias=recipe.rel_pos_bias and not encoder.rpe,
                          layer_scale=recipe.layer_scale, checkpoint=str(encoder.path))
    if encoder.rpe:  # iRPE in every block, as pretrained; no adversary downstream
        interp = (encoder.metadata.get("rpe_config") or {}).get("interp_variant", "faithful")
        # no official code transfers RPE encoders: keep pretraining's scaled-q RPE term (docs/FIDELITY.md)
        model.backbone.update(rpe=encoder.rpe, rpe_options=dict(interp_variant=interp, scale_rpe_query=True))
    dim = arch["embed_dim"]
    model.neck.embed_dim = dim
    model.decode_head.update(in_channels=[dim] * 4, channels=recipe.head_channels, num_classes=num_classes)
    model.auxiliary_head.update(in_channels=dim, channels=recipe.aux_channels, num_classes=num_classes)
    model.test_cfg = dict(mode="slide", crop_size=crop, stride=(recipe.test_stride, recipe.test_stride))
    if world == 1:
        _replace_types(model, "SyncBN", "BN")
    _transform(cfg.train_dataloader.dataset.pipeline, "RandomResize").scale = recipe.resize_scale
    _transform(cfg.train_dataloader.dataset.pipeline, "RandomCrop").crop_size = crop
    for pipeline in _point_datasets(cfg, str(run.data_root), classes):
        _transform(pipeline, "Resize").scale = recipe.resize_scale
    # (transfer_run checks that iters exceeds warmup_iters)
    cfg.param_scheduler = [
        dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=recipe.warmup_iters),
        dict(type="PolyLR", eta_min=0.0, power=1.0, by_epoch=False, begin=recipe.warmup_iters, end=recipe.iters),
    ]


def _coco(cfg, run: TransferRun, encoder: Encoder, world: int) -> None:
    recipe: DetectionRecipe = run.recipe
    arch = {k: v for k, v in encoder.model.items() if k != "img_size"}
    size = (recipe.image_size, recipe.image_size)
    classes, num_classes = _classes(run)
    patch, dim, channels = arch["patch_size"], arch["embed_dim"], recipe.head_channels
    if patch % 4:
        raise ConfigError(f"COCO transfer needs a patch size divisible by 4 (pyramid strides p/4 .. 4p), got {patch}")
    strides = [patch // 4, patch // 2, patch, patch * 2, patch * 4]
    model = cfg.model
    model.data_preprocessor.batch_augments[0].size = size
    model.backbone.update(img_size=size[0], **arch, drop_path=recipe.drop_path, window_size=recipe.window_size,
                          global_blocks=_blocks(recipe.global_blocks), use_rel_pos=recipe.rel_pos,
                          checkpoint=str(encoder.path))
    model.neck.update(in_channels=dim, out_channels=channels)
    model.rpn_head.update(in_channels=channels, feat_channels=channels)
    model.rpn_head.anchor_generator.strides = strides
    roi = model.roi_head
    for extractor in (roi.bbox_roi_extractor, roi.mask_roi_extractor):
        extractor.update(out_channels=channels, featmap_strides=strides[:4])
    roi.bbox_head.update(in_channels=channels, conv_out_channels=channels, fc_out_channels=recipe.fc_channels,
                         num_classes=num_classes)
    roi.mask_head.update(in_channels=channels, conv_out_channels=channels, num_classes=num_classes)
    model.test_cfg.rcnn.score_thr = recipe.test_score_thr
    model.train_cfg.rcnn.sampler.num = recipe.roi_samples
    if recipe.rpn_proposals:  # fewer proposals than mmdet's 2000/1000 (the tiny images hold <= 5 objects)
        for stage in (model.train_cfg.rpn_proposal, model.test_cfg.rpn):
            stage.update(nms_pre=recipe.rpn_proposals, max_per_img=recipe.rpn_proposals)
    train = cfg.train_dataloader.dataset.pipeline
    _transform(train, "RandomResize").scale = size
    _transform(train, "RandomCrop").crop_size = size
    _transform(train, "Pad").size = size
    data_root = str(run.data_root) + "/"
    for pipeline in _point_datasets(cfg, data_root, classes):
        _transform(pipeline, "Resize").scale = size
        _transform(pipeline, "Pad").size = size
    for evaluator in ("val_evaluator", "test_evaluator"):
        if cfg.get(evaluator) is not None:
            cfg[evaluator].ann_file = data_root + "annotations/instances_val2017.json"
    cfg.param_scheduler = [
        dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=recipe.warmup_iters),
        dict(type="MultiStepLR", by_epoch=False, begin=0, end=recipe.iters, milestones=list(recipe.milestones),
             gamma=0.1),
    ]


TASK_SETUP: dict[str, Callable] = {"ade20k": _ade20k, "coco": _coco}


def build_config(run: TransferRun, encoder_path: str | Path, work_dir: str | Path,
                 *, cuda: bool | None = None, world: int | None = None):
    """The mmengine Config of one transfer run (nothing is built or trained)."""
    from mmengine.config import Config
    import torch

    encoder = read_encoder(encoder_path)
    check_transferable(encoder, run.task, rpe_supported=run.task == "ade20k")
    scale = encoder.metadata.get("scale")
    if scale not in (None, run.scale):
        raise CheckpointError(f"{encoder.path}: pretrained at the {scale!r} scale, but this run is {run.scale!r}")
    if not run.data_root.is_dir():
        raise DataError(f"{run.data_root}: {run.task} dataset not found (run `vitpe data synth`, "
                        f"or set data.real.{run.task})")
    cuda = torch.cuda.is_available() if cuda is None else cuda
    world = world_size() if world is None else world
    cfg = Config.fromfile(str(CONFIG_DIR / CONFIGS[run.task]), format_python_code=False)  # yapf costs seconds
    _set_common(cfg, run, Path(work_dir), cuda, world)
    TASK_SETUP[run.task](cfg, run, encoder, world)
    return cfg


# COCO summary keys whose -1 means "no ground truth at all"; the size breakdown (AP_s/m/l) is -1
# whenever the validation set has no object of that size, which is a valid answer
COCO_HEADLINE = tuple(f"coco/{kind}_mAP{suffix}" for kind in ("bbox", "segm") for suffix in ("", "_50", "_75"))


def metrics_from(run: TransferRun, evaluated: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluator's numbers under the project's flat keys (not recomputed).

    EvaluationError when the evaluator could not compute one: mmdet's CocoMetric returns no keys at
    all when no detection passed ``test_score_thr`` (it logs "results ... empty" and stops), mmseg's
    IoUMetric gives NaN when no pixel is labelled.
    """
    task = run.task
    if task == "coco" and not any(key.startswith("coco/bbox_") for key in evaluated):
        raise EvaluationError(f"no detections above test_score_thr={run.recipe.test_score_thr}; bbox AP cannot be "
                              "computed (undertrained model, or lower transfer.coco.test_score_thr)")
    missing = [key for key in METRIC_KEYS[task] if key not in evaluated]
    if missing:
        raise EvaluationError(f"{task}: the evaluator returned no {', '.join(missing)} "
                              f"(it returned: {', '.join(sorted(evaluated)) or 'nothing'})")
    out: dict[str, Any] = {}
    for theirs, ours in METRIC_KEYS[task].items():
        value = float(str(evaluated[theirs]))  # the rounded value as printed (mmseg: numpy float32)
        if not math.isfinite(value) or (theirs in COCO_HEADLINE and value < 0):
            raise EvaluationError(f"{task}: {theirs} is {value}: no ground truth to score against in the "
                                  "validation annotations")
        out[ours] = value
    out[f"{task}_status"] = "ok"
    return out


def run_transfer(run: TransferRun, encoder_path: str | Path, work_dir: str | Path, out: str | Path,
                 weights_out: str | Path | None = None, keep_state: bool = False, threads: int = 0) -> dict[str, Any]:
    """Fine-tune the encoder on ``run.task``, evaluate on the validation split, write the metrics JSON
    (and the fine-tuned model, its metadata the run's dependency record).

    Resumes from ``<work_dir>/state/last.pth`` when present (written by VitpeCheckpointHook, loaded
    with weights_only=True through hooks.load_training_state); the state is removed after a successful
    run unless ``keep_state``.
    ``threads`` > 0 caps torch's CPU threads (the tiny jobs run side by side on few cores, where
    oversubscribed OpenMP threads cost far more than they give).
    """
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    from vitpe.train.lock import LOCK_NAME, exclusive_lock

    work_dir = Path(work_dir)
    # one live transfer per work folder, as one trainer per training folder (rank 0 holds the lock; the
    # ranks are not set up yet, hence torchrun's RANK)
    with exclusive_lock(work_dir / "state" / LOCK_NAME, f"{work_dir} (a transfer work folder)",
                        enabled=os.environ.get("RANK", "0") == "0"):
        return _run_transfer(run, encoder_path, work_dir, out, weights_out, keep_state)


def _run_transfer(run: TransferRun, encoder_path: str | Path, work_dir: Path, out: str | Path,
                  weights_out: str | Path | None, keep_state: bool) -> dict[str, Any]:
    """run_transfer's body, under the work folder's lock."""
    from mmengine.dist import is_main_process
    from mmengine.runner import Runner
    from vitpe.io import write_json
    from vitpe.models.weights import save_tensors
    from vitpe.transfer.hooks import STATE_NAME, resume_uri, resumed_iteration

    cfg = build_config(run, encoder_path, work_dir)
    state = work_dir / "state" / STATE_NAME
    # mmengine keeps one Visualizer per name for the process (ManagerMixin) and a later Runner would reuse
    # its backends, writing into the earlier run's folder: each run its own name
    cfg.visualizer.name = f"{cfg.visualizer.name}:{work_dir}:{time.monotonic_ns()}"
    if state.is_file():
        cfg.load_from, cfg.resume = resume_uri(state), True  # weights_only=True whatever the environment
        cfg.visualizer.vis_backends[0].resume_step = resumed_iteration(state)
    runner = Runner.from_cfg(cfg)
    runner.train()
    evaluated = runner.test()
    # before anything is written: an evaluation without its metric leaves no output behind
    metrics = {**metrics_from(run, evaluated), "scale": run.scale, "experiment": run.name,
               f"{run.task}_iters": run.recipe.iters}
    if is_main_process():
        if weights_out is not None:
            model = getattr(runner.model, "module", runner.model)
            tensors = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            save_tensors(tensors, weights_out, dependency_record(run))
        write_json(out, metrics)
        if not keep_state:
            shutil.rmtree(work_dir / "state", ignore_errors=True)
    return metrics
