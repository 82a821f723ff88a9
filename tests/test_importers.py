"""Importing the released checkpoints (timm/DeiT, MJP, MAE, AdPE): strict key mapping, the project's loaders
taking the imported files, logits identical to the reference forward, and one-line refusals.

Fixtures are built in each official layout from timm's constructors with random weights (nothing is
downloaded): tiny ViTs everywhere, the real shapes in the few paper_size tests.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT

from conftest import ROOT
from vitpe.cli import main
from vitpe.config import load_params
from vitpe.errors import CheckpointError
from vitpe.models.importers import ARCHS, FORMATS, import_checkpoint
from vitpe.models.spec import ViTSpec
from vitpe.models.vit import build_vit
from vitpe.models.weights import load_weights, read_metadata, read_weights
from vitpe.runs import encoder_run, supervised_run
from vitpe.models.released import CLASSIFIER_FORMATS, ENCODER_FORMATS, FORMAT_NAMES

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
TINY_SPEC = ViTSpec(**TINY, mlp_ratio=4.0)
CLASSES = 10
DEIT_S = ViTSpec(224, 16, 384, 12, 6, 4.0)
VIT_B = ViTSpec(224, 16, 768, 12, 12, 4.0)


@pytest.fixture(scope="module")
def params() -> dict:
    return load_params(ROOT / "params.yaml")


def _randomize(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for every tensor of ``model`` (loaded into it), as a plain state dict."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        noise = torch.randn(value.shape, generator=g)
        state[key] = 1 + 0.1 * noise if "norm" in key and key.endswith("weight") else 0.05 * noise
    model.load_state_dict(state)
    return state


def _timm(spec: ViTSpec = TINY_SPEC, num_classes: int = CLASSES, **kw) -> TimmViT:
    return TimmViT(img_size=spec.img_size, patch_size=spec.patch_size, embed_dim=spec.embed_dim, depth=spec.depth,
                   num_heads=spec.num_heads, mlp_ratio=spec.mlp_ratio, num_classes=num_classes, **kw).eval()


def mae_sincos(grid: int, dim: int) -> torch.Tensor:
    """MAE util/pos_embed.py get_2d_sincos_pos_embed(dim, grid, cls_token=True), written out in NumPy."""
    def one_axis(pos: np.ndarray, d: int) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    coords = np.arange(grid, dtype=np.float32)
    w, h = np.meshgrid(coords, coords)  # MAE: w goes first
    table = np.concatenate([one_axis(w, dim // 2), one_axis(h, dim // 2)], axis=1)
    return torch.from_numpy(np.concatenate([np.zeros([1, dim]), table])).float().unsqueeze(0)


def _images(spec: ViTSpec, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, spec.img_size, spec.img_size, generator=torch.Generator().manual_seed(1))


def _save(path: Path, model: dict, **training_state) -> Path:
    torch.save({"model": model, **training_state}, path)
    return path


@pytest.fixture
def yacs_cfgnode(monkeypatch: pytest.MonkeyPatch) -> type:
    """yacs.config.CfgNode as it pickles (a dict subclass with four bookkeeping attributes), importable
    under its real name while the test runs (yacs itself is not installed)."""
    package, module = types.ModuleType("yacs"), types.ModuleType("yacs.config")

    class CfgNode(dict):
        def __init__(self, init: dict | None = None) -> None:
            super().__init__(init or {})
            self.__dict__.update({"__immutable__": True, "__deprecated_keys__": set(), "__renamed_keys__": {},
                                  "__new_allowed__": False})

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    module.CfgNode, package.config = CfgNode, module
    monkeypatch.setitem(sys.modules, "yacs", package)
    monkeypatch.setitem(sys.modules, "yacs.config", module)
    return CfgNode


# --- the official layouts --------------------------------------------------------------------------

def deit_layout(spec: ViTSpec = TINY_SPEC, num_classes: int = CLASSES) -> tuple[TimmViT, dict]:
    reference = _timm(spec, num_classes)
    return reference, _randomize(reference)


def mjp_layout(spec: ViTSpec = TINY_SPEC, num_classes: int = CLASSES) -> tuple[TimmViT, dict]:
    """MJP's state dict: nn.Embedding PE with the unknown row last, and the DAL head ``dlocr``; the
    reference is timm's ViT with the first 1 + N rows as pos_embed (MJP's forward without shuffling)."""
    reference, state = deit_layout(spec, num_classes)
    g = torch.Generator().manual_seed(2)
    dim = spec.embed_dim
    state["pos_embed.weight"] = torch.cat([state.pop("pos_embed")[0], torch.randn(1, dim, generator=g)])
    state.update({"dlocr.layers.0.weight": torch.randn(dim, dim, generator=g), "dlocr.layers.0.bias": torch.randn(dim),
                  "dlocr.layers.2.weight": torch.randn(2, dim, generator=g), "dlocr.layers.2.bias": torch.randn(2)})
    return reference, state


def mae_finetuned_layout(spec: ViTSpec = TINY_SPEC, num_classes: int = CLASSES) -> tuple[TimmViT, dict]:
    """MAE models_vit.py with global pooling = timm's ViT with global_pool='avg' and fc_norm."""
    reference = _timm(spec, num_classes, global_pool="avg", fc_norm=True)
    return reference, _randomize(reference)


