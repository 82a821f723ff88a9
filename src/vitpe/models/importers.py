"""Officially released checkpoints -> the project's weight files, every tensor accounted for.

Formats (the only layouts read; each is ``{"model": state_dict, <training state>}`` pickled by torch.save):

- ``deit``: timm/DeiT classifiers (DeiT main.py); timm keys as they are.
- ``mjp``: MJP's DeiT (Swin-style main.py). Its PE is an ``nn.Embedding`` ``pos_embed.weight`` [2 + N, D]:
  row 0 CLS, rows 1..N the patches, the last row the shared unknown row, here the table and
  ``pos_embed_unk``; the DAL head ``dlocr.layers.{0,2}`` (Linear-ReLU-Linear) becomes ``dal.mlp.{0,2}``.
- ``mae``: an MAE pretraining checkpoint or its encoder release (MAE main_pretrain.py, models_mae.py); the
  decoder and mask token are unused by design.
- ``mae-finetuned``: MAE's fine-tuned classifiers (models_vit.py with global pooling: ``fc_norm``, no ``norm``).
- ``adpe-abs`` / ``adpe-rel``: AdPE encoders (MAE-derived); ``adpe-rel`` adds iRPE's per-block
  ``attn.rpe_k.lookup_table_weight`` [1, head_dim, 50]. Decoder, mask token and adversary (any key
  naming ``adv`` or ``delta``) are unused by design.

The architecture is read from the tensors (width, depth, MLP ratio, patch size; the image size from
the PE length; heads from the releases of that width, or the iRPE table) or given, and written as the
weights metadata the project's loaders compare, so an imported file loads (strictly) wherever a trained
one does: ``model.safetensors`` for classifiers, ``encoder.safetensors`` for pretrained encoders.
Loading never runs code from the file: weights only, plus argparse.Namespace (the saved ``args``) and,
for MJP's yacs ``config``, a stand-in that reads it as an OrderedDict.
"""
from __future__ import annotations

import argparse
import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.serialization import safe_globals

from vitpe.errors import CheckpointError
from vitpe.models.pos_embed import sincos_2d_table
from vitpe.models.released import ARCHS, DEIT, MAE
from vitpe.models.spec import RPE_LOOKUPS, RPEConfig, ViTSpec
from vitpe.models.vit import build_vit
from vitpe.models.weights import WEIGHTS_NAME, _listing, _to_timm_key, key_problems, load_weights_only, save_tensors

ENCODER_NAME = "encoder.safetensors"  # the name pretraining publishes encoders under (vitpe.train.pretrain)



class _CfgNode:
    """Stand-in for yacs.config.CfgNode. A CfgNode pickles as a dict subclass (NEWOBJ, SETITEMS, BUILD
    of its attributes); the weights-only unpickler sets items only on dict/OrderedDict and builds
    attributes only on allow-listed types or OrderedDict, so it is read as an OrderedDict."""

    def __new__(cls, *args: Any) -> OrderedDict:  # type: ignore[misc]
        return OrderedDict()


CFG_NODE = (_CfgNode, "yacs.config.CfgNode")


def _pretraining_only(key: str) -> bool:
    return key.startswith(("decoder", "mask_token"))


def _adpe_pretraining_only(key: str) -> bool:
    return _pretraining_only(key) or "adv" in key or "delta" in key


@dataclass(frozen=True)
class Format:
    name: str
    archs: tuple[str, ...]  # its releases: the number of heads of a width comes from them
    pos_embed: str  # the project's PE kind
    encoder: bool = False  # a pretrained encoder (no head) rather than a classifier
    global_pool: bool = False
    rpe: bool = False
    method: str | None = None  # an encoder's pretraining method (mae | mae_plus)
    unused: Callable[[str], bool] = lambda key: False  # model keys unused by design
    training_state: tuple[str, ...] = ("optimizer", "lr_scheduler", "epoch", "scaler", "args")
    allowed: tuple[Any, ...] = (argparse.Namespace,)  # what the weights-only unpickler may build