def encoder_layout(spec: ViTSpec = TINY_SPEC, rpe: bool = False, adpe: bool = False) -> tuple[TimmViT, dict]:
    """An MAE/AdPE pretraining state dict: the encoder with MAE's sin-cos PE, plus the pretraining-only
    tensors (decoder, mask token; AdPE's adversary; iRPE tables in the RPE variant)."""
    reference = _timm(spec, 0)
    state = _randomize(reference)
    state["pos_embed"] = mae_sincos(spec.grid_size, spec.embed_dim)
    reference.load_state_dict(state)
    g = torch.Generator().manual_seed(3)
    head_dim = spec.embed_dim // spec.num_heads
    state.update({"mask_token": torch.randn(1, 1, spec.embed_dim, generator=g),
                  "decoder_embed.weight": torch.randn(16, spec.embed_dim, generator=g),
                  "decoder_pos_embed": torch.zeros(1, 1 + spec.num_patches, 16),
                  "decoder_blocks.0.norm1.weight": torch.ones(16), "decoder_norm.weight": torch.ones(16),
                  "decoder_pred.weight": torch.randn(spec.patch_size ** 2 * 3, 16, generator=g)})
    if adpe:
        state["adv_delta"] = torch.randn(1, 1, spec.embed_dim, generator=g)
    if rpe:
        for i in range(spec.depth):
            state[f"blocks.{i}.attn.rpe_k.lookup_table_weight"] = torch.randn(1, head_dim, 50, generator=g)
            state[f"blocks.{i}.attn.rpe_k.delta"] = torch.randn(2, generator=g)
        state["decoder_blocks.0.attn.rpe_k.lookup_table_weight"] = torch.randn(1, 8, 50, generator=g)
    return reference, state


MAE_ARGS = argparse.Namespace(model="mae_vit_base_patch16", mask_ratio=0.75, norm_pix_loss=True, epochs=1600)


def _metadata_of(path: Path, source: Path, fmt: str) -> dict:
    meta = read_metadata(path)
    assert meta["imported"]["format"] == fmt and meta["imported"]["source"] == source.name
    assert meta["imported"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    return meta


# --- classifiers: deit, mjp, mae-finetuned -----------------------------------------------------------

def test_deit_imports_and_the_evaluation_loader_gives_timms_logits(params, tmp_path):
    from vitpe.evaluate.common import load_trained

    reference, state = deit_layout()
    source = _save(tmp_path / "deit_tiny.pth", state, epoch=299, args=argparse.Namespace(model="deit"))
    report = import_checkpoint("deit", source, tmp_path / "out", num_heads=2)
    assert report.path == tmp_path / "out" / "model.safetensors" and report.spec == TINY_SPEC
    assert (report.loaded, report.unused) == (len(state), ())
    meta = _metadata_of(report.path, source, "deit")
    assert meta["pos_embed"] == "learnable" and meta["num_classes"] == CLASSES and meta["protocol"] == "supervised"

    run = dataclasses.replace(supervised_run(params, "deit_s"), model=TINY_SPEC, num_classes=CLASSES)
    model, _ = load_trained(run, report.path, "cpu")  # strict keys, architecture checked against the metadata
    x = _images(TINY_SPEC)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("config", ["cfgnode", "namespace"])
def test_mjp_imports_unknown_row_and_dal_and_gives_the_plain_vit_logits(params, tmp_path, config, request):
    from vitpe.evaluate.common import load_trained

    reference, state = mjp_layout()
    if config == "cfgnode":  # the Swin-style code saves its yacs config
        cfg_node = request.getfixturevalue("yacs_cfgnode")
        cfg = cfg_node({"MODEL": cfg_node({"TYPE": "deit", "DROP_PATH_RATE": 0.1}), "TAGS": ("mjp",)})
    else:
        cfg = argparse.Namespace(use_unk_pos=True, dlocr_type="nonlinear")
    optimizer = {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-3, "params": [0]}]}
    source = _save(tmp_path / "mjp_deit_small.pth", state, optimizer=optimizer, lr_scheduler={"last_epoch": 299},
                   max_accuracy=80.5, epoch=299, config=cfg)
    report = import_checkpoint("mjp", source, tmp_path / "out", num_heads=2)
    assert report.unused == () and report.loaded == len(state)
    assert _metadata_of(report.path, source, "mjp")["pos_embed"] == "mjp"

    run = dataclasses.replace(supervised_run(params, "mjp"), model=TINY_SPEC, num_classes=CLASSES)
    model, _ = load_trained(run, report.path, "cpu")
    table = state["pos_embed.weight"]
    assert torch.equal(model.pe.table[0], table[:-1]) and torch.equal(model.pe.unk[0, 0], table[-1])
    assert torch.equal(model.dal.mlp[0].weight, state["dlocr.layers.0.weight"])
    assert torch.equal(model.dal.mlp[2].bias, state["dlocr.layers.2.bias"])
    reference.load_state_dict({**{k: v for k, v in state.items() if not k.startswith(("pos_embed", "dlocr"))},
                               "pos_embed": table[:-1].unsqueeze(0)})
    x = _images(TINY_SPEC)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-6, rtol=0)


def test_mae_finetuned_imports_as_a_global_pool_finetune_classifier(params, tmp_path):
    from vitpe.evaluate.common import load_trained

    reference, state = mae_finetuned_layout()
    source = _save(tmp_path / "mae_finetuned_vit_tiny.pth", state, args=MAE_ARGS)
    report = import_checkpoint("mae-finetuned", source, tmp_path / "out", num_heads=2)
    meta = _metadata_of(report.path, source, "mae-finetuned")
    assert (meta["protocol"], meta["global_pool"], meta["pos_embed"]) == ("finetune", True, "learnable")

    run = dataclasses.replace(encoder_run(params, "mae", "finetune"), model=TINY_SPEC, num_classes=CLASSES)
    model, _ = load_trained(run, report.path, "cpu")
    x = _images(TINY_SPEC)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-6, rtol=0)


# --- pretrained encoders: mae, adpe-abs, adpe-rel ------------------------------------------------------

def _check_encoder(params, path: Path, experiment: str, spec: ViTSpec, reference: TimmViT | None) -> None:
    """The fine-tune and transfer loaders take it; without iRPE its features equal timm's."""
    from vitpe.train.finetune import load_encoder
    from vitpe.train.supervised import build_model
    from vitpe.transfer.convert import read_encoder

    run = dataclasses.replace(encoder_run(params, experiment, "finetune"), model=spec, num_classes=CLASSES)
    load_encoder(build_model(run), path)  # strict: every key but the fresh head
    assert read_encoder(path).model == dataclasses.asdict(spec)
    if reference is not None:
        encoder = build_vit(spec, 0, "sincos", 0.0)
        load_weights(encoder, path)  # strict
        x = _images(spec)
        with torch.no_grad():
            torch.testing.assert_close(encoder.forward_features(x), reference.forward_features(x), atol=1e-6, rtol=0)