FORMATS = {fmt.name: fmt for fmt in (
    Format("deit", DEIT, "learnable", training_state=("optimizer", "lr_scheduler", "epoch", "model_ema",
                                                        "scaler", "args")),
    Format("mjp", DEIT, "mjp", training_state=("optimizer", "lr_scheduler", "max_accuracy", "epoch", "config",
                                               "amp", "scaler"), allowed=(argparse.Namespace, CFG_NODE)),
    Format("mae", MAE, "sincos", encoder=True, method="mae", unused=_pretraining_only),
    Format("mae-finetuned", MAE, "learnable", global_pool=True),
    Format("adpe-abs", MAE, "sincos", encoder=True, method="mae_plus", unused=_adpe_pretraining_only),
    Format("adpe-rel", MAE, "sincos", encoder=True, method="mae_plus", rpe=True, unused=_adpe_pretraining_only),
)}

# MJP's DAL head (ssl_mjp/dlocr.py) -> the project's (vitpe.mjp.dal attaches it as ``dal``)
_MJP_DAL = {f"dlocr.layers.{i}.{p}": f"dal.mlp.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}


@dataclass(frozen=True)
class ImportReport:
    path: Path  # the file written
    spec: ViTSpec
    loaded: int  # source tensors used
    unused: tuple[str, ...]  # source tensors unused by design


def _problem(path: Path, fmt: Format, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: not a checkpoint of the {fmt.name} layout; {what}")


def _read(path: Path, fmt: Format) -> dict[str, torch.Tensor]:
    with safe_globals(list(fmt.allowed)):
        ckpt = load_weights_only(path, f"{fmt.name} checkpoint")
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping):
        raise _problem(path, fmt, "expected a dict holding the weights under 'model'")
    extra = set(ckpt) - {"model", *fmt.training_state}
    if extra:
        raise _problem(path, fmt, f"unexpected top-level entries: {_listing(map(str, extra))} (known: model, "
                                  f"{', '.join(fmt.training_state)})")
    state = dict(ckpt["model"])
    odd = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise _problem(path, fmt, f"non-tensor weights: {_listing(map(str, odd))}")
    return state


def _infer_spec(state: Mapping[str, torch.Tensor], fmt: Format, path: Path, arch: str | None,
                num_heads: int | None) -> ViTSpec:
    # either PE layout gives the grid, so a file of the other layout gets the full key listing
    pe_key = "pos_embed.weight" if "pos_embed.weight" in state else "pos_embed"
    ranks = {"patch_embed.proj.weight": 4, pe_key: 2 if pe_key == "pos_embed.weight" else 3,
             "blocks.0.mlp.fc1.weight": 2}
    if fmt.rpe:
        ranks["blocks.0.attn.rpe_k.lookup_table_weight"] = 3
    absent = [k for k in ranks if k not in state]
    if absent:
        raise _problem(path, fmt, f"missing keys: {_listing(absent)}")
    odd = [f"{k} {tuple(state[k].shape)}" for k, rank in ranks.items() if state[k].ndim != rank]
    if odd:
        raise _problem(path, fmt, f"tensors of another rank: {_listing(odd)}")
    dim, _, patch, _ = state["patch_embed.proj.weight"].shape
    # MJP's nn.Embedding [2 + N, D] holds CLS and the unknown row, timm's [1, 1 + N, D] CLS
    rows = state[pe_key].shape[0] - 2 if pe_key == "pos_embed.weight" else state[pe_key].shape[1] - 1
    grid = math.isqrt(max(rows, 0))
    if grid * grid != rows or grid == 0:
        raise _problem(path, fmt, f"{pe_key} has {rows} patch rows, not a square grid")
    depth, mlp_ratio = 1 + max(int(k.split(".")[1]) for k in state if k.split(".")[0] == "blocks" and
                               k.split(".")[1].isdigit()), state["blocks.0.mlp.fc1.weight"].shape[0] / dim
    if arch is not None:  # the shapes it implies are then compared with the tensors
        dim, depth, heads = ARCHS[arch]
        num_heads, mlp_ratio = num_heads or heads, 4.0
    elif num_heads is None and fmt.rpe:  # the iRPE table is [1, head_dim, buckets]
        num_heads = dim // max(state["blocks.0.attn.rpe_k.lookup_table_weight"].shape[1], 1)
    elif num_heads is None:
        widths = {ARCHS[a][0]: ARCHS[a][2] for a in fmt.archs}
        if dim not in widths:
            releases = ", ".join(f"{a} {ARCHS[a][0]}" for a in fmt.archs)
            raise _problem(path, fmt, f"width {dim} is none of its releases' ({releases}); give the number of heads")
        num_heads = widths[dim]
    if num_heads < 1 or dim % num_heads:
        raise _problem(path, fmt, f"width {dim} does not split into {num_heads} heads")
    return ViTSpec(grid * patch, patch, dim, depth, num_heads, mlp_ratio)


def _expected(fmt: Format, spec: ViTSpec, num_classes: int, rpe: RPEConfig | None) -> dict[str, tuple[int, ...]]:
    """The source keys and shapes the format has for ``spec`` (decided on the meta device: no memory)."""
    with torch.device("meta"):
        vit = build_vit(spec, num_classes, "learnable" if fmt.pos_embed == "mjp" else fmt.pos_embed, 0.0,
                        rpe=rpe, global_pool=fmt.global_pool)
    shapes = {_to_timm_key(k): tuple(v.shape) for k, v in vit.state_dict().items()}
    if fmt.name == "mjp":
        dim = spec.embed_dim
        shapes["pos_embed.weight"] = (shapes.pop("pos_embed")[1] + 1, dim)
        shapes.update({"dlocr.layers.0.weight": (dim, dim), "dlocr.layers.0.bias": (dim,),
                       "dlocr.layers.2.weight": (2, dim), "dlocr.layers.2.bias": (2,)})
    return shapes


def _to_project(fmt: Format, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if fmt.name != "mjp":
        return state
    out = {_MJP_DAL.get(k, k): v for k, v in state.items() if k != "pos_embed.weight"}
    table = state["pos_embed.weight"]  # clones: safetensors refuses tensors that share storage
    out["pos_embed"] = table[:-1].unsqueeze(0).clone()
    out["pos_embed_unk"] = table[-1:].unsqueeze(0).clone()
    return out


def _described(spec: ViTSpec) -> str:
    return (f"width {spec.embed_dim}, depth {spec.depth}, {spec.num_heads} heads, MLP ratio {spec.mlp_ratio:g}, "
            f"patch {spec.patch_size}, {spec.img_size} px")


def _check_model(path: Path, spec: ViTSpec, model: ViTSpec, compare_size: bool) -> None:
    fields_ = [f for f in ViTSpec.__dataclass_fields__ if compare_size or f != "img_size"]
    if any(getattr(spec, f) != getattr(model, f) for f in fields_):
        raise CheckpointError(f"{path}: holds a ViT of {_described(spec)}; the run needs {_described(model)} "
                              "(released weights fit the smoke and paper scales' models; `arch` picks a release)")


def _head_of(path: Path, tensors: dict[str, torch.Tensor], classes: list[str]) -> dict[str, torch.Tensor]:
    """The classifier with only the head rows of ``classes`` (ImageNet-1k wnids): the logits of a dataset
    of some ImageNet classes (the mini set), in its class order; all 1000 on ImageNet itself."""
    from timm.data import ImageNetInfo

    wnids = list(ImageNetInfo().label_names())
    rows = tensors["head.weight"].shape[0]
    if rows != len(wnids):
        raise CheckpointError(f"{path}: a head of {rows} classes, not ImageNet-1k's {len(wnids)}: the dataset's "
                              "classes cannot be picked from it")
    index = {wnid: i for i, wnid in enumerate(wnids)}
    foreign = [c for c in classes if c not in index]
    if foreign:
        raise CheckpointError(f"class folder {foreign[0]!r} is no ImageNet-1k wnid: a released classifier "
                              "predicts ImageNet classes (run it at the smoke or paper scale)")
    keep = torch.tensor([index[c] for c in classes])
    return {**tensors, "head.weight": tensors["head.weight"][keep].clone(),
            "head.bias": tensors["head.bias"][keep].clone()}


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def import_checkpoint(fmt_name: str, checkpoint: str | Path, out_dir: str | Path, *, arch: str | None = None,
                      num_heads: int | None = None, rpe: str | None = None, model: ViTSpec | None = None,
                      classes: list[str] | None = None) -> ImportReport:
    """Write ``checkpoint`` (a released file of format ``fmt_name``) as OUT_DIR/model.safetensors or
    OUT_DIR/encoder.safetensors; CheckpointError (one line, nothing written) if it does not fit.

    ``arch`` (a name of ARCHS) / ``num_heads``: the architecture it must have / its number of heads
    (default: read from the tensors); ``rpe``: adpe-rel's iRPE lookup, irpe (default) or irpe_interp.
    ``model``: the run's architecture it must match (an encoder's input size may differ: fine-tuning
    resizes its PE); ``classes``: a classifier's head cut to these ImageNet-1k wnids, in this order.
    """
    if fmt_name not in FORMATS:
        raise CheckpointError(f"unknown checkpoint format {fmt_name!r} (known: {', '.join(FORMATS)})")
    fmt, path = FORMATS[fmt_name], Path(checkpoint)
    if arch is not None and arch not in ARCHS:
        raise CheckpointError(f"unknown architecture {arch!r} (known: {', '.join(ARCHS)})")
    if rpe is not None and not fmt.rpe:
        raise CheckpointError(f"an RPE lookup ({rpe!r}) applies to adpe-rel only, not {fmt.name}")
    rpe_kind = (rpe or "irpe") if fmt.rpe else None
    if rpe_kind is not None and rpe_kind not in RPE_LOOKUPS:
        raise CheckpointError(f"unknown rpe {rpe_kind!r} (known: {', '.join(RPE_LOOKUPS)})")
    rpe_config = RPEConfig(lookup=RPE_LOOKUPS[rpe_kind]) if rpe_kind else None
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")

    state = _read(path, fmt)
    spec = _infer_spec(state, fmt, path, arch, num_heads)
    num_classes = 0 if fmt.encoder else (state["head.weight"].shape[0] if "head.weight" in state else 1000)
    unused = sorted(k for k in state if fmt.unused(k))
    problems = key_problems(state, _expected(fmt, spec, num_classes, rpe_config), unused=unused, target="expected")
    if problems:
        raise CheckpointError(f"{path}: does not fit the {fmt.name} layout of a ViT of width {spec.embed_dim}, "
                              f"depth {spec.depth}, {spec.num_heads} heads; " + "; ".join(problems))
    if model is not None:
        _check_model(path, spec, model, compare_size=not fmt.encoder)
    tensors = _to_project(fmt, {k: v for k, v in state.items() if k not in unused})
    if classes is not None and not fmt.encoder:
        tensors, num_classes = _head_of(path, tensors, classes), len(classes)
    if fmt.pos_embed == "sincos":  # the metadata says so: the fine-tune and transfer code rely on it
        gap = float((tensors["pos_embed"].float() - sincos_2d_table(spec.grid_size, spec.embed_dim)).abs().max())
        if gap > 1e-5:
            raise _problem(path, fmt, f"pos_embed is not MAE's fixed 2D sin-cos table (largest difference {gap:.3g})")

    # the keys the loaders compare (vitpe.runs.ARCHITECTURE_KEYS), as a trained file records them
    metadata: dict[str, Any] = {
        "imported": {"format": fmt.name, "source": path.name, "sha256": _sha256(path), "unused": unused},
        "model": asdict(spec), "pos_embed": fmt.pos_embed}
    if fmt.encoder:
        metadata.update(method=fmt.method, rpe=rpe_kind, rpe_config=asdict(rpe_config) if rpe_config else None)
    else:
        metadata.update(num_classes=num_classes, protocol="finetune" if fmt.global_pool else "supervised",
                        rpe=None, global_pool=fmt.global_pool, first_block="standard")
    out = Path(out_dir) / (ENCODER_NAME if fmt.encoder else WEIGHTS_NAME)
    save_tensors(tensors, out, metadata)
    return ImportReport(out, spec, len(state) - len(unused), tuple(unused))