def test_mae_pretraining_checkpoint_imports_its_encoder(params, tmp_path):
    reference, state = encoder_layout()
    source = _save(tmp_path / "mae_pretrain.pth", state, optimizer={"state": {}, "param_groups": []}, epoch=1599,
                   scaler={"scale": 65536.0}, args=MAE_ARGS)
    report = import_checkpoint("mae", source, tmp_path / "out", num_heads=2)
    assert report.path.name == "encoder.safetensors" and report.spec == TINY_SPEC
    assert set(report.unused) == {k for k in state if k.startswith(("decoder", "mask_token"))}
    meta = _metadata_of(report.path, source, "mae")
    assert (meta["method"], meta["pos_embed"], meta["rpe"]) == ("mae", "sincos", None)
    assert set(read_weights(report.path)) == set(reference.state_dict())
    _check_encoder(params, report.path, "mae", TINY_SPEC, reference)


@pytest.mark.parametrize("fmt, rpe, experiment", [("adpe-abs", None, "adpe_abs_embedding"),
                                                  ("adpe-rel", "irpe", "adpe_rel_embedding"),
                                                  ("adpe-rel", "irpe_interp", "adpe_rel_coordinate")])
def test_adpe_encoders_import_without_their_adversary(params, tmp_path, fmt, rpe, experiment):
    reference, state = encoder_layout(rpe=rpe is not None, adpe=True)
    source = _save(tmp_path / f"{fmt}.pth", state, args=MAE_ARGS)
    # the RPE variant reads its heads from the iRPE table ([1, head_dim, 50]); the absolute one is told
    heads = None if rpe else 2
    report = import_checkpoint(fmt, source, tmp_path / "out", num_heads=heads, rpe=rpe)
    assert report.spec == TINY_SPEC
    assert set(report.unused) == {k for k in state if k.startswith(("decoder", "mask_token")) or "adv" in k
                                  or "delta" in k}
    meta = _metadata_of(report.path, source, fmt)
    assert (meta["method"], meta["rpe"]) == ("mae_plus", rpe)
    imported = read_weights(report.path)
    assert all(torch.equal(imported[k], state[k]) for k in imported)
    assert rpe is None or meta["rpe_config"]["lookup"] == {"irpe": "discrete", "irpe_interp": "interp"}[rpe]
    _check_encoder(params, report.path, experiment, TINY_SPEC, None if rpe else reference)


# --- refusals: one line naming the file and the keys, nothing written -------------------------------

def _refused(tmp_path: Path, fmt: str, source: Path, match: str, **kw) -> str:
    out = tmp_path / "refused"
    with pytest.raises(CheckpointError, match=match) as info:
        import_checkpoint(fmt, source, out, **kw)
    message = str(info.value)
    assert "\n" not in message and source.name in message
    assert not out.exists()
    return message


def test_refuses_a_checkpoint_of_another_layout_or_architecture(tmp_path):
    _, deit = deit_layout()
    deit_file = _save(tmp_path / "deit.pth", deit)
    message = _refused(tmp_path, "mjp", deit_file, "missing keys: ", num_heads=2)
    assert "dlocr.layers.0.bias" in message and "unexpected keys: pos_embed" in message
    _, finetuned = mae_finetuned_layout()
    message = _refused(tmp_path, "deit", _save(tmp_path / "mae_ft.pth", finetuned), "missing keys: norm.bias",
                       num_heads=2)
    assert "unexpected keys: fc_norm.bias, fc_norm.weight" in message
    _refused(tmp_path, "deit", deit_file, "width 32 is none of its releases' .*give the number of heads")
    # a given architecture: a tiny checkpoint is not DeiT-S
    message = _refused(tmp_path, "deit", deit_file, r"shape mismatches: .*vs expected", arch="deit-small")
    assert "missing keys: blocks.10." in message
    _refused(tmp_path, "deit", deit_file, "width 32 does not split into 3 heads", num_heads=3)
    flat = _save(tmp_path / "flat_pe.pth", {**deit, "pos_embed": deit["pos_embed"][0]})
    _refused(tmp_path, "deit", flat, r"tensors of another rank: pos_embed \(17, 32\)", num_heads=2)
    # the decoder is pretraining-only for MAE, but a classifier has none
    _, encoder = encoder_layout()
    _refused(tmp_path, "mae-finetuned", _save(tmp_path / "mae.pth", encoder), "unexpected keys: decoder_",
             num_heads=2)


@pytest.mark.parametrize("change, match", [
    (lambda s: s.update({"blocks.0.attn.extra": torch.zeros(1)}), r"unexpected keys: blocks\.0\.attn\.extra$"),
    (lambda s: s.update({"blocks.1.attn.qkv.weight": torch.zeros(96, 16)}),
     r"shape mismatches: blocks\.1\.attn\.qkv\.weight \(96, 16\) vs expected \(96, 32\)"),
    (lambda s: s.pop("norm.weight"), r"missing keys: norm\.weight$"),
    (lambda s: s.update({"blocks.3.norm1.weight": torch.ones(32)}), r"missing keys: blocks\.2\.attn"),
], ids=["unexpected", "misshapen", "missing", "a_block_too_many"])
def test_refuses_unexpected_missing_or_misshapen_keys(tmp_path, change, match):
    _, state = deit_layout()
    change(state)
    _refused(tmp_path, "deit", _save(tmp_path / "deit.pth", state), match, num_heads=2)


def test_refuses_an_encoder_whose_pos_embed_is_not_maes_sincos(tmp_path):
    _, state = encoder_layout()
    state["pos_embed"] = state["pos_embed"] + 0.01
    _refused(tmp_path, "mae", _save(tmp_path / "mae.pth", state), "not MAE's fixed 2D sin-cos table", num_heads=2)


class _Weights(OrderedDict):
    """A state-dict class the unpickler does not know."""


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_refuses_pickles_with_other_objects_without_running_them(tmp_path, yacs_cfgnode):
    _, state = deit_layout()
    _refused(tmp_path, "deit", _save(tmp_path / "subclass.pth", _Weights(state)), "refused without running them",
             num_heads=2)
    marker = tmp_path / "ran"
    _refused(tmp_path, "deit", _save(tmp_path / "system.pth", state, args=_RunsACommand(marker)),
             "refused without running them", num_heads=2)
    assert not marker.exists()
    # the yacs stand-in is MJP's only: an MAE checkpoint holding a CfgNode is refused
    _, encoder = encoder_layout()
    _refused(tmp_path, "mae", _save(tmp_path / "cfg.pth", encoder, args=yacs_cfgnode({"A": 1})),
             "refused without running them", num_heads=2)
    _refused(tmp_path, "deit", _save(tmp_path / "extra.pth", state, notes=[1]), "unexpected top-level entries: notes",
             num_heads=2)


# --- the command -------------------------------------------------------------------------------------

def test_the_torch_free_format_lists_are_the_importers():
    assert FORMAT_NAMES == tuple(FORMATS)
    assert set(ENCODER_FORMATS) == {name for name, fmt in FORMATS.items() if fmt.encoder}
    assert set(CLASSIFIER_FORMATS) == {name for name, fmt in FORMATS.items() if not fmt.encoder}


def test_cli_imports_and_refuses_with_one_error_line(tmp_path, capsys):
    _, state = mjp_layout()
    source = _save(tmp_path / "mjp.pth", state, epoch=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-m", "vitpe", "train", "import-weights", "--format", "mjp",
                           "--checkpoint", str(source), "--out", str(tmp_path / "out"), "--num-heads", "2"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {tmp_path / 'out' / 'model.safetensors'} (mjp: width 32, depth 2, 2 heads")
    code = main(["train", "import-weights", "--format", "deit", "--checkpoint", str(source),
                 "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "mjp.pth" in err
    assert not (tmp_path / "bad").exists()


# --- the real shapes -----------------------------------------------------------------------------------

@pytest.mark.paper_size
def test_paper_size_deit_small_imports_in_both_layouts(params, tmp_path):
    from vitpe.evaluate.common import load_trained

    reference = timm.create_model("deit_small_patch16_224", pretrained=False).eval()
    state = _randomize(reference)
    x = _images(DEIT_S, 1)
    with torch.no_grad():
        expected = reference(x)
    mjp_state = {k: v for k, v in state.items() if k != "pos_embed"}
    mjp_state.update({"pos_embed.weight": torch.cat([state["pos_embed"][0], torch.randn(1, 384)]),
                      "dlocr.layers.0.weight": torch.randn(384, 384), "dlocr.layers.0.bias": torch.zeros(384),
                      "dlocr.layers.2.weight": torch.randn(2, 384), "dlocr.layers.2.bias": torch.zeros(2)})
    for fmt, source_state, experiment in (("deit", state, "deit_s"), ("mjp", mjp_state, "mjp")):
        source = _save(tmp_path / f"{fmt}.pth", source_state)
        report = import_checkpoint(fmt, source, tmp_path / fmt, arch="deit-small")
        assert report.spec == DEIT_S and report.loaded == len(source_state)
        run = dataclasses.replace(supervised_run(params, experiment), model=DEIT_S, num_classes=1000)
        model, _ = load_trained(run, report.path, "cpu")
        with torch.no_grad():
            torch.testing.assert_close(model(x), expected, atol=1e-6, rtol=0)


@pytest.mark.paper_size
def test_paper_size_mae_finetuned_vit_b_imports_and_is_no_deit_small(params, tmp_path):
    from vitpe.evaluate.common import load_trained

    reference = timm.create_model("vit_base_patch16_224", pretrained=False, global_pool="avg", fc_norm=True).eval()
    state = _randomize(reference)
    source = _save(tmp_path / "mae_finetuned_vit_base.pth", state, args=MAE_ARGS)
    report = import_checkpoint("mae-finetuned", source, tmp_path / "out")
    assert report.spec == VIT_B
    run = dataclasses.replace(encoder_run(params, "mae", "finetune"), model=VIT_B, num_classes=1000)
    model, _ = load_trained(run, report.path, "cpu")
    x = _images(VIT_B, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-6, rtol=0)
    state["norm.weight"], state["norm.bias"] = state.pop("fc_norm.weight"), state.pop("fc_norm.bias")
    vit_b = _save(tmp_path / "vit_base.pth", state)
    message = _refused(tmp_path, "deit", vit_b, r"shape mismatches: .*\(2304, 768\) vs expected \(1152, 384\)",
                       arch="deit-small")
    assert "width 384, depth 12, 6 heads" in message
    _refused(tmp_path, "mjp", vit_b, r"missing keys: dlocr\..*unexpected keys: pos_embed$")


@pytest.mark.paper_size
def test_paper_size_vit_b_encoders_import_for_finetuning(params, tmp_path):
    _, state = encoder_layout(VIT_B, rpe=True, adpe=True)
    without_rpe = {k: v for k, v in state.items() if ".rpe_k." not in k}
    mae = {k: v for k, v in without_rpe.items() if k != "adv_delta"}
    for fmt, source_state, experiment in (("mae", mae, "mae"), ("adpe-abs", without_rpe, "adpe_abs_coordinate"),
                                          ("adpe-rel", state, "adpe_rel_embedding")):
        source = _save(tmp_path / f"{fmt}.pth", source_state)
        report = import_checkpoint(fmt, source, tmp_path / fmt)  # heads from the ViT-B release (or the iRPE table)
        assert report.spec == VIT_B
        _check_encoder(params, report.path, experiment, VIT_B, None)
